//! Test support shared by the scenarios' tests: a real tickroom server in process, on
//! ephemeral loopback ports, with the rooms a test asks for; and the swarm options and
//! placeholder target the tests build on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tickroom::config::RoomConfig;
use tickroom_proto::Message as _;
use tickroom_proto::v1::{
    ClientMessage, Error as ErrorMsg, ErrorCode, ServerMessage, client_message, server_message,
};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::report::Head;
use crate::swarm::{Swarm, SwarmArgs, TargetArgs};
use crate::target::{self, Target};
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

/// A node of a cluster whose rooms all live elsewhere: it answers every Join with
/// `ERROR_CODE_REDIRECT` to `to`. Stops when dropped.
pub struct Redirector {
    pub url: String,
    /// Joins it answered.
    pub joins: Arc<AtomicU64>,
    /// Connections the client closed with a close frame.
    pub closed: Arc<AtomicU64>,
    token: CancellationToken,
}

impl Drop for Redirector {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts a [`Redirector`] on a loopback port that sends joins to `to` (`None`: to itself).
pub async fn redirector(to: Option<&str>) -> Redirector {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let to = to.map_or_else(|| url.clone(), str::to_owned);
    let (joins, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let token = CancellationToken::new();
    let (j, c, t) = (joins.clone(), closed.clone(), token.clone());
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
                _ = t.cancelled() => return,
            };
            let (to, j, c, t) = (to.clone(), j.clone(), c.clone(), t.clone());
            tokio::spawn(async move {
                // Anything but a WebSocket upgrade (GET /rooms) is dropped.
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                loop {
                    let msg = tokio::select! {
                        msg = ws.next() => msg,
                        _ = t.cancelled() => return,
                    };
                    match msg {
                        Some(Ok(Message::Binary(b))) => {
                            let Ok(ClientMessage {
                                body: Some(client_message::Body::Join(join)),
                            }) = ClientMessage::decode(b)
                            else {
                                continue;
                            };
                            j.fetch_add(1, Relaxed);
                            let answer = ServerMessage {
                                body: Some(server_message::Body::Error(ErrorMsg {
                                    code: ErrorCode::Redirect as i32,
                                    message: format!("room {:?} runs on node b", join.room),
                                    redirect_url: to.clone(),
                                })),
                                ..ServerMessage::default()
                            };
                            let _ = ws
                                .send(Message::Binary(answer.encode_to_vec().into()))
                                .await;
                        }
                        Some(Ok(Message::Close(_))) => {
                            c.fetch_add(1, Relaxed);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => return,
                    }
                }
            });
        }
    });
    Redirector {
        url,
        joins,
        closed,
        token,
    }
}

/// A swarm on `url` (resolved) for tests that call its joins by hand: held from now for 5 s.
pub async fn bare_swarm(url: &str) -> Swarm {
    let now = Instant::now();
    Swarm {
        target: target::resolve(url).await.unwrap(),
        hold_start: now,
        hold_end: now + Duration::from_secs(5),
        live: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        tick_rate_hz: AtomicU32::new(0),
        reset_on_drop: false,
        source_ips: 1,
    }
}
