//! What client-sim, the integration tests and the benches share instead of each keeping a
//! copy: the HTTP client ([`http`]), Prometheus text ([`prom`]), the machine and its
//! processes ([`host`]: `/proc`, the open-file limit), a WebSocket client that reads only
//! when asked ([`rawws`]), and what game snapshots cost ([`sizes`]).

pub mod host;
pub mod http;
pub mod prom;
pub mod rawws;
pub mod sizes;
