//! A chat message into the room: ordered, kept and fanned out in one go
//! ([`Room::publish`], [`Room::append`]), or reserved under the room's lock for a backend
//! that keeps it before anyone sees it ([`Room::reserve`]). A message with a `ref` is
//! checked against the room's remembered sends ([`super::dedupe`]) under the same lock that
//! orders it, so two connections of one person resending at once cannot both get through.

use std::borrow::Borrow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use std::sync::MutexGuard;

use super::dedupe::{KeptSend, Sent};
use super::log::{Order, Refused};
use super::outgoing::{Outgoing, SendRefusal};
use super::{Room, State};
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
use crate::chat::tap::{Origin, Tapped};
use crate::protocol::event::{self, MessageEvent};
use crate::transport::outbox::Priority;
use crate::ws::Frame;

/// A message the log took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    /// How many members it was queued for.
    pub delivered: u64,
}

/// What [`Room::reserve`] did.
#[derive(Debug)]
pub enum Reservation {
    /// Reserved and handed to the backend: its seq, and the members it is for now.
    Reserved { seq: u64, members: usize },
    /// A resend of a `ref` the room remembers: nothing new; the sender is owed this `ack`
    /// again once the first send is stored (the backend sends it after what it has queued).
    Resent(Frame),
}

/// A message [`Room::reserve`] ordered and encoded, on its way through the backend that keeps
/// it before it is appended.
#[derive(Debug)]
pub struct Reserved {
    pub epoch: Arc<str>,
    pub seq: u64,
    pub timestamp_ms: u64,
    /// The message event, framed once; appended as it is.
    pub frame: Frame,
    /// The message number and when it was accepted, for the fan-out and delivery latencies
    /// (which so include the time it took to be kept).
    pub probe: (u64, Instant),
    /// A message sent with `ref`: its sender and `ack`, pushed once it is stored and
    /// appended, and the person and ref the store keeps beside it (so that a resend after
    /// a restart is still recognised).
    pub ack: Option<Box<Ack>>,
}

/// The `ack` a stored message owes its sender.
#[derive(Debug)]
pub struct Ack {
    pub to: Arc<Conn>,
    pub frame: Frame,
    pub person: Box<str>,
    pub reference: Box<str>,
}

/// The one encoder of a chat message event: stamped with the time it is accepted, framed
/// once for every member; returns the timestamp beside the frame.
fn message_encoder<'a>(
    hub: &'a Hub,
    room: &'a str,
    number: u64,
    out: &'a Outgoing<'a>,
) -> impl Fn(u64) -> (u64, Frame) + 'a {
    let timestamp_ms = crate::clock::now_ms();
    move |seq| {
        if let Some(change) = &out.change {
            let edit = (!change.delete).then_some((out.text, timestamp_ms));
            let c = event::ChangeEvent {
                room,
                target: change.target,
                edit,
            };
            return (timestamp_ms, event::change(&c, seq));
        }
        let frame = event::message(&MessageEvent {
            node_tag: &hub.node_tag,
            number,
            seq,
            room,
            user_id: out.user_id,
            username: out.username,
            text: out.text,
            timestamp_ms,
            reply_to: out.reply_to,
            reference: out.reference.map(|(_, r)| r),
        });
        (timestamp_ms, frame)
    }
}

/// The id of message `number` published on this node (`<node tag>-m<number>`, as the
/// event's `id`).
fn message_id(hub: &Hub, number: u64) -> Box<str> {
    format!("{}-m{number}", hub.node_tag).into()
}

impl Room {
    /// Assigns the next seq, stores the message in history and sends it to every member,
    /// the sender included. Returns the seq.
    pub fn publish(&self, hub: &Hub, sender: &Arc<Conn>, username: &str, text: &str) -> u64 {
        self.send(hub, &Outgoing::plain(sender, username, text))
            .unwrap_or(0)
    }

