use super::*;
use crate::server_metrics::Sample;
use crate::testing::{assert_all_joined, game_server, swarm_args};

/// 50 sessions join a real game room, every socket is reset, and the server drops them all:
/// connections back to 0, alive tasks back to the baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_settles_after_a_reset_spike() {
    let server = game_server(5).await;
    let args = SpikeArgs {
        swarm: swarm_args(&server, 50, 1.0),
        clients: 50,
        ramp_secs: Some(0.5),
        room: "arena".into(),
        settle_timeout: 20.0,
    };
    let r = run(args).await.unwrap();
    assert_all_joined(&r.head, 50);
    assert_eq!(r.first_snapshot_latency_us.samples, 50);
    assert_eq!(r.joined_without_snapshot, 0);
    let (s, m) = (&r.settle, r.tail.server.metrics.as_ref().unwrap());
    assert!(s.settled && s.error.is_none(), "{s:#?}");
    let connections = |x: &Option<Sample>| x.as_ref().unwrap().tickroom_connections_active;
    assert_eq!(connections(&m.before), Some(0), "{m:#?}");
    assert_eq!(connections(&m.end_of_hold), Some(50), "{m:#?}");
    assert_eq!(connections(&s.last), Some(0), "{s:#?}");
    assert!(m.rss_before_bytes.unwrap() > 0 && s.rss_peak_bytes >= m.rss_before_bytes);
    // The server shares this process with other tests, so whether its RSS came back is not
    // asserted; that the verdict is the one its two figures give is.
    let (before, after) = (m.rss_before_bytes.unwrap(), s.rss_after_bytes.unwrap());
    assert_eq!(
        s.rss_after_within_10pct,
        Some(after as f64 <= before as f64 * 1.1),
        "{s:#?}"
    );
    // The client never closed politely: no close frame came back either.
    assert!(r.tail.close_codes.is_empty(), "{:?}", r.tail.close_codes);
    assert!(r.table().contains("back to the baseline"), "{}", r.table());
}

/// Without a baseline (nothing listens at --metrics-url) the spike cannot settle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metrics_means_not_settled() {
    let server = game_server(0).await;
    let mut swarm = swarm_args(&server, 2, 0.5);
    // The public port answers 404 at /metrics.
    swarm.target.metrics_url = server
        .url
        .replace("ws://", "http://")
        .replace("/ws", "/metrics");
    let args = SpikeArgs {
        swarm,
        clients: 2,
        ramp_secs: None,
        room: "arena".into(),
        settle_timeout: 1.0,
    };
    let r = run(args).await.unwrap();
    assert_eq!(r.head.clients.connected, 2);
    assert!(!r.settle.settled);
    assert!(
        r.settle.error.as_deref().unwrap().contains("baseline"),
        "{:?}",
        r.settle
    );
    assert!(
        r.tail.warnings.iter().any(|w| w.contains("scraping")),
        "{:?}",
        r.tail.warnings
    );
}
