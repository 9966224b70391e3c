//! The one error type of the library; `main` wraps it in `anyhow` for display.

use std::path::PathBuf;

/// Everything that can stop a load-generation run before it produces a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `--url` that is not `ws://host:port/path`.
    #[error("invalid url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A target outside 127.0.0.0/8 and ::1 (the hostile suite has no override).
    #[error("refusing target {0:?}: only loopback addresses (127.0.0.0/8, ::1, localhost) may be load-tested")]
    NotLoopback(String),
    /// A remote target without `--allow-remote`: decided on the URL, before any lookup.
    #[error(
        "refusing target {host:?} in {url}: it is not a loopback address (127.0.0.0/8, ::1, \
         localhost), and only those run without --allow-remote; pass --allow-remote \
         (LOADGEN_ALLOW_REMOTE=1) to load a deployment you are responsible for"
    )]
    RemoteNotAllowed { url: String, host: String },
    /// A remote target's host name did not resolve.
    #[error("resolving {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    /// TLS could not be set up, or a `wss://` target's certificate did not verify.
    #[error("{0}")]
    Tls(String),
    /// A flag combination that cannot work (zero clients, zero rooms, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A system call the run depends on failed (rlimit, thread spawn, runtime start).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A worker process died, misbehaved, or sent an unreadable report.
    #[error("worker {index}: {reason}")]
    Worker { index: usize, reason: String },
    /// Serializing or merging histograms failed.
    #[error("histogram: {0}")]
    Histogram(String),
    /// Writing one of the output files (`--json`, `--hdr`, `--plot`) failed.
    #[error("writing {path:?}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
