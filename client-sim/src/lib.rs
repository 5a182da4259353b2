//! client-sim as a library: the [`toolkit`] the tools share (client-sim itself, the server's
//! integration tests, the benches). The swarm and its scenarios live in the binary.

pub mod toolkit;
