//! Test support: a real server on ephemeral loopback ports and a real WebSocket client.
#![allow(dead_code)]

pub mod bystanders;
pub mod cluster;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use client_sim::toolkit::http;
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use tickroom::config::RoomConfig;
use tickroom::proto::v1::{
    ClientMessage, Input, Join, ServerMessage, client_message::Body, server_message::Body as SBody,
};
use tickroom::sim::game::GameConfig;
use tickroom::{Config, Server};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A number no other call in this process gets (for names of temporary files).
pub fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Long enough for a loaded 2-core CI machine, short enough to fail fast when broken.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub ops: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops in time")
            .expect("server task did not panic");
    }
}

/// A config for tests: ports 0, one small arena (3 bots, 60 Hz), heartbeat 1 s / 3 s.
pub fn test_config() -> Config {
    let mut c = Config::embedded();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.server.ops_listen = "127.0.0.1:0".parse().unwrap();
    c.session.ping_interval_ms = 1000;
    c.session.idle_timeout_ms = 3000;
    c.game.auto_create = false;
    c.rooms = vec![RoomConfig::Game {
        name: "arena".into(),
        game: GameConfig {
            tick_hz: 60,
            bots: 3,
            max_players: 100,
            resume_grace_ms: 10_000,
            ..GameConfig::default()
        },
    }];
    c
}

/// The test arena's settings, to change before `start`.
pub fn arena(config: &mut Config) -> &mut GameConfig {
    match &mut config.rooms[0] {
        RoomConfig::Game { game, .. } => game,
        other => panic!("the first test room is the arena, not {}", other.name()),
    }
}

pub async fn start(config: Config) -> TestServer {
    let server = Server::bind(config).await.expect("server binds");
    let addr = server.public_addr();
    let ops = server.ops_addr();
    let shutdown = server.shutdown_token();
    let task = tokio::spawn(async move {
        server.run().await.expect("server runs");
    });
    TestServer {
        addr,
        ops,
        shutdown,
        task,
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    pub ws: Ws,
}

/// Any WebSocket-level close the client saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Client {
    pub async fn connect(server: &TestServer) -> Client {
        Self::connect_url(&server.ws_url()).await
    }

    pub async fn connect_url(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("websocket handshake");
        Client { ws }
    }

    /// A client with a small kernel receive buffer, so that when it stops reading the
    /// server's socket blocks soon instead of the kernel absorbing megabytes.
    pub async fn connect_small_buffer(server: &TestServer) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(server.addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket handshake");
        Client { ws }
    }

    /// A client whose socket resets (RST, no close frame) when dropped.
    pub async fn connect_abortive(server: &TestServer) -> Client {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.set_zero_linger().unwrap();
        let (ws, _) = tokio_tungstenite::client_async(server.ws_url(), MaybeTlsStream::Plain(tcp))
            .await
            .expect("websocket handshake");
        Client { ws }
    }

    pub async fn send(&mut self, body: Body) {
        let msg = ClientMessage { body: Some(body) };
        self.send_raw(Message::Binary(msg.encode_to_vec().into()))
            .await;
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send");
    }

    pub async fn join(&mut self, room: &str) -> tickroom::proto::v1::Welcome {
        self.join_with(room, "").await
    }

    pub async fn join_with(&mut self, room: &str, token: &str) -> tickroom::proto::v1::Welcome {
        self.join_as(room, token, "").await
    }

    /// Joins with a resume token and a display name (chat rooms).
    pub async fn join_as(
        &mut self,
        room: &str,
        token: &str,
        name: &str,
    ) -> tickroom::proto::v1::Welcome {
        self.join_speaking(room, token, name, 0).await
    }

    /// Joins speaking `protocol` (`Join.protocol`: 2 for quantized views).
    pub async fn join_speaking(
        &mut self,
        room: &str,
        token: &str,
        name: &str,
        protocol: u32,
    ) -> tickroom::proto::v1::Welcome {
        self.send(Body::Join(Join {
            protocol,
            room: room.into(),
            resume_token: token.into(),
            name: name.into(),
        }))
        .await;
        match self
            .recv_until(|m| matches!(m.body, Some(SBody::Welcome(_))))
            .await
            .body
        {
            Some(SBody::Welcome(w)) => w,
            _ => unreachable!(),
        }
    }

    /// A chat message with the sender's id for it.
    pub async fn say(&mut self, text: &str, id: u64) {
        self.send(Body::ChatSend(tickroom::proto::v1::ChatSend {
            text: text.into(),
            client_msg_id: id,
            sent_time_us: 0,
        }))
        .await;
    }

    pub async fn input(&mut self, seq: u32, x: f32, y: f32) {
        self.send(Body::Input(Input {
            seq,
            move_x: x,
            move_y: y,
        }))
        .await;
    }

    /// Next server message, or the close the connection ended with.
    pub async fn next(&mut self) -> Result<ServerMessage, Closed> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("server message in time");
            match msg {
                Some(Ok(Message::Binary(b))) => {
                    return Ok(ServerMessage::decode(b).expect("valid ServerMessage"));
                }
                Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
                Some(Ok(Message::Text(t))) => panic!("server sent a text frame: {t}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(Closed {
                        code: 0,
                        reason: e.to_string(),
                    });
                }
                None => {
                    return Err(Closed {
                        code: 0,
                        reason: "stream ended".into(),
                    });
                }
            }
        }
    }

    pub async fn recv(&mut self) -> ServerMessage {
        self.next().await.expect("connection open")
    }

    pub async fn recv_until(&mut self, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
        loop {
            let m = self.recv().await;
            if pred(&m) {
                return m;
            }
        }
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn expect_close(&mut self) -> Closed {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not close"
            );
            match self.next().await {
                Ok(_) => continue,
                Err(c) => return c,
            }
        }
    }

    pub async fn snapshot(&mut self) -> (u64, tickroom::proto::v1::Snapshot) {
        let m = self
            .recv_until(|m| matches!(m.body, Some(SBody::Snapshot(_))))
            .await;
        match m.body {
            Some(SBody::Snapshot(s)) => (m.tick, s),
            _ => unreachable!(),
        }
    }
}

