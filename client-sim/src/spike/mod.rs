//! The `spike` scenario: N sessions join one room over a short ramp and read, hold, then
//! every socket is dropped at once without a close frame (SO_LINGER 0: the kernel sends RST,
//! as when clients crash or a network dies). It then polls the server's metrics until its
//! connections and tokio tasks are back to where they were before the spike, and reports how
//! long that took, join→first-snapshot latency, failed joins, and the server's RSS before, at
//! the peak and after. The swarm ([`crate::swarm`]) runs the clients.

mod report;

use std::time::Duration;

use anyhow::ensure;
use futures_util::StreamExt;
use tickroom_proto::Message as _;
use tickroom_proto::v1::{ServerMessage, server_message};
use tokio::time::Instant;

pub use self::report::SpikeReport;
use self::report::{Settle, SpikeConfig};
use crate::report::LatencySummary;
use crate::server_metrics::{self, Sample};
use crate::swarm::{self, Client, Conn, Scenario, Shards, SwarmArgs};
use crate::target::Target;

/// How often the metrics are scraped, during the spike (for the peak RSS) and after it.
const POLL: Duration = Duration::from_millis(250);

/// Alive tokio tasks above the baseline that still count as settled: the scrape's own
/// connection task, and a few short-lived ones (another monitoring scrape, a timer) the
/// server may be running at that moment. Two tasks per session remain, so a leak of even one
/// session shows as 2 more than this.
pub const ALIVE_TASKS_TOLERANCE: u64 = 5;

/// RSS after the spike within this fraction of RSS before counts as "back".
const RSS_TOLERANCE: f64 = 0.10;

#[derive(clap::Args, Debug, Clone)]
pub struct SpikeArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Sessions in the spike.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Reach all sessions in this many seconds (instead of --ramp clients per second).
    #[arg(long, conflicts_with = "ramp")]
    pub ramp_secs: Option<f64>,
    /// Room to join.
    #[arg(long, default_value = "arena")]
    pub room: String,
    /// Seconds to wait, after the drop, for the server to be back to its baseline.
    #[arg(long, default_value_t = 60.0)]
    pub settle_timeout: f64,
}

/// What every client task shares.
struct Shared {
    join: Vec<u8>,
    first_snapshot: Shards,
}

impl Scenario for Shared {
    const NAME: &'static str = "spike";
    const SAMPLE_EVERY: Option<Duration> = Some(POLL);
    const RESET_ON_DROP: bool = true;

    fn progress(&self, _: f64) -> String {
        format!("join -> snapshot {}", self.first_snapshot.p50_p99())
    }
}

/// One client's own result: whether a snapshot came (its latency went to the shards).
#[derive(Debug, Default)]
struct Outcome {
    snapshot: bool,
}

