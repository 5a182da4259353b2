//! tickroom: a fixed-tick multiplayer simulation server. Clients speak protobuf over
//! WebSocket; every room runs on one engine (an owner thread per room, encode once per
//! interest group, one socket write per session per tick).
//!
//! Data path: [`transport`] accepts and upgrades → a session's reader sends
//! [`engine::SessionCommand`]s to a room ([`rooms`]) → the room's owner thread drives the
//! sans-IO [`engine::Room`], which steps its [`sim`] and encodes frames once into the
//! members' [`engine::Outbox`]es → the driver wakes the transport's flushers → one `writev`
//! per session.

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod feed;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod moderation;
pub mod rate_limit;
pub mod rooms;
pub mod server;
pub mod sim;
pub mod transport;

pub use config::Config;
pub use server::{Server, ServerError};
pub use tickroom_proto as proto;
