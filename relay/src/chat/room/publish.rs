//! A chat message into the room: ordered, kept and fanned out in one go
//! ([`Room::publish`], [`Room::append`]), or reserved under the room's lock for a backend
//! that keeps it before anyone sees it ([`Room::reserve`]).

use std::borrow::Borrow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::log::{Order, Refused};
use super::Room;
use crate::chat::backend::Busy;
use crate::chat::client::Conn;
use crate::chat::hub::Hub;
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
}

/// The one encoder of a chat message event: stamped with the time it is accepted, framed
/// once for every member; returns the timestamp beside the frame.
fn message_encoder<'a>(
    hub: &'a Hub,
    room: &'a str,
    number: u64,
    user_id: &'a str,
    username: &'a str,
    text: &'a str,
) -> impl Fn(u64) -> (u64, Frame) + 'a {
    let timestamp_ms = crate::clock::now_ms();
    move |seq| {
        let frame = event::message(&MessageEvent {
            node_tag: &hub.node_tag,
            number,
            seq,
            room,
            user_id,
            username,
            text,
            timestamp_ms,
        });
        (timestamp_ms, frame)
    }
}

impl Room {
    /// Assigns the next seq, stores the message in history and sends it to every member,
    /// the sender included. Returns the seq.
    pub fn publish(&self, hub: &Hub, sender: &Conn, username: &str, text: &str) -> u64 {
        let (seq, delivered) = self.publish_as(hub, &sender.user_id, username, text);
        hub.stats.messages_published.fetch_add(1, Ordering::Relaxed);
        hub.stats.deliveries.fetch_add(delivered, Ordering::Relaxed);
        seq
    }

    /// [`Room::publish`] under any `userId` (the admin API's server messages), without
    /// counting it as a client's message. Returns the seq and how many members queued it.
    pub fn publish_as(&self, hub: &Hub, user_id: &str, username: &str, text: &str) -> (u64, u64) {
        // One clock read per message, none per member: the fan-out histogram and the
        // sampled delivery latency both start here.
        let started = Instant::now();
        let number = hub.next_message_number();
        let encode = message_encoder(hub, &self.name, number, user_id, username, text);
        // The room assigns the seq itself, so the log takes every message.
        self.append(hub, Order::Next, Some((number, started)), |seq| {
            encode(seq).1
        })
        .map_or((0, 0), |a| (a.seq, a.delivered))
    }

    /// Orders a message without delivering it, for a backend that keeps every message before
    /// anyone sees it (the durable store): under the room's lock the next seq of the
    /// backend's life is reserved, the event encoded once, and `keep` given it, so a room's
    /// messages reach `keep` in seq order. The backend hands it back through
    /// [`Room::append`] with [`Order::Assigned`]. If `keep` refuses, the seq is given back.
    /// Returns the seq and the members it is for now. [`Busy`] when `keep` refuses or the
    /// room was retired meanwhile. A room whose log holds no backend life (not opened by a
    /// journalling backend) gets the message as in memory.
    pub fn reserve(
        &self,
        hub: &Hub,
        user_id: &str,
        username: &str,
        text: &str,
        keep: impl FnOnce(Reserved) -> Result<(), Busy>,
    ) -> Result<(u64, usize), Busy> {
        let started = Instant::now();
        let number = hub.next_message_number();
        let encode = message_encoder(hub, &self.name, number, user_id, username, text);
        let mut state = self.lock();
        if state.dead {
            // Retired since the caller found it (the admin API looks rooms up by name): its
            // successor, opened from the backend's log, hands out these seqs now.
            return Err(Busy);
        }
        let Some(seq) = state.log.reserve() else {
            drop(state);
            debug_assert!(false, "a journalled room always holds its stored life");
            let (seq, delivered) = self.publish_as(hub, user_id, username, text);
            return Ok((seq, delivered as usize));
        };
        let (timestamp_ms, frame) = encode(seq);
        let members = state.members.len();
        let reserved = Reserved {
            epoch: state.log.epoch().clone(),
            seq,
            timestamp_ms,
            frame,
            probe: (number, started),
        };
        match keep(reserved) {
            Ok(()) => Ok((seq, members)),
            Err(refused) => {
                state.log.unreserve(seq);
                Err(refused)
            }
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
        let mut state = self.lock();
        let (seq, frame) = state
            .log
            .append(order, || hub.history_fair_share(), encode)?;
        let frame = frame.borrow();
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
