//! The run's fixed parameters, derived once from the flags and shared by every client.

use std::net::{IpAddr, Ipv4Addr};

use crate::config::{Config, Scenario};
use crate::target::{self, Access, Target};
use crate::Error;

/// Clients per (source address, target) pair: below the ~28k ephemeral ports of one pair.
pub const CLIENTS_PER_SOURCE_IP: u64 = 25_000;

#[derive(Debug, Clone)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub source_ips: u8,
    pub clients: u64,
    /// Rooms actually used (1 for broadcast).
    pub rooms: u64,
    /// Rooms as counted for expected deliveries: one per (relay, room) unless rooms are shared.
    pub room_slots: u64,
    pub shared_rooms: bool,
    pub payload: usize,
    /// Every message carries a `ref` (`--with-ref`).
    pub with_ref: bool,
    pub scenario: Scenario,
    pub rate: f64,
    pub churn_rate: f64,
    pub connect_rate: f64,
    pub connect_timeout_ns: u64,
    pub ramp_t0_ns: u64,
    pub ramp_deadline_ns: u64,
    pub duration_ns: u64,
    pub drain_ns: u64,
    /// TLS, tokens and Origin for the upgrades.
    pub access: Access,
    /// `--report-interval` (0: off): the workers keep a latency histogram per interval.
    pub report_interval_ns: u64,
    /// `--scenario reconnect-storm`: who drops, when.
    pub storm: Option<crate::storm::StormPlan>,
}

impl Plan {
    pub fn new(cfg: &Config, ramp_t0_ns: u64, ramp_deadline_ns: u64) -> Result<Plan, Error> {
        validate(cfg)?;
        let targets = cfg
            .urls
            .iter()
            .map(|u| target::parse(u, cfg.target.allow_remote))
            .collect::<Result<Vec<_>, _>>()?;
        target::check_targets(&targets, cfg.source_ips)?;
        let access = Access::new(&cfg.target, &targets, token_exp(cfg, ramp_deadline_ns))?;
        let per_target = cfg.clients.div_ceil(targets.len() as u64);
        let auto_ips = per_target.div_ceil(CLIENTS_PER_SOURCE_IP).clamp(1, 254) as u8;
        let rooms = match cfg.scenario {
            Scenario::Broadcast => 1,
            _ => cfg.rooms,
        };
        Ok(Plan {
            targets: targets.clone(),
            source_ips: cfg.source_ips.unwrap_or(auto_ips).max(1),
            clients: cfg.clients,
            rooms,
            room_slots: if cfg.shared_rooms {
                rooms
            } else {
                rooms * targets.len() as u64
            },
            shared_rooms: cfg.shared_rooms,
            payload: cfg.payload,
            with_ref: cfg.with_ref,
            scenario: cfg.scenario,
            rate: cfg.rate,
            churn_rate: cfg.churn_rate,
            connect_rate: cfg.connect_rate,
            connect_timeout_ns: cfg.connect_timeout.as_nanos() as u64,
            ramp_t0_ns,
            ramp_deadline_ns,
            duration_ns: cfg.duration.as_nanos() as u64,
            drain_ns: cfg.drain.as_nanos() as u64,
            access,
            report_interval_ns: cfg
                .observe
                .report_interval
                .map_or(0, |d| d.as_nanos() as u64),
            storm: crate::storm::StormPlan::of(cfg),
        })
    }

    pub fn room_of(&self, id: u64) -> usize {
        (id % self.rooms) as usize
    }

    /// Index into the per-room counters: the room, per relay unless rooms are shared.
    pub fn room_slot_of(&self, id: u64) -> usize {
        let room = id % self.rooms;
        if self.shared_rooms {
            room as usize
        } else {
            ((id % self.targets.len() as u64) * self.rooms + room) as usize
        }
    }

    pub fn target_of(&self, id: u64) -> &Target {
        &self.targets[(id % self.targets.len() as u64) as usize]
    }

    /// 127.0.0.1, 127.0.0.2, ... round-robin; `None` for IPv6 targets (only ::1 exists there)
    /// and remote ones (the kernel picks the route's address).
    pub fn source_ip_of(&self, id: u64) -> Option<IpAddr> {
        let target = self.target_of(id);
        if target.addr.is_ipv6() || target.remote {
            return None;
        }
        let k = (id / self.targets.len() as u64) % u64::from(self.source_ips);
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + k as u8)))
    }

    /// The paced connect slot of client `id` (the same pacing over all workers).
    pub fn connect_at_ns(&self, id: u64) -> u64 {
        self.ramp_t0_ns + (id as f64 * 1e9 / self.connect_rate) as u64
    }

    pub fn sends(&self) -> bool {
        self.scenario != Scenario::Idle && self.rate > 0.0
    }
}

/// `exp` of minted tokens (Unix seconds): past the latest end of the run (ramp deadline, its
/// grace second, the send phase and the drain) with five minutes to spare, so no connection
/// is closed with 4401 mid-run.
fn token_exp(cfg: &Config, ramp_deadline_ns: u64) -> u64 {
    let end_ns = ramp_deadline_ns + 1_500_000_000 + (cfg.duration + cfg.drain).as_nanos() as u64;
    end_ns / 1_000_000_000 + 300
}

pub fn validate(cfg: &Config) -> Result<(), Error> {
    let bad = |m: &str| Err(Error::Config(m.to_string()));
    // The loopback rule first, on the URLs alone: nothing is resolved or opened before it.
    for url in &cfg.urls {
        target::check(url, cfg.target.allow_remote)?;
    }
    if cfg.clients == 0 {
        return bad("--clients must be at least 1");
    }
    if cfg.rooms == 0 {
        return bad("--rooms must be at least 1");
    }
    if cfg.urls.is_empty() {
        return bad("at least one --url is needed");
    }
    if !(cfg.rate.is_finite() && cfg.rate >= 0.0) {
        return bad("--rate must be a non-negative number");
    }
    if !(cfg.connect_rate.is_finite() && cfg.connect_rate > 0.0) {
        return bad("--connect-rate must be positive");
    }
    if cfg.scenario == Scenario::Churn && !(cfg.churn_rate.is_finite() && cfg.churn_rate > 0.0) {
        return bad("--churn-rate must be positive for the churn scenario");
    }
    if cfg.source_ips == Some(0) {
        return bad("--source-ips must be 1-254");
    }
    if cfg.threads == Some(0) || cfg.workers == Some(0) {
        return bad("--threads and --workers must be at least 1");
    }
    crate::storm::validate(cfg)
}
