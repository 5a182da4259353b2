//! What every scenario shares: the common command-line options, the run's timeline (ramp,
//! hold, grace), the WebSocket connect + join handshake, per-connection counters (frames,
//! bytes, errors, close codes), sharded latency histograms, the live progress line, the
//! server samples (`GET /rooms` and `--metrics-url`) before and at the end of the hold, and
//! the parts of the report that do not depend on the scenario. A scenario hands [`drive`] its
//! state (a [`Scenario`]: name and part of the progress line) and its per-client task.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::ensure;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tickroom_proto::Message as _;
use tickroom_proto::v1::{
    ClientMessage, ErrorCode, Join, RoomKind, ServerMessage, Welcome, client_message,
    server_message,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::proc::{self, CpuMeter};
use crate::report::{self, Common};
use crate::server_metrics::Timeline;
use crate::server_stats::{self, RoomStats};
use crate::target::{self, Target};

/// A client without a Welcome this long after it started connecting counts as a failed join.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// After the hold, clients get this long to close and report before they are aborted.
const GRACE: Duration = Duration::from_secs(3);
/// Time allowed for a polite close handshake per client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A rate over a shorter window is noise, not a rate.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(500);
/// Latency histograms are sharded by client so that tasks on different worker threads rarely
/// contend for one lock, and one full-size histogram per client would be far too big.
const SHARDS: usize = 16;
/// Read chunk per socket (see [`join`]).
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Options every scenario takes (how many clients is the scenario's own option).
#[derive(clap::Args, Debug, Clone)]
pub struct SwarmArgs {
    /// WebSocket URL of the server; must resolve to a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Clients started per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    pub ramp: f64,
    /// Seconds to hold after the ramp, all clients connected.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// The server's Prometheus metrics (its operations port); must resolve to a loopback
    /// address. A failed scrape is a warning, not an error.
    #[arg(long, default_value = "http://127.0.0.1:9090/metrics")]
    pub metrics_url: String,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
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

    fn ramp_time(&self, clients: usize) -> Duration {
        Duration::from_secs_f64(clients as f64 / self.ramp)
    }

    /// Checks the options and resolves both URLs (loopback only).
    pub async fn endpoints(&self) -> anyhow::Result<Endpoints> {
        self.check()?;
        Ok(Endpoints {
            ws: target::resolve(&self.url).await?,
            metrics: target::resolve_http(&self.metrics_url).await?,
        })
    }
}

/// Where a run goes: `--url` (WebSocket and the public HTTP endpoints) and `--metrics-url`.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub ws: Target,
    pub metrics: Target,
}

/// What every client task of a scenario shares: the swarm and the scenario's own state.
pub struct Run<S> {
    pub swarm: Swarm,
    pub scenario: S,
}

/// What one client task gets: its number, the run, and the signal to stop.
pub struct Client<S> {
    pub id: usize,
    pub run: Arc<Run<S>>,
    pub stop: watch::Receiver<bool>,
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
    /// Sockets linger 0, so that dropping one resets the connection (no close frame, no FIN).
    pub reset_on_drop: bool,
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
#[derive(Debug)]
pub enum JoinFail {
    Connect(String),
    Timeout,
    Rejected(String),
    Closed(String),
    /// The REST call that creates a session failed or was refused.
    Session(String),
    /// The room is not of the kind the scenario drives.
    WrongRoom(String),
}

impl JoinFail {
    pub fn kind(&self) -> &'static str {
        match self {
            JoinFail::Connect(_) => "connect",
            JoinFail::Timeout => "timeout",
            JoinFail::Rejected(_) => "rejected",
            JoinFail::Closed(_) => "closed",
            JoinFail::Session(_) => "session",
            JoinFail::WrongRoom(_) => "wrong_room",
        }
    }

    pub fn message(&self) -> String {
        match self {
            JoinFail::Connect(m) => format!("connect: {m}"),
            JoinFail::Timeout => format!("no Welcome within {JOIN_TIMEOUT:?}"),
            JoinFail::Rejected(m) => format!("rejected: {m}"),
            JoinFail::Closed(m) => format!("closed before Welcome: {m}"),
            JoinFail::Session(m) => format!("session: {m}"),
            JoinFail::WrongRoom(m) => format!("wrong room: {m}"),
        }
    }
}

/// One client's connection-level results; latencies went to shared shards.
#[derive(Debug, Default)]
pub struct Conn {
    pub join_fail: Option<JoinFail>,
    pub joined: bool,
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
        let (b, now) = match self.skim(swarm, item) {
            Ok(Some(binary)) => binary,
            Ok(None) => return Read::Skip,
            Err(end) => return end,
        };
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
    ClientMessage {
        body: Some(client_message::Body::Join(Join {
            room: room.to_owned(),
            name: name.to_owned(),
            ..Join::default()
        })),
    }
    .encode_to_vec()
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
/// Welcome; frames before it are counted, not measured.
pub async fn join(
    swarm: &Swarm,
    conn: &mut Conn,
    url: &str,
    hello: Option<Vec<u8>>,
) -> Result<(Ws, Welcome), JoinFail> {
    let tcp = connect(swarm.target.addr, swarm.reset_on_drop)
        .await
        .map_err(|e| JoinFail::Connect(e.to_string()))?;
    // tungstenite's default 128 KiB read buffer per socket would dominate memory in a large
    // swarm; server frames are a few KiB, and the buffer still grows for larger frames.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .map_err(|e| JoinFail::Connect(e.to_string()))?;
    if let Some(hello) = hello {
        ws.send(Message::Binary(hello.into()))
            .await
            .map_err(|e| JoinFail::Closed(e.to_string()))?;
    }
    loop {
        match conn.read(swarm, ws.next().await) {
            Read::Msg(msg, _) => match msg.body {
                Some(server_message::Body::Welcome(w)) => return Ok((ws, w)),
                Some(server_message::Body::Error(e)) => {
                    return Err(JoinFail::Rejected(format!(
                        "{}: {}",
                        error_name(e.code),
                        e.message
                    )));
                }
                _ => {}
            },
            Read::Skip => {}
            Read::Closed(code) => return Err(JoinFail::Rejected(format!("close code {code}"))),
            Read::Failed(e) => return Err(JoinFail::Closed(e)),
        }
    }
}

/// A TCP connection to `addr`; with `reset_on_drop`, SO_LINGER 0 is set before connecting so
/// that dropping the stream sends RST, like a crashed client or a dead network.
async fn connect(addr: std::net::SocketAddr, reset_on_drop: bool) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if reset_on_drop {
        socket.set_zero_linger()?;
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
    let attempt = async {
        let (ws, welcome) = join(swarm, conn, &swarm.target.url, Some(hello)).await?;
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

/// A joined client leaves: it no longer counts as connected and closes politely, so the
/// server logs a client close, not a lost peer; after a server close, polling sends
/// tungstenite's queued close reply. With [`Swarm::reset_on_drop`] it just drops the socket
/// (RST, no close frame).
pub async fn leave(swarm: &Swarm, mut ws: Ws, server_closed: bool) {
    swarm.live.fetch_sub(1, Relaxed);
    if swarm.reset_on_drop {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if !server_closed {
            let _ = ws.close(None).await;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Prints one line a second on stderr until aborted, the scenario's part included.
async fn progress<S: Scenario>(
    run: Arc<Run<S>>,
    clients: usize,
    started: Instant,
    cpu: Arc<CpuMeter>,
) {
    let swarm = &run.swarm;
    let mut timer =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (started, 0u64);
    loop {
        let now = timer.tick().await;
        let frames = swarm.frames.load(Relaxed);
        let secs = (now - last.0).as_secs_f64().max(1e-3);
        let rate = (frames - last.1) as f64 / secs;
        last = (now, frames);
        let phase = if now < swarm.hold_start {
            "ramp"
        } else {
            "hold"
        };
        eprintln!(
            "[{:>5.1}s {phase}] connected {}/{clients}  frames/s {rate:.0}  {}  cpu {}",
            (now - started).as_secs_f64(),
            swarm.live.load(Relaxed),
            run.scenario.progress(secs),
            cpu.percent_of_one_core()
                .map_or("?".into(), |p| format!("{p:.0} %")),
        );
    }
}

/// What a finished run hands back to its scenario: each client's connection and own
/// results.
pub struct Finished<S, O> {
    pub run: Arc<Run<S>>,
    pub outcomes: Vec<(Conn, O)>,
    pub common: Common,
    /// When the clients were told to stop (the spike scenario's sockets dropped then).
    pub stopped_at: Instant,
    /// `--metrics-url`, resolved.
    pub metrics_target: Target,
}

/// What [`drive`] needs to know of a scenario's shared state.
pub trait Scenario: Send + Sync + 'static {
    /// The scenario's name (progress lines).
    const NAME: &'static str;
    /// Also scrape the metrics this often during ramp and hold (for the peak RSS).
    const SAMPLE_EVERY: Option<Duration> = None;
    /// See [`Swarm::reset_on_drop`].
    const RESET_ON_DROP: bool = false;

    /// The scenario's part of the progress line, `secs` after the previous one.
    fn progress(&self, secs: f64) -> String;
}

/// Runs a scenario to completion (ramp, hold, shutdown): samples the room and the server's
/// metrics before, starts `client` for each of `clients` clients (ids `0..clients`) over the
/// ramp, prints progress, samples the metrics at the start of the hold and both at its end,
/// stops the clients and collects their outcomes.
pub async fn drive<S, O, F>(
    args: &SwarmArgs,
    clients: usize,
    room: &str,
    scenario: S,
    client: fn(Client<S>) -> F,
) -> anyhow::Result<Finished<S, O>>
where
    S: Scenario,
    O: Send + 'static,
    F: Future<Output = (Conn, O)> + Send + 'static,
{
    let name = S::NAME;
    let endpoints = args.endpoints().await?;
    let metrics_target = endpoints.metrics.clone();
    let mut warnings = Vec::new();
    let nofile = proc::nofile_limit();
    if let Some(w) = nofile.and_then(|l| l.warning(clients)) {
        eprintln!("warning: {w}");
        warnings.push(w);
    }

    let mut fetch_errors = Vec::new();
    let before = server_stats::fetch_room(&endpoints.ws, room)
        .await
        .unwrap_or_else(|e| {
            fetch_errors.push(format!("before: {e:#}"));
            None
        });
    let mut metrics = Timeline::new(endpoints.metrics);
    metrics.before = metrics.sample(Some("before")).await;

    let ramp = args.ramp_time(clients);
    let started = Instant::now();
    let hold_start = started + ramp;
    let hold_end = hold_start + Duration::from_secs_f64(args.duration);
    eprintln!(
        "client-sim {name}: {clients} clients -> {} ({}), room {room:?}, ramp {:.1} s, hold {:.1} s",
        endpoints.ws.url,
        endpoints.ws.addr,
        ramp.as_secs_f64(),
        args.duration
    );
    let run = Arc::new(Run {
        swarm: Swarm {
            target: endpoints.ws,
            hold_start,
            hold_end,
            live: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            tick_rate_hz: AtomicU32::new(0),
            reset_on_drop: S::RESET_ON_DROP,
        },
        scenario,
    });
    let cpu = Arc::new(CpuMeter::start());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Vec<_> = (0..clients)
        .map(|i| {
            let start_at = started + Duration::from_secs_f64(i as f64 / args.ramp);
            let task = Client {
                id: i,
                run: run.clone(),
                stop: stop_rx.clone(),
            };
            tokio::spawn(async move {
                tokio::time::sleep_until(start_at).await;
                client(task).await
            })
        })
        .collect();
    let progress = tokio::spawn(progress(run.clone(), clients, started, cpu.clone()));

    let interrupted = tokio::select! {
        _ = sample_until(&mut metrics, hold_start, hold_end, S::SAMPLE_EVERY) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let hold_ended = Instant::now();
    let cpu_percent = cpu.percent_of_one_core();
    // Sampled while every client is still connected, so sessions and tick cost show the load.
    let (end_of_hold, metrics_end) = tokio::join!(
        server_stats::fetch_room(&run.swarm.target, room),
        metrics.sample(Some("end of hold"))
    );
    let end_of_hold = end_of_hold.unwrap_or_else(|e| {
        fetch_errors.push(format!("end of hold: {e:#}"));
        None
    });
    metrics.end_of_hold = metrics_end;
    let stopped_at = Instant::now();
    let _ = stop_tx.send(true);
    progress.abort();

    let deadline = Instant::now() + GRACE;
    let mut outcomes = Vec::with_capacity(tasks.len());
    let mut aborted = 0u64;
    for task in &mut tasks {
        match tokio::time::timeout_at(deadline, &mut *task).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(e)) => {
                tracing::warn!("client task failed: {e}");
                aborted += 1;
            }
            Err(_) => {
                task.abort();
                aborted += 1;
            }
        }
    }

    let observed = Observed {
        requested: clients,
        ramp,
        hold: hold_ended.saturating_duration_since(hold_start),
        wall: started.elapsed(),
        interrupted,
        aborted,
        cpu_percent,
        before,
        end_of_hold,
        fetch_errors,
        metrics,
        nofile,
        warnings,
    };
    let tick_rate_hz = run.swarm.tick_rate_hz.load(Relaxed);
    let common = observed.summarize(
        outcomes.iter().map(|(conn, _)| conn),
        (tick_rate_hz > 0).then_some(tick_rate_hz),
    );
    Ok(Finished {
        run,
        outcomes,
        common,
        stopped_at,
        metrics_target,
    })
}

/// Waits for the end of the hold, scraping the metrics at the start of the hold and, with
/// `every`, periodically in between (those only feed the peak RSS).
async fn sample_until(
    metrics: &mut Timeline,
    hold_start: Instant,
    hold_end: Instant,
    every: Option<Duration>,
) {
    let mut next = every.map(|e| Instant::now() + e);
    let mut hold_started = false;
    loop {
        let milestone = if hold_started { hold_end } else { hold_start };
        let wake = next.map_or(milestone, |n| n.min(milestone));
        tokio::time::sleep_until(wake).await;
        if wake < milestone {
            metrics.sample(None).await;
            next = every.map(|e| Instant::now() + e);
        } else if hold_started {
            return;
        } else {
            hold_started = true;
            metrics.hold_start = metrics.sample(Some("hold start")).await;
        }
    }
}

/// What [`drive`] observed besides the clients' outcomes.
struct Observed {
    requested: usize,
    ramp: Duration,
    hold: Duration,
    wall: Duration,
    interrupted: bool,
    aborted: u64,
    cpu_percent: Option<f64>,
    before: Option<RoomStats>,
    end_of_hold: Option<RoomStats>,
    fetch_errors: Vec<String>,
    metrics: Timeline,
    nofile: Option<proc::NofileLimit>,
    warnings: Vec<String>,
}

impl Observed {
    fn summarize<'a>(
        self,
        conns: impl Iterator<Item = &'a Conn> + Clone,
        tick_rate_hz: Option<u32>,
    ) -> Common {
        let hold_s = self.hold.as_secs_f64();
        let sum = |f: fn(&Conn) -> u64| conns.clone().map(f).sum::<u64>();
        let mut failed_join_reasons = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut close_codes = BTreeMap::new();
        for c in conns.clone() {
            if let Some(f) = &c.join_fail {
                *failed_join_reasons.entry(f.kind().to_owned()).or_insert(0) += 1;
            }
            for (&code, &n) in &c.errors {
                *errors.entry(error_name(code)).or_insert(0) += n;
            }
            if let Some(code) = c.close_code {
                *close_codes.entry(code).or_insert(0) += 1;
            }
        }
        let hold_frames = sum(|c| c.hold_frames);
        let hold_bytes = sum(|c| c.hold_bytes);
        let delta = |f: fn(&RoomStats) -> u64| match (&self.before, &self.end_of_hold) {
            (Some(b), Some(e)) => Some(f(e).saturating_sub(f(b))),
            _ => None,
        };
        let cores = proc::available_cores();
        let saturated = self.cpu_percent.is_some_and(|p| p > 90.0 * cores as f64);
        let mut warnings = self.warnings;
        if saturated {
            warnings.push(format!(
                "client-sim used {:.0} % of one core with {cores} cores available: it was \
                 saturated, so the figures may show the simulator's limit, not the server's",
                self.cpu_percent.unwrap_or_default()
            ));
        }
        if self.interrupted {
            warnings.push("interrupted before the hold ended".into());
        }
        if self.aborted > 0 {
            warnings.push(format!(
                "{} client tasks did not finish and were aborted",
                self.aborted
            ));
        }
        warnings.extend(
            self.fetch_errors
                .iter()
                .map(|e| format!("GET /rooms failed ({e})")),
        );
        let tick_p99_us = self.end_of_hold.as_ref().map(|r| r.tick_duration_us.p99);
        let metrics = self.metrics.summarize(tick_p99_us);
        warnings.extend(metrics.warnings());
        let head = report::Head {
            timing: report::Timing {
                ramp_s: report::round2(self.ramp.as_secs_f64()),
                hold_s: report::round2(hold_s),
                wall_s: report::round2(self.wall.as_secs_f64()),
                interrupted: self.interrupted,
            },
            tick_rate_hz,
            clients: report::Clients {
                requested: self.requested,
                connected: conns.clone().filter(|c| c.joined).count() as u64,
                failed_joins: conns.clone().filter(|c| c.join_fail.is_some()).count() as u64,
                failed_join_reasons,
                first_join_error: conns
                    .clone()
                    .find_map(|c| c.join_fail.as_ref().map(JoinFail::message)),
                ended_early: conns.clone().filter(|c| c.ended_early).count() as u64,
                aborted: self.aborted,
            },
        };
        let tail = report::Tail {
            traffic: report::Traffic {
                frames: sum(|c| c.frames),
                bytes: sum(|c| c.bytes),
                hold_frames,
                hold_bytes,
                frames_per_s: report::per_s(hold_frames, hold_s),
                bytes_per_s: report::per_s(hold_bytes, hold_s),
            },
            errors,
            close_codes,
            decode_errors: sum(|c| c.decode_errors),
            server: report::ServerSide {
                overruns_during_run: delta(|r| r.overruns_total),
                skipped_ticks_during_run: delta(|r| r.skipped_ticks_total),
                before: self.before,
                end_of_hold: self.end_of_hold,
                fetch_errors: self.fetch_errors,
                metrics,
            },
            client_cpu: report::ClientCpu {
                percent_of_one_core: self.cpu_percent.map(report::round2),
                cores,
                saturated,
            },
            warnings,
        };
        Common {
            head,
            tail,
            nofile: self.nofile,
        }
    }
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

    #[test]
    fn summarizes_connections() {
        let observed = Observed {
            requested: 3,
            ramp: Duration::from_millis(10),
            hold: Duration::from_secs(2),
            wall: Duration::from_secs(3),
            interrupted: false,
            aborted: 0,
            cpu_percent: Some(10.0),
            before: None,
            end_of_hold: None,
            fetch_errors: vec!["before: x".into()],
            metrics: Timeline::new(crate::testing::placeholder_target(
                "http://127.0.0.1:9/metrics",
            )),
            nofile: None,
            warnings: vec![],
        };
        let ok = Conn {
            joined: true,
            errors: [(6, 2)].into(),
            close_code: Some(4000),
            hold_frames: 10,
            hold_bytes: 1000,
            frames: 12,
            bytes: 1100,
            ..Conn::default()
        };
        let failed = Conn {
            join_fail: Some(JoinFail::Timeout),
            ..Conn::default()
        };
        let both = [ok, failed];
        let c = observed.summarize(both.iter(), Some(20));
        let (k, t) = (&c.head.clients, &c.tail);
        assert_eq!((k.connected, k.failed_joins), (1, 1));
        assert_eq!(k.failed_join_reasons["timeout"], 1);
        assert_eq!(t.errors["rate_limited"], 2);
        assert_eq!(t.close_codes[&4000], 1);
        assert_eq!(
            (t.traffic.frames_per_s, t.traffic.bytes_per_s),
            (5.0, 500.0)
        );
        assert_eq!(t.warnings, vec!["GET /rooms failed (before: x)".to_owned()]);
        assert_eq!(t.server.metrics.samples, 0);
    }
}
