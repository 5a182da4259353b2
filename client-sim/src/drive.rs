//! The one skeleton every scenario's run fills in: connect, ramp, hold, settle, report. It
//! owns the timeline (ramp, hold, grace), the clients started over the ramp (as tasks of this
//! process, or spread over worker processes, see [`crate::workers`]) or as a steady stream
//! (churn), the live progress line, the server samples (`GET /rooms` and `--metrics-url`)
//! before the ramp and at the start and the end of the hold, the wait for the server to
//! settle after the clients left, and the parts of the report that do not depend on the
//! scenario. A scenario hands [`drive`] its [`Plan`] and its state (a [`Scenario`]: name, one
//! client's life, part of the progress line, latency histograms); each client's time on the
//! socket is [`crate::talk`]'s loop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use client_sim::toolkit::host::{self, CpuMeter};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::limits::{self, NofileLimit};
use crate::report::{self, ClientProcesses, Common};
use crate::server_metrics::Timeline;
use crate::server_stats::{self, RoomStats};
use crate::settle::{self, Settle};
use crate::swarm::{Conn, EPHEMERAL_PORTS, OPEN_FILES, Shards, Swarm, SwarmArgs, error_name};
use crate::target::Target;
use crate::workers::{self, Fleet, Role};

/// After the hold, clients get this long to close and report before they are aborted.
pub const GRACE: Duration = Duration::from_secs(3);
/// A joint run's clients wait at most this long after the hold for the word to stop.
const STOP_WAIT: Duration = Duration::from_secs(30);

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

/// How a run fits in a larger one (a worker process's share, or one scenario of the mix):
/// its ramp starts at `start`, and its clients stop when `stop` turns true, which the larger
/// run says after sampling the server at the end of the hold.
#[derive(Debug, Clone)]
pub struct Joint {
    pub start: Instant,
    pub stop: watch::Receiver<bool>,
}

/// A scenario as [`drive`] runs it: its shared state (this trait's `Self`), its clients, and
/// what it shows and keeps.
pub trait Scenario: Send + Sync + Sized + 'static {
    /// The scenario's name (progress lines).
    const NAME: &'static str;
    /// Also scrape the metrics this often during ramp and hold (for the peak RSS).
    const SAMPLE_EVERY: Option<Duration> = None;
    /// See [`Swarm::reset_on_drop`].
    const RESET_ON_DROP: bool = false;

    /// What one client hands back when it ends (latencies go to shared [`Shards`]).
    type Outcome: Serialize + DeserializeOwned + Send + 'static;

    /// One client, from its connect to its leave.
    fn client(client: Client<Self>) -> impl Future<Output = (Conn, Self::Outcome)> + Send;

    /// The scenario's part of the progress line, `secs` after the previous one.
    fn progress(&self, secs: f64) -> String;

    /// The scenario's latency histograms, always in the same order: a worker process sends
    /// its own, and the parent adds them to these.
    fn shards(&self) -> Vec<&Shards> {
        Vec::new()
    }
}

/// What [`drive`] runs: how many clients, into which room, how they arrive, and whether the
/// run waits for the server to settle once they left.
pub struct Plan<'a> {
    pub args: &'a SwarmArgs,
    pub clients: usize,
    pub room: &'a str,
    pub arrivals: Arrivals,
    pub settle: Option<Settling>,
}

impl<'a> Plan<'a> {
    /// `clients` clients into `room` over the ramp, held, and stopped; no settle.
    pub fn ramp(args: &'a SwarmArgs, clients: usize, room: &'a str) -> Self {
        Plan {
            args,
            clients,
            room,
            arrivals: Arrivals::Ramp,
            settle: None,
        }
    }
}

/// How a run's clients come and go.
pub enum Arrivals {
    /// Client i starts at i ÷ `--ramp` s; all stay until the end of the hold (`--duration`
    /// after the ramp), when they are told to stop.
    Ramp,
    /// Clients keep starting, client i at i ÷ `--ramp` s, while that is within `--duration`
    /// (which is the hold: there is no ramp), and each leaves on its own.
    Stream(Stream),
}

