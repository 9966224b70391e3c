//! The relay library's one error type.

/// Errors that end the server or its start-up (per-connection problems never surface here:
/// they become `error` events or close codes).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The history store could not start (`store::StoreError`, boxed: the base layer names
    /// no module above it).
    #[error("history store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}
