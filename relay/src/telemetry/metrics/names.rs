//! Metric names; `docs/METRICS.md` documents each (a test checks that it does).

pub const CONNECTIONS_OPEN: &str = "relay_connections_open";
pub const CONNECTIONS_ACCEPTED: &str = "relay_connections_accepted_total";
pub const CONNECTIONS_REJECTED: &str = "relay_connections_rejected_total";
pub const CONNECTIONS_CLOSED: &str = "relay_connections_closed_total";
pub const ROOMS: &str = "relay_rooms";
pub const ROOM_MEMBERS: &str = "relay_room_members";
pub const FRAMES_RECEIVED: &str = "relay_frames_received_total";
pub const MESSAGES_RECEIVED: &str = "relay_messages_received_total";
pub const MESSAGES_ADMIN: &str = "relay_messages_admin_total";
pub const MESSAGES_DELIVERED: &str = "relay_messages_delivered_total";
pub const BYTES_RECEIVED: &str = "relay_bytes_received_total";
pub const BYTES_SENT: &str = "relay_bytes_sent_total";
pub const EVENTS_DROPPED: &str = "relay_events_dropped_total";
pub const ERROR_EVENTS: &str = "relay_error_events_total";
pub const OUTBOUND_QUEUED_BYTES: &str = "relay_outbound_queued_bytes";
pub const OUTBOUND_QUEUE_BYTES: &str = "relay_outbound_queue_bytes";
pub const FANOUT_SECONDS: &str = "relay_fanout_seconds";
pub const DELIVERY_LATENCY_SECONDS: &str = "relay_delivery_latency_seconds";
pub const ROUND_DELAY_SECONDS: &str = "relay_flush_round_delay_seconds";
pub const ROUND_SECONDS: &str = "relay_flush_round_seconds";
pub const ROUND_CONNECTIONS: &str = "relay_flush_round_connections";
pub const READY: &str = "relay_ready";
pub const HISTORY_BYTES: &str = "relay_history_bytes";
pub const HISTORY_EVICTED: &str = "relay_history_evicted_total";
pub const ROOMS_REFUSED: &str = "relay_rooms_refused_total";
pub const ROOMS_EVICTED: &str = "relay_rooms_evicted_total";
pub const FRAME_PAUSES: &str = "relay_frame_pauses_total";
pub const STORE_WRITTEN: &str = "relay_store_messages_written_total";
pub const STORE_TRANSACTIONS: &str = "relay_store_transactions_total";
pub const STORE_WRITE_ERRORS: &str = "relay_store_write_errors_total";
pub const STORE_UNSAVED: &str = "relay_store_unsaved_messages_total";
pub const STORE_TRIMMED: &str = "relay_store_trimmed_messages_total";
pub const STORE_QUEUE: &str = "relay_store_queue";
pub const HOOK_REQUESTS: &str = "relay_hook_requests_total";
pub const HOOK_FAILURES: &str = "relay_hook_failures_total";
pub const HOOK_SECONDS: &str = "relay_hook_duration_seconds";
pub const WEBHOOK_EVENTS: &str = "relay_webhook_events_total";
pub const WEBHOOK_DROPPED: &str = "relay_webhook_dropped_total";
pub const WEBHOOK_BACKLOG: &str = "relay_webhook_backlog";
pub const WEBHOOK_ROOMS_BEHIND: &str = "relay_webhook_rooms_behind";
pub const WEBHOOK_LAG: &str = "relay_webhook_lag_seconds";
/// The standard Prometheus process metrics (read from `/proc/self` at scrape time).
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
pub const PROCESS_RESIDENT_BYTES: &str = "process_resident_memory_bytes";
pub const PROCESS_VIRTUAL_BYTES: &str = "process_virtual_memory_bytes";
pub const PROCESS_THREADS: &str = "process_threads";
/// Reserved for the Redis backplane (recorded with the `metrics` macros).
pub const REDIS_PUBLISH_ERRORS: &str = "relay_redis_publish_errors_total";
pub const REDIS_SUBSCRIBE_ERRORS: &str = "relay_redis_subscribe_errors_total";
pub const REDIS_CONNECTED: &str = "relay_redis_connected";
pub const REDIS_LAG_SECONDS: &str = "relay_redis_lag_seconds";

