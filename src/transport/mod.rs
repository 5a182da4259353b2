//! Transport: HTTP listener, WebSocket upgrade, and each session's reader and writer tasks.
//! It moves bytes between sockets and rooms and knows nothing about game rules.

mod listener;
mod prepared;
mod session;
mod upgrade;

pub use listener::serve;
pub use prepared::{Full, Prepared, PreparedSessions};
pub use session::{SessionHub, Start, run_session};
pub use upgrade::{ConnGuard, ws_config, ws_upgrade};
