//! Connection limits: per source address (HTTP 429), in total (503), new connections per
//! second per address (429) and for the node (503). A refused connection still gets its one
//! HTTP answer (with `Retry-After`), so a client can tell a limit from an outage.
//!
//! They are checked when a TCP connection is accepted, except from a `--trusted-proxy`: that
//! peer is one address carrying many users, so at accept it only takes a place under the
//! total, and each request's forwarded client address ([`crate::edge::forwarded`]) is admitted
//! (per-address count and rate, then the node's rate) before the request is served.
//!
//! Counts cover the whole life of a TCP connection, HTTP phase and WebSocket alike: a
//! slowloris client holding half-sent requests uses up its own per-IP allowance, not the node's.
//!
//! Per-address state lives in one map keyed by IPv4 address or IPv6 /64 (one subscriber
//! usually gets a whole /64, so counting single IPv6 addresses would give each attacker 2^64
//! allowances). An entry stays while the address has connections open or its rate bucket is
//! not yet full again; a sweep at most once a second drops the rest. An entry is only created
//! for a connection that also got one of the node's rate tokens, so idle entries number at
//! most `--connection-rate` times (the refill time plus the sweep interval).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use hyper::StatusCode;

use crate::chat::ratelimit::{clock_ms, Rate, TokenBucket};
use crate::config::Config;
use crate::telemetry::metrics::Rejection;

/// How often idle per-address entries are swept (from `admit`, so only while connections
/// arrive: without arrivals the map does not grow).
const SWEEP_EVERY_MS: u32 = 1000;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    PerIp,
    PerIpRate,
    Total,
    Rate,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::PerIp | Refusal::PerIpRate => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Total | Refusal::Rate => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Seconds a client should wait before retrying.
    pub fn retry_after(self) -> &'static str {
        match self {
            Refusal::PerIp | Refusal::PerIpRate | Refusal::Rate => "1",
            Refusal::Total => "5",
        }
    }

    pub fn body(self) -> &'static str {
        match self {
            Refusal::PerIp => "too many connections from your address\n",
            Refusal::PerIpRate => "too many new connections from your address: retry shortly\n",
            Refusal::Total => "server full: too many connections\n",
            Refusal::Rate => "too many new connections: retry shortly\n",
        }
    }
}

/// One address's (or IPv6 /64's) place under the per-address limits.
#[derive(Debug, Clone, Copy)]
struct Address {
    open: u32,
    bucket: TokenBucket,
    /// When the bucket last gave a token: it is full again `refill_ms` later.
    last_take_ms: u32,
}

#[derive(Debug)]
pub struct Admission {
    per_ip_max: usize,
    total_max: usize,
    rate: Rate,
    per_ip_rate: Rate,
    /// Time an empty per-address bucket takes to fill (0 with the per-address rate off).
    refill_ms: u32,
    /// The accept loop and requests through trusted proxies take from it; each holds the
    /// lock for one refill and take.
    bucket: Mutex<TokenBucket>,
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, Address>,
    last_sweep_ms: AtomicU32,
}

/// What an admitted connection holds until it ends: its place under the limits and a clone
/// of the shutdown drain's sender (shutdown waits until every clone is gone). One allocation
/// for both, shared by the HTTP phase and the connection's task.
#[derive(Debug)]
pub struct Held {
    pub permit: Permit,
    pub drain: tokio::sync::mpsc::Sender<()>,
}

/// Held for the life of an admitted connection; gives its places back when dropped: one
/// under the total, and one under the per-address limits for the address it is counted as
/// (the peer's; behind a trusted proxy, the latest request's client, which can change on a
/// keep-alive connection the proxy reuses for another client).
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    /// The per-address key counted, if any. Locked at accept, at drop, and (trusted proxy
    /// connections only) once per request.
    address: Mutex<Option<IpAddr>>,
}

impl Permit {
    /// Counts this connection as `client`'s (a trusted proxy's request; see the module
    /// documentation). The same client again costs nothing.
    pub fn assign(&self, client: IpAddr) -> Result<(), Refusal> {
        let key = address_key(client);
        let mut address = self.address.lock().unwrap_or_else(PoisonError::into_inner);
        if *address == Some(key) {
            return Ok(());
        }
        let counted = self.admission.admit_address(key)?;
        if let Some(previous) = std::mem::replace(&mut *address, counted) {
            self.admission.release(previous);
        }
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::Relaxed);
        let address = self
            .address
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = address.take() {
            self.admission.release(key);
        }
    }
}

