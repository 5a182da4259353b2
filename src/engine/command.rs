//! Commands a room thread receives from sessions and from the server.

use std::sync::Arc;

use tickroom_proto::v1::{Quote, client_message::Body};

use crate::feed::QuoteUpdate;
use crate::outbox::{CloseReason, Outbox};

/// Process-unique session number, also sent to the client in `Welcome`.
pub type SessionId = u64;

#[derive(Debug)]
pub enum Command {
    Join(JoinRequest),
    Leave {
        session: SessionId,
        reason: LeaveReason,
    },
    /// A room-bound client message (input, and later subscribe or chat).
    Client {
        session: SessionId,
        body: Body,
    },
    /// Something that happened outside the sessions (a feed's quotes), for the simulation.
    Event(RoomEvent),
    /// A question about the room's state, answered from the room thread so the answer is
    /// as consistent as a tick (`GET /api/v1/quotes`).
    Query(RoomQuery),
    /// Stop the room: close every member's outbox and end the thread.
    Shutdown,
}

/// Input to a room from outside its sessions. Kinds that do not take an event ignore it.
#[derive(Debug)]
pub enum RoomEvent {
    /// New values from a ticker room's feed, in feed order.
    Quotes(Vec<QuoteUpdate>),
    /// A system notice for a chat room (admin API).
    Notice { text: String },
    /// A gift announcement for a chat room (admin API).
    Gift {
        from: String,
        gift: String,
        count: u32,
    },
}

/// A question for the room thread; the answer goes back on `reply`. A room that cannot
/// answer drops `reply`, which the asker sees as an error.
#[derive(Debug)]
pub enum RoomQuery {
    /// Current quotes of a ticker room: the listed symbol numbers, or all when `None`.
    Quotes {
        symbols: Option<Vec<u32>>,
        reply: tokio::sync::oneshot::Sender<Vec<Quote>>,
    },
}

#[derive(Debug)]
pub struct JoinRequest {
    pub session: SessionId,
    pub outbox: Arc<Outbox>,
    /// Empty when the client gave none.
    pub resume_token: String,
    /// Display name (chat rooms); empty for an anonymous viewer.
    pub name: String,
    /// Told whether the join succeeded, so the session knows which room it is in.
    pub reply: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// Why a session left a room; the simulation decides what that means for its objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaveReason {
    /// The client asked to leave (or joined another room).
    Left,
    /// The connection ended.
    Closed(CloseReason),
}

impl LeaveReason {
    /// True when the client may come back with its resume token: the connection was lost
    /// rather than ended on purpose by either side.
    pub fn is_resumable(self) -> bool {
        matches!(
            self,
            LeaveReason::Closed(
                CloseReason::ClientClosed
                    | CloseReason::PeerGone
                    | CloseReason::HeartbeatTimeout
                    | CloseReason::SlowConsumer
            )
        )
    }
}
