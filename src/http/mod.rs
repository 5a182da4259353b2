//! HTTP routes: the public port (WebSocket, room list, ticker REST API) and the operations
//! port (health, metrics, profiling, admin API).

pub mod admin;
pub mod api;
pub mod pprof;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::clock::unix_time_us;
use crate::rooms::RoomInfo;
use crate::transport::{SessionHub, ws_method_not_allowed, ws_upgrade};

#[derive(Serialize)]
struct Rooms {
    rooms: Vec<RoomInfo>,
}

async fn rooms(State(hub): State<Arc<SessionHub>>) -> Json<Rooms> {
    Json(Rooms {
        rooms: hub.registry.list(),
    })
}

async fn index() -> &'static str {
    "tickroom: open a WebSocket at /ws and send protobuf ClientMessage frames (docs/protocol.md); GET /rooms lists rooms; ticker rooms: POST /api/v1/sessions, GET /api/v1/quotes\n"
}

/// Routes of the public port.
pub fn public_router(hub: Arc<SessionHub>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ws", get(ws_upgrade).fallback(ws_method_not_allowed))
        .route("/rooms", get(rooms))
        .merge(api::router())
        .with_state(hub)
}

async fn metrics(State(hub): State<Arc<SessionHub>>) -> impl IntoResponse {
    // The profiler is one per process (pprof-rs), so this says whether anyone's is running.
    hub.metrics
        .gauge("tickroom_cpu_profile_running", &[])
        .set(f64::from(u8::from(pprof::running())));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        hub.metrics.render(hub.active()),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(hub): State<Arc<SessionHub>>) -> impl IntoResponse {
    if hub.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    if !hub.registry.all_ticking(unix_time_us()) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "a room is not ticking on time\n",
        );
    }
    (StatusCode::OK, "ready\n")
}

/// Routes of the operations port. `admin_token` `None` leaves the admin API disabled.
pub fn ops_router(hub: Arc<SessionHub>, admin_token: Option<String>) -> Router {
    let admin = admin::router(admin::AdminState {
        hub: hub.clone(),
        token: admin_token.map(Into::into),
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/readyz", get(readyz))
        .route("/rooms", get(rooms))
        .with_state(hub)
        .merge(pprof::router())
        .merge(admin)
}
