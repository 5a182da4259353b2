//! What a room receives: session commands (join, leave, a client message), the simulation's
//! own events, and the order to stop. Why a session left is the engine's own [`LeaveReason`];
//! how a connection ended on the wire is the transport's business.

use std::sync::Arc;

use tickroom_proto::v1::client_message::Body;

use super::Outbox;

/// Server-unique session number, also sent to the client in `Welcome`.
pub type SessionId = u64;

/// A command for a room whose simulation takes events of type `E`.
#[derive(Debug)]
pub enum Command<E> {
    /// From a session (through [`SessionCommand`], which every room kind takes).
    Session(SessionCommand),
    /// Something that happened outside the sessions, in the simulation's own terms (a
    /// feed's quotes, an admin notice, a question about the state).
    Event(E),
    /// Stop the room: close every member's outbox and end.
    Shutdown,
}

/// What a session asks of whichever room it is in; the same for every room kind.
#[derive(Debug)]
pub enum SessionCommand {
    Join(JoinRequest),
    Leave {
        session: SessionId,
        reason: LeaveReason,
    },
    /// A room-bound client message (input, subscribe, chat).
    Client {
        session: SessionId,
        body: Body,
    },
}

impl<E> From<SessionCommand> for Command<E> {
    fn from(c: SessionCommand) -> Self {
        Command::Session(c)
    }
}

/// Told whether a join succeeded, on the room's thread: the asker decides how to pass it on
/// (a session wakes its reader), so the engine needs no async runtime.
pub type JoinReply = Box<dyn FnOnce(bool) + Send>;

pub struct JoinRequest {
    pub session: SessionId,
    pub outbox: Arc<Outbox>,
    /// Empty when the client gave none.
    pub resume_token: String,
    /// Display name (chat rooms); empty for an anonymous viewer.
    pub name: String,
    /// `Join.protocol`: the wire format the client reads (game rooms).
    pub protocol: u32,
    pub reply: Option<JoinReply>,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("session", &self.session)
            .field("name", &self.name)
            .field("resume_token", &!self.resume_token.is_empty())
            .finish_non_exhaustive()
    }
}

/// Why a session left a room (and why its outbox closed); the simulation decides what that
/// means for its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LeaveReason {
    /// The client asked to leave (or joined another room).
    Left,
    /// The connection ended: the client closed it or it was lost.
    Disconnected,
    /// The peer stopped answering within the idle timeout.
    TimedOut,
    /// The client did not take its reliable frames fast enough.
    SlowConsumer,
    /// Another connection resumed this session's place.
    Replaced,
    /// The room or the server stopped.
    Shutdown,
    /// The server ended the connection over what the client sent (protocol error, abuse).
    Refused,
}

impl LeaveReason {
    /// Every reason, for metrics that start at zero.
    pub const ALL: [LeaveReason; 7] = [
        LeaveReason::Left,
        LeaveReason::Disconnected,
        LeaveReason::TimedOut,
        LeaveReason::SlowConsumer,
        LeaveReason::Replaced,
        LeaveReason::Shutdown,
        LeaveReason::Refused,
    ];

    /// True when the client may come back with its resume token: the connection was lost
    /// rather than ended on purpose by either side.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            LeaveReason::Disconnected | LeaveReason::TimedOut | LeaveReason::SlowConsumer
        )
    }

    /// A short stable name (logs, metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "leave",
            LeaveReason::Disconnected => "disconnect",
            LeaveReason::TimedOut => "timeout",
            LeaveReason::SlowConsumer => "slow_consumer",
            LeaveReason::Replaced => "kicked",
            LeaveReason::Shutdown => "shutdown",
            LeaveReason::Refused => "error",
        }
    }
}
