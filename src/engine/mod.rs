//! The room engine: one owner thread per room driving a sans-IO [`Room`] on a fixed tick.
//!
//! Data path: a session sends a [`Command`] through the room's bounded channel; the room
//! thread drains commands, steps its [`Simulation`], encodes each changed interest group once
//! and hands the shared frames to the members' outboxes.

mod command;
mod registry;
mod room;
mod scheduler;
mod simulation;
mod stats;
mod thread;

pub use command::{Command, JoinRequest, LeaveReason, RoomEvent, RoomQuery, SessionId};
pub use registry::kind_name;
pub use registry::{Registry, RegistryError, RoomInfo, Ticker};
pub use room::{Room, RoomCore, TickTimings};
pub use scheduler::{TickSchedule, TickStart};
pub use simulation::{CommandError, Simulation};
pub use stats::{RoomStats, TickDurations};
pub use thread::{RoomHandle, SendError, spawn_room};

/// Wall-clock time in microseconds since the Unix epoch, as carried in snapshots.
pub fn unix_time_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
