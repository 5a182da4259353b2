//! `client-sim`: a headless WebSocket swarm that loads a tickroom server. This file owns the
//! command line, the runtime and the exit status; each scenario lives in its own module.

mod game;
mod proc;
mod report;
mod server_stats;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = match cli.scenario {
        Scenario::Game(args) => {
            let json = args.json.clone();
            runtime.block_on(game::run(args)).and_then(|report| {
                print!("{}", report.table());
                if let Some(path) = &json {
                    report.write_json(path)?;
                }
                if report.clients.connected == 0 {
                    anyhow::bail!("no client connected to {}", report.config.url);
                }
                Ok(())
            })
        }
    };
    // Stragglers were aborted already; do not let a stuck socket hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
