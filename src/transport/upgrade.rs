//! The WebSocket upgrade on `GET /ws`: checks the handshake, answers 101, and starts the
//! session on the upgraded connection with this server's WebSocket limits.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::listener::ConnGuard;
use super::session::{SessionHub, Start, run_session};
use crate::auth::{self, Identity};

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn reject(status: StatusCode, why: &'static str) -> Response {
    (status, why).into_response()
}

fn reject_owned(status: StatusCode, why: String) -> Response {
    (status, why).into_response()
}

/// The one subprotocol this server speaks, echoed when a client offers it.
const SUBPROTOCOL: &str = "tickroom.v1";

/// Any method but GET on `/ws` (HEAD included: a HEAD cannot upgrade).
pub async fn method_not_allowed() -> Response {
    let mut resp = reject(
        StatusCode::METHOD_NOT_ALLOWED,
        "use GET to open a WebSocket\n",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    resp
}

/// The `session` parameter of the query string, if any.
fn prepared_id(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "session")
        .map(|(_, v)| v)
}

/// `GET /ws`, or `GET /ws?session=ID` to attach to a session prepared over REST.
pub async fn ws_upgrade(
    State(hub): State<Arc<SessionHub>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    if req.method() != Method::GET {
        return method_not_allowed().await;
    }
    let headers = req.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        let mut resp = reject(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks WebSocket: send Connection: Upgrade and Upgrade: websocket\n",
        );
        resp.headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return resp;
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut resp = reject(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Version must be 13\n",
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return reject(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key\n");
    };
    if hub.shutdown.is_cancelled() {
        return reject(StatusCode::SERVICE_UNAVAILABLE, "server is shutting down\n");
    }
    if hub.registry.blocks().ip_blocked(peer.ip()) {
        return reject(StatusCode::FORBIDDEN, "your address is blocked\n");
    }
    // A browser offers subprotocols to pass its token (`bearer.<token>`): the answer must
    // choose one it offered, and the one to offer with it is `tickroom.v1`.
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let subprotocol = !offered.is_empty();
    if subprotocol && !offered.contains(&SUBPROTOCOL) {
        return reject(
            StatusCode::BAD_REQUEST,
            "offer the tickroom.v1 subprotocol (with bearer.<token> to pass a token)\n",
        );
    }
    let prepared = prepared_id(req.uri().query()).map(str::to_owned);
    // A prepared session carries the identity its REST call had; otherwise the token here.
    let identity = if prepared.is_some() {
        None
    } else {
        match hub
            .auth
            .identify(auth::token_of(headers, req.uri().query()))
        {
            Ok(id) => Some(id),
            Err(e) => {
                hub.metrics.auth_failed(e.as_str());
                let mut resp = reject_owned(StatusCode::UNAUTHORIZED, format!("{e}\n"));
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return resp;
            }
        }
    };
    let accept = derive_accept_key(key.as_bytes());
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return reject(
            StatusCode::INTERNAL_SERVER_ERROR,
            "connection cannot be upgraded\n",
        );
    };
    let guard = req.extensions_mut().remove::<ConnGuard>();
    // Ids are hex, so no percent-decoding is needed; anything else simply matches nothing.
    let (start, identity) = match prepared {
        None => (Start::Plain, identity.unwrap_or_else(Identity::anonymous)),
        Some(id) => match hub.prepared.attach(&id, std::time::Instant::now()) {
            Some(p) => {
                let identity = p.identity.clone();
                (Start::Prepared(p), identity)
            }
            None => (Start::UnknownPrepared, Identity::anonymous()),
        },
    };
    let tracker = hub.tracker.clone();
    tracker.spawn(async move {
        // Sessions write to the TCP socket itself (transport::wire), so the upgraded
        // connection is unwrapped back into it.
        let failed = match on_upgrade.await {
            Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    // Copied out and dropped now: `read_buf` shares hyper's whole read
                    // buffer, a page of memory per session if it lived as long as the session.
                    let hyper::upgrade::Parts { io, read_buf, .. } = parts;
                    let read = read_buf.to_vec();
                    drop(read_buf);
                    // Boxed: this task's state would otherwise keep room for the upgrade's
                    // future beside the session's, for the whole session.
                    return Box::pin(run_session(
                        io.into_inner(),
                        read,
                        hub,
                        peer,
                        start,
                        identity,
                        guard,
                    ))
                    .await;
                }
                Err(_) => "the upgraded connection is not a TCP stream".to_owned(),
            },
            Err(e) => e.to_string(),
        };
        if let Start::Prepared(p) = start {
            hub.prepared.detach(&p.id, std::time::Instant::now());
        }
        tracing::debug!(%peer, error = failed, "upgrade failed");
    });
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if subprotocol {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    }
    resp.body(Body::empty())
        .expect("static response parts are valid")
}
