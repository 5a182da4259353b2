//! The REST API of ticker rooms on the public port: prepare a streaming session
//! (`POST /api/v1/sessions`) and read current quotes (`GET /api/v1/quotes`). Errors are JSON
//! `{"error": ...}` with a status that says whose fault it is.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get, routing::post};
use serde::{Deserialize, Serialize};
use tickroom_proto::v1::Quote;

use crate::rooms::{RegistryError, SendError, Ticker};
use crate::sim::ticker::{TickerEvent, name_list};
use crate::transport::{Full, SessionHub};

/// How long a quotes request waits for the room thread (normally under one tick).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// A failed API call: the status and a JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: String,
    unknown: Vec<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            unknown: Vec::new(),
        }
    }

    fn unknown_symbols(unknown: Vec<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: format!("unknown symbols: {}", name_list(&unknown)),
            unknown,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    unknown: &'a [String],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: &self.error,
            unknown: &self.unknown,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match e {
            RegistryError::NotFound(_) | RegistryError::NoTicker => StatusCode::NOT_FOUND,
            RegistryError::NotTicker(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

/// Checks a symbol list against the room: present, all known, within the per-session limit
/// once duplicates are dropped. Returns the distinct names in the order given.
fn check_symbols(ticker: &Ticker, symbols: Vec<String>) -> Result<Vec<String>, ApiError> {
    if symbols.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "symbols: list at least one symbol",
        ));
    }
    let mut seen = HashSet::new();
    let distinct: Vec<String> = symbols
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect();
    // Unknown names first, then the limit: the same order as a WebSocket Subscribe.
    ticker
        .symbols
        .resolve(&distinct)
        .map_err(ApiError::unknown_symbols)?;
    if distinct.len() > ticker.max_symbols_per_session {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "symbols: {} exceeds the limit of {} per session",
                distinct.len(),
                ticker.max_symbols_per_session
            ),
        ));
    }
    Ok(distinct)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    symbols: Vec<String>,
    #[serde(default)]
    room: Option<String>,
}

#[derive(Serialize)]
struct SessionCreated {
    session_id: String,
    ws_url: String,
    room: String,
    symbols: Vec<String>,
    expires_in_ms: u64,
}

/// `POST /api/v1/sessions` with `{"symbols": [...], "room": "..."}`.
async fn create_session(
    State(hub): State<Arc<SessionHub>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    // Who asks: the WebSocket that attaches later is this client, with its rights.
    let identity = hub
        .auth
        .identify(crate::auth::token_of(&headers, uri.query()))
        .map_err(|e| {
            hub.metrics.auth_failed(e.as_str());
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        })?;
    let req: NewSession = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body must be JSON {{\"symbols\": [...], \"room\": \"...\"}}: {e}"),
        )
    })?;
    let ticker = hub.registry.ticker(req.room.as_deref())?;
    if !identity.may(crate::auth::Perm::Subscribe)
        || !identity.may_enter(&ticker.room.name, "ticker")
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "your token does not allow subscribing in room {:?}",
                &*ticker.room.name
            ),
        ));
    }
    let symbols = check_symbols(&ticker, req.symbols)?;
    let ids = ticker
        .symbols
        .resolve(&symbols)
        .map_err(ApiError::unknown_symbols)?;
    let id = hub
        .prepared
        .create(
            ticker.room.name.clone(),
            ids,
            peer.ip(),
            identity,
            std::time::Instant::now(),
        )
        .map_err(|e| {
            let status = match e {
                Full::All => StatusCode::SERVICE_UNAVAILABLE,
                Full::ForAddress(_) => StatusCode::TOO_MANY_REQUESTS,
            };
            ApiError::new(status, e.to_string())
        })?;
    // The address the client reached us at is the one its WebSocket should use.
    let ws_url = match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("ws://{host}/ws?session={id}"),
        None => format!("/ws?session={id}"),
    };
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            session_id: id,
            ws_url,
            room: ticker.room.name.to_string(),
            symbols,
            expires_in_ms: hub.prepared.ttl().as_millis() as u64,
        }),
    ))
}

#[derive(Deserialize)]
struct QuotesParams {
    /// Comma-separated; absent means every symbol of the room.
    symbols: Option<String>,
    room: Option<String>,
}

/// One quote as JSON; the same fields as the protobuf `Quote`.
#[derive(Serialize)]
struct QuoteJson {
    symbol: String,
    last: f64,
    bid: f64,
    ask: f64,
    volume: u64,
    day_change: f64,
    day_change_pct: f64,
    seq: u64,
    exchange_time_us: i64,
}

impl From<Quote> for QuoteJson {
    fn from(q: Quote) -> Self {
        Self {
            symbol: q.symbol,
            last: q.last,
            bid: q.bid,
            ask: q.ask,
            volume: q.volume,
            day_change: q.day_change,
            day_change_pct: q.day_change_pct,
            seq: q.seq,
            exchange_time_us: q.exchange_time_us,
        }
    }
}

#[derive(Serialize)]
struct Quotes {
    room: String,
    quotes: Vec<QuoteJson>,
}

/// `GET /api/v1/quotes?symbols=A,B&room=R`: current values, read on the room thread.
async fn quotes(
    State(hub): State<Arc<SessionHub>>,
    Query(params): Query<QuotesParams>,
) -> Result<Json<Quotes>, ApiError> {
    let ticker = hub.registry.ticker(params.room.as_deref())?;
    let ids = match params.symbols {
        None => None,
        Some(list) => {
            let names: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "symbols: list at least one symbol, or leave it out for all",
                ));
            }
            Some(
                ticker
                    .symbols
                    .resolve(&names)
                    .map_err(ApiError::unknown_symbols)?,
            )
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let unavailable = |why: &str| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why);
    ticker
        .events
        .try_send(TickerEvent::Query {
            symbols: ids,
            reply: Box::new(move |quotes| {
                let _ = reply.send(quotes);
            }),
        })
        .map_err(|e| match e {
            SendError::Full => unavailable("the room is busy; try again"),
            SendError::Gone => unavailable("the room has stopped"),
        })?;
    let quotes = tokio::time::timeout(QUERY_TIMEOUT, answer)
        .await
        .map_err(|_| unavailable("the room did not answer in time"))?
        .map_err(|_| unavailable("the room has stopped"))?;
    Ok(Json(Quotes {
        room: ticker.room.name.to_string(),
        quotes: quotes.into_iter().map(QuoteJson::from).collect(),
    }))
}

/// 405 with the JSON error body every API answer has, and `Allow`.
fn wrong_method(allow: &'static str) -> Response {
    let mut resp = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}"),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    resp
}

/// Routes of the REST API, merged into the public router.
pub fn router() -> Router<Arc<SessionHub>> {
    Router::new()
        .route(
            "/api/v1/sessions",
            post(create_session).fallback(|| async { wrong_method("POST") }),
        )
        .route(
            "/api/v1/quotes",
            get(quotes).fallback(|| async { wrong_method("GET, HEAD") }),
        )
}
