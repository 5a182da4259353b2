//! The `churn` scenario: sessions connect at a steady R per second for D seconds; each joins
//! the room, waits for its first snapshot, stays a short while and leaves, politely (close
//! frame) or abruptly (RST), as `--reset-share` says. Sessions are started on an exact
//! schedule (session i at i / R) and reaped as they end, so the simulator holds only the
//! sessions alive at the moment. Afterwards it polls the server's metrics until connections
//! and tokio tasks are back to the baseline, as the spike does ([`crate::settle`]), and
//! reports the achieved connect rate against the asked one, join and join→first-snapshot
//! latency, failed joins, and the server's RSS before, at the peak and after.

mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::ensure;
use client_sim::toolkit::host::CpuMeter;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;

pub use self::report::ChurnReport;
use self::report::{ChurnConfig, Churned};
use crate::drive::{self, ConnTally, Observed, Run, Sampler, Shown};
use crate::limits;
use crate::report::{ClientProcesses, LatencySummary, latency_histogram};
use crate::server_metrics::Timeline;
use crate::settle::{self, POLL};
use crate::swarm::{
    self, Client, Conn, Held, Holding, JOIN_TIMEOUT, Scenario, Shards, Swarm, TargetArgs,
};

/// After the last session was started, the others get this long beyond their stay to end
/// before they are aborted.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Sessions started per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds over which sessions are started.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Room to join.
    #[arg(long, default_value = "arena")]
    pub room: String,
    /// Milliseconds a session stays after its first snapshot.
    #[arg(long, default_value_t = 500)]
    pub stay_ms: u64,
    /// Share of sessions that leave by dropping the socket (RST) instead of closing politely:
    /// 0 none, 1 all, 0.5 every other one.
    #[arg(long, default_value_t = 0.5)]
    pub reset_share: f64,
    /// Seconds to wait, after the last session left, for the server to be back to its
    /// baseline.
    #[arg(long, default_value_t = 60.0)]
    pub settle_timeout: f64,
}

impl ChurnArgs {
    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            self.rate.is_finite() && self.rate > 0.0 && self.rate <= 10_000.0,
            "--rate must be above 0 and at most 10000 sessions per second"
        );
        ensure!(
            self.duration.is_finite() && self.duration > 0.0 && self.duration <= 86_400.0,
            "--duration must be between 0 and 86400 seconds"
        );
        ensure!(
            (0.0..=1.0).contains(&self.reset_share),
            "--reset-share must be between 0 and 1"
        );
        ensure!(self.stay_ms <= 600_000, "--stay-ms must be at most 600000");
        ensure!(
            self.settle_timeout.is_finite()
                && self.settle_timeout > 0.0
                && self.settle_timeout <= 3600.0,
            "--settle-timeout must be between 0 and 3600 seconds"
        );
        Ok(())
    }
}

/// What every session task shares.
struct Shared {
    join: Vec<u8>,
    stay: Duration,
    reset_share: f64,
    join_latency: Shards,
    first_snapshot: Shards,
    started: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    /// Whether session `id` leaves with RST: spread evenly, `reset_share` of all sessions
    /// (0.5: every other one).
    fn resets(&self, id: usize) -> bool {
        let share = |n: usize| (n as f64 * self.reset_share).floor();
        share(id + 1) > share(id)
    }
}

impl Scenario for Shared {
    const NAME: &'static str = "churn";

    fn progress(&self, _: f64) -> String {
        format!(
            "started {}  failed {}  join -> snapshot {}",
            self.started.load(Relaxed),
            self.failed.load(Relaxed),
            self.first_snapshot.p50_p99()
        )
    }
}

