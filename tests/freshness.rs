//! Freshness under slow readers, with a client that really stops reading (a raw socket, no
//! library reading in the background): what waits unsent in the server's socket stays under
//! `max_unsent_bytes`, a paused client reads at most that much (plus its own receive buffer
//! and one message) of old values before the newest, an `Ack` window bounds it to a few
//! ticks, other sessions keep every tick, and a client stalled past `stall_timeout_ms` is
//! closed as a slow consumer.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use client_sim::toolkit::rawws::{RawError, RawWs};
use common::*;
use prost::Message as _;
use tickroom::config::RoomConfig;
use tickroom::feed::{FeedConfig, SyntheticConfig};
use tickroom::proto::v1::{
    Ack, ClientMessage, Join, ServerMessage, Subscribe, client_message::Body, object::State,
    server_message::Body as SBody,
};
use tickroom::sim::game::GameConfig;
use tickroom::sim::ticker::TickerConfig;

const SYMBOLS: u32 = 200;
/// The client's own kernel receive buffer: small, so what the server holds back shows.
const CLIENT_RCVBUF: u32 = 4096;
/// The most the client's kernel holds for it (Linux doubles SO_RCVBUF for its bookkeeping).
const CLIENT_KERNEL: u64 = 2 * CLIENT_RCVBUF as u64;

/// A 10 Hz ticker room "prices" of 200 symbols, each updated 50 times a second, so every
/// symbol changes every tick and a paused reader falls behind fast.
fn config() -> tickroom::Config {
    let mut c = test_config();
    // The pause is the subject here, not the heartbeat.
    c.session.idle_timeout_ms = 60_000;
    c.rooms.push(RoomConfig::Ticker {
        name: "prices".into(),
        ticker: TickerConfig {
            tick_hz: 10,
            max_symbols_per_session: SYMBOLS,
            feed: FeedConfig::Synthetic(SyntheticConfig {
                symbols: SYMBOLS,
                updates_per_sec: 50.0,
                ..Default::default()
            }),
        },
    });
    c
}

fn all_symbols() -> Vec<String> {
    (1..=SYMBOLS).map(|i| format!("SYM{i:03}")).collect()
}

async fn send(ws: &mut RawWs, body: Body) {
    let msg = ClientMessage { body: Some(body) };
    ws.send(&msg.encode_to_vec()).await.expect("send");
}

async fn next(ws: &mut RawWs) -> (ServerMessage, usize) {
    let payload = tokio::time::timeout(WAIT, ws.next_binary())
        .await
        .expect("a message in time")
        .expect("connection open");
    let len = payload.len();
    (
        ServerMessage::decode(payload).expect("a ServerMessage"),
        len,
    )
}

/// A raw client in "prices" subscribed to every symbol, having seen each one.
async fn subscribed(addr: SocketAddr) -> RawWs {
    let mut ws = RawWs::connect(addr, "/ws", Some(CLIENT_RCVBUF))
        .await
        .expect("websocket");
    send(
        &mut ws,
        Body::Join(Join {
            room: "prices".into(),
            ..Default::default()
        }),
    )
    .await;
    send(
        &mut ws,
        Body::Subscribe(Subscribe {
            symbols: all_symbols(),
        }),
    )
    .await;
    let mut seen = HashMap::new();
    while seen.len() < SYMBOLS as usize {
        let (m, _) = next(&mut ws).await;
        for (symbol, seq) in seqs(&m) {
            seen.insert(symbol, seq);
        }
    }
    ws
}