/// A stream of clients (see [`Arrivals::Stream`]). Only the clients alive at the moment are
/// held: each is started when due and reaped when it ends.
pub struct Stream {
    /// Clients alive at once, about: what the open-file limit and the source addresses must
    /// hold.
    pub concurrent: usize,
    /// After the last start, the clients still running get this long to end; the rest are
    /// aborted.
    pub drain: Duration,
    /// The run's banner: what starts (`N sessions at R/s for D s`), and what follows the room.
    pub what: String,
    pub details: String,
}

/// After the clients left, wait up to `timeout` for the server to be back to its baseline;
/// `after` says what happened to them (for the line that says the run waits).
pub struct Settling {
    pub timeout: Duration,
    pub after: &'static str,
}

/// What a finished run hands back to its scenario: each client's connection and own
/// results.
pub struct Finished<S: Scenario> {
    pub run: Arc<Run<S>>,
    pub outcomes: Vec<(Conn, S::Outcome)>,
    pub common: Common,
    /// How a stream's clients arrived; `None` for a ramp.
    pub arrived: Option<Arrived>,
    /// The server after the clients left, when the plan asked.
    pub settle: Option<Settle>,
}

/// How a stream's clients arrived.
pub struct Arrived {
    pub started: u64,
    /// Schedule → start of each client, µs.
    pub lag: Histogram<u64>,
    /// From the first start to the last.
    pub window: Duration,
    /// Most clients connected at once (seen at each start).
    pub peak_connected: u64,
}

/// The clients' outcomes as they came back, and what else came with them.
pub struct Gathered<O> {
    pub outcomes: Vec<(Conn, O)>,
    /// Client tasks (or a failed worker's clients) that did not report.
    pub aborted: u64,
    /// Each worker process's CPU, in worker order (empty without workers).
    pub worker_cpu: Vec<Option<f64>>,
    pub interrupted: bool,
    pub warnings: Vec<String>,
}

impl<O> Gathered<O> {
    pub fn new(outcomes: Vec<(Conn, O)>) -> Self {
        Gathered {
            outcomes,
            aborted: 0,
            worker_cpu: Vec::new(),
            interrupted: false,
            warnings: Vec::new(),
        }
    }
}

/// Takes a stream's client that ended.
fn reap<O>(gathered: &mut Gathered<O>, ended: Result<(Conn, O), tokio::task::JoinError>) {
    match ended {
        Ok(outcome) => gathered.outcomes.push(outcome),
        Err(_) => gathered.aborted += 1,
    }
}

