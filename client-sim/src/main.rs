//! `client-sim`: a headless WebSocket swarm that loads a tickroom server. This file owns the
//! command line, the runtime and the exit status; each scenario lives in its own module and
//! shares the swarm machinery in [`swarm`].

mod game;
mod http;
mod proc;
mod report;
mod server_stats;
mod swarm;
mod target;
mod ticker;

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

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
    let result = match cli.scenario {
        Scenario::Game(args) => {
            let json = args.swarm.json.clone();
            let report = runtime.block_on(game::run(args));
            report.and_then(|r| finish(&r, r.table(), &r.head, &r.config.url, json.as_deref()))
        }
        Scenario::Ticker(args) => {
            let json = args.swarm.json.clone();
            let report = runtime.block_on(ticker::run(args));
            report.and_then(|r| finish(&r, r.table(), &r.head, &r.config.url, json.as_deref()))
        }
    };
    // Stragglers were aborted already; do not let a stuck socket hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Prints the table, writes the JSON report if asked, and fails the run when no client
/// connected at all.
fn finish(
    report: &impl Serialize,
    table: String,
    head: &report::Head,
    url: &str,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    print!("{table}");
    if let Some(path) = json {
        report::write_json(report, path)?;
    }
    if head.clients.connected == 0 {
        anyhow::bail!("no client connected to {url}");
    }
    Ok(())
}
