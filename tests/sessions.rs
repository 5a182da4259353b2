//! Session lifecycle: heartbeat timeout, resume, abrupt disconnects, shutdown.

mod common;

use std::time::Duration;

use common::*;
use tickroom::proto::v1::server_message::Body as SBody;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_dropped_after_the_heartbeat_timeout() {
    let mut config = test_config();
    config.session.ping_interval_ms = 100;
    config.session.idle_timeout_ms = 500;
    let server = start(config).await;
    let mut silent = Client::connect(&server).await;
    silent.join("arena").await;
    eventually("silent client joined", || async {
        room_sessions(&server, "arena").await == 1
    })
    .await;
    // Stop polling the socket: pings go unanswered, the server must give up on us.
    eventually("silent session removed", || async {
        room_sessions(&server, "arena").await == 0
    })
    .await;
    drop(silent);

    // A client that keeps reading answers pings and stays well past the timeout.
    let mut alive = Client::connect(&server).await;
    alive.join("arena").await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        alive.snapshot().await;
    }
    assert_eq!(room_sessions(&server, "arena").await, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_within_the_grace_period_keeps_the_avatar() {
    let server = start(test_config()).await;
    let mut watcher = Client::connect(&server).await;
    watcher.join("arena").await;

    let mut c = Client::connect_abortive(&server).await;
    let w = c.join("arena").await;
    for seq in 1..=3 {
        c.input(seq, 0.0, 1.0).await;
    }
    let (_, s) = c
        .recv_until(|m| {
            matches!(&m.body, Some(SBody::Snapshot(s)) if entity(s, w.your_object_id).unwrap().last_input_seq == 3)
        })
        .await
        .body
        .map(|b| match b {
            SBody::Snapshot(s) => (0, s),
            _ => unreachable!(),
        })
        .unwrap();
    let before = entity(&s, w.your_object_id).unwrap();
    drop(c); // connection reset, no close frame
    eventually("session gone", || async {
        room_sessions(&server, "arena").await == 1
    })
    .await;

    let mut back = Client::connect(&server).await;
    let w2 = back.join_with("arena", &w.resume_token).await;
    assert!(w2.resumed);
    assert_eq!(w2.your_object_id, w.your_object_id);
    assert_ne!(w2.session_id, w.session_id);
    let (_, s2) = back.snapshot().await;
    let after = entity(&s2, w.your_object_id).expect("avatar kept");
    assert_eq!(
        (after.x, after.y, after.last_input_seq),
        (before.x, before.y, 3)
    );
    // Inputs continue from the acknowledged sequence.
    back.input(4, 0.0, 1.0).await;
    back.recv_until(|m| {
        matches!(&m.body, Some(SBody::Snapshot(s)) if entity(s, w.your_object_id).unwrap().last_input_seq == 4)
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_the_avatar_is_deleted_and_the_token_is_spent() {
    let mut config = test_config();
    arena(&mut config).resume_grace_ms = 300;
    let server = start(config).await;
    let mut watcher = Client::connect(&server).await;
    watcher.join("arena").await;
    let mut c = Client::connect_abortive(&server).await;
    let w = c.join("arena").await;
    let parked = std::time::Instant::now();
    drop(c);
    watcher
        .recv_until(
            |m| matches!(&m.body, Some(SBody::ObjectDeleted(d)) if d.ids.contains(&w.your_object_id)),
        )
        .await;
    // Parked for the grace period, not removed at once.
    assert!(
        parked.elapsed() >= Duration::from_millis(250),
        "{:?}",
        parked.elapsed()
    );
    let mut late = Client::connect(&server).await;
    let w2 = late.join_with("arena", &w.resume_token).await;
    assert!(!w2.resumed);
    assert_ne!(w2.your_object_id, w.your_object_id);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_a_second_connection_closes_the_first_with_4002() {
    let server = start(test_config()).await;
    let mut first = Client::connect(&server).await;
    let w = first.join("arena").await;
    let mut second = Client::connect(&server).await;
    let w2 = second.join_with("arena", &w.resume_token).await;
    assert!(w2.resumed);
    assert_eq!(w2.your_object_id, w.your_object_id);
    let closed = first.expect_close().await;
    assert_eq!(closed.code, 4002, "{closed:?}");
    second.snapshot().await;
    eventually("one session left", || async {
        room_sessions(&server, "arena").await == 1
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_return_to_zero_after_every_client_vanishes_abruptly() {
    let server = start(test_config()).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect_abortive(&server).await;
        c.join("arena").await;
        clients.push(c);
    }
    eventually("20 sessions", || async {
        room_sessions(&server, "arena").await == 20
    })
    .await;
    drop(clients);
    eventually("sessions back to 0", || async {
        room_sessions(&server, "arena").await == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_clients_with_1001_and_the_reason() {
    let server = start(test_config()).await;
    let mut a = Client::connect(&server).await;
    a.join("arena").await;
    let mut b = Client::connect(&server).await;
    let token = server.shutdown.clone();
    let started = std::time::Instant::now();
    token.cancel();
    for c in [&mut a, &mut b] {
        let closed = c.expect_close().await;
        assert_eq!(closed.code, 1001);
        assert_eq!(closed.reason, "server shutting down");
    }
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown within 5 s"
    );
}

/// A client may send its first frame in the same segment as the upgrade request: the HTTP
/// layer has read those bytes already, and the session must still get them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_sent_with_the_upgrade_request_is_not_lost() {
    use futures_util::StreamExt;
    use prost::Message as _;
    use tickroom::proto::v1::{ClientMessage, Join, client_message::Body};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::Role};

    let server = start(test_config()).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let join = ClientMessage {
        body: Some(Body::Join(Join {
            room: "arena".into(),
            ..Default::default()
        })),
    }
    .encode_to_vec();
    assert!(join.len() < 126);
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    )
    .into_bytes();
    // A client's frame: binary, masked.
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    bytes.extend([0x82, 0x80 | join.len() as u8]);
    bytes.extend(mask);
    bytes.extend(join.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&bytes).await.unwrap();

    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, Role::Client, None).await;
    let welcome = tokio::time::timeout(WAIT, async {
        loop {
            let Some(Ok(Message::Binary(b))) = ws.next().await else {
                panic!("the connection ended before a Welcome");
            };
            let msg = tickroom::proto::v1::ServerMessage::decode(b).unwrap();
            if let Some(SBody::Welcome(w)) = msg.body {
                break w;
            }
        }
    })
    .await
    .expect("a Welcome for the pipelined Join");
    assert_eq!(welcome.room, "arena");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_many_sessions_and_rooms_ends_within_five_seconds() {
    let mut config = test_config();
    config.game.auto_create = true;
    config.game.max_rooms = 100;
    config.game.max_rooms_per_ip = 100;
    let server = start(config).await;
    // 300 sessions over 60 rooms (59 created on first join), all in play.
    let mut clients = Vec::new();
    for i in 0..300 {
        let mut c = Client::connect(&server).await;
        let room = if i % 60 == 0 {
            "arena".to_owned()
        } else {
            format!("room-{}", i % 60)
        };
        c.join(&room).await;
        clients.push(c);
    }
    assert_eq!(
        rooms_json(server.addr).await["rooms"]
            .as_array()
            .unwrap()
            .len(),
        60
    );
    let asked = std::time::Instant::now();
    server.stop().await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with 300 sessions in 60 rooms"
    );
    drop(clients);
}
