use super::*;
use crate::report::{
    ClientCpu, ClientProcesses, Clients, Common, Head, ServerSide, Tail, Timing, Traffic,
};
use crate::server_metrics::ServerMetrics;
use crate::swarm::Swarm;
use crate::testing::{TestServer, placeholder_target, swarm_args};

fn target() -> Target {
    placeholder_target("ws://127.0.0.1:18080/ws")
}

#[test]
fn draws_are_distinct_seeded_and_per_client() {
    let a = draw(1, 0, 500, 20);
    assert_eq!(a.len(), 20);
    let mut d = a.clone();
    d.sort_unstable();
    d.dedup();
    assert_eq!(d.len(), 20);
    assert!(a.iter().all(|&i| i < 500));
    assert_eq!(a, draw(1, 0, 500, 20), "same seed and client, same symbols");
    assert_ne!(a, draw(1, 1, 500, 20), "clients draw differently");
    assert_ne!(a, draw(2, 0, 500, 20), "seeds draw differently");
    assert_eq!(draw(7, 3, 5, 9).len(), 5, "never more than there are");
}

#[test]
fn session_answers() {
    let t = target();
    let ok = json!({"session_id": "s1", "ws_url": "ws://127.0.0.1:18080/ws?session=s1",
                    "expires_in_ms": 30000});
    assert_eq!(
        session_url(&t, 201, &ok).unwrap(),
        ("ws://127.0.0.1:18080/ws?session=s1".to_owned(), None)
    );
    let elsewhere = json!({"ws_url": "ws://0.0.0.0:18080/ws?session=s2"});
    assert_eq!(
        session_url(&t, 200, &elsewhere).unwrap(),
        (
            "ws://127.0.0.1:18080/ws?session=s2".to_owned(),
            Some("0.0.0.0:18080".to_owned())
        )
    );
    let refused = json!({"error": "unknown symbols", "unknown": ["NOPE"]});
    let e = session_url(&t, 400, &refused).unwrap_err();
    assert!(
        e.contains("status 400") && e.contains("unknown symbols") && e.contains("NOPE"),
        "{e}"
    );
    let e = session_url(&t, 200, &json!({})).unwrap_err();
    assert!(e.contains("no ws_url"), "{e}");
    let e = session_url(&t, 200, &json!({"ws_url": "http://x/ws"})).unwrap_err();
    assert!(e.contains("is not a ws:// URL"), "{e}");
}

#[test]
fn parses_the_quote_list() {
    let json = json!({"room": "ticker", "quotes": [
        {"symbol": "SYM001", "last": 1.0, "seq": 3}, {"symbol": "SYM002", "last": 2.0, "seq": 1}
    ]});
    assert_eq!(parse_universe(&json).unwrap(), ["SYM001", "SYM002"]);
    let e = parse_universe(&json!({"quotes": [{"last": 1.0}]})).unwrap_err();
    assert!(e.to_string().contains("a quote without \"symbol\""), "{e}");
    let e = parse_universe(&json!({})).unwrap_err();
    assert!(e.to_string().contains("no \"quotes\" array"), "{e}");
}

#[test]
fn acks_compare_as_sets() {
    let ack = vec!["B".to_owned(), "A".to_owned()];
    assert!(same_symbols(&ack, &["A", "B"]));
    assert!(!same_symbols(&ack, &["A"]));
    assert!(!same_symbols(&ack, &["A", "C"]));
}

fn common() -> Common {
    Common {
        head: Head {
            timing: Timing {
                ramp_s: 0.4,
                hold_s: 2.0,
                wall_s: 3.0,
                interrupted: false,
            },
            tick_rate_hz: Some(20),
            clients: Clients {
                requested: 3,
                connected: 2,
                failed_joins: 1,
                failed_join_reasons: [("session".to_owned(), 1)].into(),
                first_join_error: Some("session: POST /api/v1/sessions: status 400".into()),
                redirects: 0,
                ended_early: 0,
                aborted: 0,
            },
        },
        tail: Tail {
            traffic: Traffic {
                frames: 10,
                bytes: 1000,
                hold_frames: 8,
                hold_bytes: 800,
                frames_per_s: 4.0,
                bytes_per_s: 400.0,
            },
            errors: BTreeMap::new(),
            close_codes: BTreeMap::new(),
            decode_errors: 0,
            server: ServerSide {
                before: None,
                end_of_hold: None,
                overruns_during_run: None,
                skipped_ticks_during_run: None,
                fetch_errors: vec![],
                metrics: Some(ServerMetrics::default()),
            },
            client_cpu: ClientCpu {
                percent_of_one_core: Some(5.0),
                cores: 1,
                saturated: false,
            },
            client_processes: ClientProcesses::default(),
            client_limits: vec![],
            warnings: vec![],
        },
        nofile: None,
    }
}

