//! The `spike` scenario: N sessions join one room over a short ramp and read, hold, then
//! every socket is dropped at once without a close frame (SO_LINGER 0: the kernel sends RST,
//! as when clients crash or a network dies). It then polls the server's metrics until its
//! connections and tokio tasks are back to where they were before the spike, and reports how
//! long that took, join→first-snapshot latency, failed joins, and the server's RSS before, at
//! the peak and after. The swarm ([`crate::swarm`]) runs the clients.

mod report;

use std::time::Duration;

use anyhow::ensure;

use self::report::SpikeConfig;
pub use self::report::SpikeReport;
use crate::drive::Settling;
use crate::report::LatencySummary;
use crate::settle::POLL;
use crate::swarm::{self, Client, Conn, Held, Holding, Plan, Scenario, Shards, SwarmArgs};

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

    type Outcome = Held;

    fn client(client: Client<Self>) -> impl Future<Output = (Conn, Held)> + Send {
        run_client(client)
    }

    fn progress(&self, _: f64) -> String {
        format!("join -> snapshot {}", self.first_snapshot.p50_p99())
    }

    fn shards(&self) -> Vec<&Shards> {
        vec![&self.first_snapshot]
    }
}

/// One session: joins, waits for its first snapshot, then reads without decoding until told
/// to stop, when it drops the socket (RST, see [`swarm::Swarm::reset_on_drop`]).
async fn run_client(client: Client<Shared>) -> (Conn, Held) {
    let run = client.run.clone();
    let how = Holding {
        hello: run.scenario.join.clone(),
        join_latency: None,
        first_snapshot: Some(&run.scenario.first_snapshot),
        stay: None,
        reset: true,
    };
    swarm::hold(client, how).await
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
    let plan = Plan {
        settle: Some(Settling {
            timeout: Duration::from_secs_f64(args.settle_timeout),
            after: "sockets reset",
        }),
        ..Plan::ramp(&swarm_args, clients, &args.room)
    };
    let done = swarm::drive(plan, shared).await?;

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
    let mut report = SpikeReport::new(done.common, config, done.settle.unwrap_or_default());
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

#[cfg(test)]
mod tests;