/// One session: joins, waits for its first snapshot (at most [`JOIN_TIMEOUT`]), stays, and
/// leaves by close frame or RST.
async fn session(client: Client<Shared>) -> (Conn, Held) {
    let run = client.run.clone();
    let shared = &run.scenario;
    let how = Holding {
        hello: shared.join.clone(),
        join_latency: Some(&shared.join_latency),
        first_snapshot: Some(&shared.first_snapshot),
        stay: Some(shared.stay),
        reset: shared.resets(client.id),
    };
    let (conn, out) = swarm::hold(client, how).await;
    if conn.join_fail.is_some() {
        shared.failed.fetch_add(1, Relaxed);
    }
    (conn, out)
}

/// What the pacing loop saw.
struct Paced {
    tally: ConnTally,
    churned: Churned,
    /// Schedule → start of each session, µs.
    lag: Histogram<u64>,
    first_start: Option<Instant>,
    last_start: Option<Instant>,
    aborted: u64,
    interrupted: bool,
}

impl Paced {
    fn take(&mut self, ended: Result<(Conn, Held), JoinError>) {
        let Ok((conn, out)) = ended else {
            self.aborted += 1;
            return;
        };
        self.tally.add(&conn);
        let c = &mut self.churned;
        if conn.joined {
            c.joined_without_snapshot += u64::from(!out.snapshot);
            c.resets += u64::from(out.reset);
            c.polite_closes += u64::from(!out.reset && !conn.ended_early);
        }
    }
}

/// Starts session i at `started + i / rate` while that is before `end`, reaping the ended
/// ones as it goes, then waits for the last ones (bounded); a stop (Ctrl-C) ends it early.
async fn pace(
    run: &Arc<Run<Shared>>,
    rate: f64,
    started: Instant,
    end: Instant,
    stop: watch::Receiver<bool>,
) -> Paced {
    let mut sessions = JoinSet::new();
    let mut paced = Paced {
        tally: ConnTally::default(),
        churned: Churned::default(),
        lag: latency_histogram(),
        first_start: None,
        last_start: None,
        aborted: 0,
        interrupted: false,
    };
    let mut halt = stop.clone();
    for id in 0.. {
        let at = started + Duration::from_secs_f64(id as f64 / rate);
        if at >= end {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = halt.changed() => {
                paced.interrupted = true;
                break;
            }
        }
        let now = Instant::now();
        paced.lag.saturating_record((now - at).as_micros() as u64);
        paced.first_start.get_or_insert(now);
        paced.last_start = Some(now);
        run.scenario.started.fetch_add(1, Relaxed);
        let client = Client {
            id,
            run: run.clone(),
            stop: stop.clone(),
        };
        sessions.spawn(session(client));
        let live = run.swarm.live.load(Relaxed);
        paced.churned.peak_connected = paced.churned.peak_connected.max(live);
        while let Some(ended) = sessions.try_join_next() {
            paced.take(ended);
        }
    }
    let deadline = Instant::now() + run.scenario.stay + JOIN_TIMEOUT * 2 + DRAIN;
    loop {
        match tokio::time::timeout_at(deadline, sessions.join_next()).await {
            Ok(Some(ended)) => paced.take(ended),
            Ok(None) => break,
            Err(_) => {
                paced.aborted += sessions.len() as u64;
                sessions.abort_all();
                break;
            }
        }
    }
    paced
}

