//! The `mix` scenario, for soaks: the game, ticker and chat scenarios at once in one process,
//! each with its own clients and its own report, on one timeline. All three start their ramp
//! together and their holds end together (the shorter ramps hold longer), so the server is
//! sampled once, over the window in which every client is connected: before the ramp, at the
//! start of the common hold and at its end. The combined report holds each scenario's report
//! (with its room's `/rooms` rows) and the server's metrics once.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use client_sim::toolkit::host::{self, CpuMeter};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::chat::{self, ChatArgs, ChatReport};
use crate::drive::{Joint, sample_until};
use crate::game::{self, GameArgs};
use crate::report::{ClientCpu, Outcome, Report, Table, Timing, round2};
use crate::server_metrics::{ServerMetrics, Timeline};
use crate::swarm::SwarmArgs;
use crate::ticker::{self, Flow, TickerArgs, TickerReport};

/// Time from sampling the server before the run to the common start of the ramps.
const LEAD: Duration = Duration::from_millis(200);

#[derive(clap::Args, Debug, Clone)]
pub struct MixArgs {
    /// `--ramp` is each scenario's; `--duration` is the common hold.
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Game players (0: no game clients).
    #[arg(long, default_value_t = 50)]
    pub game_clients: u32,
    #[arg(long, default_value = "arena")]
    pub game_room: String,
    /// Inputs per second per game player.
    #[arg(long, default_value_t = 30.0)]
    pub input_hz: f64,
    /// Ticker clients (0: none).
    #[arg(long, default_value_t = 50)]
    pub ticker_clients: u32,
    #[arg(long, default_value = "ticker")]
    pub ticker_room: String,
    /// Symbols per ticker client, drawn at random (seed 1).
    #[arg(long, default_value_t = 20)]
    pub symbols: usize,
    /// Chat viewers and senders (both 0: no chat).
    #[arg(long, default_value_t = 100)]
    pub chat_viewers: usize,
    #[arg(long, default_value_t = 2)]
    pub chat_senders: usize,
    #[arg(long, default_value = "chat")]
    pub chat_room: String,
    /// Messages per second per chat sender.
    #[arg(long, default_value_t = 1.0)]
    pub chat_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct MixReport {
    pub scenario: &'static str,
    pub config: MixConfig,
    /// `ramp_s` is the longest ramp; `hold_s` the common hold.
    pub timing: Timing,
    /// Each scenario's own report (null when it had no clients or failed, see `errors`);
    /// their `server` has no `metrics`: those are below, once.
    pub game: Option<Report>,
    pub ticker: Option<TickerReport>,
    pub chat: Option<ChatReport>,
    /// Why a scenario has no report, by name.
    pub errors: BTreeMap<&'static str, String>,
    /// The server's metrics before the ramps and over the common hold.
    pub server: MixServer,
    /// The whole process (each part's `client_cpu` is this process too).
    pub client_cpu: ClientCpu,
    /// The parts' client limits, together.
    pub client_limits: Vec<&'static str>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct MixConfig {
    pub url: String,
    pub ramp_per_s: f64,
    pub duration_s: f64,
    pub game_clients: u32,
    pub ticker_clients: u32,
    pub chat_viewers: usize,
    pub chat_senders: usize,
}

#[derive(Debug, Serialize)]
pub struct MixServer {
    pub metrics: ServerMetrics,
}

/// Runs the three scenarios on one timeline and builds the combined report.
pub async fn run(args: MixArgs) -> anyhow::Result<MixReport> {
    ensure!(
        args.swarm.workers.unwrap_or(1) == 1,
        "the mix runs in one process: --workers is not supported"
    );
    let chat_clients = args.chat_viewers + args.chat_senders;
    let counts = [
        args.game_clients as usize,
        args.ticker_clients as usize,
        chat_clients,
    ];
    ensure!(
        counts.iter().sum::<usize>() > 0,
        "the mix needs clients: --game-clients, --ticker-clients or --chat-viewers"
    );
    let endpoints = args.swarm.endpoints().await?;
    let mut metrics = Timeline::new(endpoints.metrics);
    metrics.before = metrics.sample(Some("before")).await;

    let longest = args.swarm.ramp_time(counts.into_iter().max().unwrap_or(0));
    let start = Instant::now() + LEAD;
    let hold_start = start + longest;
    let hold_end = hold_start + Duration::from_secs_f64(args.swarm.duration);
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each part holds until the common end of the hold, then waits for the word to stop.
    let part = |clients: usize| {
        let mut s: SwarmArgs = args.swarm.clone();
        s.target.json = None;
        s.workers = Some(1);
        s.duration += (longest - s.ramp_time(clients)).as_secs_f64();
        s.joint = Some(Joint {
            start,
            stop: stop_rx.clone(),
        });
        s
    };
    let game = GameArgs {
        swarm: part(counts[0]),
        clients: args.game_clients,
        room: args.game_room.clone(),
        input_hz: args.input_hz,
        protocol: 2,
        verify_clients: 32,
    };
    let ticker = TickerArgs {
        swarm: part(counts[1]),
        clients: args.ticker_clients,
        room: args.ticker_room.clone(),
        symbols: args.symbols,
        symbol_list: None,
        seed: 1,
        flow: Flow::Subscribe,
        initial_window_ms: 1000,
    };
    let chat = ChatArgs {
        swarm: part(chat_clients),
        room: args.chat_room.clone(),
        viewers: args.chat_viewers,
        senders: args.chat_senders,
        rate: args.chat_rate,
        loss_grace_ms: 1000,
        urls: Vec::new(),
    };
    eprintln!(
        "client-sim mix: game {} + ticker {} + chat {}+{} clients -> {}, ramp {:.1} s, hold {:.1} s",
        args.game_clients,
        args.ticker_clients,
        args.chat_viewers,
        args.chat_senders,
        args.swarm.target.url,
        longest.as_secs_f64(),
        args.swarm.duration
    );
    let cpu = CpuMeter::start();
    let conduct = async {
        let interrupted = tokio::select! {
            _ = sample_until(&mut metrics, hold_start, hold_end, None) => false,
            _ = tokio::signal::ctrl_c() => true,
        };
        let hold = Instant::now().saturating_duration_since(hold_start);
        let cpu_percent = cpu.percent_of_one_core();
        metrics.end_of_hold = metrics.sample(Some("end of hold")).await;
        let _ = stop_tx.send(true);
        (interrupted, hold, cpu_percent)
    };
    let (game, ticker, chat, (interrupted, hold, cpu_percent)) = tokio::join!(
        optional(counts[0], game::run(game)),
        optional(counts[1], ticker::run(ticker)),
        optional(chat_clients, chat::run(chat)),
        conduct,
    );

    let mut errors = BTreeMap::new();
    let game = keep(&mut errors, "game", game);
    let ticker = keep(&mut errors, "ticker", ticker);
    let chat = keep(&mut errors, "chat", chat);
    let metrics = metrics.summarize(None);
    let cores = host::usable_cores();
    let mut warnings = metrics.warnings();
    let mut client_limits = Vec::new();
    let tails = [
        game.as_ref().map(|r| &r.tail),
        ticker.as_ref().map(|r| &r.tail),
        chat.as_ref().map(|r| &r.tail),
    ];
    for tail in tails.into_iter().flatten() {
        for limit in &tail.client_limits {
            if !client_limits.contains(limit) {
                client_limits.push(*limit);
            }
        }
    }
    if interrupted {
        warnings.push("interrupted before the hold ended".into());
    }
    Ok(MixReport {
        scenario: "mix",
        config: MixConfig {
            url: args.swarm.target.url.clone(),
            ramp_per_s: args.swarm.ramp,
            duration_s: args.swarm.duration,
            game_clients: args.game_clients,
            ticker_clients: args.ticker_clients,
            chat_viewers: args.chat_viewers,
            chat_senders: args.chat_senders,
        },
        timing: Timing {
            ramp_s: round2(longest.as_secs_f64()),
            hold_s: round2(hold.as_secs_f64()),
            wall_s: round2(start.elapsed().as_secs_f64()),
            interrupted,
        },
        game,
        ticker,
        chat,
        errors,
        server: MixServer { metrics },
        client_cpu: ClientCpu {
            percent_of_one_core: cpu_percent.map(round2),
            cores,
            saturated: cpu_percent.is_some_and(|p| p > 90.0 * cores as f64),
        },
        client_limits,
        warnings,
    })
}

/// A part's report, or `None` with its error kept under `name`.
fn keep<T>(
    errors: &mut BTreeMap<&'static str, String>,
    name: &'static str,
    part: Option<anyhow::Result<T>>,
) -> Option<T> {
    match part? {
        Ok(report) => Some(report),
        Err(e) => {
            errors.insert(name, format!("{e:#}"));
            None
        }
    }
}

/// Runs `part` when it has clients.
async fn optional<T>(clients: usize, part: impl Future<Output = T>) -> Option<T> {
    if clients > 0 { Some(part.await) } else { None }
}

impl Outcome for MixReport {
    fn summary(&self) -> (String, u64, &str) {
        let connected = [
            self.game.as_ref().map(|r| r.head.clients.connected),
            self.ticker.as_ref().map(|r| r.head.clients.connected),
            self.chat.as_ref().map(|r| r.head.clients.connected),
        ];
        let connected = connected.into_iter().flatten().sum();
        (self.table(), connected, &self.config.url)
    }

