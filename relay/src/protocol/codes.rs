//! Stable error codes and close codes; each is documented in `docs/PROTOCOL.md`.

/// The `code` of an `error` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidJson,
    MissingField,
    UnknownType,
    InvalidRoom,
    InvalidUsername,
    NotJoined,
    TooManyRooms,
    TextTooLong,
    EmptyText,
    BinaryNotSupported,
    /// Authentication is on and the token's `rooms` claim does not list the room, or the
    /// join hook (`--join-hook`) denied the join.
    ForbiddenRoom,
    /// Over the connection's message or command rate; the command was not carried out.
    RateLimited,
    /// Cluster mode: too many commands are waiting for Redis.
    ServerBusy,
    /// A join would create a room past the node's or the address's room budget.
    RoomLimit,
    /// A `history` command with a `limit` outside 1-100 or a `before` of 0.
    InvalidHistory,
    /// A `ref` that is not 1-64 characters.
    InvalidRef,
    /// An `edit`, `delete` or `replyTo` naming a seq that is not a message of the room (or
    /// a deleted one).
    NoSuchMessage,
    /// An `edit` or `delete` of someone else's message.
    NotAuthor,
    /// A `read` without a `seq`, or with a `seq` of 0.
    InvalidRead,
    /// The publish hook (`--publish-hook`) refused the message or edit; the error's
    /// `message` is the backend's reason.
    Rejected,
    /// A hook (`--publish-hook`, `--join-hook`) did not answer in time or could not be
    /// reached, and `--hook-failure closed` refuses what it could not check.
    HookUnavailable,
}

impl ErrorCode {
    /// Every code (the documentation test walks it; `position` keeps it complete).
    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::InvalidJson,
        ErrorCode::MissingField,
        ErrorCode::UnknownType,
        ErrorCode::InvalidRoom,
        ErrorCode::InvalidUsername,
        ErrorCode::NotJoined,
        ErrorCode::TooManyRooms,
        ErrorCode::TextTooLong,
        ErrorCode::EmptyText,
        ErrorCode::BinaryNotSupported,
        ErrorCode::ForbiddenRoom,
        ErrorCode::RateLimited,
        ErrorCode::ServerBusy,
        ErrorCode::RoomLimit,
        ErrorCode::InvalidHistory,
        ErrorCode::InvalidRef,
        ErrorCode::NoSuchMessage,
        ErrorCode::NotAuthor,
        ErrorCode::InvalidRead,
        ErrorCode::Rejected,
        ErrorCode::HookUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::EmptyText => "empty_text",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::ForbiddenRoom => "forbidden_room",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::RoomLimit => "room_limit",
            ErrorCode::InvalidHistory => "invalid_history",
            ErrorCode::InvalidRef => "invalid_ref",
            ErrorCode::NoSuchMessage => "no_such_message",
            ErrorCode::NotAuthor => "not_author",
            ErrorCode::InvalidRead => "invalid_read",
            ErrorCode::Rejected => "rejected",
            ErrorCode::HookUnavailable => "hook_unavailable",
        }
    }
}

/// WebSocket close codes the relay sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    Normal = 1000,
    GoingAway = 1001,
    Protocol = 1002,
    InvalidPayload = 1007,
    TooBig = 1009,
    HeartbeatTimeout = 4001,
    SlowConsumer = 4008,
    /// Closed through the admin API (`docs/ADMIN.md`).
    DisconnectedByAdmin = 4000,
    /// Refused by the rate limits too often (`--rate-limit-strikes`).
    RateLimited = 4029,
    /// The connection's token expired.
    TokenExpired = 4401,
}

impl CloseCode {
    /// Every code, for metrics labels.
    pub const ALL: [CloseCode; 10] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::Protocol,
        CloseCode::InvalidPayload,
        CloseCode::TooBig,
        CloseCode::HeartbeatTimeout,
        CloseCode::SlowConsumer,
        CloseCode::DisconnectedByAdmin,
        CloseCode::RateLimited,
        CloseCode::TokenExpired,
    ];

    pub fn code(self) -> u16 {
        self as u16
    }

    /// A stable snake_case name (the `reason` label of `relay_connections_closed_total`).
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "going_away",
            CloseCode::Protocol => "protocol_error",
            CloseCode::InvalidPayload => "invalid_payload",
            CloseCode::TooBig => "message_too_big",
            CloseCode::HeartbeatTimeout => "heartbeat_timeout",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::DisconnectedByAdmin => "disconnected_by_admin",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::TokenExpired => "token_expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An exhaustive match: a new variant fails to compile here until it is placed, and the
    /// assertions then fail until `ALL` lists it in that place.
    fn error_position(code: ErrorCode) -> usize {
        match code {
            ErrorCode::InvalidJson => 0,
            ErrorCode::MissingField => 1,
            ErrorCode::UnknownType => 2,
            ErrorCode::InvalidRoom => 3,
            ErrorCode::InvalidUsername => 4,
            ErrorCode::NotJoined => 5,
            ErrorCode::TooManyRooms => 6,
            ErrorCode::TextTooLong => 7,
            ErrorCode::EmptyText => 8,
            ErrorCode::BinaryNotSupported => 9,
            ErrorCode::ForbiddenRoom => 10,
            ErrorCode::RateLimited => 11,
            ErrorCode::ServerBusy => 12,
            ErrorCode::RoomLimit => 13,
            ErrorCode::InvalidHistory => 14,
            ErrorCode::InvalidRef => 15,
            ErrorCode::NoSuchMessage => 16,
            ErrorCode::NotAuthor => 17,
            ErrorCode::InvalidRead => 18,
            ErrorCode::Rejected => 19,
            ErrorCode::HookUnavailable => 20,
        }
    }

    fn close_position(code: CloseCode) -> usize {
        match code {
            CloseCode::Normal => 0,
            CloseCode::GoingAway => 1,
            CloseCode::Protocol => 2,
            CloseCode::InvalidPayload => 3,
            CloseCode::TooBig => 4,
            CloseCode::HeartbeatTimeout => 5,
            CloseCode::SlowConsumer => 6,
            CloseCode::DisconnectedByAdmin => 7,
            CloseCode::RateLimited => 8,
            CloseCode::TokenExpired => 9,
        }
    }

    #[test]
    fn all_lists_every_code_once() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(error_position(*code), i, "{code:?}");
        }
        for (i, code) in CloseCode::ALL.iter().enumerate() {
            assert_eq!(close_position(*code), i, "{code:?}");
        }
    }
}