/// The per-address key of `ip`: IPv4 as it is (IPv4-mapped IPv6 included), IPv6 by /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
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
        let per_ip_rate = Rate::new(
            config.connection_rate_per_ip,
            config.connection_burst_per_ip,
        );
        let refill_ms = if per_ip_rate.is_off() {
            0
        } else {
            (f64::from(per_ip_rate.burst) / per_ip_rate.per_second * 1000.0)
                .ceil()
                .min(f64::from(u32::MAX / 4)) as u32
        };
        Self {
            per_ip_max: config.max_connections_per_ip,
            total_max: match config.max_connections {
                0 => capacity,
                n => n,
            },
            bucket: Mutex::new(TokenBucket::full(&rate)),
            rate,
            per_ip_rate,
            refill_ms,
            total: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            last_sweep_ms: AtomicU32::new(clock_ms()),
        }
    }

    /// Open connections counted now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Addresses with per-address state now (open connections or a bucket still refilling).
    pub fn tracked_addresses(&self) -> usize {
        self.per_ip.len()
    }

    /// Admits a new connection from `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        self.check_total()?;
        let address = self.admit_address(address_key(ip))?;
        Ok(self.count(address))
    }

    /// Admits a connection from a trusted proxy: a place under the total only; its requests
    /// are admitted by their client address ([`Permit::assign`]).
    pub fn admit_proxy(self: &Arc<Self>) -> Result<Permit, Refusal> {
        self.check_total()?;
        Ok(self.count(None))
    }

    fn check_total(&self) -> Result<(), Refusal> {
        if self.total_max > 0 && self.total.load(Ordering::Relaxed) >= self.total_max {
            return Err(Refusal::Total);
        }
        Ok(())
    }

    fn count(self: &Arc<Self>, address: Option<IpAddr>) -> Permit {
        self.total.fetch_add(1, Ordering::Relaxed);
        Permit {
            admission: self.clone(),
            address: Mutex::new(address),
        }
    }

    /// The per-address checks for `key`, in the order that keeps one address from spending
    /// the node's allowance: its open connections, its own rate, and only then the node's
    /// rate. Returns the key when it is now counted (`None`: per-address limits are off).
    fn admit_address(&self, key: IpAddr) -> Result<Option<IpAddr>, Refusal> {
        if self.per_ip_max == 0 && self.per_ip_rate.is_off() {
            self.take_node_token()?;
            return Ok(None);
        }
        let now = clock_ms();
        self.maybe_sweep(now);
        match self.per_ip.entry(key) {
            Entry::Occupied(mut entry) => {
                let address = entry.get_mut();
                if self.per_ip_max > 0 && address.open as usize >= self.per_ip_max {
                    return Err(Refusal::PerIp);
                }
                if !address.bucket.try_take(&self.per_ip_rate, now) {
                    return Err(Refusal::PerIpRate);
                }
                address.last_take_ms = now;
                self.take_node_token()?;
                address.open += 1;
            }
            Entry::Vacant(entry) => {
                // Refused by the node's rate: nothing worth remembering (the address's bucket
                // would be all but full), so no entry for a flood of one-off addresses.
                self.take_node_token()?;
                let mut bucket = TokenBucket::full(&self.per_ip_rate);
                bucket.try_take(&self.per_ip_rate, now);
                entry.insert(Address {
                    open: 1,
                    bucket,
                    last_take_ms: now,
                });
            }
        }
        Ok(Some(key))
    }

    fn take_node_token(&self) -> Result<(), Refusal> {
        if self.rate.is_off() {
            return Ok(());
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        if bucket.try_take(&self.rate, clock_ms()) {
            Ok(())
        } else {
            Err(Refusal::Rate)
        }
    }

    fn refilled(&self, address: &Address, now: u32) -> bool {
        now.wrapping_sub(address.last_take_ms) >= self.refill_ms
    }

    /// Gives back one connection's place under `key`.
    fn release(&self, key: IpAddr) {
        let now = clock_ms();
        self.per_ip.remove_if_mut(&key, |_, address| {
            address.open = address.open.saturating_sub(1);
            address.open == 0 && self.refilled(address, now)
        });
    }

    /// Drops entries with nothing open and a full bucket, at most once per
    /// [`SWEEP_EVERY_MS`].
    fn maybe_sweep(&self, now: u32) {
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        if now.wrapping_sub(last) < SWEEP_EVERY_MS
            || self
                .last_sweep_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.per_ip
            .retain(|_, address| address.open > 0 || !self.refilled(address, now));
    }
}

