//! The admin API on the operations port: inject notices and gifts into chat rooms, and change
//! the user and IP block lists at run time. Every route needs `Authorization: Bearer TOKEN`
//! (`[admin] token` or `TICKROOM_ADMIN_TOKEN`); without a configured token the API is off.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::ApiError;
use crate::moderation::BlockChange;
use crate::rooms::{RegistryError, SendError};
use crate::sim::chat::ChatEvent;
use crate::sim::chat::MAX_NAME_CHARS;
use crate::transport::SessionHub;

/// Longest notice, in characters.
const MAX_NOTICE_CHARS: usize = 500;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub hub: Arc<SessionHub>,
    /// `None`: the admin API is disabled.
    pub token: Option<Arc<str>>,
}

/// Proof that the request carried the admin token; handlers take it as an argument.
pub struct Admin;

/// Compares in time independent of where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AdminState> for Admin {
    type Rejection = ApiError;

    /// The static admin token, or a signed token (JWT) with the `admin` permission.
    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, ApiError> {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let (Some(token), Some(g)) = (&state.token, given)
            && same_secret(g.as_bytes(), token.as_bytes())
        {
            return Ok(Admin);
        }
        if let Some(g) = given
            && let Ok(id) = state.hub.auth.identify(Some(g))
            && id.may(crate::auth::Perm::Admin)
        {
            return Ok(Admin);
        }
        if state.token.is_none() && !state.hub.auth.has_keys() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the admin API is disabled: set [admin] token or TICKROOM_ADMIN_TOKEN, or [auth] keys",
            ));
        }
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <admin token or a JWT with the admin permission>",
        ))
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body must be JSON {shape}: {e}"),
        )
    })
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// Queues `event` for the chat room `room`, answered 202: it goes out in the room's next batch.
fn inject(
    state: &AdminState,
    room: &str,
    event: ChatEvent,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let events = state.hub.registry.chat(room).map_err(|e| match e {
        RegistryError::NotChat(_) => bad(format!("{room:?} is not a chat room")),
        _ => ApiError::new(StatusCode::NOT_FOUND, format!("no room named {room:?}")),
    })?;
    events.try_send(event).map_err(|e| {
        let why = match e {
            SendError::Full => "the room is busy; try again",
            SendError::Gone => "the room has stopped",
        };
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why)
    })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "room": room, "queued": true })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Notice {
    text: String,
}

/// `POST /admin/rooms/{room}/notice` with `{"text": "..."}`.
async fn notice(
    _: Admin,
    State(state): State<AdminState>,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let n: Notice = json_body(&body, r#"{"text": "..."}"#)?;
    let chars = n.text.chars().count();
    if n.text.trim().is_empty() || chars > MAX_NOTICE_CHARS {
        return Err(bad(format!("text must be 1-{MAX_NOTICE_CHARS} characters")));
    }
    inject(&state, &room, ChatEvent::Notice { text: n.text })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Gift {
    from: String,
    gift: String,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

/// `POST /admin/rooms/{room}/gift` with `{"from": "...", "gift": "...", "count": N}`.
async fn gift(
    _: Admin,
    State(state): State<AdminState>,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let g: Gift = json_body(&body, r#"{"from": "...", "gift": "...", "count": 1}"#)?;
    let short = |s: &str| !s.trim().is_empty() && s.chars().count() <= MAX_NAME_CHARS;
    if !short(&g.from) || !short(&g.gift) || g.count == 0 {
        return Err(bad(format!(
            "from and gift must be 1-{MAX_NAME_CHARS} characters and count at least 1"
        )));
    }
    inject(
        &state,
        &room,
        ChatEvent::Gift {
            from: g.from,
            gift: g.gift,
            count: g.count,
        },
    )
}

#[derive(Serialize)]
struct Blocks {
    users: Vec<String>,
    ips: Vec<String>,
}

/// `GET /admin/blocks`.
async fn list_blocks(_: Admin, State(state): State<AdminState>) -> Json<Blocks> {
    let (users, ips) = state.hub.registry.blocks().list();
    Json(Blocks { users, ips })
}

/// Applies `change` here and, in a cluster, stores it for every node. Returns whether this
/// node's list changed. When the bus cannot take it the change still holds here and the answer
/// says so (503); the caller may retry.
async fn change_blocks(state: &AdminState, change: BlockChange) -> Result<bool, ApiError> {
    let changed = change.apply(state.hub.registry.blocks());
    if let Some(cluster) = &state.hub.cluster {
        cluster.publish_block(&change).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("applied on this node only: {e}"),
            )
        })?;
    }
    Ok(changed)
}

/// `PUT /admin/blocks/users/{name}`: effective for the next message the user sends, and for
/// messages of theirs the room accepted but has not sent yet.
async fn block_user(
    _: Admin,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if name.trim().is_empty() {
        return Err(bad("user name is empty"));
    }
    user_block(state, name, true).await
}

async fn unblock_user(
    _: Admin,
    State(state): State<AdminState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    user_block(state, name, false).await
}

async fn user_block(
    state: AdminState,
    name: String,
    blocked: bool,
) -> Result<Json<Value>, ApiError> {
    let change = BlockChange::User {
        name: name.clone(),
        blocked,
    };
    let changed = change_blocks(&state, change).await?;
    Ok(Json(
        json!({ "user": name, "blocked": blocked, "changed": changed }),
    ))
}

fn parse_ip(ip: &str) -> Result<IpAddr, ApiError> {
    ip.parse()
        .map_err(|_| bad(format!("{ip:?} is not an IPv4 or IPv6 address")))
}

/// `PUT /admin/blocks/ips/{ip}`: new connections from it are refused (403); open ones can no
/// longer send chat messages.
async fn block_ip(
    _: Admin,
    State(state): State<AdminState>,
    Path(ip): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ip_block(state, ip, true).await
}

async fn unblock_ip(
    _: Admin,
    State(state): State<AdminState>,
    Path(ip): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ip_block(state, ip, false).await
}

async fn ip_block(state: AdminState, ip: String, blocked: bool) -> Result<Json<Value>, ApiError> {
    let change = BlockChange::Ip {
        ip: parse_ip(&ip)?,
        blocked,
    };
    let changed = change_blocks(&state, change).await?;
    Ok(Json(
        json!({ "ip": ip, "blocked": blocked, "changed": changed }),
    ))
}

/// Routes of the admin API, for the operations port.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/rooms/{room}/notice", post(notice))
        .route("/admin/rooms/{room}/gift", post(gift))
        .route("/admin/blocks", get(list_blocks))
        .route(
            "/admin/blocks/users/{name}",
            put(block_user).delete(unblock_user),
        )
        .route("/admin/blocks/ips/{ip}", put(block_ip).delete(unblock_ip))
        .with_state(state)
}
