//! `client-sim`: a headless WebSocket swarm that loads a tickroom server. This file owns the
//! command line, the runtime and the exit status; each scenario lives in its own module and
//! shares the swarm machinery in [`swarm`].

mod chat;
mod game;
mod http;
mod proc;
mod report;
mod server_metrics;
mod server_stats;
mod spike;
mod swarm;
mod target;
#[cfg(test)]
mod testing;
mod ticker;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::report::Outcome;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // One socket per client: take all the descriptors the hard limit allows.
    if let Err(e) = proc::raise_nofile_limit() {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let json = cli.scenario.json();
    let result = match cli.scenario {
        Scenario::Game(args) => finish(runtime.block_on(game::run(args)), json),
        Scenario::Ticker(args) => finish(runtime.block_on(ticker::run(args)), json),
        Scenario::Chat(args) => finish(runtime.block_on(chat::run(args)), json),
        Scenario::Spike(args) => finish(runtime.block_on(spike::run(args)), json),
    };
    // Stragglers were aborted already; do not let a stuck socket hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

impl Scenario {
    /// `--json`, where to write the report.
    fn json(&self) -> Option<PathBuf> {
        match self {
            Scenario::Game(a) => a.swarm.json.clone(),
            Scenario::Ticker(a) => a.swarm.json.clone(),
            Scenario::Chat(a) => a.swarm.json.clone(),
            Scenario::Spike(a) => a.swarm.json.clone(),
        }
    }
}

/// Prints the table, writes the JSON report if asked, and fails the run when no client
/// connected at all or the scenario says it failed.
fn finish(report: anyhow::Result<impl Outcome>, json: Option<PathBuf>) -> anyhow::Result<()> {
    let report = report?;
    let (table, head, url) = report.summary();
    print!("{table}");
    if let Some(path) = json {
        report::write_json(&report, &path)?;
    }
    if head.clients.connected == 0 {
        anyhow::bail!("no client connected to {url}");
    }
    match report.failure() {
        Some(why) => Err(anyhow::anyhow!(why)),
        None => Ok(()),
    }
}
