//! Connection limits, checked when a TCP connection is accepted: per source IP (HTTP 429),
//! in total (503) and new connections per second (503). A refused connection still gets its
//! one HTTP answer (with `Retry-After`), so a client can tell a limit from an outage.
//!
//! Counts cover the whole life of a TCP connection, HTTP phase and WebSocket alike: a
//! slowloris client holding half-sent requests uses up its own per-IP allowance, not the node's.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;
use hyper::StatusCode;

use crate::config::Config;
use crate::ratelimit::{clock_ms, Rate, TokenBucket};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerIp,
    Total,
    Rate,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::PerIp => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Total | Refusal::Rate => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Seconds a client should wait before retrying.
    pub fn retry_after(self) -> &'static str {
        match self {
            Refusal::PerIp | Refusal::Rate => "1",
            Refusal::Total => "5",
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Refusal::PerIp => "too many connections from your address\n",
            Refusal::Total => "server full: too many connections\n",
            Refusal::Rate => "too many new connections: retry shortly\n",
        }
    }
}

#[derive(Debug)]
pub struct Admission {
    per_ip_max: usize,
    total_max: usize,
    rate: Rate,
    /// Only one task (the accept loop) takes from it, so the lock is never contended.
    bucket: Mutex<TokenBucket>,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// What an admitted connection holds until it ends: its place under the limits and a clone
/// of the shutdown drain's sender (shutdown waits until every clone is gone). One allocation
/// for both, shared by the HTTP phase and the connection's task.
#[derive(Debug)]
pub struct Held {
    pub permit: Permit,
    pub drain: tokio::sync::mpsc::Sender<()>,
}

/// Held for the life of an admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::Relaxed);
        if self.admission.per_ip_max > 0 {
            self.admission.per_ip.remove_if_mut(&self.ip, |_, count| {
                *count -= 1;
                *count == 0
            });
        }
    }
}

impl Admission {
    /// `capacity`: connections the open-files limit allows, used when `--max-connections` is 0.
    pub fn new(config: &Config, capacity: usize) -> Self {
        let rate = Rate::new(
            config.connection_rate,
            config
                .connection_rate
                .ceil()
                .clamp(1.0, f64::from(u32::MAX)) as u32,
        );
        Self {
            per_ip_max: config.max_connections_per_ip,
            total_max: match config.max_connections {
                0 => capacity,
                n => n,
            },
            bucket: Mutex::new(TokenBucket::full(&rate)),
            rate,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
        }
    }

    /// Open connections counted now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Admits a new connection from `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        if self.total_max > 0 && self.total.load(Ordering::Relaxed) >= self.total_max {
            return Err(Refusal::Total);
        }
        if !self.rate.is_off() {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            if !bucket.try_take(&self.rate, clock_ms()) {
                return Err(Refusal::Rate);
            }
        }
        if self.per_ip_max > 0 {
            let mut count = self.per_ip.entry(ip).or_insert(0);
            if *count >= self.per_ip_max {
                return Err(Refusal::PerIp);
            }
            *count += 1;
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_and_total_caps_free_their_place_on_drop() {
        let config = Config {
            max_connections_per_ip: 2,
            max_connections: 3,
            connection_rate: 0.0,
            ..Config::default()
        };
        let admission = Arc::new(Admission::new(&config, 100));
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let first = admission.admit(a).expect("1st");
        let _second = admission.admit(a).expect("2nd");
        assert_eq!(admission.admit(a).map(|_| ()), Err(Refusal::PerIp));
        let _third = admission.admit(b).expect("other address");
        assert_eq!(admission.admit(b).map(|_| ()), Err(Refusal::Total));
        drop(first);
        let _again = admission.admit(a).expect("a place came back");
        assert_eq!(admission.open(), 3);
    }

    #[test]
    fn new_connection_rate() {
        let config = Config {
            connection_rate: 3.0,
            max_connections_per_ip: 0,
            ..Config::default()
        };
        let admission = Arc::new(Admission::new(&config, 100));
        let ip: IpAddr = [127, 0, 0, 1].into();
        let held: Vec<_> = (0..3)
            .map(|_| admission.admit(ip).expect("burst"))
            .collect();
        assert_eq!(admission.admit(ip).map(|_| ()), Err(Refusal::Rate));
        drop(held);
    }
}