/// Runs the churn, waits for the server to settle and builds the report.
pub async fn run(args: ChurnArgs) -> anyhow::Result<ChurnReport> {
    args.check()?;
    let endpoints = args.target.endpoints().await?;
    let stay = Duration::from_millis(args.stay_ms);
    // Sessions alive at once, about: each lives its stay plus its join and first snapshot.
    let concurrent = (args.rate * (stay.as_secs_f64() + 1.0)).ceil() as usize;
    let source_ips = args.target.source_ips(concurrent, &endpoints.ws)?;
    let nofile = limits::nofile_limit();
    let mut warnings = Vec::new();
    if let Some(w) = nofile.and_then(|l| l.warning(concurrent)) {
        eprintln!("warning: {w}");
        warnings.push(w);
    }
    let metrics_target = endpoints.metrics.clone();
    let mut sampler = Sampler::new(
        endpoints.ws.clone(),
        Some(args.room.clone()),
        Some(Timeline::new(endpoints.metrics)),
    );
    sampler.before().await;

    let sessions = (args.rate * args.duration).ceil() as usize;
    eprintln!(
        "client-sim churn: {sessions} sessions at {}/s for {} s -> {} ({}), room {:?}, stay {} ms, reset share {}",
        args.rate,
        args.duration,
        endpoints.ws.url,
        endpoints.ws.addr,
        args.room,
        args.stay_ms,
        args.reset_share
    );
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.duration);
    let run = Arc::new(Run {
        swarm: Swarm {
            target: endpoints.ws,
            hold_start: started,
            hold_end: end,
            live: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            tick_rate_hz: AtomicU32::new(0),
            reset_on_drop: false,
            source_ips,
        },
        scenario: Shared {
            join: swarm::join_message(&args.room, ""),
            stay,
            reset_share: args.reset_share,
            join_latency: Shards::new(),
            first_snapshot: Shards::new(),
            started: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        },
    });
    let cpu = Arc::new(CpuMeter::start());
    let (stop_tx, stop_rx) = watch::channel(false);
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = stop_tx.send(true);
        }
    });
    let shown = Shown::Line(None);
    let progress = tokio::spawn(drive::progress(
        run.clone(),
        sessions,
        started,
        cpu.clone(),
        shown,
    ));
    let sample = async {
        sampler.until_end_of_hold(started, end, Some(POLL)).await;
        let cpu_percent = cpu.percent_of_one_core();
        sampler.end_of_hold().await;
        cpu_percent
    };
    let (paced, cpu_percent) = tokio::join!(pace(&run, args.rate, started, end, stop_rx), sample);
    let stopped_at = Instant::now();
    progress.abort();
    interrupt.abort();

    let window = match (paced.first_start, paced.last_start) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::ZERO,
    };
    let observed = Observed {
        requested: run.scenario.started.load(Relaxed) as usize,
        per_process: concurrent,
        ramp: Duration::ZERO,
        hold: window,
        wall: started.elapsed(),
        interrupted: paced.interrupted,
        aborted: paced.aborted,
        cpu_percent,
        server: sampler,
        nofile,
        warnings,
        processes: ClientProcesses {
            source_ips,
            ..ClientProcesses::default()
        },
    };
    let tick_rate_hz = run.swarm.tick_rate_hz.load(Relaxed);
    let mut common = observed.summarize(paced.tally, (tick_rate_hz > 0).then_some(tick_rate_hz));

    eprintln!("client-sim churn: every session left; waiting for the server to settle");
    let server = common.tail.server.metrics.clone().unwrap_or_default();
    let timeout = Duration::from_secs_f64(args.settle_timeout);
    let settle = settle::wait(&server, &metrics_target, stopped_at, timeout).await;

    let mut churned = paced.churned;
    churned.fill(&common, args.rate, window, &paced.lag);
    if let Some(w) = churned.pacing_warning() {
        common.tail.client_limits.push("pacing");
        common.tail.warnings.push(w);
    }
    let config = ChurnConfig {
        url: run.swarm.target.url.clone(),
        room: args.room,
        rate_per_s: args.rate,
        duration_s: args.duration,
        stay_ms: args.stay_ms,
        reset_share: args.reset_share,
        settle_timeout_s: args.settle_timeout,
    };
    let shared = &run.scenario;
    Ok(ChurnReport {
        scenario: "churn",
        config,
        churn: churned,
        join_latency_us: LatencySummary::of(&shared.join_latency.merged()),
        first_snapshot_latency_us: LatencySummary::of(&shared.first_snapshot.merged()),
        settle,
        head: common.head,
        tail: common.tail,
        open_files: common.nofile,
    })
}

#[cfg(test)]
mod tests;