    fn failure(&self) -> Option<String> {
        let failed: Vec<String> = self
            .errors
            .iter()
            .map(|(name, e)| format!("{name}: {e}"))
            .collect();
        (!failed.is_empty()).then(|| format!("mix parts failed: {}", failed.join("; ")))
    }
}

impl MixReport {
    /// Each part's table, then the server and the process once.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut t = Table::default();
        t.line(format_args!(
            "client-sim mix: game {} + ticker {} + chat {}+{} clients -> {}, {}",
            c.game_clients,
            c.ticker_clients,
            c.chat_viewers,
            c.chat_senders,
            c.url,
            self.timing.describe()
        ));
        t.line("");
        let parts = [
            self.game.as_ref().map(Report::table),
            self.ticker.as_ref().map(TickerReport::table),
            self.chat.as_ref().map(ChatReport::table),
        ];
        for part in parts.into_iter().flatten() {
            for line in part.lines() {
                t.line(format_args!("  {line}"));
            }
            t.line("");
        }
        for (name, e) in &self.errors {
            t.line(format_args!("ERROR: {name}: {e}"));
        }
        t.line("the whole run:");
        t.server_metrics(&self.server.metrics);
        t.client_cpu(&self.client_cpu, &Default::default());
        for w in &self.warnings {
            t.line(format_args!("WARNING: {w}"));
        }
        t.into_string()
    }
}