/// Reads up to the next `Error` and checks its code; returns its message.
pub async fn expect_error(c: &mut Client, code: tickroom::proto::v1::ErrorCode) -> String {
    let m = c
        .recv_until(|m| matches!(m.body, Some(SBody::Error(_))))
        .await;
    let Some(SBody::Error(e)) = m.body else {
        unreachable!()
    };
    assert_eq!(e.code, code as i32, "error message: {}", e.message);
    assert!(!e.message.is_empty());
    e.message
}

fn closed(frame: Option<CloseFrame>) -> Closed {
    match frame {
        Some(f) => Closed {
            code: u16::from(f.code),
            reason: f.reason.to_string(),
        },
        None => Closed {
            code: 1005,
            reason: String::new(),
        },
    }
}

pub fn entity(s: &tickroom::proto::v1::Snapshot, id: u32) -> Option<tickroom::proto::v1::Entity> {
    let o = s.objects.iter().find(|o| o.id == id)?;
    match o.state.as_ref()? {
        tickroom::proto::v1::object::State::Entity(e) => Some(*e),
        _ => None,
    }
}

/// The largest answer a test reads (a pprof profile or flamegraph is far below this).
const MAX_ANSWER: usize = 64 << 20;

/// GET keeping the body as bytes (a pprof profile is not text).
pub async fn http_get_bytes(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    http_request(addr, "GET", path, "").await
}

/// A request with a JSON body (empty for none): (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Vec<u8>) {
    http_call(addr, method, path, &[], body).await
}

/// [`http_request`] with extra headers; one connection per request, answered within
/// [`WAIT`].
pub async fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<u8>) {
    let answer = http_answer(addr, method, path, headers, body).await;
    (answer.status, answer.body.to_vec())
}

/// The whole answer of a request, headers included.
pub async fn http_answer(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Response {
    let method = http::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let url = format!("http://{addr}{path}");
    http::Client::new()
        .timeout(WAIT)
        .max_body(MAX_ANSWER)
        .request(method, &url, &all, body.to_owned())
        .await
        .expect("http answer in time")
}

/// GET: (status, body as text).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let (status, body) = http_get_bytes(addr, path).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `GET /rooms` as JSON.
pub async fn rooms_json(addr: SocketAddr) -> serde_json::Value {
    let (status, body) = http_get(addr, "/rooms").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Sessions in `room` as `/rooms` reports them.
pub async fn room_sessions(server: &TestServer, room: &str) -> u64 {
    let (status, body) = http_get(server.addr, "/rooms").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == room)
        .map(|r| r["sessions"].as_u64().unwrap())
        .unwrap_or_else(|| panic!("room {room} listed"))
}

/// Polls `f` until it returns `Some`, or `WAIT` passes; returns what it found.
pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Polls `f` until it returns true or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn raw(bytes: &'static [u8]) -> Message {
    Message::Binary(Bytes::from_static(bytes))
}
