//! The tickroom wire protocol: types generated from `tickroom.proto`.
//!
//! Every WebSocket binary message is one [`v1::ClientMessage`] (client to server) or one
//! [`v1::ServerMessage`] (server to client). docs/protocol.md describes the flow. [`view`] is
//! the reference for applying a game view's keyframes and deltas (protocol 2).

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tickroom.v1.rs"));
}

/// What nodes say to each other over the cluster bus (`bus.proto`); never sent to clients.
#[allow(clippy::all, missing_docs)]
pub mod bus {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/tickroom.bus.v1.rs"));
    }
}

pub mod view;

pub use prost::Message;