/// Runs a scenario from connect to report: samples the room and the server's metrics before,
/// starts [`Scenario::client`] for each client (ids `0..clients`) as the plan's arrivals say,
/// prints progress, samples the metrics at the start of the hold and both at its end, stops
/// the clients (a stream's end on their own), collects their outcomes, sums up what every
/// scenario reports, and waits for the server to settle when the plan asks. With worker
/// processes the parent samples the server and merges what the workers' clients measured; a
/// worker ends with [`workers::WorkerDone`] once its share is written.
pub async fn drive<S: Scenario>(plan: Plan<'_>, scenario: S) -> anyhow::Result<Finished<S>> {
    let Plan {
        args,
        clients,
        room,
        arrivals,
        settle,
    } = plan;
    let name = S::NAME;
    let role = Role::of(args, clients)?;
    let endpoints = args.endpoints().await?;
    let stream = match &arrivals {
        Arrivals::Stream(s) => Some(s),
        Arrivals::Ramp => None,
    };
    let per_process = stream.map_or_else(|| role.clients_per_process(clients), |s| s.concurrent);
    let concurrent = stream.map_or(clients, |s| s.concurrent);
    let source_ips = args.target.source_ips(concurrent, &endpoints.ws)?;
    let metrics_target = endpoints.metrics.clone();
    let mut warnings = Vec::new();
    let nofile = limits::nofile_limit();
    if let Some(w) = nofile.and_then(|l| l.warning(per_process)) {
        if !role.is_worker() {
            eprintln!("warning: {w}");
        }
        warnings.push(w);
    }

    // Whoever holds the whole run samples the server: not a worker, and not one scenario of
    // the mix for the metrics (the mix does, once).
    let mut sampler = Sampler::new(
        endpoints.ws.clone(),
        (!role.is_worker()).then(|| room.to_owned()),
        (!role.is_worker() && args.joint.is_none()).then(|| Timeline::new(endpoints.metrics)),
    );
    sampler.before().await;

    let joint = match &role {
        Role::Worker(w) => Some(w.joint()),
        _ => args.joint.clone(),
    };
    let ramp = match stream {
        Some(_) => Duration::ZERO,
        None => args.ramp_time(clients),
    };
    let started = match (&joint, &role) {
        (Some(joint), _) => joint.start,
        (None, Role::Parent(_)) => Instant::now() + workers::LEAD,
        _ => Instant::now(),
    };
    let hold_start = started + ramp;
    let hold_end = hold_start + Duration::from_secs_f64(args.duration);
    if !role.is_worker() {
        let ws = &endpoints.ws;
        match stream {
            Some(s) => eprintln!(
                "client-sim {name}: {} -> {} ({}), room {room:?}{}",
                s.what, ws.url, ws.addr, s.details
            ),
            None => eprintln!(
                "client-sim {name}: {clients} clients -> {} ({}), room {room:?}, ramp {:.1} s, hold {:.1} s{}",
                ws.url,
                ws.addr,
                ramp.as_secs_f64(),
                args.duration,
                role.describe(source_ips),
            ),
        }
    }
    let run = Arc::new(Run {
        swarm: Swarm {
            target: endpoints.ws,
            hold_start,
            hold_end,
            live: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            tick_rate_hz: AtomicU32::new(0),
            reset_on_drop: S::RESET_ON_DROP,
            source_ips,
        },
        scenario,
    });
    let cpu = Arc::new(CpuMeter::start());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut crowd = match (&role, &arrivals) {
        (Role::Parent(count), _) => Crowd::Processes(Fleet::spawn(args, *count, clients, started)?),
        (_, Arrivals::Stream(s)) => {
            let streaming = stream_clients(run.clone(), args.ramp, s.drain, stop_rx.clone());
            Crowd::Stream(tokio::spawn(streaming))
        }
        _ => {
            if let Some(late) = Instant::now().checked_duration_since(started)
                && late > Duration::from_millis(100)
            {
                warnings.push(format!(
                    "this process started its clients {:.2} s after the common start",
                    late.as_secs_f64()
                ));
            }
            let tasks = (0..clients)
                .filter(|&id| role.owns(id))
                .map(|id| {
                    let start_at = started + Duration::from_secs_f64(id as f64 / args.ramp);
                    let task = Client {
                        id,
                        run: run.clone(),
                        stop: stop_rx.clone(),
                    };
                    tokio::spawn(async move {
                        tokio::time::sleep_until(start_at).await;
                        S::client(task).await
                    })
                })
                .collect();
            Crowd::Tasks(tasks)
        }
    };
    let shown = match (&role, &crowd) {
        (Role::Worker(w), _) => Shown::Json(w.index),
        (_, Crowd::Processes(fleet)) => Shown::Fleet(fleet.status()),
        _ => Shown::Line(args.joint.is_some().then_some(name)),
    };
    let progress = tokio::spawn(progress(run.clone(), clients, started, cpu.clone(), shown));

    let interrupted = sampler
        .until_end_of_hold(hold_start, hold_end, S::SAMPLE_EVERY)
        .await;
    let hold_ended = Instant::now();
    let cpu_percent = cpu.percent_of_one_core();
    // Sampled while every client is still connected, so sessions and tick cost show the load.
    sampler.end_of_hold().await;
    let mut arrived = None;
    let (mut gathered, stopped_at) = match &mut crowd {
        Crowd::Stream(streaming) => {
            // A stream's clients leave on their own; the run stops them only when
            // interrupted.
            if interrupted {
                let _ = stop_tx.send(true);
            }
            let streamed = tokio::select! {
                done = &mut *streaming => done,
                _ = tokio::signal::ctrl_c() => {
                    let _ = stop_tx.send(true);
                    streaming.await
                }
            };
            progress.abort();
            let (gathered, a) = streamed?;
            arrived = Some(a);
            (gathered, Instant::now())
        }
        crowd => {
            if let Some(mut joint) = joint {
                let word = joint.stop.wait_for(|&stop| stop);
                let _ = tokio::time::timeout(STOP_WAIT, word).await;
            }
            let stopped_at = Instant::now();
            let _ = stop_tx.send(true);
            progress.abort();
            let gathered = match crowd {
                Crowd::Processes(fleet) => fleet.finish(&run.scenario, &run.swarm).await,
                Crowd::Tasks(tasks) => collect(tasks).await,
                Crowd::Stream(_) => unreachable!("handled above"),
            };
            (gathered, stopped_at)
        }
    };
    gathered.interrupted |= interrupted;
    if let Role::Worker(w) = &role {
        warnings.append(&mut gathered.warnings);
        return Err(workers::hand_in(w, &run, gathered, cpu_percent, warnings));
    }
    warnings.append(&mut gathered.warnings);

    let workers = gathered.worker_cpu.len().max(1) as u32;
    let cpu_percent = match &crowd {
        // The parent's own share, and every worker's.
        Crowd::Processes(_) => gathered
            .worker_cpu
            .iter()
            .try_fold(cpu_percent.unwrap_or(0.0), |sum, w| w.map(|w| sum + w)),
        _ => cpu_percent,
    };
    let (requested, hold) = match &arrived {
        Some(a) => (a.started as usize, a.window),
        None => (clients, hold_ended.saturating_duration_since(hold_start)),
    };
    let observed = Observed {
        requested,
        per_process,
        ramp,
        hold,
        wall: started.elapsed(),
        interrupted: gathered.interrupted,
        aborted: gathered.aborted,
        cpu_percent,
        server: sampler,
        nofile,
        warnings,
        processes: ClientProcesses {
            workers,
            source_ips,
            worker_cpu_percent: gathered
                .worker_cpu
                .iter()
                .map(|c| c.map(report::round2))
                .collect(),
        },
    };
    let tick_rate_hz = run.swarm.tick_rate_hz.load(Relaxed);
    let common = observed.summarize(
        ConnTally::of(gathered.outcomes.iter().map(|(conn, _)| conn)),
        (tick_rate_hz > 0).then_some(tick_rate_hz),
    );
    let settle = match settle {
        Some(settling) => {
            eprintln!(
                "client-sim {name}: {}; waiting for the server to settle",
                settling.after
            );
            let server = common.tail.server.metrics.clone().unwrap_or_default();
            let timeout = settling.timeout;
            Some(settle::wait(&server, &metrics_target, stopped_at, timeout).await)
        }
        None => None,
    };
    Ok(Finished {
        run,
        outcomes: gathered.outcomes,
        common,
        arrived,
        settle,
    })
}

