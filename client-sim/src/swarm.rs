//! What every client of every scenario shares: the common command-line options, the
//! WebSocket connect + join handshake (from one of `--source-ips` loopback addresses), the
//! per-connection counters (frames, bytes, errors, close codes), sharded latency histograms
//! and the polite or abrupt close. [`crate::drive`] runs a scenario's clients over the run's
//! timeline with these.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::ensure;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tickroom_proto::Message as _;
use tickroom_proto::v1::{
    ClientMessage, Error as ErrorMsg, ErrorCode, Join, RoomKind, ServerMessage, Welcome,
    client_message, server_message,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::drive::Joint;
pub use crate::drive::{Client, Plan, Run, Scenario, drive};
use crate::redirect;
use crate::report;
use crate::talk::{Step, Talk, talk};
use crate::target::{self, Target};
use crate::workers::WorkerFlags;

/// A client without a Welcome this long after it started connecting counts as a failed join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for a polite close handshake per client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A rate over a shorter window is noise, not a rate.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(500);
/// Latency histograms are sharded by client so that tasks on different worker threads rarely
/// contend for one lock, and one full-size histogram per client would be far too big.
const SHARDS: usize = 16;
/// Read chunk per socket (see [`join`]).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Clients per source address past which `--source-ips` defaults to more than one: one
/// address has about 28,000 ephemeral ports towards one server port.
const CLIENTS_PER_SOURCE_IP: usize = 25_000;

/// Where a run goes, from where, and where its report goes: every scenario takes these.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// WebSocket URL of the server; must resolve to a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// The server's Prometheus metrics (its operations port); must resolve to a loopback
    /// address. A failed scrape is a warning, not an error.
    #[arg(long, default_value = "http://127.0.0.1:9090/metrics")]
    pub metrics_url: String,
    /// Bind client sockets to 127.0.0.1 .. 127.0.0.K (client i to 127.0.0.(1 + i % K)), past
    /// one address's ephemeral ports. Default: one address per 25,000 clients.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: Option<u8>,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl TargetArgs {
    /// Resolves both URLs (loopback only).
    pub async fn endpoints(&self) -> anyhow::Result<Endpoints> {
        Ok(Endpoints {
            ws: target::resolve(&self.url).await?,
            metrics: target::resolve_http(&self.metrics_url).await?,
        })
    }

    /// `--source-ips`, or its default for `clients` clients; more than one needs an IPv4
    /// target.
    pub fn source_ips(&self, clients: usize, ws: &Target) -> anyhow::Result<u8> {
        let auto = clients.div_ceil(CLIENTS_PER_SOURCE_IP).clamp(1, 254) as u8;
        let k = self.source_ips.unwrap_or(auto);
        ensure!(
            k == 1 || ws.addr.is_ipv4(),
            "--source-ips {k} needs an IPv4 loopback --url (127.x.x.x), not {}",
            ws.addr
        );
        Ok(k)
    }
}

/// Options every scenario with a ramp and a hold takes (how many clients is the scenario's
/// own option).
#[derive(clap::Args, Debug, Clone)]
pub struct SwarmArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Clients started per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    pub ramp: f64,
    /// Seconds to hold after the ramp, all clients connected.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Client processes sharing the clients (and the ramp). Default: as many as the
    /// open-file limit needs (one client is one socket).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,
    #[command(flatten)]
    pub worker: WorkerFlags,
    /// The command line after the program name, which worker processes are started with.
    #[arg(skip)]
    pub argv: Vec<String>,
    /// Set when this run is part of a larger one (the mix scenario).
    #[arg(skip)]
    pub joint: Option<Joint>,
}

impl SwarmArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.ramp.is_finite() && self.ramp > 0.0,
            "--ramp must be a positive number of clients per second"
        );
        ensure!(
            self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0,
            "--duration must be between 0 and 86400 seconds"
        );
        Ok(())
    }

    pub fn ramp_time(&self, clients: usize) -> Duration {
        Duration::from_secs_f64(clients as f64 / self.ramp)
    }

    /// Checks the options and resolves both URLs (loopback only).
    pub async fn endpoints(&self) -> anyhow::Result<Endpoints> {
        self.check()?;
        self.target.endpoints().await
    }
}

