//! CPU profiling on the operations port: flamegraph SVG, pprof protobuf, one profile at a time,
//! parameter bounds.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pprof::protos::Message as _;
use tickroom::config::RoomConfig;
use tickroom::sim::game::GameConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The profiler is process-wide and the tests of this file share a process: the tests that
/// sample take turns, or they would get each other's 409s.
static SAMPLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `test_config()` plus a room whose ticks are real work: the arena alone is so idle that a
/// short profile may catch no sample at all.
/// A config with a room of 5,000 bots that someone must watch: a room nobody watches only
/// moves its bots, which is cheap.
fn busy_config() -> tickroom::Config {
    let mut config = test_config();
    config.rooms.push(RoomConfig::Game {
        name: "busy".into(),
        game: GameConfig {
            bots: BUSY_BOTS,
            ..GameConfig::default()
        },
    });
    config
}

const BUSY_BOTS: u32 = 5_000;

/// Waits until the server says a CPU profile is being taken.
async fn profile_running(server: &TestServer) {
    eventually("a profile is running", || async {
        http_get(server.ops, "/metrics")
            .await
            .1
            .lines()
            .any(|l| l == "tickroom_cpu_profile_running 1")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flamegraph_shows_the_room_tick() {
    let _turn = SAMPLING.lock().await;
    let server = start(busy_config()).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = Client::connect(&server).await;
        // Protocol 2: the room diffs a view of 5,000 objects every tick, but the bots walk as
        // predicted, so the client gets small deltas it need not read.
        c.join_speaking("busy", "", "", 2).await;
        clients.push(c);
    }

    let (status, body) = http_get(
        server.ops,
        "/debug/pprof/flamegraph?seconds=2&frequency=1000",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("<?xml") || body.contains("<svg"),
        "not an SVG: {}",
        &body[..body.len().min(200)]
    );
    // Thread names are the flamegraph's first frame; `run_tick` is never inlined.
    assert!(body.contains("room-busy"), "room thread missing");
    assert!(body.contains("run_tick"), "room tick missing");
    drop(clients);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_is_a_pprof_protobuf_with_samples() {
    let _turn = SAMPLING.lock().await;
    let server = start(busy_config()).await;
    let mut c = Client::connect(&server).await;
    c.join_speaking("busy", "", "", 2).await;

    let (status, body) =
        // libc=true: the opt-in that keeps samples taken inside system calls.
        http_get_bytes(server.ops, "/debug/pprof/profile?seconds=1&frequency=500&libc=true").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let profile = pprof::protos::Profile::decode(&body[..]).expect("a pprof protobuf");
    assert!(!profile.sample.is_empty(), "no samples");
    assert!(!profile.string_table.is_empty());
    // A client nobody reads from would hold up the shutdown drain.
    drop(c);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_profile_at_a_time() {
    let _turn = SAMPLING.lock().await;
    let server = start(test_config()).await;
    let ops = server.ops;
    let first = tokio::spawn(async move {
        http_get_bytes(ops, "/debug/pprof/profile?seconds=5&frequency=99").await
    });
    profile_running(&server).await;

    let (status, body) = http_get(ops, "/debug/pprof/flamegraph?seconds=1").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already"), "{body}");

    let (status, _) = first.await.unwrap();
    assert_eq!(status, 200);
    // Released once the first finished.
    let (status, body) = http_get(ops, "/debug/pprof/profile?seconds=1").await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_frees_the_profiler() {
    let _turn = SAMPLING.lock().await;
    let server = start(test_config()).await;
    let mut abandoned = TcpStream::connect(server.ops).await.unwrap();
    abandoned
        .write_all(b"GET /debug/pprof/profile?seconds=60 HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    profile_running(&server).await;
    assert_eq!(
        http_get(server.ops, "/debug/pprof/profile?seconds=1")
            .await
            .0,
        409,
        "the abandoned profile is running"
    );

    drop(abandoned);
    let gone = Instant::now();
    eventually("profiler free again", || async {
        http_get(server.ops, "/debug/pprof/profile?seconds=1")
            .await
            .0
            == 200
    })
    .await;
    // Far less than the 60 s it asked for: sampling stopped with the connection.
    assert!(gone.elapsed() < Duration::from_secs(10));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_with_our_message() {
    // Checked before the profiler is claimed, so this runs alongside the sampling tests.
    let server = start(test_config()).await;
    for (query, needle) in [
        ("seconds=0", "seconds must be an integer in 1..=60"),
        ("seconds=61", "seconds must be an integer in 1..=60"),
        ("seconds=abc", "seconds must be an integer in 1..=60"),
        ("seconds=-1", "seconds must be an integer in 1..=60"),
        ("frequency=0", "frequency must be an integer in 1..=1000"),
        ("frequency=1001", "frequency must be an integer in 1..=1000"),
        ("seconds=1&seconds=2", "invalid query string"),
        ("libc=maybe", "libc must be true or false"),
    ] {
        for endpoint in ["profile", "flamegraph"] {
            let (status, body) =
                http_get(server.ops, &format!("/debug/pprof/{endpoint}?{query}")).await;
            assert_eq!(status, 400, "{endpoint}?{query}: {body}");
            assert!(body.contains(needle), "{endpoint}?{query}: {body}");
        }
    }
    server.stop().await;
}
