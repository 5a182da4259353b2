use tickroom::config::RoomConfig;

use super::*;
use crate::testing::{TestServer, arena, assert_all_joined, parse, real_server, swarm_args};

/// A server with the demo chat room ("chat": 10 Hz, 2 messages/s per sender, burst 5) and a
/// game room without bots ("arena").
async fn chat_server() -> TestServer {
    real_server(vec![
        RoomConfig::Chat {
            name: "chat".into(),
            chat: tickroom::sim::chat::ChatConfig::default(),
        },
        arena(0),
    ])
    .await
}

fn args(server: &TestServer, room: &str, viewers: usize, senders: usize, rate: f64) -> ChatArgs {
    ChatArgs {
        swarm: swarm_args(server, viewers + senders, 2.0),
        room: room.into(),
        viewers,
        senders,
        rate,
        loss_grace_ms: 1000,
        urls: Vec::new(),
    }
}

/// Viewers and senders against the real chat room: every message a sender sent in time
/// reaches every viewer, with latency figures and no refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_gets_every_message() {
    let server = chat_server().await;
    let r = run(args(&server, "chat", 5, 2, 2.0)).await.unwrap();
    assert_all_joined(&r.head, 7);
    assert_eq!(r.head.tick_rate_hz, Some(10));
    let (s, v) = (&r.sent, &r.viewers);
    assert!(s.messages >= 4 && s.counted >= 2, "{s:?}");
    assert_eq!((s.refused, s.unechoed), (0, 0), "{s:?}");
    assert_eq!((v.clients, v.checked), (5, 5));
    assert!(v.expected >= 5 * 2, "{v:?}");
    assert_eq!(
        (v.missing, v.lost, v.lost_max_per_client),
        (0, 0, 0),
        "{v:?}"
    );
    assert_eq!(
        (v.dropped_by_cap, v.duplicates, v.other_messages),
        (0, 0, 0)
    );
    assert!(
        v.hold_messages > 0 && v.messages_per_s.clients == 5,
        "{v:?}"
    );
    assert_eq!(
        (r.senders.checked, r.senders.lost),
        (2, 0),
        "{:?}",
        r.senders
    );
    let (vl, sl) = (&r.viewer_latency_us, &r.sender_latency_us);
    assert!(
        vl.samples > 0 && vl.p50 > 0 && vl.p999 >= vl.p50 && vl.max >= vl.p999,
        "{vl:?}"
    );
    assert!(sl.samples > 0, "{sl:?}");
    // A batch reaches a viewer after its tick started, and sooner than its messages'
    // send → receive (which also waited for the tick).
    let fo = &r.batch_fanout_us;
    assert!(fo.samples > 0 && fo.max >= fo.p50, "{fo:?}");
    assert!(fo.max <= vl.max + 1_000, "{fo:?} {vl:?}");
    assert!(r.tail.errors.is_empty(), "{:?}", r.tail.errors);
    let m = r.tail.server.metrics.as_ref().unwrap();
    assert!(m.rss_before_bytes.unwrap() > 0, "{m:?}");
    let table = r.table();
    assert!(table.contains("send -> viewer"), "{table}");
    assert!(table.contains("tick -> viewer"), "{table}");
}

/// Sending faster than the room allows is refused (rate_limited) and not counted as loss;
/// a non-chat room is a wrong_room join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_not_loss() {
    let server = chat_server().await;
    let r = run(args(&server, "chat", 2, 1, 20.0)).await.unwrap();
    let (s, v) = (&r.sent, &r.viewers);
    assert!(s.refused > 0, "{s:?}");
    assert_eq!(s.refused_by_kind["rate_limited"], s.refused, "{s:?}");
    assert_eq!((v.checked, v.lost), (2, 0), "{v:?}");
    assert!(v.expected > 0, "{v:?}");

    let r = run(args(&server, "arena", 1, 0, 1.0)).await.unwrap();
    assert_eq!(r.head.clients.failed_join_reasons["wrong_room"], 1);
}

