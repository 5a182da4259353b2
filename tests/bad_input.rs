//! Bad input gets a documented error or close code and never disturbs other sessions.

mod common;

use common::bystanders::{Bystanders, with_prices};
use common::*;
use tickroom::proto::v1::{ErrorCode, Ping, client_message::Body, server_message::Body as SBody};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_get_an_error_and_the_session_goes_on() {
    let mut config = test_config();
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    let mut c = Client::connect(&server).await;
    // Field 1, wire type 2, length 200 with 2 bytes of payload: truncated.
    c.send_raw(raw(&[0x0a, 0xc8, 0x01, 0x01, 0x02])).await;
    let why = expect_error(&mut c, ErrorCode::Malformed).await;
    assert!(why.contains("ClientMessage"), "{why}");
    // No body at all (e.g. a message type from a newer protocol).
    c.send_raw(raw(&[])).await;
    expect_error(&mut c, ErrorCode::UnknownMessage).await;
    // Room-bound messages before joining.
    c.input(1, 1.0, 0.0).await;
    expect_error(&mut c, ErrorCode::NotInRoom).await;
    c.send(Body::Leave(Default::default())).await;
    expect_error(&mut c, ErrorCode::NotInRoom).await;
    // Unknown room (auto-create is off in tests).
    c.send(Body::Join(tickroom::proto::v1::Join {
        room: "nope".into(),
        ..Default::default()
    }))
    .await;
    expect_error(&mut c, ErrorCode::RoomNotFound).await;
    // The session still works.
    c.send(Body::Ping(Ping { client_time_us: 42 })).await;
    let pong = c
        .recv_until(|m| matches!(m.body, Some(SBody::Pong(_))))
        .await;
    let Some(SBody::Pong(p)) = pong.body else {
        unreachable!()
    };
    assert_eq!(p.client_time_us, 42);
    assert!(p.server_time_us > 0);
    c.join("arena").await;
    c.snapshot().await;
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_closes_with_1003() {
    let mut config = test_config();
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    let mut c = Client::connect(&server).await;
    c.join("arena").await;
    c.send_raw(Message::text("{\"join\":\"arena\"}")).await;
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 1003);
    assert!(closed.reason.contains("binary"), "{closed:?}");
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_of_invalid_utf8_closes_with_1003_too() {
    let server = start(test_config()).await;
    let mut ws = client_sim::toolkit::rawws::RawWs::connect(server.addr, "/ws", None)
        .await
        .unwrap();
    ws.send_frame(0x81, &[0xff, 0xfe, 0xfd]).await.unwrap();
    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("in time")
        .expect("a close frame");
    assert_eq!(close.close_code(), Some(1003), "{close:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_message_closes_with_1009() {
    let mut config = test_config();
    config.session.max_message_bytes = 1024;
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    let mut c = Client::connect(&server).await;
    c.join("arena").await;
    c.send_raw(Message::Binary(vec![0u8; 4096].into())).await;
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 1009, "{closed:?}");
    assert_eq!(closed.reason, "message too big");
    eventually("the closed session left the room", || async {
        room_sessions(&server, "arena").await == 1
    })
    .await;
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_then_closed_with_1008() {
    let mut config = test_config();
    config.session.rate_per_sec = 50;
    config.session.rate_burst = 10;
    config.session.abuse_drops = 200;
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    let mut c = Client::connect(&server).await;
    for i in 0..1_000 {
        c.send(Body::Ping(Ping { client_time_us: i })).await;
    }
    expect_error(&mut c, ErrorCode::RateLimited).await;
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");
    assert!(closed.reason.contains("rate"), "{closed:?}");
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_as_slow_consumer() {
    let mut config = test_config();
    config.session.reliable_queue = 16;
    // Large snapshots fill the socket buffers of a client that does not read within seconds.
    config.rooms.push(tickroom::config::RoomConfig::Game {
        name: "big".into(),
        game: tickroom::sim::game::GameConfig {
            bots: 3000,
            ..Default::default()
        },
    });
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        server.ws_url(),
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
    )
    .await
    .unwrap();
    let mut slow = Client { ws };
    slow.join("big").await;
    ws = slow.ws;
    eventually("the slow client is in the room", || async {
        room_sessions(&server, "big").await == 1
    })
    .await;
    // Never read again; each ping queues a reliable pong that cannot be written.
    use futures_util::SinkExt;
    use prost::Message as _;
    let deadline = std::time::Instant::now() + WAIT * 2;
    let mut removed = false;
    while std::time::Instant::now() < deadline {
        let ping = tickroom::proto::v1::ClientMessage {
            body: Some(Body::Ping(Ping { client_time_us: 1 })),
        };
        // Once the server has given up on us a send may fail or stall; either is fine.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            ws.send(Message::Binary(ping.encode_to_vec().into())),
        )
        .await;
        if room_sessions(&server, "big").await == 0 {
            removed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(removed, "slow consumer removed from its room");
    // Reading now drains the backlog, then the close frame the writer queued behind it.
    let mut slow = Client { ws };
    let closed = slow.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4000, "slow consumer: reliable queue overflow")
    );
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_refused_join_the_session_is_in_no_room() {
    let mut config = test_config();
    arena(&mut config).max_players = 1;
    let server = start(config).await;
    let mut first = Client::connect(&server).await;
    first.join("arena").await;
    let mut c = Client::connect(&server).await;
    c.send(Body::Join(tickroom::proto::v1::Join {
        room: "arena".into(),
        ..Default::default()
    }))
    .await;
    expect_error(&mut c, ErrorCode::RoomFull).await;
    c.input(1, 1.0, 0.0).await;
    expect_error(&mut c, ErrorCode::NotInRoom).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_only_answers_heartbeats_outlives_the_message_timeout() {
    let mut config = test_config();
    config.session.message_timeout_ms = 300;
    config.session.ping_interval_ms = 100;
    let server = start(config).await;
    let mut ws = client_sim::toolkit::rawws::RawWs::connect(server.addr, "/ws", None)
        .await
        .unwrap();
    let join = tickroom::proto::v1::ClientMessage {
        body: Some(Body::Join(tickroom::proto::v1::Join {
            room: "arena".into(),
            ..Default::default()
        })),
    };
    ws.send(&prost::Message::encode_to_vec(&join))
        .await
        .unwrap();
    // Nothing but pongs for five message timeouts: every one of them is a whole control
    // frame, not part of a message in progress.
    let (mut pings, mut snapshots) = (0, 0);
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        let f = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
            .expect("the session stays open");
        match f.opcode {
            0x9 => {
                pings += 1;
                ws.send_frame(0x8A, &f.payload).await.unwrap();
            }
            0x2 => snapshots += 1,
            0x8 => panic!("closed: {:?} {:?}", f.close_code(), &f.payload),
            _ => {}
        }
    }
    assert!(pings >= 5, "{pings} heartbeats");
    assert!(snapshots > 0);
    // And the session still answers.
    let ping = tickroom::proto::v1::ClientMessage {
        body: Some(Body::Ping(Ping { client_time_us: 42 })),
    };
    ws.send(&prost::Message::encode_to_vec(&ping))
        .await
        .unwrap();
    loop {
        let bytes = tokio::time::timeout(WAIT, ws.next_binary())
            .await
            .expect("in time")
            .expect("open");
        let msg: tickroom::proto::v1::ServerMessage = prost::Message::decode(bytes).unwrap();
        if let Some(SBody::Pong(p)) = msg.body {
            assert_eq!(p.client_time_us, 42);
            break;
        }
    }
    server.stop().await;
}

/// Feeds a binary message that never ends: its first fragment, then `per_batch` empty
/// continuations and a ping every `every`, until the server closes. The close frame.
async fn endless_message(
    server: &TestServer,
    per_batch: usize,
    every: std::time::Duration,
) -> client_sim::toolkit::rawws::Frame {
    let mut ws = client_sim::toolkit::rawws::RawWs::connect(server.addr, "/ws", None)
        .await
        .unwrap();
    ws.send_frame(0x02, b"").await.unwrap();
    let until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        for _ in 0..per_batch {
            let _ = tokio::time::timeout(WAIT, ws.send_frame(0x00, b"")).await;
        }
        let _ = tokio::time::timeout(WAIT, ws.send_frame(0x89, b"alive")).await;
        tokio::time::sleep(every).await;
    }
    loop {
        let f = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
            .expect("a close frame before the end");
        if f.opcode == 0x8 {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_never_ends_is_closed_with_1008() {
    let mut config = test_config();
    config.session.message_timeout_ms = 300;
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    // Slowly, well under the message rate: the pings would look like signs of life, but no
    // message is ever completed.
    let close = endless_message(&server, 1, std::time::Duration::from_millis(50)).await;
    assert_eq!(close.close_code(), Some(1008), "{close:?}");
    assert_eq!(&close.payload[2..], b"message not completed in time");
    // Fast: every fragment counts as a message, so the rate limit ends it first.
    let mut config = test_config();
    config.session.message_timeout_ms = 60_000;
    let fast = start(config).await;
    let close = endless_message(&fast, 50, std::time::Duration::from_millis(10)).await;
    assert_eq!(close.close_code(), Some(1008), "{close:?}");
    assert_eq!(&close.payload[2..], b"message rate limit exceeded");
    fast.stop().await;
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}
