//! A bad network, for real: one client sits in its own network namespace behind a veth pair
//! whose link to it is shaped to 1 Mbit/s (`tc tbf`; this kernel has no netem) and loses 5 % of
//! its packets (nftables). It gets latest-only snapshots (ticks skip, never go back) while a
//! bystander on loopback keeps every tick; when its link then stops carrying anything, it is
//! closed as a slow consumer after the stall timeout. Needs root (namespaces, tc, nft), as CI
//! has; the namespace and links are removed however the test ends.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use client_sim::toolkit::rawws::RawWs;
use common::*;
use prost::Message as _;
use tickroom::proto::v1::{
    ClientMessage, Join, ServerMessage, client_message::Body, server_message::Body as SBody,
};

/// Runs a command, failing the test with its output if it fails.
fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e} (this test needs iproute2 and nftables)"));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with a veth pair to it; removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host: std::net::Ipv4Addr,
}

impl Netns {
    fn new() -> Self {
        let id = std::process::id() % 10_000;
        let name = format!("trnet{id}");
        let (host_if, peer_if) = (format!("trh{id}"), format!("trc{id}"));
        let octet = (id % 250) as u8 + 1;
        let host = std::net::Ipv4Addr::new(198, 18, octet, 1);
        let client = format!("198.18.{octet}.2/30");
        // Left over from an earlier run that was killed: start clean.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host,
        };
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        sh(&["ip", "link", "set", &peer_if, "netns", &name]);
        sh(&["ip", "addr", "add", &format!("{host}/30"), "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "addr", "add", &client, "dev", &peer_if,
        ]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", &peer_if, "up",
        ]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        ns
    }

    /// Shapes what the server sends to the namespace.
    fn shape(&self, rate: &str) {
        sh(&[
            "tc",
            "qdisc",
            "replace",
            "dev",
            &self.host_if,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "16kbit",
            "latency",
            "200ms",
        ]);
    }

    /// Drops `percent` % of what the namespace sends (its ACKs and requests).
    fn lose(&self, percent: u32) {
        let exec = ["ip", "netns", "exec", self.name.as_str(), "nft"];
        let nft = |rest: &[&str]| sh(&[&exec[..], rest].concat());
        nft(&["add", "table", "inet", "trloss"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "trloss",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]);
        let percent = percent.to_string();
        nft(&[
            "add", "rule", "inet", "trloss", "out", "numgen", "random", "mod", "100", "<",
            &percent, "drop",
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `f` on a thread that has entered the namespace, with its own runtime: sockets it
/// opens live in the namespace.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("the namespace exists");
        // SAFETY: a valid namespace file descriptor; only this thread changes namespace.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// Ticks of the snapshots a raw client in the namespace reads for `secs`, then whether the
/// server closed it (and with what) within `then` more seconds of it not reading at all.
async fn slow_client(addr: SocketAddr, secs: f64) -> (Vec<u64>, RawWs) {
    let mut ws = RawWs::connect(addr, "/ws", None)
        .await
        .expect("connect from the namespace");
    let join = ClientMessage {
        body: Some(Body::Join(Join {
            room: "crowd".into(),
            ..Default::default()
        })),
    };
    ws.send(&join.encode_to_vec()).await.unwrap();
    let mut ticks = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    while tokio::time::Instant::now() < until {
        let Ok(Ok(payload)) = tokio::time::timeout(Duration::from_secs(5), ws.next_binary()).await
        else {
            break;
        };
        let m = ServerMessage::decode(payload).unwrap();
        if matches!(m.body, Some(SBody::Snapshot(_))) {
            ticks.push(m.tick);
        }
    }
    (ticks, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_lossy_client_gets_latest_only_the_others_every_tick_then_it_is_cut() {
    let ns = Netns::new();
    ns.shape("1mbit");
    ns.lose(5);
    let mut config = test_config();
    config.server.listen = SocketAddr::from((ns.host, 0));
    config.session.ping_interval_ms = 200;
    config.session.stall_timeout_ms = 1_000;
    config.session.idle_timeout_ms = 60_000;
    // 300 objects seen whole: ~5.5 KB a snapshot, 60 a second, 2.6 Mbit/s: more than the link.
    config.rooms.push(tickroom::config::RoomConfig::Game {
        name: "crowd".into(),
        game: tickroom::sim::game::GameConfig {
            bots: 300,
            cell_size: 0.0,
            ..Default::default()
        },
    });
    let server = start(config).await;
    let addr = server.addr;
    let mut bystander = Client::connect(&server).await;
    bystander.join("crowd").await;

    let slow = in_netns(&ns.name, move || {
        Box::pin(async move {
            let (ticks, ws) = slow_client(addr, 3.0).await;
            // Keep the socket open (not reading) until told; what it got so far is the answer.
            (ticks, ws)
        })
    });
    let mut ticks = Vec::new();
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let (tick, _) = bystander.snapshot().await;
        ticks.push(tick);
    }
    let (slow_ticks, slow_ws) = tokio::task::spawn_blocking(move || slow.join().unwrap())
        .await
        .unwrap();
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "the bystander got every tick"
    );
    assert!(
        slow_ticks.len() >= 10,
        "the slow client got snapshots: {}",
        slow_ticks.len()
    );
    assert!(
        slow_ticks.windows(2).all(|w| w[1] > w[0]),
        "never an older snapshot after a newer one"
    );
    let span = slow_ticks.last().unwrap() - slow_ticks[0];
    assert!(
        (slow_ticks.len() as u64) < span,
        "latest-only: {} snapshots over {span} ticks",
        slow_ticks.len()
    );

    // Now the link carries nothing: the server's writes stay deferred and, past the stall
    // timeout, it closes the slow client as a slow consumer.
    ns.shape("8bit");
    eventually("the stalled client is closed", || async {
        let (_, m) = http_get(server.ops, "/metrics").await;
        client_sim::toolkit::prom::Metrics::parse(&m).value(
            "tickroom_connections_closed_total",
            &[("reason", "stalled")],
        ) == Some(1.0)
    })
    .await;
    drop(slow_ws);
    let (tick, _) = bystander.snapshot().await;
    assert!(tick > *ticks.last().unwrap(), "the bystander still ticks");
    server.stop().await;
}
