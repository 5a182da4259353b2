use tickroom::config::RoomConfig;

use super::*;
use crate::testing::{TestServer, arena, assert_all_joined, real_server, swarm_args};

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
