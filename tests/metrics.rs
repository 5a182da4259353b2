//! The operations port's `/metrics` after real traffic, and readiness during shutdown.

mod common;

use common::*;
use tickroom::proto::v1::client_message::Body;

/// The value of the first sample line of `name` whose labels contain every `labels` entry.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
                && labels.iter().all(|want| l.contains(want))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The names of every sample line (histograms have their `_bucket`, `_sum`, `_count`).
fn names(text: &str) -> std::collections::BTreeSet<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect()
}

async fn scrape(server: &TestServer) -> String {
    let (status, body) = http_get(server.ops, "/metrics").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_change_with_real_traffic() {
    let server = start(test_config()).await;
    let before = scrape(&server).await;
    let frames_before = sample(&before, "tickroom_frames_written_total", &[]).unwrap_or(0.0);

    let mut a = Client::connect(&server).await;
    a.join("arena").await;
    let mut b = Client::connect(&server).await;
    b.join("arena").await;
    for seq in 1..=5 {
        a.input(seq, 1.0, 0.0).await;
    }
    a.send_raw(raw(&[0xff, 0xff])).await; // malformed
    for _ in 0..10 {
        a.snapshot().await;
        b.snapshot().await;
    }
    b.send(Body::Leave(Default::default())).await;
    drop(a); // a disconnect
    // Let the room notice, and its tick histogram fill.
    eventually("both sessions left", || async {
        room_sessions(&server, "arena").await == 0
    })
    .await;
    let kind = "kind=\"game\"";
    let m = wait_for("the leaves are counted", || async {
        let m = scrape(&server).await;
        (sample(&m, "tickroom_sessions_active", &[kind]) == Some(0.0)).then_some(m)
    })
    .await;

    // This server's own recorder: exactly what these two clients did.
    assert_eq!(sample(&m, "tickroom_joins_total", &[kind]), Some(2.0));
    assert_eq!(
        sample(&m, "tickroom_leaves_total", &[kind, "reason=\"leave\""]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tickroom_leaves_total",
            &[kind, "reason=\"disconnect\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tickroom_messages_rejected_total",
            &["reason=\"malformed\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "tickroom_connections_closed_total",
            &["reason=\"client_closed\""]
        )
        .unwrap_or(0.0)
            + sample(
                &m,
                "tickroom_connections_closed_total",
                &["reason=\"peer_gone\""]
            )
            .unwrap_or(0.0),
        1.0,
        "a's connection ended (b left its room but is still connected)"
    );
    let frames = sample(&m, "tickroom_frames_written_total", &[]).unwrap();
    assert!(
        frames >= frames_before + 20.0,
        "frames {frames_before} -> {frames}"
    );
    assert!(sample(&m, "tickroom_bytes_written_total", &[]).unwrap() > 1000.0);
    assert!(sample(&m, "tickroom_socket_flushes_total", &[]).unwrap() >= 20.0);
    assert!(sample(&m, "tickroom_ticks_total", &[kind]).unwrap() > 10.0);
    // Histogram with buckets fine enough below 1 ms.
    assert!(
        sample(
            &m,
            "tickroom_tick_duration_seconds_bucket",
            &[kind, "le=\"0.0005\""]
        )
        .is_some()
    );
    assert!(sample(&m, "tickroom_tick_duration_seconds_count", &[kind]).unwrap() > 10.0);
    assert!(sample(&m, "tickroom_encode_duration_seconds_count", &[kind]).unwrap() > 10.0);
    assert!(sample(&m, "tickroom_handout_duration_seconds_count", &[kind]).unwrap() > 10.0);
    // The rooms' snapshots reached the sockets through the flushers.
    assert!(sample(&m, "tickroom_flush_duration_seconds_count", &[]).unwrap() > 10.0);
    assert!(sample(&m, "tickroom_command_queue_depth", &["room=\"arena\""]).is_some());
    assert!(sample(&m, "tokio_alive_tasks", &[]).unwrap() >= 1.0);
    assert!(sample(&m, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(sample(&m, "process_cpu_seconds_total", &[]).unwrap() > 0.0);
    for name in [
        "tickroom_snapshots_conflated_total",
        "tickroom_reliable_queue_max",
        "tickroom_connections_active",
        "tickroom_tick_overruns_total",
    ] {
        assert!(sample(&m, name, &[]).is_some(), "{name} exported");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_during_the_shutdown_drain() {
    let server = start(test_config()).await;
    eventually("ready", || async {
        http_get(server.ops, "/readyz").await.0 == 200
    })
    .await;
    // A client that never reads keeps its session draining for a while after the signal.
    let mut c = Client::connect(&server).await;
    c.join("arena").await;
    server.shutdown.cancel();
    let (status, body) = http_get(server.ops, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("shutting down"));
    assert_eq!(
        http_get(server.ops, "/healthz").await.0,
        200,
        "alive while draining"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_uses_only_exported_metric_names() {
    let server = start(test_config()).await;
    let mut c = Client::connect(&server).await;
    c.join("arena").await;
    c.snapshot().await;
    let m = scrape(&server).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let dashboard = std::fs::read_to_string(path).unwrap();
    let exported = names(&m);
    let mut checked = 0;
    for word in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let is_metric = ["tickroom_", "process_", "tokio_"]
            .iter()
            .any(|p| word.starts_with(p));
        if is_metric {
            assert!(
                exported.contains(word),
                "dashboard metric {word} is not exported (as a whole name)"
            );
            checked += 1;
        }
    }
    assert!(checked > 20, "found {checked} metric references");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_in_one_process_count_apart() {
    let a = start(test_config()).await;
    let b = start(test_config()).await;
    let mut c = Client::connect(&a).await;
    c.join("arena").await;
    c.send_raw(raw(&[0xff, 0xff])).await; // malformed, on a only
    expect_error(&mut c, tickroom::proto::v1::ErrorCode::Malformed).await;
    let kind = "kind=\"game\"";
    let malformed = "reason=\"malformed\"";
    let on_a = scrape(&a).await;
    let on_b = scrape(&b).await;
    assert_eq!(
        sample(&on_a, "tickroom_sessions_active", &[kind]),
        Some(1.0)
    );
    assert_eq!(
        sample(&on_b, "tickroom_sessions_active", &[kind]),
        Some(0.0)
    );
    assert_eq!(
        sample(&on_a, "tickroom_messages_rejected_total", &[malformed]),
        Some(1.0)
    );
    assert_eq!(
        sample(&on_b, "tickroom_messages_rejected_total", &[malformed]),
        Some(0.0)
    );
    assert_eq!(sample(&on_b, "tickroom_joins_total", &[kind]), Some(0.0));
    drop(c);
    a.stop().await;
    b.stop().await;
}