/// One session: joins, waits for its first snapshot, then reads without decoding until told
/// to stop, when it drops the socket (RST, see [`swarm::Swarm::reset_on_drop`]).
async fn run_client(client: Client<Shared>) -> (Conn, Outcome) {
    let Client { id, run, mut stop } = client;
    let (swarm, shared) = (&run.swarm, &run.scenario);
    let mut conn = Conn::default();
    let mut out = Outcome::default();
    let started = Instant::now();
    let hello = shared.join.clone();
    let Some((mut ws, _)) = swarm::enter(swarm, &mut conn, id, &mut stop, hello, None).await else {
        return (conn, out);
    };
    let mut server_closed = false;
    loop {
        tokio::select! {
            item = ws.next() => match conn.skim(swarm, item) {
                Ok(Some((b, now))) if !out.snapshot => {
                    // Only the first snapshot is measured, so only frames before it decode.
                    let msg = ServerMessage::decode(b).ok().and_then(|m| m.body);
                    if let Some(server_message::Body::Snapshot(_)) = msg {
                        out.snapshot = true;
                        let us = now.duration_since(started).as_micros() as u64;
                        shared.first_snapshot.record(id, us);
                    }
                }
                Ok(_) => {}
                Err(end) => {
                    server_closed = conn.ended(id, end);
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    swarm::leave(swarm, ws, server_closed).await;
    (conn, out)
}

/// Runs the spike (ramp, hold, drop), waits for the server to settle and builds the report.
pub async fn run(args: SpikeArgs) -> anyhow::Result<SpikeReport> {
    ensure!(
        args.settle_timeout.is_finite()
            && args.settle_timeout > 0.0
            && args.settle_timeout <= 3600.0,
        "--settle-timeout must be between 0 and 3600 seconds"
    );
    let mut swarm_args = args.swarm.clone();
    if let Some(secs) = args.ramp_secs {
        ensure!(
            secs.is_finite() && secs > 0.0,
            "--ramp-secs must be a positive number of seconds"
        );
        swarm_args.ramp = f64::from(args.clients) / secs;
    }
    let shared = Shared {
        join: swarm::join_message(&args.room, ""),
        first_snapshot: Shards::new(),
    };
    let clients = args.clients as usize;
    let done = swarm::drive(&swarm_args, clients, &args.room, shared, run_client).await?;
    eprintln!("client-sim spike: sockets reset; waiting for the server to settle");
    let server = &done.common.tail.server.metrics;
    let deadline = done.stopped_at + Duration::from_secs_f64(args.settle_timeout);
    let mut settle = Settle {
        alive_tasks_tolerance: ALIVE_TASKS_TOLERANCE,
        rss_peak_bytes: server.rss_peak_bytes,
        ..Settle::default()
    };
    match Baseline::of(server.before.as_ref()) {
        Some(base) => {
            let metrics = &done.metrics_target;
            poll_until_settled(&mut settle, &base, metrics, done.stopped_at, deadline).await;
        }
        None => settle.error = Some("no baseline: the scrape before the ramp failed".into()),
    }

    let joined = done.outcomes.iter().filter(|(c, _)| c.joined).count() as u64;
    let with_snapshot = done.outcomes.iter().filter(|(_, o)| o.snapshot).count() as u64;
    let config = SpikeConfig {
        url: done.run.swarm.target.url.clone(),
        room: args.room,
        clients,
        ramp_per_s: swarm_args.ramp,
        duration_s: swarm_args.duration,
        settle_timeout_s: args.settle_timeout,
    };
    let mut report = SpikeReport::new(done.common, config, settle);
    let early = report.head.clients.ended_early;
    if early > 0 {
        report.tail.warnings.push(format!(
            "{early} sessions ended before the drop (see close codes; 4000 is the server's \
             slow-consumer close): the reset hit fewer sockets than joined"
        ));
    }
    report.joined_without_snapshot = joined - with_snapshot;
    report.first_snapshot_latency_us =
        LatencySummary::of(&done.run.scenario.first_snapshot.merged());
    Ok(report)
}

/// Scrapes every [`POLL`] until the server is back to its baseline or `deadline` passes.
async fn poll_until_settled(
    settle: &mut Settle,
    base: &Baseline,
    metrics: &Target,
    dropped_at: Instant,
    deadline: Instant,
) {
    let mut timer = tokio::time::interval(POLL);
    loop {
        timer.tick().await;
        match server_metrics::scrape(metrics, dropped_at).await {
            Ok(sample) => {
                let done = settle.observe(base, sample);
                if done {
                    return;
                }
            }
            Err(e) => {
                settle.poll_failures += 1;
                settle.first_poll_error.get_or_insert(format!("{e:#}"));
            }
        }
        if Instant::now() >= deadline {
            settle.error = Some(format!(
                "not back to the baseline within {:.1} s",
                deadline.duration_since(dropped_at).as_secs_f64()
            ));
            return;
        }
    }
}

/// The server before the spike, from the scrape before the ramp.
struct Baseline {
    connections: u64,
    alive_tasks: u64,
    rss_bytes: Option<u64>,
}

impl Baseline {
    fn of(before: Option<&Sample>) -> Option<Baseline> {
        let before = before?;
        Some(Baseline {
            connections: before.tickroom_connections_active?,
            alive_tasks: before.tokio_alive_tasks?,
            rss_bytes: before.process_resident_memory_bytes,
        })
    }
}

impl Settle {
    /// Takes one poll after the drop (`at_s` counts from the drop); true once the server's
    /// connections and alive tasks are back to the baseline.
    fn observe(&mut self, base: &Baseline, sample: Sample) -> bool {
        self.polls += 1;
        if let Some(rss) = sample.process_resident_memory_bytes {
            self.rss_peak_bytes = Some(self.rss_peak_bytes.map_or(rss, |p| p.max(rss)));
            self.rss_after_bytes = Some(rss);
            self.rss_after_within_10pct = base
                .rss_bytes
                .map(|b| rss as f64 <= b as f64 * (1.0 + RSS_TOLERANCE));
        }
        let back = match (sample.tickroom_connections_active, sample.tokio_alive_tasks) {
            (Some(c), Some(t)) => {
                c <= base.connections && t <= base.alive_tasks + self.alive_tasks_tolerance
            }
            _ => false,
        };
        if back {
            self.settled = true;
            self.settle_s = Some(crate::report::round2(sample.at_s));
        }
        self.last = Some(sample);
        back
    }
}

#[cfg(test)]
mod tests;
