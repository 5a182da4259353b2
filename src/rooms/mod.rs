//! Running rooms: the owner thread that drives each sans-IO [`Room`](crate::engine::Room)
//! (schedule, command channel, waking the writers, metrics), the handles the rest of the
//! server reaches rooms through, and the registry that wires room kinds to their config,
//! feeds and moderation.

mod registry;
mod stats;
mod thread;

pub use registry::{ClusterStart, Registry, RegistryError, RoomInfo, TickSummary, Ticker};
pub use stats::{RoomStats, TickDurations};
pub use thread::{DriverConfig, Events, RoomHandle, SendError, spawn_room};