    /// [`Room::publish`] of any [`Outgoing`] message, for a room whose log lives here:
    /// with a `ref` the sender gets its `ack` (also for a resend, which is not delivered
    /// again). Counted as a client's message when it has a sender.
    pub fn send(&self, hub: &Hub, out: &Outgoing<'_>) -> Result<u64, SendRefusal> {
        // One clock read per message, none per member: the fan-out histogram and the
        // sampled delivery latency both start here.
        let started = Instant::now();
        let mut state = self.lock();
        out.check(&state.log)?;
        let window_ms = window_ms(hub);
        let now_ms = crate::clock::now_ms();
        if let (Some(sender), Some((person, reference))) = (out.sender, out.reference) {
            let remembered = state
                .dedupe
                .get_or_insert_default()
                .find(person, reference, now_ms, window_ms)
                .cloned();
            if let Some(sent) = remembered {
                drop(state);
                let ack = event::ack(reference, &self.name, sent.seq, &sent.id);
                hub.push_to(sender, ack.bytes(), Priority::Normal);
                return Ok(sent.seq);
            }
        }
        let number = hub.next_message_number();
        let encode = message_encoder(hub, &self.name, number, out);
        // The room assigns the seq itself, so the log takes every message.
        let appended = self
            .append_locked(
                state,
                hub,
                Order::Next,
                Origin::Here,
                Some((number, started)),
                |seq| encode(seq).1,
            )
            .map_err(|_| SendRefusal::Busy)?;
        if out.sender.is_some() && out.change.is_none() {
            hub.stats.messages_published.fetch_add(1, Ordering::Relaxed);
            hub.stats
                .deliveries
                .fetch_add(appended.delivered, Ordering::Relaxed);
        }
        if let (Some(sender), Some((person, reference))) = (out.sender, out.reference) {
            let id = message_id(hub, number);
            let ack = event::ack(reference, &self.name, appended.seq, &id);
            let sent = Sent {
                seq: appended.seq,
                id,
            };
            self.lock()
                .dedupe
                .get_or_insert_default()
                .remember(person, reference, sent, now_ms, window_ms);
            hub.push_to(sender, ack.bytes(), Priority::Normal);
        }
        Ok(appended.seq)
    }

    /// Whether the room remembers `person`'s send `reference` (a resend would only get its
    /// `ack` again). One hash lookup under the room's lock; false where the room keeps no
    /// refs (cluster mode keeps them in Redis).
    pub fn remembers(&self, hub: &Hub, person: &str, reference: &str) -> bool {
        let mut state = self.lock();
        let now_ms = crate::clock::now_ms();
        state
            .dedupe
            .as_mut()
            .is_some_and(|d| d.find(person, reference, now_ms, window_ms(hub)).is_some())
    }

    /// [`Room::publish`] under any `userId` (the admin API's server messages), without
    /// counting it as a client's message. Returns the seq and how many members queued it.
    pub fn publish_as(&self, hub: &Hub, user_id: &str, username: &str, text: &str) -> (u64, u64) {
        let started = Instant::now();
        let number = hub.next_message_number();
        let out = Outgoing::server(user_id, username, text);
        let encode = message_encoder(hub, &self.name, number, &out);
        self.append(hub, Order::Next, Some((number, started)), |seq| {
            encode(seq).1
        })
        .map_or((0, 0), |a| (a.seq, a.delivered))
    }

    /// Orders a message without delivering it, for a backend that keeps every message before
    /// anyone sees it (the durable store): under the room's lock the next seq of the
    /// backend's life is reserved, the event encoded once, and `keep` given it, so a room's
    /// messages reach `keep` in seq order. The backend hands it back through
    /// [`Room::append`] with [`Order::Assigned`] (and then sends its `ack`). If `keep`
    /// refuses, the seq is given back. A resend of a remembered `ref` reserves nothing
    /// ([`Reservation::Resent`]). A room whose log holds no backend life (not opened by a
    /// journalling backend) gets the message as in memory.
    pub fn reserve(
        &self,
        hub: &Hub,
        out: &Outgoing<'_>,
        keep: impl FnOnce(Reserved) -> Result<(), SendRefusal>,
    ) -> Result<Reservation, SendRefusal> {
        let started = Instant::now();
        let mut state = self.lock();
        if state.dead {
            // Retired since the caller found it (the admin API looks rooms up by name): its
            // successor, opened from the backend's log, hands out these seqs now.
            return Err(SendRefusal::Busy);
        }
        out.check(&state.log)?;
        let window_ms = window_ms(hub);
        let now_ms = crate::clock::now_ms();
        if let Some((person, reference)) = out.reference {
            let remembered = state
                .dedupe
                .get_or_insert_default()
                .find(person, reference, now_ms, window_ms);
            if let Some(sent) = remembered {
                let ack = event::ack(reference, &self.name, sent.seq, &sent.id);
                return Ok(Reservation::Resent(ack));
            }
        }
        let Some(seq) = state.log.reserve() else {
            drop(state);
            debug_assert!(false, "a journalled room always holds its stored life");
            return self
                .send(hub, out)
                .map(|seq| Reservation::Reserved { seq, members: 0 });
        };
        let number = hub.next_message_number();
        let encode = message_encoder(hub, &self.name, number, out);
        let (timestamp_ms, frame) = encode(seq);
        let members = state.members.len();
        let ack = match (out.sender, out.reference) {
            (Some(sender), Some((person, reference))) => {
                let id = message_id(hub, number);
                let frame = event::ack(reference, &self.name, seq, &id);
                // Remembered now, not once stored: a resend meanwhile must not be taken
                // as new (its ack waits behind this message's store, see `Resent`).
                state.dedupe.get_or_insert_default().remember(
                    person,
                    reference,
                    Sent { seq, id },
                    now_ms,
                    window_ms,
                );
                Some(Box::new(Ack {
                    to: sender.clone(),
                    frame,
                    person: person.into(),
                    reference: reference.into(),
                }))
            }
            _ => None,
        };
        let reserved = Reserved {
            epoch: state.log.epoch().clone(),
            seq,
            timestamp_ms,
            frame,
            probe: (number, started),
            ack,
        };
        match keep(reserved) {
            Ok(()) => Ok(Reservation::Reserved { seq, members }),
            Err(refused) => {
                state.log.unreserve(seq);
                if let Some((person, reference)) = out.reference {
                    state
                        .dedupe
                        .get_or_insert_default()
                        .forget(person, reference);
                }
                Err(refused)
            }
        }
    }