/// (symbol, seq) of every quote in a message.
fn seqs(m: &ServerMessage) -> Vec<(String, u64)> {
    match &m.body {
        Some(SBody::Snapshot(s)) => s
            .objects
            .iter()
            .filter_map(|o| match &o.state {
                Some(State::Quote(q)) => Some((q.symbol.clone(), q.seq)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Every symbol's seq as `GET /api/v1/quotes` says now.
async fn current_seqs(server: &TestServer) -> HashMap<String, u64> {
    let (status, body) = http_get(server.addr, "/api/v1/quotes?room=prices").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["symbol"].as_str().unwrap().to_owned(),
                q["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn metrics(server: &TestServer) -> client_sim::toolkit::prom::Metrics {
    let (status, body) = http_get(server.ops, "/metrics").await;
    assert_eq!(status, 200);
    client_sim::toolkit::prom::Metrics::parse(&body)
}

/// What a paused client read after it resumed, until every symbol reached the value the
/// server had when it resumed.
struct Caught {
    /// Bytes and messages read before that.
    stale_bytes: u64,
    stale_messages: u32,
    /// The largest message read.
    largest: usize,
}

/// Reads until every symbol's seq is at least the one in `current` (and acks each message
/// with `window` if given).
async fn catch_up(ws: &mut RawWs, current: &HashMap<String, u64>, window: Option<u32>) -> Caught {
    let start = ws.bytes_read();
    let mut behind: HashMap<&str, u64> = current.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut caught = Caught {
        stale_bytes: 0,
        stale_messages: 0,
        largest: 0,
    };
    let mut first = true;
    while !behind.is_empty() {
        let before = ws.bytes_read() - start;
        let (m, len) = next(ws).await;
        caught.largest = caught.largest.max(len);
        let fresh = seqs(&m)
            .iter()
            .any(|(s, seq)| behind.get(s.as_str()).is_some_and(|want| seq >= want));
        if fresh && first {
            first = false;
            caught.stale_bytes = before;
        } else if first {
            caught.stale_messages += 1;
        }
        for (s, seq) in seqs(&m) {
            if behind.get(s.as_str()).is_some_and(|want| seq >= *want) {
                behind.remove(s.as_str());
            }
        }
        if let Some(window) = window {
            send(
                ws,
                Body::Ack(Ack {
                    tick: m.tick,
                    window,
                }),
            )
            .await;
        }
    }
    caught
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_ticker_reader_gets_bounded_old_bytes_then_the_newest_values() {
    let config = config();
    let limit = config.session.max_unsent_bytes as u64;
    let server = start(config).await;
    // A bystander that keeps reading: it must lose no tick while the other pauses.
    let mut bystander = Client::connect(&server).await;
    bystander.join("prices").await;
    bystander
        .send(Body::Subscribe(Subscribe {
            symbols: all_symbols(),
        }))
        .await;
    let watch = tokio::spawn(async move {
        let mut ticks = Vec::new();
        while ticks.len() < 40 {
            let m = bystander.recv().await;
            if matches!(m.body, Some(SBody::Snapshot(_))) {
                ticks.push(m.tick);
            }
        }
        ticks
    });

    let mut ws = subscribed(server.addr).await;
    // Stop reading. The server writes until its socket holds its limit unsent, then stops.
    wait_for("the server stops writing to the paused client", || async {
        let m = metrics(&server).await;
        let deferred = m.value("tickroom_writes_deferred_total", &[("reason", "unsent")]);
        (deferred >= Some(1.0)).then_some(())
    })
    .await;
    let unsent = metrics(&server)
        .await
        .value("tickroom_socket_unsent_bytes_max", &[])
        .expect("exported");
    // Let the symbols move on while nothing is written.
    let paused_at = current_seqs(&server).await;
    wait_for("the prices move on", || async {
        let now = current_seqs(&server).await;
        now.iter()
            .all(|(s, seq)| *seq >= paused_at[s] + 20)
            .then_some(())
    })
    .await;

    let at_resume = current_seqs(&server).await;
    let caught = catch_up(&mut ws, &at_resume, None).await;
    let bound = limit + CLIENT_KERNEL + caught.largest as u64 + 14;
    assert!(
        unsent as u64 <= limit + caught.largest as u64 + 14,
        "the server's socket held {unsent} bytes unsent (limit {limit} + one message)"
    );
    assert!(
        caught.stale_bytes <= bound,
        "{} bytes ({} messages) of old values before the newest; bound {bound}",
        caught.stale_bytes,
        caught.stale_messages
    );

    let ticks = watch.await.unwrap();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "the bystander got every tick: {ticks:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_ack_window_a_paused_reader_holds_only_that_many_ticks() {
    const WINDOW: u32 = 2;
    let server = start(config()).await;
    let mut ws = subscribed(server.addr).await;
    // Turn flow control on and keep acking for a while.
    for _ in 0..5 {
        let (m, _) = next(&mut ws).await;
        send(
            &mut ws,
            Body::Ack(Ack {
                tick: m.tick,
                window: WINDOW,
            }),
        )
        .await;
    }
    // Pause: the server stops after the window, not at the socket's limit.
    wait_for("the window closes", || async {
        let m = metrics(&server).await;
        let held = m.value("tickroom_writes_deferred_total", &[("reason", "window")]);
        (held >= Some(1.0)).then_some(())
    })
    .await;
    let paused_at = current_seqs(&server).await;
    wait_for("the prices move on", || async {
        let now = current_seqs(&server).await;
        now.iter()
            .all(|(s, seq)| *seq >= paused_at[s] + 20)
            .then_some(())
    })
    .await;
    let unsent_deferrals = metrics(&server)
        .await
        .value("tickroom_writes_deferred_total", &[("reason", "unsent")]);
    assert_eq!(
        unsent_deferrals,
        Some(0.0),
        "the window, not the socket, held it back"
    );

    let at_resume = current_seqs(&server).await;
    let caught = catch_up(&mut ws, &at_resume, Some(WINDOW)).await;
    // At most the window's ticks were in flight when the client paused: one message each.
    assert!(
        caught.stale_messages <= WINDOW,
        "{} old messages ({} bytes) before the newest values, window {WINDOW}",
        caught.stale_messages,
        caught.stale_bytes
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_game_reader_resumes_on_a_current_tick() {
    let mut config = test_config();
    config.session.idle_timeout_ms = 60_000;
    // A whole-room view of 600 objects: ~11 KB a snapshot, 60 a second.
    config.rooms.push(RoomConfig::Game {
        name: "crowd".into(),
        game: GameConfig {
            bots: 600,
            cell_size: 0.0,
            ..GameConfig::default()
        },
    });
    let limit = config.session.max_unsent_bytes as u64;
    let server = start(config).await;
    let mut ws = RawWs::connect(server.addr, "/ws", Some(CLIENT_RCVBUF))
        .await
        .unwrap();
    send(
        &mut ws,
        Body::Join(Join {
            room: "crowd".into(),
            ..Default::default()
        }),
    )
    .await;
    let mut largest = 0;
    for _ in 0..10 {
        largest = largest.max(next(&mut ws).await.1);
    }
    wait_for("the server stops writing to the paused client", || async {
        let m = metrics(&server).await;
        let deferred = m.value("tickroom_writes_deferred_total", &[("reason", "unsent")]);
        (deferred >= Some(1.0)).then_some(())
    })
    .await;
    let room_tick = || async {
        rooms_json(server.addr).await["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "crowd")
            .unwrap()["tick"]
            .as_u64()
            .unwrap()
    };
    let paused_tick = room_tick().await;
    wait_for("the room ticks on", || async {
        (room_tick().await >= paused_tick + 60).then_some(())
    })
    .await;

    let at_resume = room_tick().await;
    let start = ws.bytes_read();
    loop {
        let before = ws.bytes_read() - start;
        let (m, len) = next(&mut ws).await;
        largest = largest.max(len);
        if matches!(m.body, Some(SBody::Snapshot(_))) && m.tick >= at_resume {
            let bound = limit + CLIENT_KERNEL + largest as u64 + 14;
            assert!(
                before <= bound,
                "{before} bytes of old snapshots before one of tick {at_resume} or later; \
                 bound {bound}"
            );
            break;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalled_past_the_stall_timeout_is_closed_as_a_slow_consumer() {
    let mut config = config();
    config.session.ping_interval_ms = 100;
    config.session.stall_timeout_ms = 300;
    let server = start(config).await;
    let mut ws = subscribed(server.addr).await;
    wait_for("the stalled session is closed", || async {
        let m = metrics(&server).await;
        let stalled = m.value(
            "tickroom_connections_closed_total",
            &[("reason", "stalled")],
        );
        (stalled == Some(1.0)).then_some(())
    })
    .await;
    // What the server managed to write before giving up, then the end of the stream; if its
    // close frame got through, it says why.
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Ok(f) if f.opcode == 0x8 => break f.close_code(),
            Ok(_) => {}
            Err(RawError::Ended | RawError::Io(_)) => break None,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(matches!(close, None | Some(4000)), "{close:?}");
    server.stop().await;
}