/// `--urls` over two servers that are not a cluster: viewers alternate between them, the
/// senders are on the first, and the report tells the nodes apart. The second server's room
/// never sees the senders' messages, so its viewers lose them all, and only there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_spread_over_urls() {
    let (a, b) = (chat_server().await, chat_server().await);
    let mut args = args(&a, "chat", 5, 1, 2.0);
    args.swarm.target.url = "ws://127.0.0.1:1/ws".into();
    args.urls = vec![a.url.clone(), b.url.clone()];
    let r = run(args).await.unwrap();
    assert_all_joined(&r.head, 6);
    assert_eq!(r.config.url, a.url, "the senders' node is the run's --url");
    assert_eq!(r.config.urls, [a.url.clone(), b.url.clone()]);
    let by_url: Vec<(&str, u64, u64, u64)> = (r.viewers_by_url.iter())
        .map(|v| {
            (
                v.url.as_str(),
                v.assigned,
                v.received.clients,
                v.received.checked,
            )
        })
        .collect();
    assert_eq!(by_url, [(&*a.url, 3, 3, 3), (&*b.url, 2, 2, 2)]);
    let (on_a, on_b) = (&r.viewers_by_url[0].received, &r.viewers_by_url[1].received);
    assert!(on_a.expected >= 3 * 2, "{on_a:?}");
    assert_eq!((on_a.lost, on_a.duplicates), (0, 0), "{on_a:?}");
    assert!(on_b.expected >= 2 * 2, "{on_b:?}");
    assert_eq!((on_b.received, on_b.lost), (0, on_b.expected), "{on_b:?}");
    let v = &r.viewers;
    assert_eq!((v.clients, v.expected), (5, on_a.expected + on_b.expected));
    assert_eq!(v.lost, on_b.lost);
    let (all, local) = (&r.viewer_latency_us, &r.viewer_latency_local_us);
    assert!(local.samples > 0, "{local:?}");
    assert_eq!((all.samples, all.max), (local.samples, local.max));
    assert_eq!(r.viewer_latency_remote_us.samples, 0);
    let table = r.table();
    assert!(table.contains("2 nodes (senders on ws://"), "{table}");
    assert!(
        table.contains(&format!("{}: 2 (2 joined)", b.url)),
        "{table}"
    );
    assert!(table.contains("  other nodes"), "{table}");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["viewers_by_url"][1]["assigned"], 2);
    assert_eq!(json["viewers_by_url"][1]["clients"], 2);
    assert!(json["viewer_latency_local_us"]["p99"].as_u64().unwrap() > 0);
    assert_eq!(json["viewer_latency_remote_us"]["samples"], 0);
}

/// Without `--urls` everything is on `--url`: one entry, all latency local.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_url_is_one_node() {
    let server = chat_server().await;
    let r = run(args(&server, "chat", 2, 1, 2.0)).await.unwrap();
    assert_eq!(r.config.urls, std::slice::from_ref(&server.url));
    assert_eq!(r.viewers_by_url.len(), 1);
    assert_eq!(r.viewers_by_url[0].assigned, 2);
    assert_eq!(
        r.viewer_latency_local_us.samples,
        r.viewer_latency_us.samples
    );
    assert!(!r.table().contains("viewers on"), "{}", r.table());
}

#[tokio::test]
async fn urls_are_a_comma_separated_loopback_list() {
    let crate::Scenario::Chat(a) =
        parse(&["chat", "--urls", "ws://127.0.0.1:1/ws,ws://[::1]:2/ws"])
    else {
        unreachable!()
    };
    assert_eq!(a.urls, ["ws://127.0.0.1:1/ws", "ws://[::1]:2/ws"]);
    use clap::Parser;
    let both = [
        "client-sim",
        "chat",
        "--url",
        "ws://127.0.0.1:1/ws",
        "--urls",
        "ws://127.0.0.1:2/ws",
    ];
    let e = crate::Cli::try_parse_from(both).err().unwrap();
    assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
    let crate::Scenario::Chat(mut a) =
        parse(&["chat", "--urls", "ws://127.0.0.1:1/ws,ws://10.0.0.7:1/ws"])
    else {
        unreachable!()
    };
    a.swarm.workers = Some(1);
    let e = run(a).await.err().unwrap();
    assert!(format!("{e:#}").contains("not loopback"), "{e:#}");
}

/// Worker processes get `--urls` on their command line: each of two workers spreads its
/// viewers over both servers as one process would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_carry_the_urls() {
    let (a, b) = (chat_server().await, chat_server().await);
    let urls = format!("{},{}", a.url, b.url);
    let crate::Scenario::Chat(args) = parse(&[
        "chat",
        "--urls",
        &urls,
        "--metrics-url",
        &a.metrics_url,
        "--viewers",
        "6",
        "--senders",
        "1",
        "--rate",
        "2",
        "--ramp",
        "100",
        "--duration",
        "1.5",
        "--workers",
        "2",
    ]) else {
        unreachable!()
    };
    let r = run(args).await.unwrap();
    assert_all_joined(&r.head, 7);
    assert_eq!(r.tail.client_processes.workers, 2);
    let joined: Vec<u64> = r
        .viewers_by_url
        .iter()
        .map(|v| v.received.clients)
        .collect();
    assert_eq!(joined, [3, 3]);
    assert_eq!(r.viewers_by_url[0].received.lost, 0);
    let local = &r.viewer_latency_local_us;
    assert!(local.samples > 0 && local.samples == r.viewer_latency_us.samples);
}
