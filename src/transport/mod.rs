//! Transport: HTTP listener, WebSocket upgrade, each session's reader and writer tasks, and
//! the flushers that write the rooms' frames.
//! It moves bytes between sockets and rooms and knows nothing about game rules.

mod flusher;
mod listener;
mod prepared;
mod session;
mod upgrade;
mod wire;

pub use listener::serve;
pub use prepared::{Full, Prepared, PreparedSessions};
pub use session::{SessionHub, Start, run_session};
pub use upgrade::{ConnGuard, ws_config, ws_upgrade};
