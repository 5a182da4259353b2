//! The `tickroom` binary: flags, logging and signals around [`tickroom::Server`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tickroom::config::RoomConfig;
use tickroom::feed::{FeedConfig, Pace, ReplayConfig, SyntheticConfig};
use tickroom::{Config, Server};

// The process's allocator: glibc's unless a build feature picks another (docs/operations.md,
// "Allocator"). With both features jemalloc wins.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (its `malloc_conf` symbol; the `MALLOC_CONF`
/// environment variable still overrides): purge from background threads, return freed dirty
/// pages to the system after about 1 s, and skip the MADV_FREE ("muzzy") stage, whose pages
/// would stay in RSS until the kernel is short of memory.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static malloc_conf: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tickroom",
    version,
    about = "Fixed-tick multiplayer simulation server"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve rooms (the embedded demo config unless --config is given).
    Serve {
        /// TOML config file; see `tickroom print-config` for every key.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Public address (WebSocket /ws, GET /rooms).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Operations address (health; loopback unless you mean otherwise).
        #[arg(long)]
        ops_listen: Option<SocketAddr>,
        /// Log filter, e.g. "info" or "tickroom=debug" (RUST_LOG overrides).
        #[arg(long, default_value = "info")]
        log: String,
        /// Once both ports are bound, write their addresses here as JSON
        /// (`{"public": "127.0.0.1:8080", "ops": "127.0.0.1:9090"}`): with port 0 in
        /// --listen/--ops-listen, how a tool learns the ports the system picked.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Publish a price feed once on the cluster bus, for every node's ticker rooms whose
    /// feed is `kind = "bus"` with this name.
    Feed {
        /// NATS server, e.g. nats://127.0.0.1:4222.
        #[arg(long)]
        nats: String,
        /// The feed's name (rooms' `[rooms.feed] name`).
        #[arg(long, default_value = "prices")]
        name: String,
        /// Replay this CSV file (docs/operations.md) instead of the synthetic feed.
        #[arg(long, conflicts_with_all = ["symbols", "updates_per_sec", "seed"])]
        replay: Option<PathBuf>,
        /// Replay: at the recorded pace (default) or as fast as possible.
        #[arg(long, requires = "replay")]
        fast: bool,
        /// Replay: start again at the end of the file.
        #[arg(long, requires = "replay")]
        repeat: bool,
        /// Synthetic: number of symbols (SYM001, ...).
        #[arg(long)]
        symbols: Option<u32>,
        /// Synthetic: average updates per second of each symbol.
        #[arg(long)]
        updates_per_sec: Option<f64>,
        /// Synthetic: random seed.
        #[arg(long)]
        seed: Option<u64>,
        #[arg(long, default_value = "info")]
        log: String,
    },
    /// Print the embedded default config.
    PrintConfig,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::PrintConfig => {
            print!("{}", tickroom::config::DEFAULT_TOML);
            Ok(())
        }
        Cmd::Feed {
            nats,
            name,
            replay,
            fast,
            repeat,
            symbols,
            updates_per_sec,
            seed,
            log,
        } => {
            init_logging(&log);
            let feed = match replay {
                Some(path) => FeedConfig::Replay(ReplayConfig {
                    path,
                    pace: if fast { Pace::Fast } else { Pace::Recorded },
                    repeat,
                    delay_ms: 0,
                }),
                None => {
                    let mut c = SyntheticConfig::default();
                    c.symbols = symbols.unwrap_or(c.symbols);
                    c.updates_per_sec = updates_per_sec.unwrap_or(c.updates_per_sec);
                    c.seed = seed.unwrap_or(c.seed);
                    FeedConfig::Synthetic(c)
                }
            };
            let feed = feed.build()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async move {
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn({
                    let stop = stop.clone();
                    async move {
                        wait_for_signal().await;
                        stop.cancel();
                    }
                });
                let done = tickroom::cluster::feed::publish(&nats, &name, feed, stop).await?;
                tracing::info!(batches = done.batches, quotes = done.quotes, "feed stopped");
                anyhow::Ok(())
            })
        }
        Cmd::Serve {
            config,
            listen,
            ops_listen,
            log,
            addr_file,
        } => {
            init_logging(&log);
            let mut cfg = match &config {
                Some(path) => Config::from_file(path)?,
                None => Config::embedded(),
            };
            if let Some(addr) = listen {
                cfg.server.listen = addr;
            }
            if let Some(addr) = ops_listen {
                cfg.server.ops_listen = addr;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(serve(cfg, addr_file))
        }
    }
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

async fn serve(cfg: Config, addr_file: Option<PathBuf>) -> anyhow::Result<()> {
    let rooms: Vec<String> = cfg
        .rooms
        .iter()
        .map(|r| match r {
            RoomConfig::Game { name, game } => format!("{name} (game, {} Hz)", game.tick_hz),
            RoomConfig::Ticker { name, ticker } => {
                format!("{name} (ticker, {} Hz)", ticker.tick_hz)
            }
            RoomConfig::Chat { name, chat } => format!("{name} (chat, {} Hz)", chat.tick_hz),
        })
        .collect();
    let admin = if cfg.admin.effective_token().is_some() {
        "enabled (bearer token)"
    } else {
        "disabled: set [admin] token or TICKROOM_ADMIN_TOKEN"
    };
    let server = Server::bind(cfg).await?;
    let public = server.public_addr();
    let ops = server.ops_addr();
    if let Some(path) = addr_file {
        write_addr_file(&path, public, ops)
            .with_context(|| format!("writing the address file {}", path.display()))?;
    }
    tracing::info!("tickroom serving rooms: {}", rooms.join(", "));
    tracing::info!("connect: ws://{public}/ws  (protobuf ClientMessage frames; docs/protocol.md)");
    tracing::info!("rooms:   http://{public}/rooms");
    tracing::info!("quotes:  http://{public}/api/v1/quotes  (ticker rooms; docs/protocol.md)");
    tracing::info!(
        "health:  http://{ops}/healthz  http://{ops}/readyz  metrics: http://{ops}/metrics"
    );
    tracing::info!("admin:   http://{ops}/admin/...  {admin}");
    tracing::info!(
        "try:     cargo run --release -p client-sim -- game --url ws://{public}/ws --clients 100 --duration 10"
    );
    let token = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received");
        token.cancel();
    });
    server.run().await?;
    Ok(())
}

/// Writes the bound addresses to `path` atomically (a temporary file renamed over it), so a
/// reader never sees half of it.
fn write_addr_file(path: &Path, public: SocketAddr, ops: SocketAddr) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!("{{\"public\": \"{public}\", \"ops\": \"{ops}\"}}\n"),
    )?;
    std::fs::rename(&tmp, path)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