fn config() -> TickerConfig {
    TickerConfig {
        url: "ws://127.0.0.1:18080/ws".into(),
        room: "ticker".into(),
        flow: "rest",
        clients: 3,
        symbols_per_client: 2,
        symbol_list: None,
        seed: Some(1),
        ramp_per_s: 500.0,
        duration_s: 2.0,
        initial_window_ms: 1000,
    }
}

#[test]
fn summarizes_client_outcomes() {
    let t0 = Instant::now();
    let window = Duration::from_secs(1);
    // Client 0: all values in time, 4 updates (one gap of 2), a duplicate.
    let mut a = Outcome {
        wanted: 2,
        acked: true,
        ..Outcome::default()
    };

    for (id, seq) in [(1, 5), (2, 9), (1, 6), (2, 12), (1, 7), (1, 7), (2, 13)] {
        if a.seq.observe(id, seq) == Seen::First {
            a.first.record(true, t0, Some(t0), window, 2);
        }
    }
    a.initial_missing = a.first.missing(t0, t0, window, 2);
    (a.window_updates, a.hold_updates, a.updates_per_s) = (4, 3, Some(2.0));
    // Client 1: rejected subscribe, ws_url on another host.
    let b = Outcome {
        wanted: 2,
        subscribe_fail: Some(SubscribeFail::Rejected {
            code: "unknown_symbol".into(),
            message: "NOPE".into(),
        }),
        other_host: Some("0.0.0.0:18080".into()),
        ..Outcome::default()
    };

    // Client 2: never joined.
    let c = Outcome::default();

    let mut r = TickerReport::new(common(), config());
    let joined = || Conn {
        joined: true,
        ..Conn::default()
    };
    let outcomes = [(joined(), a), (joined(), b), (Conn::default(), c)];
    summarize(&mut r, &outcomes, 2.0);
    let s = &r.subscriptions;
    assert_eq!((s.requested, s.acked, s.failed), (2, 1, 1));
    assert_eq!(s.failed_reasons["unknown_symbol"], 1);
    assert_eq!(s.first_failure.as_deref(), Some("unknown_symbol: NOPE"));
    assert_eq!(s.ws_url_other_host, 1);
    let i = &r.initial_values;
    assert_eq!(
        (i.clients_checked, i.expected, i.in_time, i.missing),
        (1, 2, 2, 0)
    );
    let q = &r.quotes;
    assert_eq!((q.received, q.initial, q.hold_received), (4, 2, 3));
    assert_eq!((q.gaps, q.skipped, q.duplicates, q.reorders), (1, 2, 1, 0));
    assert_eq!(q.per_s, 1.5);
    assert_eq!(q.conflated_pct, 33.33, "2 skipped of 4 updates + 2 skipped");
    assert_eq!(q.per_client_per_s.median, 2.0);

    let table = r.table();
    for expected in [
        "flow rest, 2 symbols each (random of ?, seed 1)",
        "acked 1/2, failed 1 (unknown_symbol 1), ack mismatches 0",
        "first subscribe err  unknown_symbol: NOPE",
        "2/2 within 1000 ms of the ack, late 0, missing 0 (1 clients checked)",
        "4 updates + 2 first values; 1 gaps skipping 2 values (33.33 % conflated)",
        "reorders 0, duplicates 1, unexpected symbols 0",
        "feed -> client",
    ] {
        assert!(table.contains(expected), "{expected:?} not in\n{table}");
    }
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["scenario"], "ticker");
    assert_eq!(json["quotes"]["skipped"], 2);
    assert_eq!(json["subscriptions"]["failed_reasons"]["unknown_symbol"], 1);
}

fn args(server: &TestServer, flow: Flow, symbol_list: Option<Vec<String>>) -> TickerArgs {
    TickerArgs {
        swarm: swarm_args(server, 4, 1.0),
        clients: 4,
        room: "ticker".into(),
        symbols: 3,
        symbol_list,
        seed: 1,
        flow,
        initial_window_ms: 500,
    }
}

/// Symbols of the test server's ticker room.
const SYMBOLS: usize = 10;

