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
    /// Cluster mode: too many commands are waiting for Redis.
    ServerBusy,
}

impl ErrorCode {
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
            ErrorCode::ServerBusy => "server_busy",
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
}

impl CloseCode {
    pub fn code(self) -> u16 {
        self as u16
    }
}