/// Where the clients run: tasks of this process, worker processes, or a stream of tasks.
enum Crowd<O> {
    Tasks(Vec<JoinHandle<(Conn, O)>>),
    Processes(Fleet),
    Stream(JoinHandle<(Gathered<O>, Arrived)>),
}

/// Waits for the client tasks, for at most [`GRACE`]; the ones still running are aborted.
async fn collect<O>(tasks: &mut [JoinHandle<(Conn, O)>]) -> Gathered<O> {
    let deadline = Instant::now() + GRACE;
    let mut gathered = Gathered::new(Vec::with_capacity(tasks.len()));
    for task in tasks {
        match tokio::time::timeout_at(deadline, &mut *task).await {
            Ok(Ok(outcome)) => gathered.outcomes.push(outcome),
            Ok(Err(e)) => {
                tracing::warn!("client task failed: {e}");
                gathered.aborted += 1;
            }
            Err(_) => {
                task.abort();
                gathered.aborted += 1;
            }
        }
    }
    gathered
}

/// A stream's clients: client i is started at `hold_start + i / rate` while that is before
/// the end of the hold, and the ended ones are reaped as it goes; then the last ones get
/// `drain` to end (the rest are aborted). A stop (Ctrl-C) ends the starts early.
async fn stream_clients<S: Scenario>(
    run: Arc<Run<S>>,
    rate: f64,
    drain: Duration,
    stop: watch::Receiver<bool>,
) -> (Gathered<S::Outcome>, Arrived) {
    let (started, end) = (run.swarm.hold_start, run.swarm.hold_end);
    let mut clients = JoinSet::new();
    let mut gathered = Gathered::new(Vec::new());
    let mut lag = report::latency_histogram();
    let (mut first_start, mut last_start) = (None, None);
    let (mut starts, mut peak_connected) = (0, 0);
    let mut halt = stop.clone();
    for id in 0.. {
        let at = started + Duration::from_secs_f64(id as f64 / rate);
        if at >= end {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = halt.changed() => {
                gathered.interrupted = true;
                break;
            }
        }
        let now = Instant::now();
        lag.saturating_record((now - at).as_micros() as u64);
        first_start.get_or_insert(now);
        last_start = Some(now);
        starts += 1;
        let client = Client {
            id,
            run: run.clone(),
            stop: stop.clone(),
        };
        clients.spawn(S::client(client));
        peak_connected = peak_connected.max(run.swarm.live.load(Relaxed));
        while let Some(ended) = clients.try_join_next() {
            reap(&mut gathered, ended);
        }
    }
    let deadline = Instant::now() + drain;
    loop {
        match tokio::time::timeout_at(deadline, clients.join_next()).await {
            Ok(Some(ended)) => reap(&mut gathered, ended),
            Ok(None) => break,
            Err(_) => {
                gathered.aborted += clients.len() as u64;
                clients.abort_all();
                break;
            }
        }
    }
    let arrived = Arrived {
        started: starts,
        lag,
        window: match (first_start, last_start) {
            (Some(a), Some(b)) => b.duration_since(a),
            _ => Duration::ZERO,
        },
        peak_connected,
    };
    (gathered, arrived)
}

