//! Logging set-up: `tracing` to stderr, text or JSON, level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `format` is "text" or "json".
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
