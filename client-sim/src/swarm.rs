//! What every scenario shares: the common command-line options, the run's timeline (ramp,
//! hold, grace), the WebSocket connect + join handshake, per-connection counters (frames,
//! bytes, errors, close codes), sharded latency histograms, the live progress line, the
//! server samples before and at the end of the hold, and the parts of the report that do not
//! depend on the scenario. A scenario hands [`drive`] its state, its per-client task and its
//! part of the progress line.

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
    ClientMessage, ErrorCode, Join, ServerMessage, Welcome, client_message, server_message,
};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::proc::{self, CpuMeter};
use crate::report::{self, Common};
use crate::server_stats::{self, RoomStats};
use crate::target::Target;

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

/// Options every scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub struct SwarmArgs {
    /// WebSocket URL of the server; must resolve to a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Number of simulated clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Clients started per second during the ramp.
    #[arg(long, default_value_t = 500.0)]
    pub ramp: f64,
    /// Seconds to hold after the ramp, all clients connected.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl SwarmArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        ensure!(self.clients >= 1, "--clients must be at least 1");
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

    fn ramp_time(&self) -> Duration {
        Duration::from_secs_f64(self.clients as f64 / self.ramp)
    }
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
        match item {
            Some(Ok(Message::Binary(b))) => {
                let now = Instant::now();
                self.count_frame(swarm, b.len(), now);
                let Ok(msg) = ServerMessage::decode(b) else {
                    self.decode_errors += 1;
                    return Read::Skip;
                };
                if let Some(server_message::Body::Error(e)) = &msg.body {
                    *self.errors.entry(e.code).or_default() += 1;
                }
                Read::Msg(msg, now)
            }
            Some(Ok(Message::Close(frame))) => {
                let code = close_code(frame.as_ref());
                self.close_code = Some(code);
                Read::Closed(code)
            }
            Some(Ok(other)) => {
                self.count_frame(swarm, other.len(), Instant::now());
                Read::Skip
            }
            Some(Err(e)) => Read::Failed(e.to_string()),
            None => Read::Failed("end of stream".into()),
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

/// An encoded `Join{room}`.
pub fn join_message(room: &str) -> Vec<u8> {
    ClientMessage {
        body: Some(client_message::Body::Join(Join {
            room: room.to_owned(),
            ..Join::default()
        })),
    }
    .encode_to_vec()
}

/// Connects to `url` (on the target's address), sends `hello` if given and waits for
/// Welcome; frames before it are counted, not measured.
pub async fn join(
    swarm: &Swarm,
    conn: &mut Conn,
    url: &str,
    hello: Option<Vec<u8>>,
) -> Result<(Ws, Welcome), JoinFail> {
    let tcp = TcpStream::connect(swarm.target.addr)
        .await
        .map_err(|e| JoinFail::Connect(e.to_string()))?;
    // Client messages are a few bytes each; Nagle would hold them back and inflate latency.
    let _ = tcp.set_nodelay(true);
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
/// tungstenite's queued close reply.
pub async fn leave(swarm: &Swarm, mut ws: Ws, server_closed: bool) {
    swarm.live.fetch_sub(1, Relaxed);
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if !server_closed {
            let _ = ws.close(None).await;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Prints one line a second on stderr until aborted; `detail` adds the scenario's part.
async fn progress<S>(
    run: Arc<Run<S>>,
    detail: fn(&S, f64) -> String,
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
            detail(&run.scenario, secs),
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
}

/// Runs a scenario to completion (ramp, hold, shutdown): samples the room before, starts
/// `client` for each client over the ramp, prints progress with `detail`, samples the room at
/// the end of the hold, stops the clients and collects their outcomes.
pub async fn drive<S, O, F>(
    name: &str,
    args: &SwarmArgs,
    target: Target,
    room: &str,
    scenario: S,
    client: fn(Client<S>) -> F,
    detail: fn(&S, f64) -> String,
) -> Finished<S, O>
where
    S: Send + Sync + 'static,
    O: Send + 'static,
    F: Future<Output = (Conn, O)> + Send + 'static,
{
    let mut warnings = Vec::new();
    let nofile = proc::nofile_limit();
    if let Some(w) = nofile.and_then(|l| l.warning(args.clients)) {
        eprintln!("warning: {w}");
        warnings.push(w);
    }

    let mut fetch_errors = Vec::new();
    let before = server_stats::fetch_room(&target, room)
        .await
        .unwrap_or_else(|e| {
            fetch_errors.push(format!("before: {e:#}"));
            None
        });

    let ramp = args.ramp_time();
    let started = Instant::now();
    let hold_start = started + ramp;
    let hold_end = hold_start + Duration::from_secs_f64(args.duration);
    eprintln!(
        "client-sim {name}: {} clients -> {} ({}), room {room:?}, ramp {:.1} s, hold {:.1} s",
        args.clients,
        target.url,
        target.addr,
        ramp.as_secs_f64(),
        args.duration
    );
    let run = Arc::new(Run {
        swarm: Swarm {
            target,
            hold_start,
            hold_end,
            live: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            tick_rate_hz: AtomicU32::new(0),
        },
        scenario,
    });
    let cpu = Arc::new(CpuMeter::start());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks: Vec<_> = (0..args.clients)
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
    let progress = tokio::spawn(progress(
        run.clone(),
        detail,
        args.clients,
        started,
        cpu.clone(),
    ));

    let interrupted = tokio::select! {
        _ = tokio::time::sleep_until(hold_end) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let hold_ended = Instant::now();
    let cpu_percent = cpu.percent_of_one_core();
    // Sampled while every client is still connected, so sessions and tick cost show the load.
    let end_of_hold = server_stats::fetch_room(&run.swarm.target, room)
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

    let observed = Observed {
        requested: args.clients,
        ramp,
        hold: hold_ended.saturating_duration_since(hold_start),
        wall: started.elapsed(),
        interrupted,
        aborted,
        cpu_percent,
        before,
        end_of_hold,
        fetch_errors,
        nofile,
        warnings,
    };
    let tick_rate_hz = run.swarm.tick_rate_hz.load(Relaxed);
    let common = observed.summarize(
        outcomes.iter().map(|(conn, _)| conn),
        (tick_rate_hz > 0).then_some(tick_rate_hz),
    );
    Finished {
        run,
        outcomes,
        common,
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
    }
}
