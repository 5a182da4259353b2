//! CPU profiling on the operations port (pprof-rs): pprof protobuf profiles and SVG flamegraphs.

use axum::Router;

/// Routes under `/debug/pprof/`.
pub fn router() -> Router {
    Router::new()
}
