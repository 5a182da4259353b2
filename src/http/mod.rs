//! HTTP routes: the public port (the browser page, WebSocket, room list, ticker REST API)
//! and the operations port (health, metrics, profiling, admin API).

pub mod admin;
pub mod api;
pub mod page;
pub mod pprof;

use std::sync::Arc;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::clock::unix_time_us;
use crate::rooms::RoomInfo;
use crate::transport::{SessionHub, ws_method_not_allowed, ws_upgrade};

#[derive(Serialize)]
struct Rooms {
    rooms: Vec<serde_json::Value>,
    /// Clustered: every node this one knows of, itself first.
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<Vec<NodeRow>>,
}

#[derive(Serialize)]
struct NodeRow {
    node: String,
    public_url: String,
    ready: bool,
}

/// This node's rows of `GET /rooms`; in a cluster each carries `node` (and, with `others`,
/// the other nodes' rows follow).
pub fn room_rows(hub: &SessionHub, others: bool) -> Vec<serde_json::Value> {
    let node = hub.cluster.as_ref().map(|c| c.node.clone());
    let mut rows: Vec<serde_json::Value> = hub
        .registry
        .list()
        .into_iter()
        .map(|r: RoomInfo| {
            let mut v = serde_json::to_value(r).expect("a room row serializes");
            if let (Some(node), Some(obj)) = (&node, v.as_object_mut()) {
                obj.insert("node".into(), node.clone().into());
            }
            v
        })
        .collect();
    if others && let Some(cluster) = &hub.cluster {
        for listing in cluster.listings() {
            rows.extend(listing.rooms);
        }
    }
    rows
}

async fn rooms(State(hub): State<Arc<SessionHub>>) -> Json<Rooms> {
    let nodes = hub.cluster.as_ref().map(|c| {
        let mut nodes = vec![NodeRow {
            node: c.node.clone(),
            public_url: c.public_url.clone(),
            ready: ready(&hub).is_ok(),
        }];
        nodes.extend(c.listings().into_iter().map(|l| NodeRow {
            node: l.node,
            public_url: l.public_url,
            ready: l.ready,
        }));
        nodes
    });
    Json(Rooms {
        rooms: room_rows(&hub, true),
        nodes,
    })
}

/// Routes of the public port: the page (`page`), the WebSocket, the room list and the ticker
/// REST API. A request (body included) must be answered within
/// `timeout` and its body be at most `max_body` bytes.
pub fn public_router(hub: Arc<SessionHub>, timeout: Duration, max_body: usize) -> Router {
    Router::new()
        .merge(page::router())
        .route("/ws", get(ws_upgrade).fallback(ws_method_not_allowed))
        .route("/rooms", get(rooms))
        .merge(api::router())
        .with_state(hub)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(timeout, deadline))
}

/// Answers 408 when a request is not read and answered within its deadline: a client that
/// stalls in the middle of a body must not hold its connection (and the memory of what it
/// sent) for ever.
async fn deadline(State(timeout): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out\n").into_response(),
    }
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

/// Whether this node should get traffic, and if not why.
pub fn ready(hub: &SessionHub) -> Result<(), &'static str> {
    if hub.shutdown.is_cancelled() {
        return Err("shutting down\n");
    }
    if !hub.registry.all_ticking(unix_time_us()) {
        return Err("a room is not ticking on time\n");
    }
    if hub.cluster.as_ref().is_some_and(|c| !c.connected()) {
        return Err("the cluster bus is unreachable\n");
    }
    Ok(())
}

async fn readyz(State(hub): State<Arc<SessionHub>>) -> impl IntoResponse {
    match ready(&hub) {
        Ok(()) => (StatusCode::OK, "ready\n"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
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
        .layer(DefaultBodyLimit::max(OPS_MAX_BODY))
}

/// Largest request body on the operations port (admin API JSON).
const OPS_MAX_BODY: usize = 16 * 1024;
