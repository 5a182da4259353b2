use super::*;
use crate::testing::{game_server, target_args};

fn args(server: &crate::testing::TestServer, rate: f64, duration: f64) -> ChurnArgs {
    ChurnArgs {
        target: target_args(server),
        rate,
        duration,
        room: "arena".into(),
        stay_ms: 200,
        reset_share: 0.5,
        settle_timeout: 20.0,
    }
}

#[test]
fn resets_are_spread_evenly() {
    let shared = |reset_share| Shared {
        join: Vec::new(),
        stay: Duration::ZERO,
        reset_share,
        join_latency: Shards::new(),
        first_snapshot: Shards::new(),
        started: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let pattern = |share| (0..8).map(|i| shared(share).resets(i)).collect::<Vec<_>>();
    assert_eq!(
        pattern(0.5),
        [false, true, false, true, false, true, false, true]
    );
    assert!(pattern(0.0).iter().all(|r| !r));
    assert!(pattern(1.0).iter().all(|r| *r));
    assert_eq!(pattern(0.25).iter().filter(|r| **r).count(), 2);
}

/// 20 sessions a second for 2 s against a real game room: every one joins, gets a snapshot
/// and leaves (half politely, half by RST), the starts keep to the schedule, and the server
/// settles back to its baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_settles_after_churn() {
    let server = game_server(0).await;
    let r = run(args(&server, 20.0, 2.0)).await.unwrap();
    let (k, ch) = (&r.head.clients, &r.churn);
    assert_eq!(
        (k.requested, k.connected, k.failed_joins),
        (40, 40, 0),
        "{k:#?}"
    );
    assert_eq!(ch.started, 40);
    assert_eq!((ch.polite_closes, ch.resets), (20, 20), "{ch:#?}");
    assert_eq!(ch.joined_without_snapshot, 0);
    // How fast the starts came is the client's clock on a shared machine: not asserted. What
    // is: every start was timed against its schedule, and all joined, so the join rate is the
    // start rate.
    assert_eq!(ch.start_lag_us.samples, 40, "{ch:#?}");
    assert!(ch.achieved_rate_per_s.is_some_and(|r| r > 0.0), "{ch:#?}");
    assert_eq!(ch.joined_per_s, ch.achieved_rate_per_s, "{ch:#?}");
    assert_eq!(r.first_snapshot_latency_us.samples, 40);
    assert_eq!(r.join_latency_us.samples, 40);
    let s = &r.settle;
    assert!(s.settled && s.error.is_none(), "{s:#?}");
    assert_eq!(
        s.last.as_ref().unwrap().tickroom_connections_active,
        Some(0)
    );
    assert_eq!(k.ended_early, 0, "the server closed none");
    assert!(r.table().contains("back to the baseline"), "{}", r.table());
}
