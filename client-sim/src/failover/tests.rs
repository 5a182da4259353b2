use super::report::NOWHERE;
use super::*;
use crate::report::Outcome as _;
use crate::testing::{TestServer, game_server, parse};

fn args(urls: &[&str], clients: u32, duration: f64) -> FailoverArgs {
    FailoverArgs {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        room: "arena".into(),
        clients,
        duration,
        json: None,
    }
}

/// Stops `server` (it closes its sessions with 1001 and stops listening) after `after`.
fn stop_later(server: &TestServer, after: Duration) {
    let token = server.token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        token.cancel();
    });
}

/// A loopback URL nothing listens on.
async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("ws://{}/ws", listener.local_addr().unwrap())
}

/// Two servers, not a cluster: each runs its own "arena". Client 0 joins on A, client 1 on
/// B; A stops: client 0 loses its connection (1001), A refuses the next try, and it is back
/// in B's room within a round; client 1 never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_node_stops_gets_back_in_on_the_other() {
    let (a, b) = (game_server(0).await, game_server(0).await);
    stop_later(&a, Duration::from_millis(1000));
    let r = run(args(&[&a.url, &b.url], 2, 2.5)).await.unwrap();
    assert_eq!((r.clients, r.joined, r.failed_joins), (2, 2, 0), "{r:#?}");
    assert_eq!((r.lost, r.recovered, r.losses), (1, 1, 1), "{r:#?}");
    assert_eq!(r.loss_causes["close 1001"], 1, "{:?}", r.loss_causes);
    let rec = &r.recovery_ms;
    assert_eq!(rec.samples, 1);
    assert!(
        rec.p50 > 0.0 && rec.max == rec.p50 && rec.max < 1000.0,
        "{rec:?}"
    );
    // A (its own URL) first, refused; then B.
    assert_eq!(
        (r.attempts.samples, r.attempts.p50),
        (1, 2),
        "{:?}",
        r.attempts
    );
    assert_eq!(r.ended_on[&b.url], 2, "{:?}", r.ended_on);
    assert!(r.max_snapshot_gap_ms >= rec.max, "{r:#?}");
    assert!(r.max_snapshot_gap_ms < rec.max + 100.0, "{r:#?}");
    let (c0, c1) = (&r.per_client[0], &r.per_client[1]);
    assert_eq!(c0.joined_through, a.url);
    assert_eq!(c0.ended_on.as_deref(), Some(b.url.as_str()));
    assert!((0.9..2.0).contains(&c0.losses[0].at_s), "{c0:?}");
    assert!(c0.snapshots > 60 && c1.snapshots > 100, "{c0:?} {c1:?}");
    assert!(c1.losses.is_empty() && c1.max_gap_ms < 200.0, "{c1:?}");
    assert_eq!(r.redirects, 0);
    assert_eq!(r.close_codes[&1001], 1);
    assert!(r.failure().is_none());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    let table = r.table();
    assert!(
        table.contains("recovered            1/1 clients"),
        "{table}"
    );
    assert!(
        table.contains(&format!("{}: 2 (clients 0-1)", b.url)),
        "{table}"
    );
}

/// With no node left, a client keeps trying every 100 ms until the run ends, and the run
/// fails; a client whose URL is dead from the start is a failed join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_node_left_the_client_keeps_trying() {
    let a = game_server(0).await;
    let dead = dead_url().await;
    stop_later(&a, Duration::from_millis(500));
    let r = run(args(&[&a.url, &dead], 2, 1.5)).await.unwrap();
    assert_eq!((r.joined, r.failed_joins), (1, 1), "{r:#?}");
    assert!(
        r.first_join_error
            .as_deref()
            .unwrap()
            .starts_with("connect: ")
    );
    assert_eq!((r.lost, r.recovered, r.recovery_ms.samples), (1, 0, 0));
    // About 10 rounds of 2 tries in the second after the loss.
    let tries = r.attempts.max;
    assert!((6..=24).contains(&tries), "{:?}", r.attempts);
    assert!(
        r.last_attempt_error
            .as_deref()
            .unwrap()
            .starts_with("connect: ")
    );
    assert_eq!(r.ended_on[NOWHERE], 2);
    let why = r.failure().unwrap();
    assert!(why.starts_with("1 of 1 clients"), "{why}");
}

#[test]
fn takes_the_benchmark_command_line() {
    let crate::Scenario::Failover(a) = parse(&[
        "failover",
        "--urls",
        "ws://127.0.0.1:18181/ws,ws://127.0.0.1:18182/ws",
        "--room",
        "duel",
        "--clients",
        "20",
        "--duration",
        "30",
        "--json",
        "out.json",
    ]) else {
        unreachable!()
    };
    assert_eq!(a.urls.len(), 2);
    assert_eq!((a.room.as_str(), a.clients, a.duration), ("duel", 20, 30.0));
    assert_eq!(a.json, Some(PathBuf::from("out.json")));
}

#[tokio::test]
async fn urls_must_be_loopback() {
    let e = run(args(&["ws://10.0.0.7:1/ws"], 1, 1.0))
        .await
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("not loopback"), "{e:#}");
}
