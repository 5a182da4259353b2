//! The command line, and the sizes and durations it picks (`--quick` or the issue's).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "load_targets",
    about = "Issue #7's end-to-end targets: release server on core 0, client-sim on core 1"
)]
pub struct Args {
    /// Runs of every target; the table shows their medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
    /// Only these targets (comma-separated); `overhead` comes from the game runs.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Target>,
    /// Short holds and small sizes: a smoke test of the procedure, not the targets.
    #[arg(long)]
    pub quick: bool,
    /// Do not rewrite docs/benchmarks.md (its bench-load section becomes this run's table).
    #[arg(long)]
    pub no_docs: bool,
    /// Where the reports, logs and summary.json go.
    #[arg(long, default_value = "results/bench-load")]
    pub out: PathBuf,
    /// Server configuration holding the targets' rooms.
    #[arg(long, default_value = "benches/load.toml")]
    pub config: PathBuf,
    /// The server's public (WebSocket) port on 127.0.0.1.
    #[arg(long, default_value_t = 18280)]
    pub port: u16,
    /// The server's operations port on 127.0.0.1.
    #[arg(long, default_value_t = 19290)]
    pub ops_port: u16,
    /// Passed by `cargo bench`; ignored.
    /// `Join.protocol` of the game row's players: 2 (quantized deltas, client-sim's default)
    /// or 1 (full snapshots), to compare the two side by side.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub game_protocol: u32,
    #[arg(long, hide = true)]
    pub bench: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Game,
    Ticker,
    Chat,
    Idle,
    Spike,
    Churn,
    Overhead,
}

/// Sizes and durations: the issue's, or `--quick`'s.
pub struct Plan {
    /// Most game players tried: one client-sim process holds 19,936 sockets.
    pub game_cap: u64,
    /// Connections of the probe that gives the game search its first N.
    pub game_estimate_connections: u64,
    pub game_trials: u32,
    pub game_trial_hold: f64,
    pub game_hold: f64,
    pub ticker_sessions: u64,
    pub ticker_symbols: u64,
    pub ticker_hold: f64,
    pub chat_viewers: u64,
    pub chat_senders: u64,
    pub chat_hold: f64,
    pub idle_sessions: u64,
    pub idle_hold: f64,
    pub spike_sessions: u64,
    pub spike_ramp_s: f64,
    pub spike_hold: f64,
    pub churn_rate: u64,
    pub churn_secs: f64,
    pub probe_seconds: f64,
}

pub const FULL: Plan = Plan {
    game_cap: 19_000,
    game_estimate_connections: 2_000,
    game_trials: 5,
    game_trial_hold: 12.0,
    game_hold: 15.0,
    ticker_sessions: 5_000,
    ticker_symbols: 20,
    ticker_hold: 20.0,
    chat_viewers: 15_000,
    chat_senders: 100,
    chat_hold: 20.0,
    idle_sessions: 19_000,
    idle_hold: 20.0,
    spike_sessions: 10_000,
    spike_ramp_s: 10.0,
    spike_hold: 5.0,
    churn_rate: 500,
    churn_secs: 60.0,
    probe_seconds: 3.0,
};

pub const QUICK: Plan = Plan {
    game_cap: 300,
    game_estimate_connections: 300,
    game_trials: 2,
    game_trial_hold: 3.0,
    game_hold: 3.0,
    ticker_sessions: 500,
    ticker_symbols: 20,
    ticker_hold: 4.0,
    chat_viewers: 1_500,
    chat_senders: 10,
    chat_hold: 4.0,
    idle_sessions: 1_000,
    idle_hold: 4.0,
    spike_sessions: 1_000,
    spike_ramp_s: 2.0,
    spike_hold: 2.0,
    churn_rate: 100,
    churn_secs: 5.0,
    probe_seconds: 1.0,
};
