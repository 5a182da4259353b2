//! The `game` scenario: N clients join one game room over a ramp, hold for a fixed time while
//! sending inputs, and measure snapshot rate, snapshot latency, input→ack latency, tick gaps,
//! errors and close codes. Owns the target check (loopback only), the per-client task and the
//! aggregation into a [`Report`].

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tickroom_proto::Message as _;
use tickroom_proto::v1::{
    ClientMessage, ErrorCode, Input, Join, ServerMessage, Welcome, client_message, object,
    server_message,
};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::proc::{self, CpuMeter};
use crate::report::{self, LatencySummary, RateSummary, Report};
use crate::server_stats::{self, RoomStats};

/// A client without a Welcome this long after it started connecting counts as a failed join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// After the hold, clients get this long to close and report before they are aborted.
const GRACE: Duration = Duration::from_secs(3);
/// Time allowed for a polite close handshake per client.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// A snapshot rate over a shorter window is noise, not a rate.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(500);
/// Inputs awaiting acknowledgement per client. Past this the server is seconds behind and
/// the oldest are dropped unmeasured rather than growing memory per client.
const MAX_PENDING_INPUTS: usize = 256;
/// Latency histograms are sharded by client so that tasks on different worker threads rarely
/// contend for one lock, and one full-size histogram per client would be far too big.
const SHARDS: usize = 16;
/// Read chunk per socket (see [`join`]).
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Error codes 0..=9 of the protocol, plus one slot for codes this build does not know.
const ERROR_SLOTS: usize = 11;

