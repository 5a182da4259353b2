//! Memory that comes back: a second identical wave of prepared sessions does not grow the
//! server's resident memory past the first, and CPU profiles do not pile memory up (pprof-rs
//! keeps one empty sample table allocated after the first, about 68 MB; the symbol cache is
//! cleared after each profile; a second profile must cost nothing more). The server runs in this test process, so the tests take turns.

mod common;

use common::*;

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn rss(server: &TestServer) -> f64 {
    let (_, body) = http_get(server.ops, "/metrics").await;
    client_sim::toolkit::prom::Metrics::parse(&body)
        .value("process_resident_memory_bytes", &[])
        .expect("exported")
}

/// `n` prepared sessions of 500 symbols each, 16 requests at a time.
async fn wave(server: &TestServer, n: usize) {
    let symbols: Vec<String> = (1..=500).map(|i| format!("\"SYM{i:03}\"")).collect();
    let body = format!("{{\"symbols\": [{}]}}", symbols.join(","));
    for _ in 0..n / 16 {
        let posts = (0..16).map(|_| http_request(server.addr, "POST", "/api/v1/sessions", &body));
        for (status, answer) in futures_util::future::join_all(posts).await {
            assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_wave_of_prepared_sessions_does_not_grow_memory() {
    let _turn = TURN.lock().await;
    let mut config = test_config();
    config.api.session_ttl_ms = 200;
    config.api.max_sessions_per_ip = 0;
    // 3,200 connections in a few seconds from one address: no connect rate here.
    config.server.connects_per_ip_per_sec = 0.0;
    config.rooms.push(tickroom::config::RoomConfig::Ticker {
        name: "ticker".into(),
        ticker: tickroom::sim::ticker::TickerConfig::default(),
    });
    let server = start(config).await;
    wave(&server, 1_600).await;
    let after_first = rss(&server).await;
    // They expire; the server sweeps them within about 5 s and gives the memory back.
    eventually("the first wave is swept", || async {
        rss(&server).await < after_first
    })
    .await;
    wave(&server, 1_600).await;
    let after_second = rss(&server).await;
    assert!(
        after_second <= after_first * 1.1,
        "RSS {:.1} MB after the first wave, {:.1} MB after the second",
        after_first / 1e6,
        after_second / 1e6
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profiles_do_not_pile_memory_up() {
    let _turn = TURN.lock().await;
    let server = start(test_config()).await;
    let profile = || async {
        let (status, _) = http_get_bytes(server.ops, "/debug/pprof/profile?seconds=1").await;
        assert_eq!(status, 200);
    };
    let before = rss(&server).await;
    profile().await;
    let after_first = rss(&server).await;
    profile().await;
    profile().await;
    let after_third = rss(&server).await;
    // The sample table (~68 MB), not the symbol cache too (~150 MB more when it was kept).
    assert!(
        after_first <= before + 120e6,
        "RSS {:.1} MB before, {:.1} MB after the first profile",
        before / 1e6,
        after_first / 1e6
    );
    assert!(
        after_third <= after_first + 20e6,
        "RSS {:.1} MB before, {:.1} MB after the first profile, {:.1} MB after the third",
        before / 1e6,
        after_first / 1e6,
        after_third / 1e6
    );
    println!(
        "RSS {:.1} MB before, {:.1} MB after the first profile, {:.1} MB after the third",
        before / 1e6,
        after_first / 1e6,
        after_third / 1e6
    );
    server.stop().await;
}