/// Where a run goes: `--url` (WebSocket and the public HTTP endpoints) and `--metrics-url`.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub ws: Target,
    pub metrics: Target,
}

/// The run's timeline and the counters every client updates.
pub struct Swarm {
    pub target: Target,
    pub hold_start: Instant,
    /// Samples after this are not measured: they would show the shutdown, not the load.
    pub hold_end: Instant,
    /// Clients connected right now (for progress).
    pub live: AtomicU64,
    /// Frames received so far (for progress).
    pub frames: AtomicU64,
    pub tick_rate_hz: AtomicU32,
    /// Clients leave by dropping the socket with linger 0, which resets the connection (no
    /// close frame, no FIN).
    pub reset_on_drop: bool,
    /// Client `i` connects from 127.0.0.(1 + i % source_ips) (1: no bind, the kernel picks).
    pub source_ips: u8,
}

impl Swarm {
    /// Events per second from `first` (not counted in `events`) to the end of the hold or
    /// now, whichever came first; `None` when that window is too short to mean anything.
    pub fn rate_since(&self, first: Instant, events: u64) -> Option<f64> {
        let window = Instant::now()
            .min(self.hold_end)
            .saturating_duration_since(first);
        (window >= MIN_RATE_WINDOW).then(|| events as f64 / window.as_secs_f64())
    }

    pub fn in_hold(&self, now: Instant) -> bool {
        now >= self.hold_start && now < self.hold_end
    }

    /// The address client `id` binds to, when there is more than one.
    fn source_of(&self, id: usize) -> Option<IpAddr> {
        (self.source_ips > 1).then(|| {
            let host = 1 + (id % usize::from(self.source_ips)) as u8;
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, host))
        })
    }
}

/// Latency histograms shared by all clients.
pub struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    pub fn new() -> Self {
        Shards(
            (0..SHARDS)
                .map(|_| Mutex::new(report::latency_histogram()))
                .collect(),
        )
    }

    pub fn record(&self, client: usize, us: u64) {
        self.record_all(client, [us]);
    }

    /// Records several samples under one lock.
    pub fn record_all(&self, client: usize, us: impl IntoIterator<Item = u64>) {
        let mut h = self.0[client % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for v in us {
            h.saturating_record(v);
        }
    }

    /// Adds the `(value, count)` buckets of another process's histogram
    /// ([`crate::wire::buckets`]).
    pub fn absorb(&self, buckets: &[(u64, u64)]) {
        let mut h = self.0[0].lock().unwrap_or_else(|e| e.into_inner());
        for &(v, n) in buckets {
            h.saturating_record_n(v, n);
        }
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = report::latency_histogram();
        for shard in &self.0 {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on every shard, so adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }

    /// `p50 A µs p99 B µs`, for progress lines.
    pub fn p50_p99(&self) -> String {
        let h = self.merged();
        format!(
            "p50 {} µs p99 {} µs",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99)
        )
    }
}

/// A count the clients add to, and its rate between two progress lines.
#[derive(Default)]
pub struct LiveCount {
    total: AtomicU64,
    at_last_line: AtomicU64,
}

impl LiveCount {
    pub fn add(&self, n: u64) {
        self.total.fetch_add(n, Relaxed);
    }

    /// Per second since the previous call, `secs` ago (one call per progress line).
    pub fn rate(&self, secs: f64) -> f64 {
        let now = self.total.load(Relaxed);
        let before = self.at_last_line.swap(now, Relaxed);
        now.saturating_sub(before) as f64 / secs
    }
}

/// Why a client never got into the room.
#[derive(Debug, Serialize, Deserialize)]
pub enum JoinFail {
    Connect(String),
    /// The client ran out of file descriptors (the open-file limit).
    OpenFiles(String),
    /// No ephemeral port was left on the source address (EADDRNOTAVAIL).
    Ports(String),
    Timeout,
    Rejected(String),
    Closed(String),
    /// The REST call that creates a session failed or was refused.
    Session(String),
    /// The room is not of the kind the scenario drives.
    WrongRoom(String),
    /// The server redirected the join (another node of a cluster runs the room) somewhere
    /// client-sim does not go: no URL, not a loopback `ws://` URL, or a prepared session's
    /// (no Join to repeat) (see [`redirect`]).
    RedirectRefused(String),
    /// Redirected again after [`redirect::MAX_REDIRECTS`] redirects in a row.
    RedirectLoop(String),
}

