//! tickroom: a fixed-tick multiplayer simulation server. Clients speak protobuf over
//! WebSocket; every room runs on one engine (an owner thread per room, encode once per
//! interest group, one socket write per session per tick).
//!
//! Data path: [`transport`] accepts and upgrades → a session's reader sends
//! [`engine::Command`]s to a room → the room thread steps its [`sim`] and encodes frames once
//! → [`outbox::Outbox`] → the session's writer.

pub mod config;
pub mod engine;
pub mod feed;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod moderation;
pub mod outbox;
pub mod rate_limit;
pub mod server;
pub mod sim;
pub mod transport;

pub use config::Config;
pub use server::{Server, ServerError};
pub use tickroom_proto as proto;
