//! Transport: HTTP listener, WebSocket upgrade, each session's reader and writer tasks, the
//! socket's write side, and the flushers that write the rooms' frames. It moves bytes
//! between sockets and rooms and knows nothing about game rules.

mod admission;
mod close;
mod flusher;
mod framing;
mod listener;
mod prepared;
mod session;
mod upgrade;
mod wire;

pub use admission::{AdmissionLimits, Refusal};
pub use close::CloseReason;
pub use listener::{ConnGuard, Serving, serve};
pub use prepared::{Full, Prepared, PreparedSessions};
pub use session::{SessionHub, Start, run_session, ws_config};
pub use upgrade::{method_not_allowed as ws_method_not_allowed, ws_upgrade};
pub use wire::Deferred;