impl JoinFail {
    pub fn kind(&self) -> &'static str {
        match self {
            JoinFail::Connect(_) => "connect",
            JoinFail::OpenFiles(_) => OPEN_FILES,
            JoinFail::Ports(_) => EPHEMERAL_PORTS,
            JoinFail::Timeout => "timeout",
            JoinFail::Rejected(_) => "rejected",
            JoinFail::Closed(_) => "closed",
            JoinFail::Session(_) => "session",
            JoinFail::WrongRoom(_) => "wrong_room",
            JoinFail::RedirectRefused(_) => "redirect_refused",
            JoinFail::RedirectLoop(_) => "redirect_loop",
        }
    }

    /// A connect that failed: out of descriptors and out of ports are the client's limits.
    fn connect(e: &std::io::Error) -> JoinFail {
        // EMFILE and ENFILE; EADDRNOTAVAIL.
        match e.raw_os_error() {
            Some(24 | 23) => JoinFail::OpenFiles(e.to_string()),
            Some(99) => JoinFail::Ports(e.to_string()),
            _ => JoinFail::Connect(e.to_string()),
        }
    }

    pub fn message(&self) -> String {
        match self {
            JoinFail::Connect(m) => format!("connect: {m}"),
            JoinFail::OpenFiles(m) => format!(
                "connect: {m}: out of file descriptors (the open-file limit); fewer clients per \
                 process (--workers) would fit"
            ),
            JoinFail::Ports(m) => format!(
                "connect: {m}: out of ephemeral ports on the source address; spread the \
                 clients over more addresses with --source-ips K"
            ),
            JoinFail::Timeout => format!("no Welcome within {JOIN_TIMEOUT:?}"),
            JoinFail::Rejected(m) => format!("rejected: {m}"),
            JoinFail::Closed(m) => format!("closed before Welcome: {m}"),
            JoinFail::Session(m) => format!("session: {m}"),
            JoinFail::WrongRoom(m) => format!("wrong room: {m}"),
            JoinFail::RedirectRefused(m) => format!("redirect refused: {m}"),
            JoinFail::RedirectLoop(m) => format!("redirect loop: {m}"),
        }
    }
}

/// The failed-join reason of a client that ran out of file descriptors.
pub const OPEN_FILES: &str = "open_files";
/// The failed-join reason of a client that ran out of ephemeral ports.
pub const EPHEMERAL_PORTS: &str = "ephemeral_ports";

/// One client's connection-level results; latencies went to shared shards.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Conn {
    pub join_fail: Option<JoinFail>,
    pub joined: bool,
    /// Redirects followed to reach the room (see [`join`]).
    pub redirects: u64,
    pub ended_early: bool,
    /// Error messages received, by protocol code.
    pub errors: BTreeMap<i32, u64>,
    pub close_code: Option<u16>,
    pub decode_errors: u64,
    pub frames: u64,
    pub bytes: u64,
    pub hold_frames: u64,
    pub hold_bytes: u64,
}

/// What one read from the socket gave.
pub enum Read {
    /// A decoded message and when it arrived (Error bodies are already counted).
    Msg(ServerMessage, Instant),
    /// A frame that carries nothing to act on (control frame, undecodable).
    Skip,
    /// The server sent a close frame with this code.
    Closed(u16),
    /// The connection failed or ended without a close frame.
    Failed(String),
}

impl Conn {
    fn count_frame(&mut self, swarm: &Swarm, len: usize, now: Instant) {
        self.frames += 1;
        self.bytes += len as u64;
        swarm.frames.fetch_add(1, Relaxed);
        if swarm.in_hold(now) {
            self.hold_frames += 1;
            self.hold_bytes += len as u64;
        }
    }

