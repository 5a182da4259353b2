//! Admission and timeouts before the upgrade: caps on connections (in all and per address)
//! and on the connect rate answer 503/429 with `Retry-After` at once; idle and stalled
//! connections are cut; request bodies are capped; the operations port stays reachable.

mod common;

use std::time::Duration;

use common::bystanders::{Bystanders, with_prices};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(tcp: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection in time")
        .ok();
    String::from_utf8_lossy(&buf).into_owned()
}

async fn refused_count(server: &TestServer, reason: &str) -> Option<f64> {
    let (_, body) = http_get(server.ops, "/metrics").await;
    client_sim::toolkit::prom::Metrics::parse(&body)
        .value("tickroom_connections_refused_total", &[("reason", reason)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_a_cap_or_a_rate_are_answered_at_once() {
    let mut config = test_config();
    with_prices(&mut config);
    // Four for the test, two for the bystanders (from 127.0.0.3).
    config.server.max_connections = 6;
    config.server.max_connections_per_ip = 3;
    config.server.connects_per_ip_per_sec = 0.0;
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    // Three idle connections from 127.0.0.1, then a fourth: refused for the address.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    let answer = read_to_close(&mut fourth).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("Retry-After: 5"), "{answer}");
    assert!(
        answer.ends_with("too many connections from your address\n"),
        "{answer}"
    );
    // From another loopback address there is one place left in all, then none.
    let other = |n: u8| async move {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(std::net::SocketAddr::from(([127, 0, 0, n], 0)))
            .unwrap();
        s.connect(server.addr).await.unwrap()
    };
    let _last = other(2).await;
    let mut over = other(5).await;
    let answer = read_to_close(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer.ends_with("server at capacity; try again later\n"),
        "{answer}"
    );
    assert_eq!(refused_count(&server, "per_ip").await, Some(1.0));
    assert_eq!(refused_count(&server, "capacity").await, Some(1.0));
    // A place comes back when a connection closes.
    drop(held.pop());
    eventually("a place came back", || async {
        let mut c = other(6).await;
        c.write_all(b"GET /rooms HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        read_to_close(&mut c).await.starts_with("HTTP/1.1 200 ")
    })
    .await;
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_connector_gets_429() {
    let mut config = test_config();
    with_prices(&mut config);
    config.server.connects_per_ip_per_sec = 0.5;
    config.server.connect_burst_per_ip = 2.0;
    let server = start(config).await;
    // The bystanders' address has its own burst: two connections.
    let bystanders = Bystanders::start(&server).await;
    let bind = |n: u8| {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(std::net::SocketAddr::from(([127, 0, 0, n], 0)))
            .unwrap();
        s
    };
    let _a = bind(7).connect(server.addr).await.unwrap();
    let _b = bind(7).connect(server.addr).await.unwrap();
    let mut c = bind(7).connect(server.addr).await.unwrap();
    let answer = read_to_close(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    assert_eq!(refused_count(&server, "rate").await, Some(1.0));
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_requests_are_cut_and_bodies_are_capped() {
    let mut config = test_config();
    config.server.header_timeout_ms = 300;
    config.server.request_timeout_ms = 300;
    config.server.max_request_body_bytes = 1024;
    with_prices(&mut config);
    let server = start(config).await;
    // Upgraded connections are past the header and request deadlines.
    let bystanders = Bystanders::start(&server).await;
    // A connection that never sends a request is closed.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        read_to_close(&mut idle).await,
        "",
        "closed without an answer"
    );
    // Half a header, then nothing: closed.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nX-Slow:")
        .await
        .unwrap();
    let answer = read_to_close(&mut half).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    // A body that stops halfway: 408 once the request deadline passes.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /api/v1/sessions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
              Content-Length: 500\r\n\r\n{\"symbols\": [",
        )
        .await
        .unwrap();
    let answer = read_to_close(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    // A body over the cap: 413, whatever it holds.
    let big = format!("{{\"symbols\": [\"{}\"]}}", "X".repeat(2000));
    let (status, _) = http_request(server.addr, "POST", "/api/v1/sessions", &big).await;
    assert_eq!(status, 413);
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_lock_probes_out_of_the_operations_port() {
    let mut config = test_config();
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(server.ops).await.unwrap());
    }
    let (status, _) =
        tokio::time::timeout(Duration::from_secs(5), http_get(server.ops, "/healthz"))
            .await
            .expect("healthz answers while 100 idle connections are open");
    assert_eq!(status, 200);
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_rooms_are_capped_per_address_and_removed_when_idle() {
    use tickroom::proto::v1::{ErrorCode, Join, client_message::Body};
    let mut config = test_config();
    config.game.auto_create = true;
    config.game.max_rooms_per_ip = 2;
    config.game.idle_room_ms = 300;
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    let listed = |name: &'static str| {
        let addr = server.addr;
        async move {
            rooms_json(addr).await["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == name)
        }
    };
    let mut c = Client::connect(&server).await;
    c.join("mine-1").await;
    c.join("mine-2").await;
    // Another connection from the same address: its address has two rooms open already.
    let mut d = Client::connect(&server).await;
    d.send(Body::Join(Join {
        room: "mine-3".into(),
        ..Default::default()
    }))
    .await;
    let why = expect_error(&mut d, ErrorCode::LimitExceeded).await;
    assert!(why.contains("rooms"), "{why}");
    assert!(!listed("mine-3").await);
    // Joining mine-2 left mine-1 empty: it goes, and its place comes back.
    eventually("the idle room is removed", || async {
        !listed("mine-1").await
    })
    .await;
    assert!(listed("mine-2").await, "the room with a member stays");
    d.join("mine-3").await;
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}