#[cfg(test)]
mod tests {
    use tickroom::config::RoomConfig;

    use super::*;
    use crate::testing::{arena, real_server, swarm_args};

    /// A few clients of each kind at once against one real server with the three rooms: every
    /// part joins and reports, and the server's metrics are in the combined report once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_scenarios_share_one_run() {
        use tickroom::feed::{FeedConfig, SyntheticConfig};
        let server = real_server(vec![
            arena(0),
            RoomConfig::Ticker {
                name: "ticker".into(),
                ticker: tickroom::sim::ticker::TickerConfig {
                    tick_hz: 20,
                    max_symbols_per_session: 100,
                    feed: FeedConfig::Synthetic(SyntheticConfig {
                        symbols: 10,
                        updates_per_sec: 20.0,
                        ..Default::default()
                    }),
                },
            },
            RoomConfig::Chat {
                name: "chat".into(),
                chat: tickroom::sim::chat::ChatConfig::default(),
            },
        ])
        .await;
        let args = MixArgs {
            swarm: swarm_args(&server, 4, 1.5),
            game_clients: 3,
            game_room: "arena".into(),
            input_hz: 10.0,
            ticker_clients: 2,
            ticker_room: "ticker".into(),
            symbols: 3,
            chat_viewers: 3,
            chat_senders: 1,
            chat_room: "chat".into(),
            chat_rate: 1.0,
        };
        let r = run(args).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let (game, ticker, chat) = (
            r.game.as_ref().unwrap(),
            r.ticker.as_ref().unwrap(),
            r.chat.as_ref().unwrap(),
        );
        assert_eq!(game.head.clients.connected, 3);
        assert_eq!(ticker.head.clients.connected, 2);
        assert_eq!(ticker.subscriptions.acked, 2);
        assert_eq!(chat.head.clients.connected, 4);
        assert!(game.tail.server.metrics.is_none() && chat.tail.server.metrics.is_none());
        let m = &r.server.metrics;
        let end = m.end_of_hold.as_ref().unwrap();
        // A scrape is one moment: on a loaded machine a client may still be joining then.
        let seen = end.tickroom_connections_active.unwrap_or(0);
        assert!((1..=9).contains(&seen), "{m:#?}");
        assert!(m.cpu_percent_of_one_core.is_some(), "{m:#?}");
        let (table, connected, _) = r.summary();
        assert_eq!(connected, 9);
        for part in [
            "client-sim game",
            "client-sim ticker",
            "client-sim chat",
            "the whole run",
        ] {
            assert!(table.contains(part), "{part} not in\n{table}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["game"]["server"].get("metrics").is_none());
        assert!(json["server"]["metrics"]["samples"].as_u64().unwrap() >= 3);
    }
}