    /// Counts and decodes what `ws.next()` returned.
    pub fn read(
        &mut self,
        swarm: &Swarm,
        item: Option<Result<Message, tungstenite::Error>>,
    ) -> Read {
        match self.skim(swarm, item) {
            Ok(Some((b, now))) => self.decode(b, now),
            Ok(None) => Read::Skip,
            Err(end) => end,
        }
    }

    /// Decodes a frame [`skim`](Self::skim) returned, counting `Error` bodies.
    pub fn decode(&mut self, b: bytes::Bytes, now: Instant) -> Read {
        let Ok(msg) = ServerMessage::decode(b) else {
            self.decode_errors += 1;
            return Read::Skip;
        };
        if let Some(server_message::Body::Error(e)) = &msg.body {
            *self.errors.entry(e.code).or_default() += 1;
        }
        Read::Msg(msg, now)
    }

    /// Counts what `ws.next()` returned without decoding it (for clients that measure
    /// nothing more): a binary frame's payload and when it came, `None` for other frames, or
    /// how the connection ended ([`Read::Closed`] or [`Read::Failed`]).
    pub fn skim(
        &mut self,
        swarm: &Swarm,
        item: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<Option<(bytes::Bytes, Instant)>, Read> {
        match item {
            Some(Ok(Message::Binary(b))) => {
                let now = Instant::now();
                self.count_frame(swarm, b.len(), now);
                Ok(Some((b, now)))
            }
            Some(Ok(Message::Close(frame))) => {
                let code = close_code(frame.as_ref());
                self.close_code = Some(code);
                Err(Read::Closed(code))
            }
            Some(Ok(other)) => {
                self.count_frame(swarm, other.len(), Instant::now());
                Ok(None)
            }
            Some(Err(e)) => Err(Read::Failed(e.to_string())),
            None => Err(Read::Failed("end of stream".into())),
        }
    }

    /// Records that a joined client's connection ended (a [`Read::Closed`] or
    /// [`Read::Failed`]); true when the server closed it.
    pub fn ended(&mut self, client: usize, read: Read) -> bool {
        self.ended_early = true;
        if let Read::Failed(e) = &read {
            tracing::debug!(client, "connection failed: {e}");
        }
        matches!(read, Read::Closed(_))
    }
}

pub type Ws = WebSocketStream<TcpStream>;

/// Microseconds since the Unix epoch, the unit of the server's timestamps.
pub fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn close_code(frame: Option<&CloseFrame>) -> u16 {
    // 1005 is the standard "no status received" stand-in for a close frame without a code.
    frame.map_or(1005, |f| u16::from(f.code))
}

pub fn error_name(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(c) => c
            .as_str_name()
            .trim_start_matches("ERROR_CODE_")
            .to_ascii_lowercase(),
        Err(_) => format!("code_{code}"),
    }
}

/// An encoded `Join{room, name}` (an empty name joins a chat room as an anonymous viewer).
pub fn join_message(room: &str, name: &str) -> Vec<u8> {
    join_speaking(room, name, 0)
}

/// [`join_message`] with `Join.protocol` set.
pub fn join_speaking(room: &str, name: &str, protocol: u32) -> Vec<u8> {
    ClientMessage {
        body: Some(client_message::Body::Join(Join {
            room: room.to_owned(),
            name: name.to_owned(),
            protocol,
            ..Join::default()
        })),
    }
    .encode_to_vec()
}

/// Whether a binary frame is a Snapshot (decoding it whole).
pub fn is_snapshot(frame: &[u8]) -> bool {
    let body = ServerMessage::decode(frame).ok().and_then(|m| m.body);
    matches!(body, Some(server_message::Body::Snapshot(_)))
}

/// Fails a join whose room is not of the kind the scenario drives.
pub fn expect_kind(welcome: &Welcome, kind: RoomKind) -> Result<(), JoinFail> {
    if welcome.room_kind == kind as i32 {
        return Ok(());
    }
    let name = |k: i32| {
        RoomKind::try_from(k).map_or_else(
            |_| k.to_string(),
            |k| {
                k.as_str_name()
                    .trim_start_matches("ROOM_KIND_")
                    .to_ascii_lowercase()
            },
        )
    };
    Err(JoinFail::WrongRoom(format!(
        "{:?} is a {} room, not a {} room",
        welcome.room,
        name(welcome.room_kind),
        name(kind as i32)
    )))
}

