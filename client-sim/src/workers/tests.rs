use super::*;
use crate::testing::{assert_all_joined, game_server, parse};

/// Not a test: the entry of a worker process in test builds, which start the test binary
/// again on this function (see [`command`]). Without its variable it does nothing.
#[test]
fn worker_entry() {
    let Ok(argv) = std::env::var(ARGV_ENV) else {
        return;
    };
    let argv: Vec<String> = serde_json::from_str(&argv).unwrap();
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    crate::execute(parse(&refs), argv).unwrap();
}

#[test]
fn splits_clients_between_workers() {
    let spec = |index| {
        Role::Worker(WorkerSpec {
            index,
            count: 3,
            start_us: 0,
            out: PathBuf::new(),
        })
    };
    let owned = |w: u32| (0..10).filter(|&id| spec(w).owns(id)).collect::<Vec<_>>();
    assert_eq!(owned(0), [0, 3, 6, 9]);
    assert_eq!(owned(2), [2, 5, 8]);
    assert_eq!(spec(1).clients_per_process(10), 4);
    assert_eq!(
        Role::Parent(2).describe(3),
        ", 2 worker processes, 3 source addresses"
    );
    assert_eq!(Role::Local.describe(1), "");
}

/// 20 game clients in two worker processes against a real server: the parent's report has
/// all 20, and the merged latency histograms hold every worker's samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_runs_over_two_workers() {
    let server = game_server(0).await;
    let crate::Scenario::Game(args) = parse(&[
        "game",
        "--url",
        &server.url,
        "--metrics-url",
        &server.metrics_url,
        "--clients",
        "20",
        "--ramp",
        "100",
        "--duration",
        "1.5",
        "--input-hz",
        "10",
        "--workers",
        "2",
        "--source-ips",
        "2",
    ]) else {
        unreachable!()
    };
    let r = crate::game::run(args).await.unwrap();
    assert_all_joined(&r.head, 20);
    let p = &r.tail.client_processes;
    assert_eq!(
        (p.workers, p.source_ips, p.worker_cpu_percent.len()),
        (2, 2, 2)
    );
    // Every snapshot a client counted is one latency sample, whichever worker it was in.
    assert_eq!(r.snapshot_latency_us.samples, r.snapshots.received);
    assert!(r.snapshots.received > 20 * 30, "{:?}", r.snapshots);
    assert_eq!(r.input_ack_latency_us.samples, r.inputs.acked);
    assert_eq!(r.snapshots.per_client_per_s.clients, 20);
    let m = r.tail.server.metrics.as_ref().unwrap();
    let end = m.end_of_hold.as_ref().unwrap();
    assert_eq!(end.tickroom_connections_active, Some(20), "{m:#?}");
    assert!(r.tail.warnings.is_empty(), "{:?}", r.tail.warnings);
    assert!(r.table().contains("2 workers"), "{}", r.table());
}