/// The server's side of a run: the room's `/rooms` row and the `--metrics-url` timeline, each
/// when this run samples it.
pub struct Sampler {
    target: Target,
    room: Option<String>,
    metrics: Option<Timeline>,
    fetch_errors: Vec<String>,
    before: Option<RoomStats>,
    end_of_hold: Option<RoomStats>,
}

impl Sampler {
    /// Samples `room` on `target` (`GET /rooms`) when given, and the metrics when given.
    pub fn new(target: Target, room: Option<String>, metrics: Option<Timeline>) -> Self {
        Sampler {
            target,
            room,
            metrics,
            fetch_errors: Vec::new(),
            before: None,
            end_of_hold: None,
        }
    }

    async fn room(&mut self, label: &str) -> Option<RoomStats> {
        let room = self.room.as_deref()?;
        server_stats::fetch_room(&self.target, room)
            .await
            .unwrap_or_else(|e| {
                self.fetch_errors.push(format!("{label}: {e:#}"));
                None
            })
    }

    pub async fn before(&mut self) {
        self.before = self.room("before").await;
        if let Some(m) = &mut self.metrics {
            m.before = m.sample(Some("before")).await;
        }
    }

    /// Waits for the end of the hold (sampling the metrics on the way, see
    /// [`sample_until`]); true when interrupted first.
    pub async fn until_end_of_hold(
        &mut self,
        hold_start: Instant,
        hold_end: Instant,
        every: Option<Duration>,
    ) -> bool {
        let wait = async {
            match &mut self.metrics {
                Some(m) => sample_until(m, hold_start, hold_end, every).await,
                None => tokio::time::sleep_until(hold_end).await,
            }
        };
        tokio::select! {
            _ = wait => false,
            _ = tokio::signal::ctrl_c() => true,
        }
    }

