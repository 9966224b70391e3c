//! Counters of what the node did, read by tests, logs and the metrics endpoint (`metrics`).
//!
//! Each is bumped once per event or per fan-out, never once per recipient.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A point-in-time copy of [`Stats`].
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

stats! {
    /// WebSocket connections accepted (after the upgrade).
    connections_opened,
    /// WebSocket connections ended.
    connections_closed,
    /// Text frames received from clients.
    frames_in,
    /// Chat messages from clients accepted and fanned out (admin messages not included).
    messages_published,
    /// Message frames queued to members (sum of room sizes over messages).
    deliveries,
    /// `error` events sent.
    errors_sent,
    /// Typing events dropped because a member's queue was under pressure.
    typing_dropped,
    /// Connections closed with 4008.
    slow_consumer_closes,
    /// Connections closed with 4001.
    heartbeat_closes,
    /// Connections closed with 1002, 1007 or 1009.
    protocol_closes,
    /// Bytes read from clients' sockets (counted per read call).
    bytes_in,
    /// Bytes written to clients' sockets (counted per wake-up of a writer, not per frame).
    bytes_out,
    /// Queued frames thrown away when a connection was closed without sending them.
    frames_discarded,
    /// Server messages published through the admin API.
    admin_messages,
    /// Commands refused with `rate_limited`.
    rate_limited,
    /// Connections closed with 4029.
    rate_limit_closes,
    /// Times a connection went over its frame budget and stopped being read for a while.
    frame_pauses,
    /// Messages the history store wrote to disk.
    store_written,
    /// Transactions of the history store that committed (messages written per transaction
    /// is how well a round's messages are grouped).
    store_transactions,
    /// Transactions of the history store that failed (disk full, I/O error).
    store_write_errors,
    /// Messages delivered that the history store could not keep.
    store_unsaved,
    /// Stored messages removed by --retain-messages or --retain-age.
    store_trimmed,
}
