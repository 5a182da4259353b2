//! Signed tokens: refused at the upgrade without one (or with a bad or expired one) with 401;
//! passed as a header, a query parameter or a subprotocol; rooms and permissions enforced
//! with FORBIDDEN; a token that expires mid-session closes it with 4004; the REST flow and
//! the admin API take tokens too; HS256, an ES256 PEM key and a JWKS file all verify.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::bystanders::{Bystanders, with_prices};
use common::*;
use tickroom::auth::AuthConfig;
use tickroom::proto::v1::{ErrorCode, Input, Join, client_message::Body};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-of-some-length";

fn data(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
}

fn config(auth: AuthConfig) -> tickroom::Config {
    let mut c = test_config();
    c.auth = auth;
    c.game.auto_create = true;
    with_prices(&mut c);
    c.rooms.push(tickroom::config::RoomConfig::Chat {
        name: "chat".into(),
        chat: Default::default(),
    });
    c
}

fn hs256() -> AuthConfig {
    AuthConfig {
        required: true,
        hs256_secret: SECRET.into(),
        ..Default::default()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn token(extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({"sub": "alice", "exp": now_s() + 3600});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    sign(claims)
}

/// A WebSocket with these extra headers.
async fn connect_with(
    server: &TestServer,
    url_suffix: &str,
    headers: &[(&'static str, String)],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("{}{url_suffix}", server.ws_url())
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, v.parse().expect("a header value"));
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await?;
    if headers.iter().any(|(k, _)| *k == "sec-websocket-protocol") {
        assert_eq!(resp.headers()["sec-websocket-protocol"], "tickroom.v1");
    }
    Ok(Client { ws })
}

/// The status of a refused upgrade.
fn refused(r: Result<Client, tokio_tungstenite::tungstenite::Error>) -> u16 {
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got a WebSocket"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bad_or_expired_token_is_401_and_a_good_one_in_any_place_is_let_in() {
    let server = start(config(hs256())).await;
    let bystanders =
        Bystanders::start_with(&server, &format!("?token={}", token(serde_json::json!({})))).await;
    assert_eq!(refused(connect_with(&server, "", &[]).await), 401);
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "x", "exp": now_s() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret").unwrap(),
    )
    .unwrap();
    let expired = sign(serde_json::json!({"sub": "x", "exp": now_s() - 10}));
    for bad in [forged, expired] {
        let e = connect_with(&server, "", &[("authorization", format!("Bearer {bad}"))]).await;
        assert_eq!(refused(e), 401);
    }
    // Why, in the body.
    let (status, body) = http_call(
        server.addr,
        "GET",
        "/ws",
        &[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        "",
    )
    .await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("token is required"));

    let t = token(serde_json::json!({}));
    for (suffix, headers) in [
        ("", vec![("authorization", format!("Bearer {t}"))]),
        (&*format!("?token={t}"), vec![]),
        (
            "",
            vec![("sec-websocket-protocol", format!("tickroom.v1, bearer.{t}"))],
        ),
    ] {
        let mut c = connect_with(&server, suffix, &headers)
            .await
            .expect("let in");
        c.join("arena").await;
    }
    let (_, m) = http_get(server.ops, "/metrics").await;
    let m = client_sim::toolkit::prom::Metrics::parse(&m);
    assert_eq!(
        m.value("tickroom_auth_failures_total", &[("reason", "missing")]),
        Some(2.0)
    );
    assert_eq!(
        m.value("tickroom_auth_failures_total", &[("reason", "expired")]),
        Some(1.0)
    );
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_kinds_and_permissions_are_enforced() {
    let server = start(config(hs256())).await;
    let bystanders =
        Bystanders::start_with(&server, &format!("?token={}", token(serde_json::json!({})))).await;
    let t = token(
        serde_json::json!({"rooms": ["arena", "chat"], "perms": ["subscribe", "chat"], "name": "Al"}),
    );
    let mut c = connect_with(&server, "", &[("authorization", format!("Bearer {t}"))])
        .await
        .unwrap();
    // A room the token does not name, and creating one: FORBIDDEN.
    for room in ["elsewhere", "lobby-new"] {
        c.send(Body::Join(Join {
            room: room.into(),
            ..Default::default()
        }))
        .await;
        expect_error(&mut c, ErrorCode::Forbidden).await;
    }
    // In the arena, but without "play": inputs are refused.
    c.join("arena").await;
    c.send(Body::Input(Input {
        seq: 1,
        move_x: 1.0,
        move_y: 0.0,
    }))
    .await;
    let why = expect_error(&mut c, ErrorCode::Forbidden).await;
    assert!(why.contains("play"), "{why}");
    // In chat, shown by the token's name whatever Join says.
    c.join_as("chat", "", "someone-else").await;
    c.send(Body::ChatSend(tickroom::proto::v1::ChatSend {
        text: "hello".into(),
        ..Default::default()
    }))
    .await;
    let m = c
        .recv_until(|m| {
            matches!(
                m.body,
                Some(tickroom::proto::v1::server_message::Body::ChatBatch(_))
            )
        })
        .await;
    let Some(tickroom::proto::v1::server_message::Body::ChatBatch(b)) = m.body else {
        unreachable!()
    };
    assert_eq!(b.messages[0].from, "Al");
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expires_mid_session_closes_it_with_4004() {
    let server = start(config(hs256())).await;
    let bystanders =
        Bystanders::start_with(&server, &format!("?token={}", token(serde_json::json!({})))).await;
    let t = sign(serde_json::json!({"sub": "brief", "exp": now_s() + 2}));
    let mut c = connect_with(&server, "", &[("authorization", format!("Bearer {t}"))])
        .await
        .unwrap();
    c.join("arena").await;
    let closed = c.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4004, "token expired")
    );
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_flow_and_the_admin_api_take_tokens() {
    let mut cfg = config(hs256());
    cfg.rooms.push(tickroom::config::RoomConfig::Ticker {
        name: "ticker".into(),
        ticker: Default::default(),
    });
    let server = start(cfg).await;
    let body = r#"{"symbols": ["SYM001"]}"#;
    let (status, _) = http_request(server.addr, "POST", "/api/v1/sessions", body).await;
    assert_eq!(status, 401);
    let reader = token(serde_json::json!({"perms": ["chat"]}));
    let (status, _) = http_call(
        server.addr,
        "POST",
        "/api/v1/sessions",
        &[("authorization", &format!("Bearer {reader}"))],
        body,
    )
    .await;
    assert_eq!(status, 403, "no subscribe permission");
    let t = token(serde_json::json!({"perms": ["subscribe"]}));
    let (status, created) = http_call(
        server.addr,
        "POST",
        "/api/v1/sessions",
        &[("authorization", &format!("Bearer {t}"))],
        body,
    )
    .await;
    assert_eq!(status, 201);
    let created: serde_json::Value = serde_json::from_slice(&created).unwrap();
    // The WebSocket on the prepared session needs no token of its own: it is that client.
    let mut c = Client::connect_url(created["ws_url"].as_str().unwrap()).await;
    c.recv_until(|m| {
        matches!(
            m.body,
            Some(tickroom::proto::v1::server_message::Body::Subscriptions(_))
        )
    })
    .await;
    // Admin: a JWT with the admin permission works (no static admin token is set).
    let notice = r#"{"text": "hello"}"#;
    for (perms, want) in [
        (serde_json::json!(["chat"]), 401),
        (serde_json::json!(["admin"]), 202),
    ] {
        let t = token(serde_json::json!({ "perms": perms }));
        let (status, _) = http_call(
            server.ops,
            "POST",
            "/admin/rooms/chat/notice",
            &[("authorization", &format!("Bearer {t}"))],
            notice,
        )
        .await;
        assert_eq!(status, want, "{perms}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_keys_from_a_pem_file_or_a_jwks_verify() {
    let private = std::fs::read(data("es256-private.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&private).unwrap();
    let claims = serde_json::json!({"sub": "ec", "exp": now_s() + 60});
    for (auth, kid) in [
        (
            AuthConfig {
                required: true,
                public_key_file: Some(data("es256-public.pem")),
                ..Default::default()
            },
            None,
        ),
        (
            AuthConfig {
                required: true,
                jwks_file: Some(data("jwks.json")),
                ..Default::default()
            },
            Some("test-es256".to_owned()),
        ),
    ] {
        let server = start(config(auth)).await;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = kid;
        let t = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let mut c = connect_with(&server, "", &[("authorization", format!("Bearer {t}"))])
            .await
            .expect("an ES256 token verifies");
        c.join("arena").await;
        // An HS256 token with no HS256 key configured is refused.
        let hs = sign(claims.clone());
        let e = connect_with(&server, "", &[("authorization", format!("Bearer {hs}"))]).await;
        assert_eq!(refused(e), 401);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_stays_anonymous_but_a_bad_token_is_still_refused() {
    let server = start(config(AuthConfig {
        required: false,
        hs256_secret: SECRET.into(),
        ..Default::default()
    }))
    .await;
    let mut c = Client::connect(&server).await;
    c.join("arena").await;
    c.input(1, 1.0, 0.0).await;
    let e = connect_with(&server, "", &[("authorization", "Bearer nonsense".into())]).await;
    assert_eq!(refused(e), 401);
    server.stop().await;
}
