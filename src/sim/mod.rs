//! Room kinds: the simulations the engine runs. Each implements
//! [`Simulation`](crate::engine::Simulation) and knows nothing about sockets.

pub mod chat;
pub mod game;
#[cfg(test)]
mod props;
pub mod ticker;
pub mod view;
