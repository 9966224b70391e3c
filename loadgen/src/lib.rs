//! chatrelay load generator: opens many WebSocket clients against a relay (loopback, or a
//! deployment with `--allow-remote`, over ws:// or wss://), sends chat messages on an open-loop
//! schedule and reports exact delivery counts and end-to-end latency measured from each
//! message's schedule slot (no coordinated omission).
//!
//! Layout:
//! - [`config`]: the command-line flags ([`Config`], clap derive, `LOADGEN_*` env vars).
//! - [`target`]: `--url` parsing, the loopback rule and `--allow-remote` (checked on the URL
//!   before any lookup), [`target::TargetFlags`] (the flags below, one flattened group) and
//!   the report's `target` section.
//! - [`tls`]: `wss://` through rustls (system roots, `--ca-file`, `--insecure`), the
//!   certificate preflight, and the client's `Wire` (plain TCP or a `ClientConnection` beside
//!   the same socket).
//! - [`auth`]: tokens (`--token`, `--token-file`, a JWT minted per client), `--token-in`,
//!   `--origin`, and the upgrade request that carries them.
//! - [`limits`]: the relay's default rate limits, the plan's warnings about them, and the
//!   report's `limits` section (`rate_limited` errors, 4029 closes).
//! - [`plan`]: the run's derived parameters (rooms, source addresses, pacing).
//! - [`clock`]: wall-clock nanoseconds shared across processes; the phase signal.
//! - [`scan`]: byte-scanning classification of relay events (no JSON parse on receive).
//! - [`client`]: one simulated user (connect, join, send on schedule, absorb deliveries).
//! - [`worker`]: runtime threads (current-thread tokio each) running slices of clients.
//! - [`process`]: worker processes (re-exec with `--worker`) and their pipe protocol.
//! - [`coord`]: the coordinator: ramp, start, sampling, merging into a [`Report`].
//! - [`stats`]: counters, seq tracking, mergeable histograms.
//! - [`report`]: the report (JSON and table); [`output`] writes `--json`/`--hdr`/`--plot`/`--html`.
//! - [`plot`]: the SVG percentile plot. [`sysinfo`]: rlimits, rusage, /proc sampling.
//! - [`observe`]: the flags ([`observe::ObserveFlags`], flattened into [`Config`]) and report
//!   sections ([`observe::Observed`], flattened into [`Report`]) of the four below.
//! - [`scrape`]: `--metrics-url`: a tiny HTTP/1.1 GET client, the Prometheus text parser and
//!   the per-second [`scrape::Watch`]; the relay's delivery count cross-checked with ours.
//! - [`capacity`]: `--scenario capacity`: steps of rising load (one ordinary run each), the
//!   `--slo` objectives, the one-sentence answer.
//! - [`html`]: `--html`: the self-contained report page (inline CSS and SVG, no scripts).
//! - [`interval`]: `--report-interval`: per-interval rates, p50/p99 and server RSS, leak flag.
//! - [`storm`]: `--scenario reconnect-storm`: a fraction of the clients drop at once and
//!   resume with `since`; time to resumed, loss across the gap, what the others saw.
//! - [`hostile`]: the hostile-load suite (`hostile` binary): attacks against a relay child
//!   process with a victim measuring alongside.
//!
//! The RFC 6455 client handshake and frame codec are not here: they are the
//! `chatrelay-wsclient` crate (`wsclient/`), which the relay's raw test client uses too. The
//! fake relay the tests (and the absorb-rate example) run against is test code, in
//! `tests/support/fake/`.

pub mod auth;
pub mod capacity;
pub mod client;
pub mod clock;
pub mod config;
pub mod coord;
mod error;
pub mod hostile;
pub mod html;
pub mod interval;
pub mod limits;
pub mod observe;
pub mod output;
pub mod plan;
pub mod plot;
pub mod process;
pub mod report;
pub mod scan;
pub mod scrape;
pub mod stats;
pub mod storm;
pub mod sysinfo;
pub mod target;
pub mod tls;
pub mod worker;

pub use config::{Config, Scenario};
pub use coord::run;
pub use error::Error;
pub use report::Report;
