//! Ticker rooms over real sockets: subscribe and unsubscribe, the REST two-step flow and its
//! errors, the replay feed, and a slow reader's bounded cost and fresh values.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use tickroom::config::RoomConfig;
use tickroom::feed::{FeedConfig, Pace, ReplayConfig, SyntheticConfig};
use tickroom::proto::v1::{
    ErrorCode, Quote, RoomKind, Subscribe, Unsubscribe, client_message::Body, object::State,
    server_message::Body as SBody,
};
use tickroom::sim::ticker::TickerConfig;

/// A server whose only room is a ticker room called "prices" on `feed`.
fn ticker_config(tick_hz: u32, max_symbols: u32, feed: FeedConfig) -> tickroom::Config {
    let mut c = test_config();
    c.rooms.push(RoomConfig::Ticker {
        name: "prices".into(),
        ticker: TickerConfig {
            tick_hz,
            max_symbols_per_session: max_symbols,
            feed,
        },
    });
    c
}

fn synthetic(symbols: u32, updates_per_sec: f64) -> FeedConfig {
    FeedConfig::Synthetic(SyntheticConfig {
        symbols,
        updates_per_sec,
        ..Default::default()
    })
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The quotes in a message (none for other messages).
fn quotes(body: &Option<SBody>) -> Vec<Quote> {
    match body {
        Some(SBody::Snapshot(s)) => s
            .objects
            .iter()
            .map(|o| match &o.state {
                Some(State::Quote(q)) => q.clone(),
                other => panic!("a ticker snapshot holds quotes, not {other:?}"),
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn subscribe(c: &mut Client, symbols: &[&str]) -> Vec<String> {
    c.send(Body::Subscribe(Subscribe {
        symbols: names(symbols),
    }))
    .await;
    ack(c).await
}

/// Reads up to the next Subscriptions answer; panics on an Error.
async fn ack(c: &mut Client) -> Vec<String> {
    loop {
        match c.recv().await.body {
            Some(SBody::Subscriptions(s)) => return s.symbols,
            Some(SBody::Error(e)) => panic!("unexpected error: {e:?}"),
            _ => {}
        }
    }
}

/// Every quote received for `period`, checking that per-symbol sequence numbers only grow.
async fn quotes_for(
    c: &mut Client,
    period: Duration,
    last_seq: &mut HashMap<String, u64>,
) -> Vec<Quote> {
    let mut got = Vec::new();
    let end = tokio::time::Instant::now() + period;
    while let Ok(m) = tokio::time::timeout_at(end, c.recv()).await {
        for q in quotes(&m.body) {
            let prev = last_seq.insert(q.symbol.clone(), q.seq);
            assert!(
                prev.is_none_or(|p| q.seq > p),
                "{}: seq {} after {prev:?}",
                q.symbol,
                q.seq
            );
            got.push(q);
        }
    }
    got
}

async fn post_session(server: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_request(server.addr, "POST", "/api/v1/sessions", body).await;
    (status, serde_json::from_slice(&body).expect("JSON answer"))
}

async fn get_quotes(server: &TestServer, query: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_get(server.addr, &format!("/api/v1/quotes{query}")).await;
    (status, serde_json::from_str(&body).expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_gives_each_symbol_at_once_then_updates_in_sequence() {
    let server = start(ticker_config(50, 100, synthetic(20, 50.0))).await;
    let mut c = Client::connect(&server).await;
    let welcome = c.join("prices").await;
    assert_eq!(welcome.room_kind, RoomKind::Ticker as i32);
    let wanted = ["SYM007", "SYM001", "SYM020"];
    assert_eq!(subscribe(&mut c, &wanted).await, wanted);
    // The current value of each symbol comes first, one snapshot each. (A value that changed
    // before the client read it was replaced by the newer one, at the back of the queue, so
    // their order is not the subscription order.)
    let mut first = Vec::new();
    while first.len() < 3 {
        first.extend(quotes(&c.recv().await.body));
    }
    let first_names: HashSet<&str> = first.iter().map(|q| q.symbol.as_str()).collect();
    assert_eq!(
        first_names,
        wanted.into_iter().collect(),
        "one current value each"
    );
    let mut seqs: HashMap<String, u64> = first.iter().map(|q| (q.symbol.clone(), q.seq)).collect();
    let updates = quotes_for(&mut c, Duration::from_millis(1500), &mut seqs).await;
    for name in wanted {
        let n = updates.iter().filter(|q| q.symbol == name).count();
        assert!(n >= 5, "{name}: {n} updates in 1.5 s at 50 updates/s");
    }
    assert!(
        updates.iter().all(|q| wanted.contains(&q.symbol.as_str())),
        "only subscribed symbols arrive"
    );
    let q = &updates[updates.len() - 1];
    assert!(q.bid <= q.last && q.last <= q.ask && q.volume > 0 && q.exchange_time_us > 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_updates() {
    let server = start(ticker_config(50, 100, synthetic(10, 50.0))).await;
    let mut c = Client::connect(&server).await;
    c.join("prices").await;
    subscribe(&mut c, &["SYM001", "SYM002"]).await;
    c.send(Body::Unsubscribe(Unsubscribe {
        symbols: names(&["SYM001"]),
    }))
    .await;
    assert_eq!(ack(&mut c).await, ["SYM002"]);
    let mut seqs = HashMap::new();
    let got = quotes_for(&mut c, Duration::from_millis(800), &mut seqs).await;
    assert!(
        got.iter().any(|q| q.symbol == "SYM002"),
        "SYM002 still flows"
    );
    assert!(
        got.iter().all(|q| q.symbol == "SYM002"),
        "nothing of SYM001 after the answer"
    );
    c.send(Body::Unsubscribe(Unsubscribe { symbols: vec![] }))
        .await;
    assert!(
        ack(&mut c).await.is_empty(),
        "an empty list unsubscribes all"
    );
    let got = quotes_for(&mut c, Duration::from_millis(500), &mut seqs).await;
    assert!(got.is_empty(), "no updates without subscriptions: {got:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_whole_with_clear_errors() {
    let server = start(ticker_config(20, 3, synthetic(10, 5.0))).await;
    let mut c = Client::connect(&server).await;
    c.send(Body::Subscribe(Subscribe {
        symbols: names(&["SYM001"]),
    }))
    .await;
    expect_error(&mut c, ErrorCode::NotInRoom).await;
    c.join("prices").await;
    let msg = {
        c.send(Body::Subscribe(Subscribe {
            symbols: names(&["SYM001", "NOPE", "ZZZ"]),
        }))
        .await;
        expect_error(&mut c, ErrorCode::UnknownSymbol).await
    };
    assert!(msg.contains("NOPE") && msg.contains("ZZZ"), "{msg}");
    c.send(Body::Subscribe(Subscribe {
        symbols: names(&["SYM001", "SYM002", "SYM003", "SYM004"]),
    }))
    .await;
    let msg = expect_error(&mut c, ErrorCode::LimitExceeded).await;
    assert!(msg.contains("limit of 3"), "{msg}");
    c.send(Body::Subscribe(Subscribe { symbols: vec![] })).await;
    expect_error(&mut c, ErrorCode::InvalidArgument).await;
    // None of the refused requests subscribed anything.
    assert_eq!(subscribe(&mut c, &["SYM005"]).await, ["SYM005"]);
    // A game room does not take subscriptions.
    let mut g = Client::connect(&server).await;
    g.join("arena").await;
    g.send(Body::Subscribe(Subscribe {
        symbols: names(&["SYM001"]),
    }))
    .await;
    expect_error(&mut g, ErrorCode::UnknownMessage).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_flow_streams_exactly_the_requested_symbols() {
    let server = start(ticker_config(50, 100, synthetic(30, 50.0))).await;
    let wanted = ["SYM030", "SYM003", "SYM010"];
    let (status, created) = post_session(
        &server,
        r#"{"symbols": ["SYM030", "SYM003", "SYM010", "SYM003"], "room": "prices"}"#,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["symbols"],
        serde_json::json!(wanted),
        "duplicates dropped"
    );
    let url = created["ws_url"].as_str().unwrap();
    assert_eq!(
        url,
        format!(
            "ws://{}/ws?session={}",
            server.addr,
            created["session_id"].as_str().unwrap()
        )
    );
    let mut c = Client::connect_url(url).await;
    // No message from the client: Welcome, the subscription, then the values.
    let welcome = c
        .recv_until(|m| matches!(m.body, Some(SBody::Welcome(_))))
        .await;
    assert!(matches!(welcome.body, Some(SBody::Welcome(w)) if w.room == "prices"));
    assert_eq!(ack(&mut c).await, wanted);
    let mut seqs = HashMap::new();
    let got = quotes_for(&mut c, Duration::from_millis(1500), &mut seqs).await;
    let seen: HashSet<&str> = got.iter().map(|q| q.symbol.as_str()).collect();
    assert_eq!(
        seen,
        wanted.into_iter().collect(),
        "exactly the requested symbols"
    );
    // A second WebSocket on the same id takes it over with the prepared symbols; the first
    // is closed as a game resume closes the old connection.
    let mut again = Client::connect_url(url).await;
    assert_eq!(ack(&mut again).await, wanted);
    let closed = c.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (4002, "session resumed by another connection")
    );
    // And after that one leaves, the id still works while it is valid.
    drop(again);
    let mut third = Client::connect_url(url).await;
    assert_eq!(ack(&mut third).await, wanted);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_are_clear() {
    let mut config = ticker_config(20, 5, synthetic(10, 5.0));
    config.api.session_ttl_ms = 300;
    let server = start(config).await;
    let (status, body) = post_session(&server, r#"{"symbols": ["SYM001", "NOPE", "X"]}"#).await;
    assert_eq!(status, 400);
    assert_eq!(body["unknown"], serde_json::json!(["NOPE", "X"]));
    assert!(body["error"].as_str().unwrap().contains("NOPE"));
    for (bad, want) in [
        (r#"{"symbols": []}"#, 400),
        (r#"{"symbols": "SYM001"}"#, 400),
        ("not json", 400),
        (r#"{"symbols": ["SYM001"], "room": "nowhere"}"#, 404),
        (r#"{"symbols": ["SYM001"], "room": "arena"}"#, 400),
        (
            r#"{"symbols": ["SYM001","SYM002","SYM003","SYM004","SYM005","SYM006"]}"#,
            400,
        ),
    ] {
        let (status, body) = post_session(&server, bad).await;
        assert_eq!(status, want, "{bad} -> {body}");
        assert!(body["error"].is_string(), "{body}");
    }
    // An id that never existed, and one whose ttl ran out unused: closed with a reason.
    let mut c = Client::connect_url(&format!("ws://{}/ws?session=0123abcd", server.addr)).await;
    let closed = c.expect_close().await;
    assert_eq!(closed.code, 4003, "{closed:?}");
    assert!(closed.reason.contains("session"), "{closed:?}");
    let (_, created) = post_session(&server, r#"{"symbols": ["SYM001"]}"#).await;
    // Expiry is decided by the clock when the WebSocket attaches, and the ttl started before
    // the answer reached us: waiting the ttl out is the condition itself, not a guess.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = Client::connect_url(created["ws_url"].as_str().unwrap()).await;
    assert_eq!(c.expect_close().await.code, 4003);
    // Quotes: unknown names and an empty list are errors; a good request answers JSON.
    let (status, body) = get_quotes(&server, "?symbols=SYM001,BOGUS").await;
    assert_eq!(
        (status, body["unknown"].clone()),
        (400, serde_json::json!(["BOGUS"]))
    );
    assert_eq!(get_quotes(&server, "?symbols=").await.0, 400);
    assert_eq!(get_quotes(&server, "?room=arena").await.0, 400);
    let (status, body) = get_quotes(&server, "?symbols=SYM002,SYM001").await;
    assert_eq!(status, 200);
    let got: Vec<&str> = body["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["SYM002", "SYM001"]);
    let (_, all) = get_quotes(&server, "").await;
    assert_eq!(
        all["quotes"].as_array().unwrap().len(),
        10,
        "no list: all symbols"
    );
    server.stop().await;
}

/// (seq, last, bid, ask, volume) of one quote.
type Record = (u64, f64, f64, f64, u64);

/// The sample file's records per symbol, parsed here independently of the server, seq
/// counting from 1.
fn sample_records() -> BTreeMap<String, Vec<Record>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/replay-sample.csv");
    let text = std::fs::read_to_string(path).unwrap();
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let list = out.entry(f[1].to_owned()).or_default();
        let seq = list.len() as u64 + 1;
        list.push((
            seq,
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
            f[5].parse().unwrap(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_yields_exactly_the_files_prices_in_order() {
    let expected = sample_records();
    let feed = FeedConfig::Replay(ReplayConfig {
        path: concat!(env!("CARGO_MANIFEST_DIR"), "/config/replay-sample.csv").into(),
        pace: Pace::Recorded,
        repeat: false,
        // Time to subscribe before the first record.
        delay_ms: 1500,
    });
    let server = start(ticker_config(50, 100, feed)).await;
    let mut c = Client::connect(&server).await;
    c.join("prices").await;
    let symbols: Vec<&str> = expected.keys().map(String::as_str).collect();
    subscribe(&mut c, &symbols).await;
    let mut got: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    let done = |got: &BTreeMap<String, Vec<_>>| {
        expected
            .iter()
            .all(|(s, recs)| got.get(s).map(Vec::len) == Some(recs.len()))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !done(&got) && tokio::time::Instant::now() < deadline {
        let Ok(m) = tokio::time::timeout_at(deadline, c.recv()).await else {
            break;
        };
        for q in quotes(&m.body) {
            // seq 0 is the reference value before the first record.
            if q.seq > 0 {
                got.entry(q.symbol.clone())
                    .or_default()
                    .push((q.seq, q.last, q.bid, q.ask, q.volume));
            }
        }
    }
    assert_eq!(got, expected);
    server.stop().await;
}

/// The largest outbox backlog `/rooms` reports for the ticker room.
async fn outbox_pending_max(server: &TestServer) -> u64 {
    let (_, body) = http_get(server.ops, "/rooms").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "prices")
        .and_then(|r| r["outbox_pending_max"].as_u64())
        .expect("prices room listed with outbox_pending_max")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_costs_bounded_memory_then_gets_values_at_least_as_new() {
    const SYMBOLS: u32 = 200;
    let mut config = ticker_config(50, SYMBOLS, synthetic(SYMBOLS, 50.0));
    // Small kernel buffers on both sides, so the stall reaches the server's outbox quickly.
    config.session.send_buffer_bytes = 4096;
    // A client that does not read does not answer pings either; keep it past the stall.
    config.session.idle_timeout_ms = 30_000;
    let server = start(config).await;
    let mut c = Client::connect_small_buffer(&server).await;
    c.join("prices").await;
    let all: Vec<String> = (1..=SYMBOLS).map(|i| format!("SYM{i:03}")).collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    subscribe(&mut c, &all_refs).await;
    let mut seqs = HashMap::new();
    quotes_for(&mut c, Duration::from_millis(300), &mut seqs).await;

    // Stop reading for 3 s while 200 symbols update 50 times a second each.
    let mut most = 0;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        most = most.max(outbox_pending_max(&server).await);
    }
    assert!(
        most >= u64::from(SYMBOLS) / 2,
        "the stall reached the outbox (backlog {most})"
    );
    assert!(
        most <= u64::from(SYMBOLS) + 2,
        "at most one frame per symbol waits, however long the stall (backlog {most})"
    );

    // Read again: every symbol reaches at least the value the server had at that moment.
    let (_, body) = get_quotes(&server, "?room=prices").await;
    let at_resume: HashMap<String, u64> = body["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            (
                q["symbol"].as_str().unwrap().to_owned(),
                q["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(at_resume.len(), SYMBOLS as usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let behind = |seqs: &HashMap<String, u64>| {
        at_resume
            .iter()
            .filter(|(s, want)| seqs.get(*s).is_none_or(|got| got < want))
            .count()
    };
    while behind(&seqs) > 0 && tokio::time::Instant::now() < deadline {
        quotes_for(&mut c, Duration::from_millis(100), &mut seqs).await;
    }
    assert_eq!(behind(&seqs), 0, "symbols still older than at resume");
    server.stop().await;
}