/// Connects to `url` (on the target's address), sends `hello` if given and waits for
/// Welcome; frames before it are counted, not measured. A join the server redirects (another
/// node of a cluster runs the room) is repeated where it says, as [`redirect::next`] allows;
/// each connection left behind is closed, and [`Conn::redirects`] counts the redirects.
pub async fn join(
    swarm: &Swarm,
    conn: &mut Conn,
    client: usize,
    url: &str,
    hello: Option<Vec<u8>>,
) -> Result<(Ws, Welcome), JoinFail> {
    let (ws, welcome, _) = join_at(swarm, conn, client, swarm.target.addr, url, hello).await?;
    Ok((ws, welcome))
}

/// [`join`] on the node at `addr` (another node of a cluster than `--url`'s, say), which
/// `url` names; also gives the URL of the node that sent Welcome (`url`, or where the last
/// redirect went).
pub async fn join_at(
    swarm: &Swarm,
    conn: &mut Conn,
    client: usize,
    addr: SocketAddr,
    url: &str,
    hello: Option<Vec<u8>>,
) -> Result<(Ws, Welcome, String), JoinFail> {
    let hello = hello.map(bytes::Bytes::from);
    let mut at = (addr, url.to_owned());
    let mut followed = Vec::new();
    loop {
        let mut ws = open(swarm, client, at.0, &at.1, hello.clone()).await?;
        let refusal = match welcome(swarm, conn, &mut ws).await? {
            Ok(welcome) => return Ok((ws, welcome, at.1)),
            Err(refusal) => refusal,
        };
        let Some(next) = redirect::next(&refusal, &followed, hello.is_some()).await else {
            return Err(JoinFail::Rejected(format!(
                "{}: {}",
                error_name(refusal.code),
                refusal.message
            )));
        };
        // Not in a room there, and not needed any more.
        tokio::spawn(goodbye(ws, false));
        let next = next?;
        tracing::debug!(client, from = at.1, to = next.url, "join redirected");
        conn.redirects += 1;
        followed.push(next.url.clone());
        at = (next.addr, next.url);
    }
}

/// A WebSocket to `url` on `addr` (from the client's source address, when it has one of the
/// same family), with `hello` sent.
async fn open(
    swarm: &Swarm,
    client: usize,
    addr: SocketAddr,
    url: &str,
    hello: Option<bytes::Bytes>,
) -> Result<Ws, JoinFail> {
    let source = swarm.source_of(client).filter(|_| addr.is_ipv4());
    let tcp = connect(addr, source)
        .await
        .map_err(|e| JoinFail::connect(&e))?;
    // tungstenite's default 128 KiB read buffer per socket would dominate memory in a large
    // swarm; server frames are a few KiB, and the buffer still grows for larger frames.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| JoinFail::Connect(e.to_string()))?;
    if let Some(hello) = hello {
        ws.send(Message::Binary(hello))
            .await
            .map_err(|e| JoinFail::Closed(e.to_string()))?;
    }
    Ok(ws)
}

/// Reads until Welcome (`Ok`) or an Error (`Err`: a refusal or a redirect) answers the join.
async fn welcome(
    swarm: &Swarm,
    conn: &mut Conn,
    ws: &mut Ws,
) -> Result<Result<Welcome, ErrorMsg>, JoinFail> {
    loop {
        match conn.read(swarm, ws.next().await) {
            Read::Msg(msg, _) => match msg.body {
                Some(server_message::Body::Welcome(w)) => return Ok(Ok(w)),
                Some(server_message::Body::Error(e)) => return Ok(Err(e)),
                _ => {}
            },
            Read::Skip => {}
            Read::Closed(code) => return Err(JoinFail::Rejected(format!("close code {code}"))),
            Read::Failed(e) => return Err(JoinFail::Closed(e)),
        }
    }
}

