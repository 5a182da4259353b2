//! Test support shared by the scenarios' tests: a real tickroom server in process, on
//! ephemeral loopback ports, with the rooms a test asks for; and the swarm options and
//! placeholder target the tests build on.

use tickroom::config::RoomConfig;
use tokio_util::sync::CancellationToken;

use crate::report::Head;
use crate::swarm::{SwarmArgs, TargetArgs};
use crate::target::Target;
use crate::workers::WorkerFlags;

/// A running server: its WebSocket and metrics URLs. Cancel `token` to stop it.
pub struct TestServer {
    pub url: String,
    pub metrics_url: String,
    pub token: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts a real server with exactly `rooms` (the embedded config otherwise).
pub async fn real_server(rooms: Vec<RoomConfig>) -> TestServer {
    let mut config = tickroom::Config::embedded();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.ops_listen = "127.0.0.1:0".parse().unwrap();
    config.rooms = rooms;
    let server = tickroom::Server::bind(config).await.unwrap();
    let url = format!("ws://{}/ws", server.public_addr());
    let metrics_url = format!("http://{}/metrics", server.ops_addr());
    let token = server.shutdown_token();
    tokio::spawn(server.run());
    TestServer {
        url,
        metrics_url,
        token,
    }
}

/// A server with one game room, "arena": 60 Hz, `bots` bots.
pub async fn game_server(bots: u32) -> TestServer {
    real_server(vec![arena(bots)]).await
}

/// The game room of [`game_server`].
pub fn arena(bots: u32) -> RoomConfig {
    RoomConfig::Game {
        name: "arena".into(),
        game: tickroom::sim::game::GameConfig {
            bots,
            ..Default::default()
        },
    }
}

/// Where a test run goes: `server`, from 127.0.0.1.
pub fn target_args(server: &TestServer) -> TargetArgs {
    TargetArgs {
        url: server.url.clone(),
        metrics_url: server.metrics_url.clone(),
        source_ips: None,
        json: None,
    }
}

/// Swarm options for `clients` clients on `server`, started within 0.1 s, held `duration` s,
/// all in this process.
pub fn swarm_args(server: &TestServer, clients: usize, duration: f64) -> SwarmArgs {
    SwarmArgs {
        target: target_args(server),
        ramp: clients as f64 * 10.0,
        duration,
        workers: Some(1),
        worker: WorkerFlags::default(),
        argv: Vec::new(),
        joint: None,
    }
}

/// The scenario a command line (after the program name) gives, as `main` would run it.
pub fn parse(argv: &[&str]) -> crate::Scenario {
    use clap::Parser;
    let argv: Vec<String> = argv.iter().map(|a| a.to_string()).collect();
    let cli =
        crate::Cli::try_parse_from(std::iter::once("client-sim".to_owned()).chain(argv.clone()))
            .unwrap();
    let mut scenario = cli.scenario;
    if let Some(swarm) = scenario.swarm_mut() {
        swarm.argv = argv;
    }
    scenario
}

/// All `n` clients of a run joined and stayed connected to the end.
pub fn assert_all_joined(head: &Head, n: u64) {
    let c = &head.clients;
    let all = (c.connected, c.failed_joins, c.ended_early, c.aborted);
    assert_eq!(all, (n, 0, 0, 0), "{c:#?}");
}

/// A target nothing listens on, for tests that build values by hand.
pub fn placeholder_target(url: &str) -> Target {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let (authority, path) = authority.split_at(authority.find('/').unwrap_or(authority.len()));
    Target {
        url: url.to_owned(),
        authority: authority.to_owned(),
        path: if path.is_empty() { "/" } else { path }.to_owned(),
        addr: authority.parse().unwrap(),
    }
}
