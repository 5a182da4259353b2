//! The room engine, sans-IO: a [`Room`] is a plain value fed commands and ticks, which steps
//! its [`Simulation`], encodes each changed interest group once and puts the shared frames in
//! the members' [`Outbox`]es. What else it produced comes back as an [`Output`] for its
//! driver (the owner thread in `rooms`) to act on. No threads, sockets, async runtime,
//! metrics recorder or room kinds in here.

mod command;
mod outbox;
mod room;
mod scheduler;
mod simulation;
mod spare;
#[cfg(test)]
pub(crate) mod testing;

pub use command::{Command, JoinReply, JoinRequest, LeaveReason, SessionCommand, SessionId};
pub use outbox::{Closed, Drain, Enqueued, GroupId, Outbox, SlotKey, Taken, wake_drains};
pub use room::{Output, Room, RoomCore, Variant};
pub use scheduler::{TickSchedule, TickStart};
pub use simulation::{CommandError, NoEvent, Simulation};
pub use spare::shrink;

use tickroom_proto::v1::RoomKind;

/// A room kind's name in `/rooms`, logs and metric labels.
pub fn kind_name(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Game => "game",
        RoomKind::Ticker => "ticker",
        RoomKind::Chat => "chat",
        RoomKind::Unspecified => "unspecified",
    }
}