    pub async fn end_of_hold(&mut self) {
        let (target, room) = (&self.target, self.room.as_deref());
        let rooms = async {
            match room {
                Some(room) => Some(server_stats::fetch_room(target, room).await),
                None => None,
            }
        };
        let metrics = async {
            if let Some(m) = &mut self.metrics {
                m.end_of_hold = m.sample(Some("end of hold")).await;
            }
        };
        let (rooms, ()) = tokio::join!(rooms, metrics);
        self.end_of_hold = match rooms {
            Some(Ok(row)) => row,
            Some(Err(e)) => {
                self.fetch_errors.push(format!("end of hold: {e:#}"));
                None
            }
            None => None,
        };
    }
}

/// Waits for the end of the hold, scraping the metrics at the start of the hold and, with
/// `every`, periodically in between (those only feed the peak RSS).
pub async fn sample_until(
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

/// How progress is shown.
pub enum Shown {
    /// A line a second on stderr, tagged with the scenario's name in the mix.
    Line(Option<&'static str>),
    /// A worker's JSON line a second on stdout, for its parent.
    Json(u32),
    /// The parent's line, from the workers' JSON lines.
    Fleet(Arc<workers::Status>),
}

/// Shows progress once a second until aborted, the scenario's part included.
pub async fn progress<S: Scenario>(
    run: Arc<Run<S>>,
    clients: usize,
    started: Instant,
    cpu: Arc<CpuMeter>,
    shown: Shown,
) {
    let swarm = &run.swarm;
    let mut timer =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    let mut last = (started, 0u64);
    loop {
        let now = timer.tick().await;
        let secs = (now - last.0).as_secs_f64().max(1e-3);
        let (live, frames, cpu_percent, part) = match &shown {
            Shown::Fleet(status) => {
                let s = status.sum();
                (
                    s.live,
                    s.frames,
                    s.cpu,
                    format!("{} workers", status.workers()),
                )
            }
            _ => (
                swarm.live.load(Relaxed),
                swarm.frames.load(Relaxed),
                cpu.percent_of_one_core(),
                run.scenario.progress(secs),
            ),
        };
        let rate = frames.saturating_sub(last.1) as f64 / secs;
        last = (now, frames);
        let phase = if now < swarm.hold_start {
            "ramp"
        } else {
            "hold"
        };
        let at = (now - started).as_secs_f64();
        let cpu_text = cpu_percent.map_or("?".into(), |p| format!("{p:.0} %"));
        match &shown {
            Shown::Json(worker) => workers::report_progress(*worker, live, frames, cpu_percent),
            Shown::Line(tag) => eprintln!(
                "[{at:>5.1}s {phase}{}] connected {live}/{clients}  frames/s {rate:.0}  {part}  cpu {cpu_text}",
                tag.map_or(String::new(), |t| format!(" {t}")),
            ),
            Shown::Fleet(_) => eprintln!(
                "[{at:>5.1}s {phase}] connected {live}/{clients}  frames/s {rate:.0}  {part}  cpu {cpu_text}"
            ),
        }
    }
}

/// The connection-level results of many clients, added up.
#[derive(Debug, Default)]
pub struct ConnTally {
    pub joined: u64,
    pub failed_joins: u64,
    pub failed_join_reasons: BTreeMap<String, u64>,
    pub first_join_error: Option<String>,
    pub redirects: u64,
    pub ended_early: u64,
    pub errors: BTreeMap<String, u64>,
    pub close_codes: BTreeMap<u16, u64>,
    pub decode_errors: u64,
    pub frames: u64,
    pub bytes: u64,
    pub hold_frames: u64,
    pub hold_bytes: u64,
}

impl ConnTally {
    pub fn of<'a>(conns: impl IntoIterator<Item = &'a Conn>) -> Self {
        let mut tally = ConnTally::default();
        for c in conns {
            tally.add(c);
        }
        tally
    }

    pub fn add(&mut self, c: &Conn) {
        self.joined += u64::from(c.joined);
        self.redirects += c.redirects;
        self.ended_early += u64::from(c.ended_early);
        if let Some(f) = &c.join_fail {
            self.failed_joins += 1;
            *self
                .failed_join_reasons
                .entry(f.kind().to_owned())
                .or_insert(0) += 1;
            self.first_join_error.get_or_insert_with(|| f.message());
        }
        for (&code, &n) in &c.errors {
            *self.errors.entry(error_name(code)).or_insert(0) += n;
        }
        if let Some(code) = c.close_code {
            *self.close_codes.entry(code).or_insert(0) += 1;
        }
        self.decode_errors += c.decode_errors;
        self.frames += c.frames;
        self.bytes += c.bytes;
        self.hold_frames += c.hold_frames;
        self.hold_bytes += c.hold_bytes;
    }

    fn failed_for(&self, reason: &str) -> u64 {
        self.failed_join_reasons.get(reason).copied().unwrap_or(0)
    }
}

/// What a run observed besides the clients' outcomes.
pub struct Observed {
    pub requested: usize,
    /// Clients one process held at most (all of them without workers).
    pub per_process: usize,
    pub ramp: Duration,
    pub hold: Duration,
    pub wall: Duration,
    pub interrupted: bool,
    pub aborted: u64,
    pub cpu_percent: Option<f64>,
    /// What the run sampled of the server (its metrics: not in a part of the mix).
    pub server: Sampler,
    pub nofile: Option<NofileLimit>,
    pub warnings: Vec<String>,
    pub processes: ClientProcesses,
}

impl Observed {
    pub fn summarize(self, conns: ConnTally, tick_rate_hz: Option<u32>) -> Common {
        let hold_s = self.hold.as_secs_f64();
        let server = self.server;
        let delta = |f: fn(&RoomStats) -> u64| match (&server.before, &server.end_of_hold) {
            (Some(b), Some(e)) => Some(f(e).saturating_sub(f(b))),
            _ => None,
        };
        let cores = host::usable_cores();
        let saturated = self.cpu_percent.is_some_and(|p| p > 90.0 * cores as f64);
        let mut warnings = self.warnings;
        let mut limits = Vec::new();
        let over_nofile = self
            .nofile
            .is_some_and(|l| self.per_process as u64 > l.max_clients);
        let out_of_fds = conns.failed_for(OPEN_FILES);
        if over_nofile || out_of_fds > 0 {
            limits.push(OPEN_FILES);
            warnings.push(format!(
                "CLIENT LIMIT: the open-file limit, not the server, stopped {out_of_fds} \
                 connects (one socket per client; {} clients per process): run more worker \
                 processes (--workers)",
                self.per_process
            ));
        }
        let out_of_ports = conns.failed_for(EPHEMERAL_PORTS);
        if out_of_ports > 0 {
            limits.push(EPHEMERAL_PORTS);
            warnings.push(format!(
                "CLIENT LIMIT: {out_of_ports} connects found no free ephemeral port on {} \
                 source address(es), not a server refusal: spread them with --source-ips K",
                self.processes.source_ips
            ));
        }
        if saturated {
            limits.push("client_cpu");
            warnings.push(format!(
                "CLIENT LIMIT: client-sim used {:.0} % of one core with {cores} cores \
                 available: it was saturated, so the figures may show the simulator's limit, \
                 not the server's",
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
            server
                .fetch_errors
                .iter()
                .map(|e| format!("GET /rooms failed ({e})")),
        );
        let tick_p99_us = server.end_of_hold.as_ref().map(|r| r.tick_duration_us.p99);
        let metrics = server.metrics.map(|m| m.summarize(tick_p99_us));
        if let Some(m) = &metrics {
            warnings.extend(m.warnings());
        }
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
                connected: conns.joined,
                failed_joins: conns.failed_joins,
                failed_join_reasons: conns.failed_join_reasons,
                first_join_error: conns.first_join_error,
                redirects: conns.redirects,
                ended_early: conns.ended_early,
                aborted: self.aborted,
            },
        };
        let (hold_frames, hold_bytes) = (conns.hold_frames, conns.hold_bytes);
        let tail = report::Tail {
            traffic: report::Traffic {
                frames: conns.frames,
                bytes: conns.bytes,
                hold_frames,
                hold_bytes,
                frames_per_s: report::per_s(hold_frames, hold_s),
                bytes_per_s: report::per_s(hold_bytes, hold_s),
            },
            errors: conns.errors,
            close_codes: conns.close_codes,
            decode_errors: conns.decode_errors,
            server: report::ServerSide {
                overruns_during_run: delta(|r| r.overruns_total),
                skipped_ticks_during_run: delta(|r| r.skipped_ticks_total),
                before: server.before,
                end_of_hold: server.end_of_hold,
                fetch_errors: server.fetch_errors,
                metrics,
            },
            client_cpu: report::ClientCpu {
                percent_of_one_core: self.cpu_percent.map(report::round2),
                cores,
                saturated,
            },
            client_processes: self.processes,
            client_limits: limits,
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
    use crate::swarm::JoinFail;
    use crate::testing::placeholder_target;

    #[test]
    fn summarizes_connections() {
        let observed = Observed {
            requested: 3,
            per_process: 3,
            ramp: Duration::from_millis(10),
            hold: Duration::from_secs(2),
            wall: Duration::from_secs(3),
            interrupted: false,
            aborted: 0,
            cpu_percent: Some(10.0),
            server: Sampler {
                fetch_errors: vec!["before: x".into()],
                ..Sampler::new(
                    placeholder_target("ws://127.0.0.1:9/ws"),
                    None,
                    Some(Timeline::new(placeholder_target(
                        "http://127.0.0.1:9/metrics",
                    ))),
                )
            },
            nofile: None,
            warnings: vec![],
            processes: ClientProcesses::default(),
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
        let out_of_ports = Conn {
            join_fail: Some(JoinFail::Ports("Cannot assign requested address".into())),
            ..Conn::default()
        };
        let all = [ok, failed, out_of_ports];
        let c = observed.summarize(ConnTally::of(&all), Some(20));
        let (k, t) = (&c.head.clients, &c.tail);
        assert_eq!((k.connected, k.failed_joins), (1, 2));
        assert_eq!(k.failed_join_reasons["timeout"], 1);
        assert_eq!(k.failed_join_reasons[EPHEMERAL_PORTS], 1);
        assert_eq!(t.errors["rate_limited"], 2);
        assert_eq!(t.close_codes[&4000], 1);
        assert_eq!(
            (t.traffic.frames_per_s, t.traffic.bytes_per_s),
            (5.0, 500.0)
        );
        assert_eq!(t.client_limits, [EPHEMERAL_PORTS]);
        assert!(t.warnings[0].contains("--source-ips"), "{:?}", t.warnings);
        assert_eq!(t.warnings[1], "GET /rooms failed (before: x)");
        assert_eq!(t.server.metrics.as_ref().unwrap().samples, 0);
    }
}
