//! Why a connection ends, as the wire says it: each [`CloseReason`] has its WebSocket close
//! code and text (docs/protocol.md) and the engine's [`LeaveReason`] it means for the room.

use crate::engine::LeaveReason;

/// Why a session ends. The first reason given wins; later ones are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client left (close frame or end of stream).
    ClientClosed,
    /// The socket failed or the peer vanished.
    PeerGone,
    /// No frame from the peer within the idle timeout.
    HeartbeatTimeout,
    /// The reliable queue overflowed.
    SlowConsumer,
    /// The client did not take its frames for `stall_timeout_ms` (socket full or its
    /// flow-control window never reopened).
    Stalled,
    /// The client kept exceeding the message rate limit.
    RateAbuse,
    /// A message larger than the configured maximum.
    MessageTooBig,
    /// A text frame, which this protocol does not use.
    TextFrame,
    /// Bytes kept arriving for `message_timeout_ms` without completing a message.
    MessageTimeout,
    /// A WebSocket protocol violation.
    ProtocolError,
    /// Another connection resumed this session's avatar.
    ResumedElsewhere,
    /// The server is shutting down.
    ShuttingDown,
    /// The room the session was in stopped.
    RoomClosed,
    /// `/ws?session=ID` named a prepared session that does not exist or expired.
    UnknownSession,
    /// The session's token expired.
    TokenExpired,
}

impl CloseReason {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [CloseReason; 15] = [
        CloseReason::ClientClosed,
        CloseReason::PeerGone,
        CloseReason::HeartbeatTimeout,
        CloseReason::SlowConsumer,
        CloseReason::Stalled,
        CloseReason::RateAbuse,
        CloseReason::MessageTooBig,
        CloseReason::TextFrame,
        CloseReason::MessageTimeout,
        CloseReason::ProtocolError,
        CloseReason::ResumedElsewhere,
        CloseReason::ShuttingDown,
        CloseReason::RoomClosed,
        CloseReason::UnknownSession,
        CloseReason::TokenExpired,
    ];

    /// The WebSocket close code and reason text sent to the client (docs/protocol.md).
    pub fn close_code(self) -> (u16, &'static str) {
        match self {
            CloseReason::ClientClosed => (1000, "bye"),
            CloseReason::PeerGone => (1001, "connection lost"),
            CloseReason::HeartbeatTimeout => (4001, "heartbeat timeout"),
            CloseReason::SlowConsumer => (4000, "slow consumer: reliable queue overflow"),
            CloseReason::Stalled => (4000, "slow consumer: not reading"),
            CloseReason::RateAbuse => (1008, "message rate limit exceeded"),
            CloseReason::MessageTooBig => (1009, "message too big"),
            CloseReason::TextFrame => (1003, "text frames are not supported; send binary protobuf"),
            CloseReason::MessageTimeout => (1008, "message not completed in time"),
            CloseReason::ProtocolError => (1002, "websocket protocol error"),
            CloseReason::ResumedElsewhere => (4002, "session resumed by another connection"),
            CloseReason::ShuttingDown => (1001, "server shutting down"),
            CloseReason::RoomClosed => (1001, "room closed"),
            CloseReason::UnknownSession => (4003, "unknown or expired session id"),
            CloseReason::TokenExpired => (4004, "token expired"),
        }
    }

    /// A short stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::PeerGone => "peer_gone",
            CloseReason::HeartbeatTimeout => "timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Stalled => "stalled",
            CloseReason::RateAbuse => "rate_abuse",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::TextFrame => "text_frame",
            CloseReason::MessageTimeout => "message_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::ResumedElsewhere => "resumed_elsewhere",
            CloseReason::ShuttingDown => "shutdown",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::UnknownSession => "unknown_session",
            CloseReason::TokenExpired => "token_expired",
        }
    }

    /// What the end of the connection means for the room the session was in.
    pub fn leave_reason(self) -> LeaveReason {
        match self {
            CloseReason::ClientClosed | CloseReason::PeerGone => LeaveReason::Disconnected,
            CloseReason::HeartbeatTimeout => LeaveReason::TimedOut,
            CloseReason::SlowConsumer | CloseReason::Stalled => LeaveReason::SlowConsumer,
            CloseReason::ResumedElsewhere => LeaveReason::Replaced,
            CloseReason::ShuttingDown | CloseReason::RoomClosed => LeaveReason::Shutdown,
            CloseReason::RateAbuse
            | CloseReason::MessageTooBig
            | CloseReason::TextFrame
            | CloseReason::MessageTimeout
            | CloseReason::ProtocolError
            | CloseReason::UnknownSession
            | CloseReason::TokenExpired => LeaveReason::Refused,
        }
    }

    /// How the wire says an end the room decided (it closed the session's outbox).
    pub fn from_room(reason: LeaveReason) -> Self {
        match reason {
            LeaveReason::SlowConsumer => CloseReason::SlowConsumer,
            LeaveReason::Replaced => CloseReason::ResumedElsewhere,
            LeaveReason::Shutdown => CloseReason::RoomClosed,
            LeaveReason::TimedOut => CloseReason::HeartbeatTimeout,
            LeaveReason::Refused => CloseReason::ProtocolError,
            LeaveReason::Left | LeaveReason::Disconnected => CloseReason::PeerGone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_room_can_end_maps_back_to_its_close() {
        for reason in [
            CloseReason::SlowConsumer,
            CloseReason::ResumedElsewhere,
            CloseReason::RoomClosed,
            CloseReason::HeartbeatTimeout,
        ] {
            assert_eq!(CloseReason::from_room(reason.leave_reason()), reason);
        }
    }

    #[test]
    fn resumable_ends_are_the_lost_connections() {
        let resumable: Vec<_> = CloseReason::ALL
            .into_iter()
            .filter(|r| r.leave_reason().is_resumable())
            .collect();
        assert_eq!(
            resumable,
            [
                CloseReason::ClientClosed,
                CloseReason::PeerGone,
                CloseReason::HeartbeatTimeout,
                CloseReason::SlowConsumer,
                CloseReason::Stalled
            ]
        );
    }
}