/// Lets the kernel pick the source port at `connect`, when it knows the destination, instead of
/// at `bind`: a bound `bind(ip, 0)` must find a port no socket on `ip` uses for any
/// destination, a search that slows down and then fails as tens of thousands of clients fill
/// the range; at `connect` a port only has to be free towards this server. Best effort: on
/// other systems the option is unknown and `bind` behaves as before.
fn bind_address_no_port(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// A TCP connection to `addr`, from `source` (any port) when given.
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        bind_address_no_port(&socket);
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    // Client messages are a few bytes each; Nagle would hold them back and inflate latency.
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// Joins `--url` with `hello` under [`JOIN_TIMEOUT`], checking the room's kind when given,
/// and takes the result: the socket and Welcome, or `None` with the failure kept in `conn`.
pub async fn enter(
    swarm: &Swarm,
    conn: &mut Conn,
    client: usize,
    stop: &mut watch::Receiver<bool>,
    hello: Vec<u8>,
    kind: Option<RoomKind>,
) -> Option<(Ws, Welcome)> {
    enter_at(swarm, &swarm.target, conn, client, stop, hello, kind).await
}

/// [`enter`] through `node` rather than `--url` (a client spread over a cluster's nodes).
pub async fn enter_at(
    swarm: &Swarm,
    node: &Target,
    conn: &mut Conn,
    client: usize,
    stop: &mut watch::Receiver<bool>,
    hello: Vec<u8>,
    kind: Option<RoomKind>,
) -> Option<(Ws, Welcome)> {
    let attempt = async {
        let (ws, welcome, _) =
            join_at(swarm, conn, client, node.addr, &node.url, Some(hello)).await?;
        if let Some(kind) = kind {
            expect_kind(&welcome, kind)?;
        }
        Ok((ws, welcome))
    };
    let joined = bounded(stop, attempt).await;
    conn.admitted(swarm, client, joined)
}

/// Runs a join attempt under [`JOIN_TIMEOUT`], giving up when the run stops.
pub async fn bounded<T>(
    stop: &mut watch::Receiver<bool>,
    attempt: impl Future<Output = Result<T, JoinFail>>,
) -> Result<T, JoinFail> {
    tokio::select! {
        r = tokio::time::timeout(JOIN_TIMEOUT, attempt) => r.unwrap_or(Err(JoinFail::Timeout)),
        _ = stop.changed() => Err(JoinFail::Timeout),
    }
}

impl Conn {
    /// Takes a join attempt's result: on success the client counts as connected; on failure
    /// the reason is kept.
    pub fn admitted<T>(
        &mut self,
        swarm: &Swarm,
        client: usize,
        result: Result<(T, Welcome), JoinFail>,
    ) -> Option<(T, Welcome)> {
        match result {
            Ok(joined) => {
                self.joined = true;
                swarm.live.fetch_add(1, Relaxed);
                let _ =
                    swarm
                        .tick_rate_hz
                        .compare_exchange(0, joined.1.tick_rate_hz, Relaxed, Relaxed);
                Some(joined)
            }
            Err(fail) => {
                tracing::debug!(client, "join failed: {}", fail.message());
                self.join_fail = Some(fail);
                None
            }
        }
    }
}

/// How a [`hold`] session behaves.
pub struct Holding<'a> {
    pub hello: Vec<u8>,
    /// Gets the connect → Welcome latency, µs.
    pub join_latency: Option<&'a Shards>,
    /// Gets the connect → first Snapshot latency, µs (frames after it are not decoded).
    pub first_snapshot: Option<&'a Shards>,
    /// Leave this long after the first snapshot (or [`JOIN_TIMEOUT`] after joining without
    /// one) rather than at the stop.
    pub stay: Option<Duration>,
    /// Leave with RST (so does every client of a [`Swarm::reset_on_drop`] swarm).
    pub reset: bool,
}

/// What a [`hold`] session saw.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Held {
    /// A snapshot came.
    pub snapshot: bool,
    /// WebSocket pings received during the hold (tungstenite answers every ping while
    /// reading).
    pub pings: u64,
    /// It left with RST.
    pub reset: bool,
}

