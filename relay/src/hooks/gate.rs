//! The publish hook (`--publish-hook`) and the join hook (`--join-hook`): the chat core's
//! [`Gate`] over HTTP (docs/HOOKS.md "Publish hook", "Join hook").
//!
//! Each question is one POST on its own small task, so the connection's driver only polls
//! a ticket. `--hook-failure` turns a failed question (timeout, unreachable, non-2xx,
//! nonsense) into a refusal (`closed`) or a pass (`open`). Join answers may be reused for
//! `--join-hook-cache`, in a bounded cache.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::chat::gate::{Gate, GateBusy, JoinAsk, JoinVerdict, PublishAsk, PublishVerdict, Ticket};
use crate::config::{Config, HookFailure};
use crate::hooks::http::{Hook, HookError, Pool};
use crate::protocol::name::normalize_name;
use crate::telemetry::logging::Sampled;
use crate::telemetry::metrics::hooks::{HookKind, HookMetrics};

/// Questions under way on the node at most (both hooks together); more are refused with
/// `server_busy`. Each is a small task holding its request (about a kilobyte), so this bounds
/// what a flood of connections can make the relay hold while the backend is slow.
pub const MAX_IN_FLIGHT: usize = 16_384;

/// Join answers kept at most (`--join-hook-cache`); past it expired ones are dropped and,
/// if none has expired, new answers are not kept.
pub const MAX_CACHED_JOINS: usize = 10_000;

/// A refusal's reason is cut to this many characters (it goes into an `error` event).
const MAX_REASON_CHARS: usize = 500;

#[derive(Debug)]
pub struct HttpGate {
    publish: Option<Hook>,
    join: Option<Hook>,
    timeout: Duration,
    fail_open: bool,
    cache: Option<JoinCache>,
    in_flight: Arc<AtomicUsize>,
    failure_log: Arc<Sampled>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PublishRequest<'a> {
    room: &'a str,
    user_id: &'a str,
    username: &'a str,
    text: &'a str,
    #[serde(rename = "ref")]
    reference: Option<&'a str>,
    reply_to: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edit: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinRequest<'a> {
    room: &'a str,
    user_id: &'a str,
    username: &'a str,
}

#[derive(Deserialize)]
struct PublishAnswer {
    allow: bool,
    text: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct JoinAnswer {
    allow: bool,
    username: Option<String>,
    reason: Option<String>,
}

impl HttpGate {
    /// The gate for `config`, or `None` when neither hook is set.
    pub fn from_config(
        config: &Config,
        pool: &Pool,
        metrics: &HookMetrics,
    ) -> Result<Option<Self>, crate::error::Error> {
        let hook = |flag, url: &Option<String>, kind| {
            url.as_deref()
                .map(|url| pool.hook(flag, url, config.hook_concurrency, metrics.of(kind).clone()))
                .transpose()
        };
        let publish = hook("--publish-hook", &config.publish_hook, HookKind::Publish)?;
        let join = hook("--join-hook", &config.join_hook, HookKind::Join)?;
        if publish.is_none() && join.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            publish,
            join,
            timeout: config.hook_timeout,
            fail_open: config.hook_failure == HookFailure::Open,
            cache: (!config.join_hook_cache.is_zero())
                .then(|| JoinCache::new(config.join_hook_cache)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            failure_log: Arc::new(Sampled::default()),
        }))
    }

    /// Starts one question on its own task; its answer goes to the returned ticket.
    fn ask<V: Send + 'static>(
        &self,
        hook: &Hook,
        body: Vec<u8>,
        judge: impl FnOnce(Result<Bytes, HookError>, &Hook) -> Result<V, HookError> + Send + 'static,
        failed: V,
        passed: V,
        then: impl FnOnce(&V) + Send + 'static,
    ) -> Result<Ticket<V>, GateBusy> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(GateBusy);
        }
        let (tx, rx) = oneshot::channel();
        let (hook, timeout, fail_open) = (hook.clone(), self.timeout, self.fail_open);
        let (in_flight, log) = (self.in_flight.clone(), self.failure_log.clone());
        tokio::spawn(async move {
            let mut tx = tx;
            let asked = async {
                let answer = hook.post_json(Bytes::from(body), timeout).await;
                judge(answer.map(|a| a.body), &hook)
            };
            // A connection that went away no longer needs the answer.
            let verdict = tokio::select! {
                verdict = asked => Some(verdict),
                () = tx.closed() => None,
            };
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let Some(verdict) = verdict else { return };
            let verdict = match verdict {
                Ok(verdict) => {
                    then(&verdict);
                    verdict
                }
                Err(err) => {
                    if let Some(unlogged) = log.due() {
                        tracing::warn!(hook = %hook.url(), kind = err.kind().as_str(), error = %err, fail_open, unlogged, "hook failed (at most one line a second; `unlogged` counts the others since the last line)");
                    }
                    if fail_open {
                        passed
                    } else {
                        failed
                    }
                }
            };
            let _ = tx.send(verdict);
        });
        Ok(Ticket::Later(rx))
    }
}