#[derive(clap::Args, Debug, Clone)]
pub struct GameArgs {
    /// WebSocket URL of the server; must resolve to a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Room to join.
    #[arg(long, default_value = "arena")]
    pub room: String,
    /// Number of simulated clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Clients started per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    pub ramp: f64,
    /// Seconds to hold after the ramp, all clients connected.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Inputs per second per client (0 sends none).
    #[arg(long, default_value_t = 30.0)]
    pub input_hz: f64,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Where the swarm connects, checked to be on this machine.
#[derive(Debug)]
struct Target {
    url: String,
    /// `host[:port]` as written, for the Host header of `/rooms`.
    authority: String,
    addr: SocketAddr,
}

/// Parses a `ws://` URL and resolves it, refusing anything that is not loopback: the tool
/// generates real load and its latency figures assume client and server share a clock.
async fn resolve_target(url: &str) -> anyhow::Result<Target> {
    let rest = match url.split_once("://") {
        Some(("ws", rest)) => rest,
        Some(("wss", _)) => bail!("{url}: wss:// is not supported; use ws:// to a local server"),
        _ => bail!("{url}: expected a ws:// URL"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    ensure!(!authority.is_empty(), "{url}: no host");
    ensure!(
        !authority.contains('@'),
        "{url}: user info is not supported"
    );
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("{url}: unclosed '[' in host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("{url}: bad port {p:?}"))?,
        None => 80,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("{url}: cannot resolve {host:?}"))?
        .collect();
    ensure!(!addrs.is_empty(), "{url}: {host:?} resolves to no address");
    if let Some(bad) = addrs.iter().find(|a| !a.ip().to_canonical().is_loopback()) {
        bail!(
            "{url}: {host:?} resolves to {}, which is not loopback; client-sim only targets \
             127.0.0.0/8 or ::1 (it generates real load and compares clocks with the server)",
            bad.ip()
        );
    }
    Ok(Target {
        url: url.to_owned(),
        authority: authority.to_owned(),
        addr: addrs[0],
    })
}

/// Latency histograms shared by all clients.
struct Shards(Vec<Mutex<Histogram<u64>>>);

impl Shards {
    fn new() -> Self {
        Shards(
            (0..SHARDS)
                .map(|_| Mutex::new(report::latency_histogram()))
                .collect(),
        )
    }

    fn record(&self, client: usize, us: u64) {
        let mut h = self.0[client % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        h.saturating_record(us);
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = report::latency_histogram();
        for shard in &self.0 {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on every shard, so adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

/// What every client task reads or updates; everything per client stays in its task.
struct Shared {
    url: String,
    addr: SocketAddr,
    join: Vec<u8>,
    input_period: Option<Duration>,
    hold_start: Instant,
    /// Samples after this are not measured: they would show the shutdown, not the load.
    hold_end: Instant,
    /// Clients connected right now (for progress).
    live: AtomicU64,
    /// Frames received so far (for progress).
    frames: AtomicU64,
    tick_rate_hz: AtomicU32,
    snapshot_latency: Shards,
    ack_latency: Shards,
}

#[derive(Debug)]
enum JoinFail {
    Connect(String),
    Timeout,
    Rejected(String),
    Closed(String),
}

impl JoinFail {
    fn kind(&self) -> &'static str {
        match self {
            JoinFail::Connect(_) => "connect",
            JoinFail::Timeout => "timeout",
            JoinFail::Rejected(_) => "rejected",
            JoinFail::Closed(_) => "closed",
        }
    }

    fn message(&self) -> String {
        match self {
            JoinFail::Connect(m) => format!("connect: {m}"),
            JoinFail::Timeout => format!("no Welcome within {JOIN_TIMEOUT:?}"),
            JoinFail::Rejected(m) => format!("rejected: {m}"),
            JoinFail::Closed(m) => format!("closed before Welcome: {m}"),
        }
    }
}

/// One client's result, handed back when its task ends. Latencies went to the shared shards.
#[derive(Debug, Default)]
struct Outcome {
    join_fail: Option<JoinFail>,
    joined: bool,
    ended_early: bool,
    /// Snapshots in the measurement window, the first included.
    snapshots: u64,
    snapshots_per_s: Option<f64>,
    gaps: u64,
    missing_ticks: u64,
    inputs_sent: u64,
    inputs_acked: u64,
    errors: [u64; ERROR_SLOTS],
    close_code: Option<u16>,
    decode_errors: u64,
    frames: u64,
    bytes: u64,
    hold_frames: u64,
    hold_bytes: u64,
}

impl Outcome {
    fn count_frame(&mut self, shared: &Shared, len: usize, now: Instant) {
        self.frames += 1;
        self.bytes += len as u64;
        shared.frames.fetch_add(1, Relaxed);
        if now >= shared.hold_start && now < shared.hold_end {
            self.hold_frames += 1;
            self.hold_bytes += len as u64;
        }
    }

    fn count_error(&mut self, code: i32) {
        let slot = usize::try_from(code).map_or(ERROR_SLOTS - 1, |c| c.min(ERROR_SLOTS - 1));
        self.errors[slot] += 1;
    }
}

type Ws = WebSocketStream<TcpStream>;

fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn close_code(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    // 1005 is the standard "no status received" stand-in for a close frame without a code.
    frame.map_or(1005, |f| u16::from(f.code))
}

/// Connects, sends Join and waits for Welcome; frames before it are counted, not measured.
async fn join(shared: &Shared, out: &mut Outcome) -> Result<(Ws, Welcome), JoinFail> {
    let tcp = TcpStream::connect(shared.addr)
        .await
        .map_err(|e| JoinFail::Connect(e.to_string()))?;
    // Inputs are a few bytes each; Nagle would hold them back and inflate input→ack latency.
    let _ = tcp.set_nodelay(true);
    // tungstenite's default 128 KiB read buffer per socket would dominate memory in a large
    // swarm; snapshots are a few KiB, and the buffer still grows for larger frames.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(shared.url.as_str(), tcp, Some(config))
            .await
            .map_err(|e| JoinFail::Connect(e.to_string()))?;
    ws.send(Message::Binary(shared.join.clone().into()))
        .await
        .map_err(|e| JoinFail::Closed(e.to_string()))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => {
                out.count_frame(shared, b.len(), Instant::now());
                let Ok(msg) = ServerMessage::decode(b) else {
                    out.decode_errors += 1;
                    continue;
                };
                match msg.body {
                    Some(server_message::Body::Welcome(w)) => return Ok((ws, w)),
                    Some(server_message::Body::Error(e)) => {
                        out.count_error(e.code);
                        return Err(JoinFail::Rejected(format!(
                            "{}: {}",
                            error_name(e.code),
                            e.message
                        )));
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let code = close_code(frame.as_ref());
                out.close_code = Some(code);
                return Err(JoinFail::Rejected(format!("close code {code}")));
            }
            Some(Ok(other)) => out.count_frame(shared, other.len(), Instant::now()),
            Some(Err(e)) => return Err(JoinFail::Closed(e.to_string())),
            None => return Err(JoinFail::Closed("end of stream".into())),
        }
    }
}

/// One simulated player: waits for its start time, joins, then reads snapshots and sends
/// inputs until told to stop.
async fn run_client(
    id: usize,
    start_at: Instant,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome::default();
    tokio::time::sleep_until(start_at).await;
    let joined = tokio::select! {
        r = tokio::time::timeout(JOIN_TIMEOUT, join(&shared, &mut out)) => {
            r.unwrap_or(Err(JoinFail::Timeout))
        }
        _ = stop.changed() => Err(JoinFail::Timeout),
    };
    let (mut ws, welcome) = match joined {
        Ok(j) => j,
        Err(fail) => {
            tracing::debug!(client = id, "join failed: {}", fail.message());
            out.join_fail = Some(fail);
            return out;
        }
    };
    out.joined = true;
    shared.live.fetch_add(1, Relaxed);
    let _ = shared
        .tick_rate_hz
        .compare_exchange(0, welcome.tick_rate_hz, Relaxed, Relaxed);
    let me = welcome.your_object_id;

    // A per-client phase spreads the swarm's inputs over the period instead of bursting them.
    let period = shared.input_period.unwrap_or(Duration::from_secs(3600));
    let phase = period.mul_f64((id as f64 * 0.618_033_988_75).fract());
    let mut input_timer = tokio::time::interval_at(Instant::now() + phase, period);
    input_timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let sends_input = shared.input_period.is_some();

    let mut next_seq: u32 = 1;
    let mut pending: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut first_snapshot: Option<Instant> = None;
    let mut last_tick: Option<u64> = None;
    let mut server_closed = false;

    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let now = Instant::now();
                    out.count_frame(&shared, b.len(), now);
                    let Ok(msg) = ServerMessage::decode(b) else {
                        out.decode_errors += 1;
                        continue;
                    };
                    match msg.body {
                        Some(server_message::Body::Snapshot(snap)) if now < shared.hold_end => {
                            if let Some(last) = last_tick
                                && msg.tick > last + 1
                            {
                                out.gaps += 1;
                                out.missing_ticks += msg.tick - last - 1;
                            }
                            last_tick = Some(last_tick.map_or(msg.tick, |t| t.max(msg.tick)));
                            first_snapshot.get_or_insert(now);
                            out.snapshots += 1;
                            let latency = unix_us().saturating_sub(snap.server_time_us).max(0);
                            shared.snapshot_latency.record(id, latency as u64);
                            let acked = snap.objects.iter().find_map(|o| match o.state {
                                Some(object::State::Entity(e)) if o.id == me => {
                                    Some(e.last_input_seq)
                                }
                                _ => None,
                            });
                            if let Some(acked) = acked {
                                while let Some(&(seq, sent)) = pending.front()
                                    && seq <= acked
                                {
                                    pending.pop_front();
                                    out.inputs_acked += 1;
                                    shared.ack_latency.record(id, (now - sent).as_micros() as u64);
                                }
                            }
                        }
                        Some(server_message::Body::Error(e)) => out.count_error(e.code),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    out.close_code = Some(close_code(frame.as_ref()));
                    out.ended_early = true;
                    server_closed = true;
                    break;
                }
                Some(Ok(other)) => out.count_frame(&shared, other.len(), Instant::now()),
                Some(Err(e)) => {
                    tracing::debug!(client = id, "connection failed: {e}");
                    out.ended_early = true;
                    break;
                }
                None => {
                    out.ended_early = true;
                    break;
                }
            },
            _ = input_timer.tick(), if sends_input => {
                let seq = next_seq;
                next_seq += 1;
                // Each client walks its own slowly turning direction, so avatars spread out.
                let angle = id as f32 * 2.399_963 + seq as f32 * 0.05;
                let input = ClientMessage {
                    body: Some(client_message::Body::Input(Input {
                        seq,
                        move_x: angle.cos(),
                        move_y: angle.sin(),
                    })),
                };
                if let Err(e) = ws.send(Message::Binary(input.encode_to_vec().into())).await {
                    tracing::debug!(client = id, "send failed: {e}");
                    out.ended_early = true;
                    break;
                }
                out.inputs_sent += 1;
                let now = Instant::now();
                if now < shared.hold_end {
                    if pending.len() == MAX_PENDING_INPUTS {
                        pending.pop_front();
                    }
                    pending.push_back((seq, now));
                }
            }
            _ = stop.changed() => break,
        }
    }
    shared.live.fetch_sub(1, Relaxed);

    if let Some(first) = first_snapshot {
        // The window ends at the hold's end or when the connection did, whichever came first.
        let window = Instant::now()
            .min(shared.hold_end)
            .saturating_duration_since(first);
        if window >= MIN_RATE_WINDOW {
            // The first snapshot opens the window, so it is not counted in the rate.
            out.snapshots_per_s = Some((out.snapshots - 1) as f64 / window.as_secs_f64());
        }
    }

    // Close politely so the server logs a client close, not a lost peer; after a server
    // close, polling on sends tungstenite's queued close reply.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if !server_closed {
            let _ = ws.close(None).await;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    out
}

fn error_name(code: i32) -> String {
    match ErrorCode::try_from(code) {
        Ok(c) => c
            .as_str_name()
            .trim_start_matches("ERROR_CODE_")
            .to_ascii_lowercase(),
        Err(_) => format!("code_{code}"),
    }
}

/// Prints one line a second on stderr until aborted.
async fn progress(shared: Arc<Shared>, clients: usize, started: Instant, cpu: Arc<CpuMeter>) {
    let mut timer =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (started, 0u64);
    loop {
        let now = timer.tick().await;
        let frames = shared.frames.load(Relaxed);
        let rate = (frames - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
        last = (now, frames);
        let h = shared.snapshot_latency.merged();
        let phase = if now < shared.hold_start {
            "ramp"
        } else {
            "hold"
        };
        eprintln!(
            "[{:>5.1}s {phase}] connected {}/{clients}  frames/s {rate:.0}  snapshot latency p50 {} µs p99 {} µs  cpu {}",
            (now - started).as_secs_f64(),
            shared.live.load(Relaxed),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            cpu.percent_of_one_core()
                .map_or("?".into(), |p| format!("{p:.0} %")),
        );
    }
}

/// Runs the scenario to completion (ramp, hold, shutdown) and builds the report.
pub async fn run(args: GameArgs) -> anyhow::Result<Report> {
    ensure!(args.clients >= 1, "--clients must be at least 1");
    ensure!(
        args.ramp.is_finite() && args.ramp > 0.0,
        "--ramp must be a positive number of clients per second"
    );
    ensure!(
        args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0,
        "--duration must be between 0 and 86400 seconds"
    );
    ensure!(
        args.input_hz.is_finite() && (0.0..=1000.0).contains(&args.input_hz),
        "--input-hz must be between 0 and 1000"
    );
    let target = resolve_target(&args.url).await?;
    let mut warnings = Vec::new();
    let cores = proc::available_cores();
    if let Some(limit) = proc::nofile_soft_limit()
        && (args.clients as u64) + 64 > limit
    {
        warnings.push(format!(
            "open-file limit is {limit}, too low for {} sockets; raise it with `ulimit -n`",
            args.clients
        ));
        eprintln!("warning: {}", warnings[warnings.len() - 1]);
    }

    let mut fetch_errors = Vec::new();
    let before = server_stats::fetch_room(target.addr, &target.authority, &args.room)
        .await
        .unwrap_or_else(|e| {
            fetch_errors.push(format!("before: {e:#}"));
            None
        });

    let ramp = Duration::from_secs_f64(args.clients as f64 / args.ramp);
    let started = Instant::now();
    let hold_start = started + ramp;
    let hold_end = hold_start + Duration::from_secs_f64(args.duration);
    let shared = Arc::new(Shared {
        url: target.url.clone(),
        addr: target.addr,
        join: ClientMessage {
            body: Some(client_message::Body::Join(Join {
                room: args.room.clone(),
                resume_token: String::new(),
            })),
        }
        .encode_to_vec(),
        input_period: (args.input_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / args.input_hz)),
        hold_start,
        hold_end,
        live: AtomicU64::new(0),
        frames: AtomicU64::new(0),
        tick_rate_hz: AtomicU32::new(0),
        snapshot_latency: Shards::new(),
        ack_latency: Shards::new(),
    });
    let cpu = Arc::new(CpuMeter::start());
    let (stop_tx, stop_rx) = watch::channel(false);
    eprintln!(
        "client-sim game: {} clients -> {} ({}), room {:?}, ramp {:.1} s, hold {:.1} s",
        args.clients,
        target.url,
        target.addr,
        args.room,
        ramp.as_secs_f64(),
        args.duration
    );
    let mut tasks: Vec<_> = (0..args.clients)
        .map(|i| {
            let start_at = started + Duration::from_secs_f64(i as f64 / args.ramp);
            tokio::spawn(run_client(i, start_at, shared.clone(), stop_rx.clone()))
        })
        .collect();
    let progress = tokio::spawn(progress(shared.clone(), args.clients, started, cpu.clone()));

    let interrupted = tokio::select! {
        _ = tokio::time::sleep_until(hold_end) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let hold_ended = Instant::now();
    let cpu_percent = cpu.percent_of_one_core();
    // Sampled while every client is still connected, so sessions and tick cost show the load.
    let end_of_hold = server_stats::fetch_room(target.addr, &target.authority, &args.room)
        .await
        .unwrap_or_else(|e| {
            fetch_errors.push(format!("end of hold: {e:#}"));
            None
        });
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
    let wall = started.elapsed();

    let hold_s = hold_ended
        .saturating_duration_since(hold_start)
        .as_secs_f64();
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
    let mut failed_join_reasons = BTreeMap::new();
    for o in &outcomes {
        if let Some(f) = &o.join_fail {
            *failed_join_reasons.entry(f.kind().to_owned()).or_insert(0) += 1;
        }
    }
    let mut errors = BTreeMap::new();
    for slot in 0..ERROR_SLOTS {
        let n: u64 = outcomes.iter().map(|o| o.errors[slot]).sum();
        if n > 0 {
            let name = if slot == ERROR_SLOTS - 1 {
                "unknown".to_owned()
            } else {
                error_name(slot as i32)
            };
            errors.insert(name, n);
        }
    }
    let mut close_codes = BTreeMap::new();
    for code in outcomes.iter().filter_map(|o| o.close_code) {
        *close_codes.entry(code).or_insert(0) += 1;
    }
    let hold_frames = sum(|o| o.hold_frames);
    let hold_bytes = sum(|o| o.hold_bytes);
    let per_s = |n: u64| {
        if hold_s > 0.0 {
            report::round2(n as f64 / hold_s)
        } else {
            0.0
        }
    };
    let delta = |f: fn(&RoomStats) -> u64| match (&before, &end_of_hold) {
        (Some(b), Some(e)) => Some(f(e).saturating_sub(f(b))),
        _ => None,
    };
    let saturated = cpu_percent.is_some_and(|p| p > 90.0 * cores as f64);
    if saturated {
        warnings.push(format!(
            "client-sim used {:.0} % of one core with {cores} cores available: it was saturated, \
             so the figures may show the simulator's limit, not the server's",
            cpu_percent.unwrap_or_default()
        ));
    }
    if interrupted {
        warnings.push("interrupted before the hold ended".into());
    }
    if aborted > 0 {
        warnings.push(format!(
            "{aborted} client tasks did not finish and were aborted"
        ));
    }
    warnings.extend(
        fetch_errors
            .iter()
            .map(|e| format!("GET /rooms failed ({e})")),
    );

    let tick_rate_hz = shared.tick_rate_hz.load(Relaxed);
    Ok(Report {
        scenario: "game",
        config: report::RunConfig {
            url: target.url,
            room: args.room,
            clients: args.clients,
            ramp_per_s: args.ramp,
            duration_s: args.duration,
            input_hz: args.input_hz,
        },
        timing: report::Timing {
            ramp_s: report::round2(ramp.as_secs_f64()),
            hold_s: report::round2(hold_s),
            wall_s: report::round2(wall.as_secs_f64()),
            interrupted,
        },
        tick_rate_hz: (tick_rate_hz > 0).then_some(tick_rate_hz),
        clients: report::Clients {
            requested: args.clients,
            connected: outcomes.iter().filter(|o| o.joined).count() as u64,
            failed_joins: outcomes.iter().filter(|o| o.join_fail.is_some()).count() as u64,
            failed_join_reasons,
            first_join_error: outcomes
                .iter()
                .find_map(|o| o.join_fail.as_ref().map(JoinFail::message)),
            ended_early: outcomes.iter().filter(|o| o.ended_early).count() as u64,
            aborted,
        },
        snapshots: report::Snapshots {
            received: sum(|o| o.snapshots),
            per_client_per_s: RateSummary::of(
                outcomes.iter().filter_map(|o| o.snapshots_per_s).collect(),
            ),
            gaps: sum(|o| o.gaps),
            missing_ticks: sum(|o| o.missing_ticks),
        },
        snapshot_latency_us: LatencySummary::of(&shared.snapshot_latency.merged()),
        input_ack_latency_us: LatencySummary::of(&shared.ack_latency.merged()),
        inputs: report::Inputs {
            sent: sum(|o| o.inputs_sent),
            acked: sum(|o| o.inputs_acked),
        },
        traffic: report::Traffic {
            frames: sum(|o| o.frames),
            bytes: sum(|o| o.bytes),
            hold_frames,
            hold_bytes,
            frames_per_s: per_s(hold_frames),
            bytes_per_s: per_s(hold_bytes),
        },
        errors,
        close_codes,
        decode_errors: sum(|o| o.decode_errors),
        server: report::ServerSide {
            overruns_during_run: delta(|r| r.overruns_total),
            skipped_ticks_during_run: delta(|r| r.skipped_ticks_total),
            before,
            end_of_hold,
            fetch_errors,
        },
        client_cpu: report::ClientCpu {
            percent_of_one_core: cpu_percent.map(report::round2),
            cores,
            saturated,
        },
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_only_loopback_ws_urls() {
        let t = resolve_target("ws://127.0.0.1:18080/ws").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:18080");
        assert!(resolve_target("ws://[::1]:9/ws").await.is_ok());
        assert!(resolve_target("ws://localhost:9/ws").await.is_ok());
        assert_eq!(
            resolve_target("ws://127.0.0.2/").await.unwrap().addr.port(),
            80
        );
        for bad in [
            "ws://10.0.0.1:8080/ws",
            "ws://[2001:db8::1]:8080/ws",
            "wss://127.0.0.1/ws",
            "http://127.0.0.1/ws",
            "ws://user@127.0.0.1/ws",
            "ws://127.0.0.1:notaport/ws",
            "ws:///ws",
        ] {
            assert!(resolve_target(bad).await.is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn error_names_are_short() {
        assert_eq!(error_name(ErrorCode::RateLimited as i32), "rate_limited");
        assert_eq!(error_name(99), "code_99");
    }
}