/// A [`hold`] session's talk: it only reads, noting pings and its first snapshot.
struct Holder<'a, 'h> {
    id: usize,
    swarm: &'a Swarm,
    how: &'a Holding<'h>,
    started: Instant,
    leave_at: Option<Instant>,
    out: Held,
}

impl Talk for Holder<'_, '_> {
    fn frame(&mut self, _: &mut Conn, frame: bytes::Bytes, now: Instant) -> Step {
        let first_snapshot = self.how.first_snapshot;
        if !self.out.snapshot && first_snapshot.is_some() && is_snapshot(&frame) {
            self.out.snapshot = true;
            let us = now.duration_since(self.started).as_micros() as u64;
            first_snapshot.inspect(|s| s.record(self.id, us));
            self.leave_at = self.how.stay.map(|stay| now + stay);
        }
        Step::Stay
    }

    fn ping(&mut self) {
        self.out.pings += u64::from(self.swarm.in_hold(Instant::now()));
    }

    fn deadline(&self) -> Option<Instant> {
        self.leave_at
    }
}

/// A session that joins and then only reads, which keeps its heartbeat, until it leaves
/// (see [`Holding`]).
pub async fn hold<S>(client: Client<S>, mut how: Holding<'_>) -> (Conn, Held) {
    let Client { id, run, mut stop } = client;
    let swarm = &run.swarm;
    let mut conn = Conn::default();
    let started = Instant::now();
    let hello = std::mem::take(&mut how.hello);
    let Some((mut ws, _)) = enter(swarm, &mut conn, id, &mut stop, hello, None).await else {
        return (conn, Held::default());
    };
    if let Some(shards) = how.join_latency {
        shards.record(id, started.elapsed().as_micros() as u64);
    }
    let mut holder = Holder {
        id,
        swarm,
        how: &how,
        started,
        leave_at: how.stay.map(|_| Instant::now() + JOIN_TIMEOUT),
        out: Held::default(),
    };
    let server_closed = talk(swarm, &mut conn, id, &mut ws, &mut stop, None, &mut holder).await;
    let mut out = holder.out;
    out.reset = (how.reset || swarm.reset_on_drop) && !server_closed;
    close(swarm, ws, server_closed, out.reset).await;
    (conn, out)
}

/// A joined client leaves, as [`Swarm::reset_on_drop`] says (see [`close`]).
pub async fn leave(swarm: &Swarm, ws: Ws, server_closed: bool) {
    close(swarm, ws, server_closed, swarm.reset_on_drop).await;
}

/// A joined client leaves: it no longer counts as connected and closes politely, so the
/// server logs a client close, not a lost peer; after a server close, polling sends
/// tungstenite's queued close reply. With `reset` it drops the socket with SO_LINGER 0
/// instead: the kernel sends RST, no close frame and no FIN, as when a client crashes or its
/// network dies.
pub async fn close(swarm: &Swarm, ws: Ws, server_closed: bool, reset: bool) {
    swarm.live.fetch_sub(1, Relaxed);
    if reset {
        if let Err(e) = ws.get_ref().set_zero_linger() {
            tracing::debug!("SO_LINGER 0 failed, closing with FIN: {e}");
        }
        return;
    }
    goodbye(ws, server_closed).await;
}

/// Closes politely (see [`close`]), within [`CLOSE_TIMEOUT`].
async fn goodbye(mut ws: Ws, server_closed: bool) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if !server_closed {
            let _ = ws.close(None).await;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_short() {
        assert_eq!(error_name(ErrorCode::RateLimited as i32), "rate_limited");
        assert_eq!(
            error_name(ErrorCode::UnknownSymbol as i32),
            "unknown_symbol"
        );
        assert_eq!(error_name(99), "code_99");
    }

    #[test]
    fn checks_the_room_kind() {
        let welcome = Welcome {
            room: "arena".into(),
            room_kind: RoomKind::Game as i32,
            ..Welcome::default()
        };
        assert!(expect_kind(&welcome, RoomKind::Game).is_ok());
        let fail = expect_kind(&welcome, RoomKind::Chat).unwrap_err();
        assert_eq!(
            fail.message(),
            "wrong room: \"arena\" is a game room, not a chat room"
        );
    }
}