    /// Checks an edit or delete (and a `replyTo`) against what the room keeps, for a
    /// backend that orders it elsewhere (the cluster).
    pub fn check_change(&self, out: &Outgoing<'_>) -> Result<(), SendRefusal> {
        out.check(&self.lock().log)
    }

    /// `with` the event JSON of `seq` if the room keeps it in memory.
    pub fn kept_json<T>(&self, seq: u64, with: impl FnOnce(&[u8]) -> T) -> Option<T> {
        self.lock().log.kept(seq).map(with)
    }

    /// Whether the room keeps message `seq` in memory (else a backend with more reads it).
    pub fn keeps(&self, seq: u64) -> bool {
        self.lock().log.kept(seq).is_some()
    }

    /// Remembers sends a backend kept beside its log (a durable store's, when the room is
    /// opened after a restart), oldest first.
    pub fn remember_sends(&self, hub: &Hub, sends: Vec<KeptSend>) {
        if sends.is_empty() {
            return;
        }
        let window_ms = window_ms(hub);
        let mut state = self.lock();
        let dedupe = state.dedupe.get_or_insert_default();
        for kept in sends {
            dedupe.remember(
                &kept.person,
                &kept.reference,
                kept.sent,
                kept.at_ms,
                window_ms,
            );
        }
    }

    /// The one way a message enters the room: ordered into the log (`order`: the next seq,
    /// or the one the backend assigned), kept in history and sent to every member.
    /// `encode` gets the seq and returns the event frame. `probe`: the message number and
    /// start of a message published on this node, for the fan-out and delivery latencies.
    pub fn append<F: Borrow<Frame>>(
        &self,
        hub: &Hub,
        order: Order<'_>,
        probe: Option<(u64, Instant)>,
        encode: impl FnOnce(u64) -> F,
    ) -> Result<Appended, Refused> {
        self.append_locked(self.lock(), hub, order, Origin::Here, probe, encode)
    }

    /// [`Room::append`] of a message that may have been published on another node
    /// (`origin`, the cluster's): only this node's own go to the hub's tap, so an observer
    /// hears each message once across the cluster.
    pub fn append_from<F: Borrow<Frame>>(
        &self,
        hub: &Hub,
        order: Order<'_>,
        origin: Origin,
        encode: impl FnOnce(u64) -> F,
    ) -> Result<Appended, Refused> {
        self.append_locked(self.lock(), hub, order, origin, None, encode)
    }

    /// [`Room::append`] under the lock the caller holds (a check and the append in one).
    fn append_locked<F: Borrow<Frame>>(
        &self,
        mut state: MutexGuard<'_, State>,
        hub: &Hub,
        order: Order<'_>,
        origin: Origin,
        probe: Option<(u64, Instant)>,
        encode: impl FnOnce(u64) -> F,
    ) -> Result<Appended, Refused> {
        let (seq, frame) = state
            .log
            .append(order, || hub.history_fair_share(), encode)?;
        let frame = frame.borrow();
        if let (Some(tap), Origin::Here) = (&hub.tap, origin) {
            // Under the lock: the tap sees the room's events in the order the log took them.
            tap.tap(Tapped::Log {
                room: &self.name,
                epoch: state.log.epoch(),
                seq,
                frame,
            });
        }
        // A sampled message goes out as a probe: the same bytes, timed until the last
        // member's writer drops them. History keeps the plain frame, or the probe would
        // only fire when the message left history.
        let sampled = match probe {
            Some((number, started)) if !state.members.is_empty() => {
                hub.metrics.probe(number, frame.bytes(), started)
            }
            _ => None,
        };
        let bytes = sampled.as_ref().unwrap_or(frame.bytes());
        let delivered = self.fan_out(&mut state, hub, bytes, Priority::Normal, None);
        drop(state);
        drop(sampled);
        if let Some((_, started)) = probe {
            hub.metrics.fanout_done(started);
        }
        hub.reclaim_history_if_over();
        Ok(Appended { seq, delivered })
    }
}

/// `--dedupe-window` in milliseconds.
fn window_ms(hub: &Hub) -> u64 {
    u64::try_from(hub.limits.dedupe_window.as_millis()).unwrap_or(u64::MAX)
}