fn reason(given: Option<String>, default: &str) -> Box<str> {
    match given {
        Some(reason) if !reason.is_empty() => reason.chars().take(MAX_REASON_CHARS).collect(),
        _ => default.into(),
    }
}

fn judge_publish(
    answer: Result<Bytes, HookError>,
    hook: &Hook,
) -> Result<PublishVerdict, HookError> {
    let body = answer?;
    let answer: PublishAnswer = serde_json::from_slice(&body)
        .map_err(|err| hook.invalid(format!("publish hook answer: {err}")))?;
    Ok(match (answer.allow, answer.text) {
        (true, None) => PublishVerdict::Allow,
        (true, Some(text)) => PublishVerdict::Replace(text.into()),
        (false, _) => PublishVerdict::Refuse(reason(answer.reason, "refused by the publish hook")),
    })
}

fn judge_join(answer: Result<Bytes, HookError>, hook: &Hook) -> Result<JoinVerdict, HookError> {
    let body = answer?;
    let answer: JoinAnswer = serde_json::from_slice(&body)
        .map_err(|err| hook.invalid(format!("join hook answer: {err}")))?;
    Ok(match (answer.allow, answer.username) {
        (true, None) => JoinVerdict::Allow,
        (true, Some(name)) => match normalize_name(&name) {
            Some(name) => JoinVerdict::Rename(name.into_owned().into()),
            None => return Err(hook.invalid(
                "join hook username must be 1-64 characters without control or format characters",
            )),
        },
        (false, _) => JoinVerdict::Deny(reason(answer.reason, "the join hook denied this room")),
    })
}

impl Gate for HttpGate {
    fn checks_publish(&self) -> bool {
        self.publish.is_some()
    }

    fn checks_join(&self) -> bool {
        self.join.is_some()
    }

    fn publish(&self, ask: &PublishAsk<'_>) -> Result<Ticket<PublishVerdict>, GateBusy> {
        let Some(hook) = &self.publish else {
            return Ok(Ticket::Now(PublishVerdict::Allow));
        };
        let request = PublishRequest {
            room: ask.room,
            user_id: ask.user_id,
            username: ask.username,
            text: ask.text,
            reference: ask.reference,
            reply_to: ask.reply_to,
            edit: ask.edit,
        };
        // Borrowed strings and numbers: serializing cannot fail.
        let body = serde_json::to_vec(&request).unwrap_or_default();
        self.ask(
            hook,
            body,
            judge_publish,
            PublishVerdict::Unavailable,
            PublishVerdict::Allow,
            |_| {},
        )
    }

    fn join(&self, ask: &JoinAsk<'_>) -> Result<Ticket<JoinVerdict>, GateBusy> {
        let Some(hook) = &self.join else {
            return Ok(Ticket::Now(JoinVerdict::Allow));
        };
        let key = JoinCache::key(ask);
        if let Some(verdict) = self.cache.as_ref().and_then(|c| c.get(&key)) {
            return Ok(Ticket::Now(verdict));
        }
        let request = JoinRequest {
            room: ask.room,
            user_id: ask.user_id,
            username: ask.username,
        };
        let mut body = serde_json::to_vec(&request).unwrap_or_default();
        // The claims are spliced in as the JSON they are (the token's, re-serialized once
        // at the upgrade).
        body.pop();
        body.extend_from_slice(b",\"claims\":");
        body.extend_from_slice(ask.claims.unwrap_or("null").as_bytes());
        body.push(b'}');
        let cache = self.cache.clone();
        self.ask(
            hook,
            body,
            judge_join,
            JoinVerdict::Unavailable,
            JoinVerdict::Allow,
            move |verdict| {
                if let Some(cache) = cache {
                    cache.put(key, verdict.clone());
                }
            },
        )
    }
}

/// Cached join answers by [`JoinCache::key`], each with when it expires, and the same keys in
/// the order they were put.
#[derive(Debug, Default)]
struct CachedJoins {
    entries: HashMap<Arc<str>, (Instant, JoinVerdict)>,
    /// Every put's expiry and key, oldest first. One `ttl` for all, so this is also the
    /// order they expire in: the expired ones are at the front, so a put pops only those
    /// (no sweep of the whole map on every put while the cache is full). A key put again
    /// has an older entry here too; it only drops the answer if that is still the one it
    /// put.
    order: VecDeque<(Instant, Arc<str>)>,
}