/// The metrics every relay exports, each with its `# HELP` text.
pub const PER_RELAY: &[(&str, &str)] = &[
    (CONNECTIONS_OPEN, "WebSocket connections open now."),
    (CONNECTIONS_ACCEPTED, "WebSocket connections accepted (upgrade completed)."),
    (CONNECTIONS_REJECTED, "TCP connections dropped before a WebSocket was established, by reason."),
    (CONNECTIONS_CLOSED, "WebSocket connections ended, by the close code the relay sent."),
    (ROOMS, "Rooms in memory, including empty rooms kept for --room-linger."),
    (ROOM_MEMBERS, "Room memberships (a connection in 3 rooms counts 3)."),
    (FRAMES_RECEIVED, "Text frames (commands of every type) received from clients."),
    (MESSAGES_RECEIVED, "Chat messages accepted from clients and fanned out."),
    (MESSAGES_ADMIN, "Server messages published through the admin API."),
    (MESSAGES_DELIVERED, "Chat message frames queued to room members (one per member per message)."),
    (BYTES_RECEIVED, "Bytes read from WebSocket clients."),
    (BYTES_SENT, "Bytes written to WebSocket clients."),
    (EVENTS_DROPPED, "Outbound events not delivered, by kind."),
    (ERROR_EVENTS, "error events sent to clients."),
    (OUTBOUND_QUEUED_BYTES, "Bytes queued for all clients and not yet written, sampled every second."),
    (OUTBOUND_QUEUE_BYTES, "Each connection's queued bytes, sampled every second."),
    (FANOUT_SECONDS, "Time to publish one chat message to every member's queue."),
    (DELIVERY_LATENCY_SECONDS, "Time from accepting a chat message to its write to the last member's socket (1 message in 16)."),
    (ROUND_DELAY_SECONDS, "Time from a flusher round's first queued frame to the round's start (what else the worker ran meanwhile)."),
    (ROUND_SECONDS, "Time one flusher round took to deliver its rooms' events and write its connections."),
    (ROUND_CONNECTIONS, "Connections one flusher round wrote."),
    (READY, "1 while /readyz answers 200, else 0."),
    (HISTORY_BYTES, "Bytes of room history held on the node."),
    (HISTORY_EVICTED, "Messages dropped from history by the room or node byte budget."),
    (ROOMS_REFUSED, "Joins refused with room_limit."),
    (ROOMS_EVICTED, "Lingering rooms retired early to make room under --max-rooms."),
    (FRAME_PAUSES, "Times a connection went over --frame-rate and was paused."),
    (STORE_WRITTEN, "Messages the history store wrote to disk (--data-dir)."),
    (STORE_TRANSACTIONS, "History store transactions that committed (--data-dir); messages written per transaction shows how well rounds are grouped."),
    (STORE_WRITE_ERRORS, "History store transactions that failed (disk full, I/O error); /readyz is not ready until one succeeds."),
    (STORE_UNSAVED, "Messages delivered that the history store could not keep (each is logged with its room and seq)."),
    (STORE_TRIMMED, "Stored messages removed by --retain-messages or --retain-age."),
    (STORE_QUEUE, "Messages waiting to be stored (and then delivered)."),
    (HOOK_REQUESTS, "Requests sent to the app backend's hooks (--publish-hook, --join-hook, --webhook-url), by hook."),
    (HOOK_FAILURES, "Hook requests that failed, by hook and kind (timeout, connect, status, body, invalid)."),
    (HOOK_SECONDS, "Time from asking a hook to having its answer or failure, by hook."),
    (WEBHOOK_EVENTS, "Webhook events the backend took (answered 2xx)."),
    (WEBHOOK_DROPPED, "Webhook events given up, by reason (each drop is also logged)."),
    (WEBHOOK_BACKLOG, "Webhook events waiting in memory, the batch being sent included."),
    (WEBHOOK_ROOMS_BEHIND, "Rooms whose stored log is ahead of what the webhooks delivered (--data-dir)."),
    (WEBHOOK_LAG, "Age of each delivered webhook batch's oldest event when the backend took it."),
];

/// The process metrics (Linux only: left out where `/proc` is missing), each with its
/// `# HELP` text.
pub const PROCESS: &[(&str, &str)] = &[
    (
        PROCESS_CPU_SECONDS,
        "Total user and system CPU time spent in seconds.",
    ),
    (PROCESS_RESIDENT_BYTES, "Resident memory size in bytes."),
    (PROCESS_VIRTUAL_BYTES, "Virtual memory size in bytes."),
    (PROCESS_THREADS, "Number of OS threads in the process."),
];

/// The names reserved for the Redis backplane, each with its `# HELP` text.
pub const REDIS: &[(&str, &str)] = &[
    (REDIS_PUBLISH_ERRORS, "Failed publishes to Redis."),
    (
        REDIS_SUBSCRIBE_ERRORS,
        "Failed or lost Redis subscriptions.",
    ),
    (REDIS_CONNECTED, "1 while connected to Redis, else 0."),
    (
        REDIS_LAG_SECONDS,
        "Time from a message's publish on one node to its receipt from Redis on this one.",
    ),
];