/// A real tickroom server on ephemeral loopback ports with one ticker room, "ticker": 10
/// synthetic symbols updating 50 times a second each, at 50 Hz.
async fn real_server() -> TestServer {
    use tickroom::config::RoomConfig;
    use tickroom::feed::{FeedConfig, SyntheticConfig};
    use tickroom::sim::ticker::TickerConfig;
    crate::testing::real_server(vec![RoomConfig::Ticker {
        name: "ticker".into(),
        ticker: TickerConfig {
            tick_hz: 50,
            max_symbols_per_session: 100,
            feed: FeedConfig::Synthetic(SyntheticConfig {
                symbols: SYMBOLS as u32,
                updates_per_sec: 50.0,
                ..Default::default()
            }),
        },
    }])
    .await
}

/// Both flows against a real server: everyone subscribes, gets every first value in time,
/// then a stream of updates in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_quotes_through_both_flows() {
    let server = real_server().await;
    for flow in [Flow::Subscribe, Flow::Rest] {
        let r = run(args(&server, flow, None)).await.unwrap();
        let (c, s, i, q) = (
            &r.head.clients,
            &r.subscriptions,
            &r.initial_values,
            &r.quotes,
        );
        assert_eq!(
            (c.connected, s.acked, s.failed),
            (4, 4, 0),
            "{flow:?}: {r:#?}"
        );
        assert_eq!((s.ack_mismatches, s.ws_url_other_host), (0, 0));
        assert_eq!(
            (i.clients_checked, i.expected, i.in_time, i.missing),
            (4, 12, 12, 0)
        );
        assert_eq!((q.initial, q.unexpected_symbols), (12, 0));
        assert_eq!((q.reorders, q.duplicates), (0, 0));
        assert!(q.received > 100 && q.skipped >= q.gaps, "{q:?}");
        assert_eq!(q.per_client_per_s.clients, 4);
        let lat = &r.feed_latency_us;
        assert!(lat.p50 > 0 && lat.p99 < 1_000_000, "{lat:?}");
        assert_eq!(r.subscribe_latency_us.samples, 4);
        assert_eq!(r.initial_values_latency_us.samples, 4);
        assert_eq!(r.head.tick_rate_hz, Some(50));
        assert_eq!(r.universe.symbols, Some(SYMBOLS));
        assert!(r.tail.server.end_of_hold.is_some());
        assert!(r.tail.warnings.is_empty(), "{:?}", r.tail.warnings);
        let m = r.tail.server.metrics.as_ref().unwrap();
        assert!(m.rss_end_of_hold_bytes.unwrap() > 0, "{m:?}");
        assert!(m.frames_written_per_s.unwrap() > 0.0, "{m:?}");
        assert!(m.missing_series.is_empty(), "{m:?}");
    }
}

/// An unknown symbol fails the Subscribe (flow subscribe) or the session POST (flow rest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_symbols_fail_subscribe_or_session() {
    let server = real_server().await;
    let list = Some(vec!["SYM001".to_owned(), "NOPE".to_owned()]);
    let r = run(args(&server, Flow::Subscribe, list.clone()))
        .await
        .unwrap();
    assert_eq!(r.head.clients.connected, 4);
    assert_eq!(r.subscriptions.failed_reasons["unknown_symbol"], 4);
    assert_eq!(r.tail.errors["unknown_symbol"], 4);
    assert!(r.tail.warnings[0].contains("NOPE"), "{:?}", r.tail.warnings);

    let r = run(args(&server, Flow::Rest, list)).await.unwrap();
    assert_eq!(r.head.clients.failed_join_reasons["session"], 4);
    let e = r.head.clients.first_join_error.unwrap();
    assert!(e.contains("400") && e.contains("NOPE"), "{e}");
}

/// An unknown session id is refused with close code 4003 before Welcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session_is_a_rejected_join() {
    let server = real_server().await;
    let target = target::resolve(&server.url).await.unwrap();
    let now = Instant::now();
    let swarm = Swarm {
        target: target.clone(),
        hold_start: now,
        hold_end: now + Duration::from_secs(5),
        live: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        tick_rate_hz: std::sync::atomic::AtomicU32::new(0),
        reset_on_drop: false,
        source_ips: 1,
    };
    let mut conn = Conn::default();
    let url = target.ws_url("/ws?session=nope");
    let fail = swarm::join(&swarm, &mut conn, 0, &url, None)
        .await
        .err()
        .unwrap();
    assert_eq!(fail.message(), "rejected: close code 4003");
    assert_eq!(conn.close_code, Some(4003));
}
