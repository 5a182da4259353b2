//! The contract between the engine and a room kind (game, ticker, chat).

use std::borrow::Cow;

use tickroom_proto::v1::{ErrorCode, RoomKind, Welcome, client_message::Body};

use super::{JoinRequest, LeaveReason, RoomCore, SessionId};

/// A command the simulation refused; the session gets it as an `Error` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The event type of a room kind that takes none from outside its sessions.
#[derive(Debug)]
pub enum NoEvent {}

/// A room's rules. The room calls these in a fixed order each tick: `join`, `leave`,
/// `command` and `event` for every queued command in arrival order, then `step`, then
/// `replicate`. Everything the simulation says to clients goes through `ctx`, which encodes
/// each message once.
pub trait Simulation: Send + 'static {
    /// What the room takes from outside its sessions (quotes, notices, questions).
    type Event: Send + std::fmt::Debug + 'static;

    fn kind(&self) -> RoomKind;

    /// Admits a session (it is already a member of `ctx` and may be sent to). The engine
    /// fills the returned `Welcome`'s session id, room, kind and tick rate.
    fn join(&mut self, ctx: &mut RoomCore, join: &JoinRequest) -> Result<Welcome, CommandError>;

    /// The session is gone from `ctx`; release or park what it owned.
    fn leave(&mut self, ctx: &mut RoomCore, session: SessionId, reason: LeaveReason);

    /// A room-bound client message from a member.
    fn command(
        &mut self,
        ctx: &mut RoomCore,
        session: SessionId,
        body: Body,
    ) -> Result<(), CommandError>;

    /// An event from outside the sessions.
    fn event(&mut self, ctx: &mut RoomCore, event: Self::Event);

    /// Advances the state by one tick.
    fn step(&mut self, ctx: &mut RoomCore);

    /// Emits this tick's changes: reliable events and the latest snapshot of each changed
    /// interest group.
    fn replicate(&mut self, ctx: &mut RoomCore);

    /// Gives back what per-session state a crowd left behind (see [`crate::engine::shrink`]);
    /// called from the room's sweep, about once a second.
    fn compact(&mut self) {}
}