/// How a refusal is counted in `relay_connections_rejected_total`.
impl From<Refusal> for Rejection {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::PerIp => Rejection::PerIpLimit,
            Refusal::PerIpRate => Rejection::PerIpRate,
            Refusal::Total => Rejection::ConnectionLimit,
            Refusal::Rate => Rejection::ConnectionRate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_connection_holds_stays_small() {
        // One per open connection; docs/PERFORMANCE.md counts it (56 bytes with the Arc's
        // counts): the per-address key behind a mutex costs no more than the bare key did.
        assert!(
            std::mem::size_of::<Held>() <= 40,
            "{}",
            std::mem::size_of::<Held>()
        );
    }

    #[test]
    fn per_ip_and_total_caps_free_their_place_on_drop() {
        let config = Config {
            max_connections_per_ip: 2,
            max_connections: 3,
            connection_rate: 0.0,
            connection_rate_per_ip: 0.0,
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
            connection_rate_per_ip: 0.0,
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

    #[test]
    fn an_address_over_its_rate_takes_none_of_the_nodes() {
        let config = Config {
            connection_rate: 0.001,
            max_connections_per_ip: 0,
            connection_rate_per_ip: 0.001,
            connection_burst_per_ip: 1,
            ..Config::default()
        };
        // The node's burst is one token (rate rounded up): the flooder takes it with its
        // first connection and refusals after that leave the bucket alone.
        let admission = Arc::new(Admission::new(&config, 100));
        let flooder: IpAddr = [127, 0, 0, 2].into();
        let _first = admission.admit(flooder).expect("its one");
        for _ in 0..10 {
            assert_eq!(
                admission.admit(flooder).map(|_| ()),
                Err(Refusal::PerIpRate)
            );
        }
        assert_eq!(
            admission.admit([127, 0, 0, 3].into()).map(|_| ()),
            Err(Refusal::Rate),
            "the node's one token went to the flooder's first connection"
        );
        assert_eq!(
            admission.tracked_addresses(),
            1,
            "a refused address is not kept"
        );
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_entries_go_when_idle() {
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().expect("v6")),
            "2001:db8:1:2::".parse::<IpAddr>().expect("v6")
        );
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().expect("mapped")),
            IpAddr::from([192, 0, 2, 1])
        );
        let config = Config {
            connection_rate: 0.0,
            max_connections_per_ip: 2,
            connection_rate_per_ip: 0.0,
            ..Config::default()
        };
        let admission = Arc::new(Admission::new(&config, 100));
        let a = admission
            .admit("2001:db8::1".parse().expect("v6"))
            .expect("1st");
        let _b = admission
            .admit("2001:db8::2".parse().expect("v6"))
            .expect("2nd");
        assert_eq!(
            admission
                .admit("2001:db8::ffff:3".parse().expect("v6"))
                .map(|_| ()),
            Err(Refusal::PerIp),
            "the same /64"
        );
        let _other = admission
            .admit("2001:db8:0:1::1".parse().expect("v6"))
            .expect("next /64");
        drop(a);
        drop(_b);
        assert_eq!(
            admission.tracked_addresses(),
            1,
            "without a rate, an idle entry goes at once"
        );
    }

    #[test]
    fn a_proxied_connection_counts_under_its_latest_client() {
        let config = Config {
            connection_rate: 0.0,
            max_connections_per_ip: 1,
            connection_rate_per_ip: 0.0,
            ..Config::default()
        };
        let admission = Arc::new(Admission::new(&config, 100));
        let (alice, bob): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let one = admission
            .admit_proxy()
            .expect("no per-address count for the proxy");
        let two = admission
            .admit_proxy()
            .expect("nor for its second connection");
        one.assign(alice).expect("alice's first");
        one.assign(alice).expect("the same client again is free");
        assert_eq!(two.assign(alice), Err(Refusal::PerIp));
        two.assign(bob).expect("bob");
        one.assign(bob)
            .map_err(|_| ())
            .expect_err("bob has his one");
        drop(two);
        one.assign(bob)
            .expect("reused for bob: alice's place goes back");
        let three = admission.admit_proxy().expect("total");
        three.assign(alice).expect("alice's place came back");
        assert_eq!(admission.open(), 2);
    }
}
