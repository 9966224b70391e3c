//! The numbers of the app backend's HTTP hooks (`crate::hooks`): requests, failures by
//! kind, latency. Per relay like the rest of [`super::Metrics`]: one [`HookStats`] per hook,
//! shared (an `Arc`) with the hook's client, which records into it without a lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{header, names, Histogram, NANOS};

/// 1 ms to 10 s, in nanoseconds: a hook is a network round trip to another process.
const HOOK_NANOS: &[u64] = &[
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Why a hook request failed, as the `kind` label of `relay_hook_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer within the hook's timeout (waiting for a free request slot included).
    Timeout,
    /// The backend could not be reached (refused, reset, DNS, TLS handshake).
    Connect,
    /// The backend answered with a status other than 2xx.
    Status,
    /// The answer's body could not be read, or was too large.
    Body,
    /// The answer was read but is not what the hook expects (not the documented JSON).
    Invalid,
}

impl FailureKind {
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Timeout,
        FailureKind::Connect,
        FailureKind::Status,
        FailureKind::Body,
        FailureKind::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Status => "status",
            FailureKind::Body => "body",
            FailureKind::Invalid => "invalid",
        }
    }
}

/// Which hook, as the `hook` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Publish,
    Join,
    Webhook,
}

impl HookKind {
    pub const ALL: [HookKind; 3] = [HookKind::Publish, HookKind::Join, HookKind::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Publish => "publish",
            HookKind::Join => "join",
            HookKind::Webhook => "webhook",
        }
    }
}

/// One hook's counters and latency histogram.
#[derive(Debug)]
pub struct HookStats {
    requests: AtomicU64,
    failures: [AtomicU64; FailureKind::ALL.len()],
    latency: Histogram,
}

impl Default for HookStats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            failures: Default::default(),
            latency: Histogram::new(HOOK_NANOS, NANOS),
        }
    }
}

impl HookStats {
    /// A request was sent (counted whatever its outcome).
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The time from asking to having the answer (or the failure), in nanoseconds.
    pub fn took(&self, nanos: u64) {
        self.latency.record(nanos);
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind as usize].load(Ordering::Relaxed)
    }
}

/// The stats of every hook of one relay.
#[derive(Debug, Default)]
pub struct HookMetrics {
    by_hook: [Arc<HookStats>; HookKind::ALL.len()],
}

impl HookMetrics {
    /// The stats `hook` records into (its client keeps a clone).
    pub fn of(&self, hook: HookKind) -> &Arc<HookStats> {
        &self.by_hook[hook as usize]
    }

    /// The three hook metrics, every hook listed (zeros for the ones not configured, so
    /// dashboards need no special case).
    pub(super) fn render(&self, o: &mut String) {
        header(o, names::HOOK_REQUESTS, "counter");
        for hook in HookKind::ALL {
            let n = self.of(hook).requests();
            let _ = writeln!(
                o,
                "{}{{hook=\"{}\"}} {n}",
                names::HOOK_REQUESTS,
                hook.as_str()
            );
        }
        header(o, names::HOOK_FAILURES, "counter");
        for hook in HookKind::ALL {
            for kind in FailureKind::ALL {
                let n = self.of(hook).failures(kind);
                let _ = writeln!(
                    o,
                    "{}{{hook=\"{}\",kind=\"{}\"}} {n}",
                    names::HOOK_FAILURES,
                    hook.as_str(),
                    kind.as_str()
                );
            }
        }
        header(o, names::HOOK_SECONDS, "histogram");
        for hook in HookKind::ALL {
            let mut one = String::new();
            self.of(hook).latency.render(names::HOOK_SECONDS, &mut one);
            // The histogram renders unlabelled samples; each gets the hook's label.
            let label = format!("hook=\"{}\"", hook.as_str());
            for line in one.lines() {
                let labelled = match line.split_once('{') {
                    Some((name, rest)) => format!("{name}{{{label},{rest}"),
                    None => match line.split_once(' ') {
                        Some((name, value)) => format!("{name}{{{label}}} {value}"),
                        None => line.to_owned(),
                    },
                };
                let _ = writeln!(o, "{labelled}");
            }
        }
    }
}
