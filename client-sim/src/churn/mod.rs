//! The `churn` scenario: sessions connect at a steady R per second for D seconds; each joins
//! the room, waits for its first snapshot, stays a short while and leaves, politely (close
//! frame) or abruptly (RST), as `--reset-share` says. Sessions are started on an exact
//! schedule (session i at i / R) and reaped as they end, so the simulator holds only the
//! sessions alive at the moment. Afterwards it polls the server's metrics until connections
//! and tokio tasks are back to the baseline, as the spike does ([`crate::settle`]), and
//! reports the achieved connect rate against the asked one, join and join→first-snapshot
//! latency, failed joins, and the server's RSS before, at the peak and after.

mod report;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, ensure};

pub use self::report::ChurnReport;
use self::report::{ChurnConfig, Churned};
use crate::drive::{Arrivals, Settling, Stream};
use crate::report::LatencySummary;
use crate::settle::POLL;
use crate::swarm::{
    self, Client, Conn, Held, Holding, JOIN_TIMEOUT, Plan, Scenario, Shards, SwarmArgs, TargetArgs,
};
use crate::workers::WorkerFlags;

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
    const SAMPLE_EVERY: Option<Duration> = Some(POLL);

    type Outcome = Held;

    fn client(client: Client<Self>) -> impl Future<Output = (Conn, Held)> + Send {
        session(client)
    }

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
    shared.started.fetch_add(1, Relaxed);
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

/// Runs the churn, waits for the server to settle and builds the report.
pub async fn run(args: ChurnArgs) -> anyhow::Result<ChurnReport> {
    args.check()?;
    let stay = Duration::from_millis(args.stay_ms);
    let sessions = (args.rate * args.duration).ceil() as usize;
    // The skeleton's ramp is the sessions' start rate, and its hold the time they start over.
    let swarm_args = SwarmArgs {
        target: args.target.clone(),
        ramp: args.rate,
        duration: args.duration,
        workers: Some(1),
        worker: WorkerFlags::default(),
        argv: Vec::new(),
        joint: None,
    };
    let stream = Stream {
        // Sessions alive at once, about: each lives its stay plus its join and first snapshot.
        concurrent: (args.rate * (stay.as_secs_f64() + 1.0)).ceil() as usize,
        drain: stay + JOIN_TIMEOUT * 2 + DRAIN,
        what: format!(
            "{sessions} sessions at {}/s for {} s",
            args.rate, args.duration
        ),
        details: format!(
            ", stay {} ms, reset share {}",
            args.stay_ms, args.reset_share
        ),
    };
    let plan = Plan {
        args: &swarm_args,
        clients: sessions,
        room: &args.room,
        arrivals: Arrivals::Stream(stream),
        settle: Some(Settling {
            timeout: Duration::from_secs_f64(args.settle_timeout),
            after: "every session left",
        }),
    };
    let shared = Shared {
        join: swarm::join_message(&args.room, ""),
        stay,
        reset_share: args.reset_share,
        join_latency: Shards::new(),
        first_snapshot: Shards::new(),
        started: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    };
    let done = swarm::drive(plan, shared).await?;
    let arrived = done.arrived.context("a stream reports its arrivals")?;
    let mut common = done.common;
    let mut churned = Churned {
        peak_connected: arrived.peak_connected,
        ..Churned::default()
    };
    for (conn, out) in done.outcomes.iter().filter(|(conn, _)| conn.joined) {
        churned.joined_without_snapshot += u64::from(!out.snapshot);
        churned.resets += u64::from(out.reset);
        churned.polite_closes += u64::from(!out.reset && !conn.ended_early);
    }
    churned.fill(&common, args.rate, arrived.window, &arrived.lag);
    if let Some(w) = churned.pacing_warning() {
        common.tail.client_limits.push("pacing");
        common.tail.warnings.push(w);
    }
    let config = ChurnConfig {
        url: done.run.swarm.target.url.clone(),
        room: args.room,
        rate_per_s: args.rate,
        duration_s: args.duration,
        stay_ms: args.stay_ms,
        reset_share: args.reset_share,
        settle_timeout_s: args.settle_timeout,
    };
    let shared = &done.run.scenario;
    Ok(ChurnReport {
        scenario: "churn",
        config,
        churn: churned,
        join_latency_us: LatencySummary::of(&shared.join_latency.merged()),
        first_snapshot_latency_us: LatencySummary::of(&shared.first_snapshot.merged()),
        settle: done.settle.unwrap_or_default(),
        head: common.head,
        tail: common.tail,
        open_files: common.nofile,
    })
}

#[cfg(test)]
mod tests;
