//! What client-sim, the integration tests and the benches share instead of each keeping a
//! copy: the HTTP client ([`http`]), Prometheus text ([`prom`]), the machine and its
//! processes ([`host`]: `/proc`, the open-file limit), and a WebSocket client that reads only
//! when asked ([`rawws`]).

pub mod host;
pub mod http;
pub mod prom;
pub mod rawws;