/// Join answers by room and person, each kept `ttl`.
#[derive(Debug, Clone)]
struct JoinCache {
    ttl: Duration,
    entries: Arc<Mutex<CachedJoins>>,
}

impl JoinCache {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Arc::default(),
        }
    }

    /// Room, person and username: the person is the token's `sub` (without authentication
    /// the username, as the userId is then the connection's own id), and the name is part
    /// of the question (a rename is per name).
    fn key(ask: &JoinAsk<'_>) -> Box<str> {
        format!("{}\u{0}{}\u{0}{}", ask.room, ask.person, ask.username).into()
    }

    fn get(&self, key: &str) -> Option<JoinVerdict> {
        let cached = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        cached.get(key, Instant::now())
    }

    fn put(&self, key: Box<str>, verdict: JoinVerdict) {
        let mut cached = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Read under the lock, so `order` stays sorted whatever the threads' order.
        let now = Instant::now();
        cached.put(key.into(), verdict, now + self.ttl, now);
    }
}

impl CachedJoins {
    fn get(&self, key: &str, now: Instant) -> Option<JoinVerdict> {
        self.entries
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, verdict)| verdict.clone())
    }

    /// Drops what expired by `now`, then keeps `verdict` until `expires` unless the cache is
    /// still full. `expires` is never earlier than the ones before it (one `ttl`, `now` read
    /// under the lock): `order` stays sorted.
    fn put(&mut self, key: Arc<str>, verdict: JoinVerdict, expires: Instant, now: Instant) {
        while self.order.front().is_some_and(|(at, _)| *at <= now) {
            let Some((at, old)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&old)
                .is_some_and(|(current, _)| *current == at)
            {
                self.entries.remove(&old);
            }
        }
        // `order` holds an entry for every answer kept (two for a key put again until its
        // older one expires), so bounding it bounds both.
        if self.order.len() >= MAX_CACHED_JOINS {
            return;
        }
        self.order.push_back((expires, key.clone()));
        self.entries.insert(key, (expires, verdict));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_cache_drops_expired_answers_oldest_first_and_stays_bounded() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let ttl = Duration::from_millis(100);
        let put = |cache: &mut CachedJoins, key: &Arc<str>, verdict, ms| {
            cache.put(key.clone(), verdict, at(ms) + ttl, at(ms));
        };
        let key = |i: usize| Arc::<str>::from(format!("k{i}"));
        let half = MAX_CACHED_JOINS / 2;
        let mut cache = CachedJoins::default();
        // Half put at 0 ms (expiring at 100 ms), the rest at 10 ms (at 110 ms).
        for i in 0..MAX_CACHED_JOINS {
            put(
                &mut cache,
                &key(i),
                JoinVerdict::Allow,
                if i < half { 0 } else { 10 },
            );
        }
        let late = key(MAX_CACHED_JOINS);
        put(&mut cache, &late, JoinVerdict::Allow, 50);
        assert_eq!(
            cache.get(&late, at(50)),
            None,
            "full, nothing expired: not kept"
        );
        assert_eq!(cache.get(&key(0), at(50)), Some(JoinVerdict::Allow));

        // At 100 ms the first half has expired: it leaves, and a new answer goes in.
        let fresh = key(MAX_CACHED_JOINS + 1);
        put(&mut cache, &fresh, JoinVerdict::Allow, 100);
        assert_eq!(cache.entries.len(), half + 1);
        assert_eq!(cache.order.len(), half + 1);
        assert_eq!(cache.get(&key(0), at(100)), None);
        assert_eq!(cache.get(&fresh, at(100)), Some(JoinVerdict::Allow));

        // A key put again before its first answer expires: that answer's entry in `order`,
        // due at 110 ms, must not take the second answer along.
        let twice = key(MAX_CACHED_JOINS - 1);
        let again = JoinVerdict::Deny("again".into());
        put(&mut cache, &twice, again.clone(), 105);
        put(&mut cache, &key(7), JoinVerdict::Allow, 110);
        assert_eq!(cache.get(&twice, at(110)), Some(again));
        assert_eq!(cache.get(&key(half), at(110)), None, "expired");
        let mut kept: Vec<_> = cache.entries.keys().map(|k| k.to_string()).collect();
        kept.sort();
        assert_eq!(kept, [&*fresh, "k7", &*twice]);
        assert_eq!(cache.order.len(), 3);
    }
}
