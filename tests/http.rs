//! Plain HTTP on both ports: room list, health, readiness, upgrade errors.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_lists_kind_sessions_rate_and_tick_duration() {
    let server = start(test_config()).await;
    let mut c = Client::connect(&server).await;
    c.join("arena").await;
    c.snapshot().await;
    // Tick durations are summarised once a second: wait for the first summary.
    eventually("tick durations summarised", || async {
        rooms_json(server.addr).await["rooms"][0]["tick_duration_us"]["max"].as_u64() > Some(0)
    })
    .await;
    let v = rooms_json(server.addr).await;
    let room = &v["rooms"][0];
    assert_eq!(room["name"], "arena");
    assert_eq!(room["kind"], "game");
    assert_eq!(room["sessions"], 1);
    assert_eq!(room["tick_rate_hz"], 60);
    // The first summary comes a second after the room started, at 60 Hz.
    assert!(room["tick"].as_u64().unwrap() >= 60);
    assert!(room["ticks_total"].as_u64().unwrap() >= 60);
    let d = &room["tick_duration_us"];
    assert!(d["p50"].as_u64().unwrap() <= d["p99"].as_u64().unwrap());
    assert!(d["p99"].as_u64().unwrap() <= d["max"].as_u64().unwrap());
    assert!(d["max"].as_u64().unwrap() > 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_on_the_ops_port() {
    let server = start(test_config()).await;
    assert_eq!(http_get(server.ops, "/healthz").await, (200, "ok\n".into()));
    eventually("ready", || async {
        http_get(server.ops, "/readyz").await.0 == 200
    })
    .await;
    // The public port does not serve operations endpoints.
    assert_eq!(http_get(server.addr, "/healthz").await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_on_the_websocket_path_is_told_to_upgrade() {
    let server = start(test_config()).await;
    let (status, body) = http_get(server.addr, "/ws").await;
    assert_eq!(status, 426);
    assert!(body.contains("WebSocket"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_get_405_with_allow_and_a_body_that_says_so() {
    let server = start(test_config()).await;
    for method in ["HEAD", "POST", "PUT"] {
        let a = http_answer(server.addr, method, "/ws", &[], "").await;
        assert_eq!(a.status, 405, "{method} /ws");
        assert_eq!(a.headers["allow"], "GET", "{method} /ws");
        if method != "HEAD" {
            assert_eq!(a.text(), "use GET to open a WebSocket\n");
        }
    }
    // The REST API answers JSON errors, wrong methods included.
    for (method, path, allow) in [
        ("GET", "/api/v1/sessions", "POST"),
        ("DELETE", "/api/v1/sessions", "POST"),
        ("POST", "/api/v1/quotes", "GET, HEAD"),
    ] {
        let a = http_answer(server.addr, method, path, &[], "").await;
        assert_eq!(a.status, 405, "{method} {path}");
        assert_eq!(a.headers["allow"], allow, "{method} {path}");
        let v: serde_json::Value = serde_json::from_slice(&a.body).expect("a JSON error");
        assert!(
            v["error"].as_str().unwrap().contains(allow),
            "{method} {path}: {v}"
        );
    }
    server.stop().await;
}
