//! `client-sim`: a headless WebSocket swarm that loads a tickroom server. This file owns the
//! command line, the runtime and the exit status; each scenario lives in its own module and
//! shares the swarm machinery in [`swarm`] and [`drive`].

mod chat;
mod churn;
mod drive;
mod failover;
mod game;
mod hostile;
mod idle;
mod limits;
mod mix;
mod pause;
mod redirect;
mod report;
mod scan;
mod server_metrics;
mod server_stats;
mod settle;
mod spike;
mod swarm;
mod talk;
mod target;
#[cfg(test)]
mod testing;
mod ticker;
mod views;
mod wire;
mod workers;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::report::Outcome;
use crate::swarm::SwarmArgs;
use crate::workers::WorkerDone;

#[derive(Parser)]
#[command(
    name = "client-sim",
    version,
    about = "Headless WebSocket swarm that loads a tickroom server and reports what it measured"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Join a game room with N clients, send inputs, measure snapshots and latency.
    Game(game::GameArgs),
    /// Subscribe N clients to K symbols of a ticker room, measure quote latency, rate and gaps.
    Ticker(ticker::TickerArgs),
    /// N viewers and M senders in a chat room: send→receive latency, batches/s, lost messages.
    Chat(chat::ChatArgs),
    /// N sessions join fast, hold, drop every socket (RST); wait for the server to settle.
    Spike(spike::SpikeArgs),
    /// Sessions connect, join, stay briefly and leave at R/s for D s; wait for the server to
    /// settle.
    Churn(churn::ChurnArgs),
    /// N sessions join and only answer the heartbeat: server memory per session, idle CPU.
    Idle(idle::IdleArgs),
    /// Game, ticker and chat clients at once in one process (a soak): one combined report.
    Mix(mix::MixArgs),
    /// One client stops reading for a while, then reads again: how old its first values are
    /// and how much came before the newest (the freshness contract).
    Pause(pause::PauseArgs),
    /// Hostile inputs and faults one after another, each checked against docs/security.md,
    /// while a game and a ticker bystander keep measuring.
    Hostile(hostile::HostileArgs),
    /// N game clients on a cluster's nodes: when a node dies, how long each takes to be back
    /// in the room on another (loss -> first snapshot), in how many tries.
    Failover(failover::FailoverArgs),
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cli = Cli::parse_from(std::iter::once("client-sim".to_owned()).chain(argv.clone()));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    execute(cli.scenario, argv)
}

/// Runs one scenario to its report (a worker process: to its share of one), `argv` being its
/// command line after the program name.
fn execute(mut scenario: Scenario, argv: Vec<String>) -> anyhow::Result<()> {
    // One socket per client: take all the descriptors the hard limit allows.
    if let Err(e) = limits::raise_nofile_limit() {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    if let Some(swarm) = scenario.swarm_mut() {
        swarm.argv = argv;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let json = scenario.json();
    let result = match scenario {
        Scenario::Game(args) => finish(runtime.block_on(game::run(args)), json),
        Scenario::Ticker(args) => finish(runtime.block_on(ticker::run(args)), json),
        Scenario::Chat(args) => finish(runtime.block_on(chat::run(args)), json),
        Scenario::Spike(args) => finish(runtime.block_on(spike::run(args)), json),
        Scenario::Churn(args) => finish(runtime.block_on(churn::run(args)), json),
        Scenario::Idle(args) => finish(runtime.block_on(idle::run(args)), json),
        Scenario::Mix(args) => finish(runtime.block_on(mix::run(args)), json),
        Scenario::Pause(args) => finish(runtime.block_on(pause::run(args)), json),
        Scenario::Hostile(args) => finish(runtime.block_on(hostile::run(args)), json),
        Scenario::Failover(args) => finish(runtime.block_on(failover::run(args)), json),
    };
    // Stragglers were aborted already; do not let a stuck socket hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

impl Scenario {
    /// The swarm options of a scenario that has a ramp and a hold.
    fn swarm_mut(&mut self) -> Option<&mut SwarmArgs> {
        match self {
            Scenario::Game(a) => Some(&mut a.swarm),
            Scenario::Ticker(a) => Some(&mut a.swarm),
            Scenario::Chat(a) => Some(&mut a.swarm),
            Scenario::Spike(a) => Some(&mut a.swarm),
            Scenario::Idle(a) => Some(&mut a.swarm),
            Scenario::Mix(a) => Some(&mut a.swarm),
            Scenario::Churn(_)
            | Scenario::Pause(_)
            | Scenario::Hostile(_)
            | Scenario::Failover(_) => None,
        }
    }

    /// `--json`, where to write the report.
    fn json(&mut self) -> Option<PathBuf> {
        match self {
            Scenario::Churn(a) => a.target.json.clone(),
            Scenario::Pause(a) => a.json.clone(),
            Scenario::Hostile(a) => a.json.clone(),
            Scenario::Failover(a) => a.json.clone(),
            other => other.swarm_mut().and_then(|s| s.target.json.clone()),
        }
    }
}

/// Prints the table, writes the JSON report if asked, and fails the run when no client
/// connected at all or the scenario says it failed. A worker process prints nothing: its
/// parent reports.
fn finish(report: anyhow::Result<impl Outcome>, json: Option<PathBuf>) -> anyhow::Result<()> {
    let report = match report {
        Err(e) if e.is::<WorkerDone>() => return Ok(()),
        other => other?,
    };
    let (table, connected, url) = report.summary();
    print!("{table}");
    if let Some(path) = json {
        report::write_json(&report, &path)?;
    }
    if connected == 0 {
        anyhow::bail!("no client connected to {url}");
    }
    match report.failure() {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}
