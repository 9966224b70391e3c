//! Budgets of one source address across all its connections: chat messages, other commands
//! and rooms created.
//!
//! A connection's own buckets start full, so without these a client that reconnects in a loop
//! gets a fresh burst every time. An address's entry therefore outlives its connections until
//! its buckets would be full again; housekeeping sweeps it then ([`Sources::sweep`]). The
//! address is the client's as [`crate::chat::client::Conn::peer`] has it (the forwarded one behind a
//! trusted proxy). IPv6 addresses count per /64, the block one subscriber gets.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;

use crate::chat::ratelimit::{Kind, Rate, TokenBucket};
use crate::clock::clock_ms;

/// The per-address limits (`--ip-message-rate` and friends).
#[derive(Debug, Clone, Copy)]
pub struct SourceLimits {
    pub message: Rate,
    pub command: Rate,
    /// Rooms that connections from one address created and that still exist (with members
    /// or lingering); 0: no limit.
    pub rooms: usize,
}

/// The address an entry is kept under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 per /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One address's buckets and room count.
#[derive(Debug)]
pub struct Source {
    // A std Mutex: held for two bucket updates, contended only between connections from
    // the same address.
    buckets: Mutex<Buckets>,
    rooms: AtomicUsize,
}

#[derive(Debug)]
struct Buckets {
    message: TokenBucket,
    command: TokenBucket,
    /// When a token was last taken (the sweep keeps the entry until it would be full).
    last_ms: u32,
}

impl Source {
    /// Takes one token of `kind` from the address's bucket.
    pub fn allow(&self, kind: Kind, limits: &SourceLimits) -> bool {
        let rate = match kind {
            Kind::Message => &limits.message,
            Kind::Command => &limits.command,
        };
        if rate.is_off() {
            return true;
        }
        let now = clock_ms();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets.last_ms = now;
        let bucket = match kind {
            Kind::Message => &mut buckets.message,
            Kind::Command => &mut buckets.command,
        };
        bucket.try_take(rate, now)
    }

    /// Rooms created from this address that still exist.
    pub fn rooms(&self) -> usize {
        self.rooms.load(Ordering::Relaxed)
    }
}

/// A room's charge to the address that created it, given back when the room is dropped.
#[derive(Debug)]
pub struct RoomCharge(Arc<Source>);

impl Drop for RoomCharge {
    fn drop(&mut self) {
        self.0.rooms.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every address with an open connection or budget still spent.
#[derive(Debug)]
pub struct Sources {
    pub limits: SourceLimits,
    map: DashMap<IpAddr, Arc<Source>>,
}

impl Sources {
    pub fn new(limits: SourceLimits) -> Self {
        Self {
            limits,
            map: DashMap::new(),
        }
    }

    /// The entry of `ip`'s address, made if needed (connections hold it while open).
    pub fn get(&self, ip: IpAddr) -> Arc<Source> {
        let key = source_key(ip);
        if let Some(found) = self.map.get(&key) {
            return found.value().clone();
        }
        self.map
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Source {
                    buckets: Mutex::new(Buckets {
                        message: TokenBucket::full(&self.limits.message),
                        command: TokenBucket::full(&self.limits.command),
                        last_ms: clock_ms(),
                    }),
                    rooms: AtomicUsize::new(0),
                })
            })
            .value()
            .clone()
    }

    /// Charges a new room to `source`, unless the address already has `--ip-rooms` rooms.
    pub fn charge_room(&self, source: &Arc<Source>) -> Option<RoomCharge> {
        let max = self.limits.rooms;
        let previous = source.rooms.fetch_add(1, Ordering::Relaxed);
        if max > 0 && previous >= max {
            source.rooms.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RoomCharge(source.clone()))
    }

    /// Addresses with an entry now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops entries nobody holds (no connection, no room) whose buckets are full again:
    /// forgetting them then changes nothing.
    pub fn sweep(&self) {
        let now = clock_ms();
        let refill_ms = [self.limits.message, self.limits.command]
            .iter()
            .filter(|r| !r.is_off())
            .map(|r| (f64::from(r.burst) / r.per_second * 1000.0).ceil() as u32)
            .max()
            .unwrap_or(0);
        self.map.retain(|_, source| {
            if Arc::strong_count(source) > 1 || source.rooms() > 0 {
                return true;
            }
            let last = source
                .buckets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last_ms;
            now.wrapping_sub(last) < refill_ms
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("v6");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("mapped");
        assert_eq!(source_key(mapped), IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn an_address_keeps_its_spent_budget_across_connections() {
        let sources = Sources::new(SourceLimits {
            message: Rate::new(1.0, 3),
            command: Rate::new(0.0, 1),
            rooms: 2,
        });
        let ip = IpAddr::from([127, 0, 0, 2]);
        let first = sources.get(ip);
        assert!((0..3).all(|_| first.allow(Kind::Message, &sources.limits)));
        drop(first);
        sources.sweep();
        assert_eq!(sources.len(), 1, "kept while its bucket refills");
        let again = sources.get(ip);
        assert!(
            !again.allow(Kind::Message, &sources.limits),
            "a new connection gets no new burst"
        );
        assert!(again.allow(Kind::Command, &sources.limits), "commands off");

        let one = sources.charge_room(&again).expect("first room");
        let _two = sources.charge_room(&again).expect("second room");
        assert!(sources.charge_room(&again).is_none(), "at --ip-rooms");
        drop(one);
        assert!(
            sources.charge_room(&again).is_some(),
            "a dropped room frees its place"
        );
    }
}
