//! `make bench-load`: the end-to-end performance targets of issue #7, measured with the real
//! release binaries on this machine.
//!
//! This bench owns the procedure, not the measurements: for every run of every target it
//! starts a fresh `tickroom serve --config benches/load.toml` pinned to core 0, drives it with
//! `client-sim` pinned to core 1 over loopback, reads client-sim's JSON report, stops the
//! server (SIGTERM, killed after 5 s), and then runs the write probe (benches/write_probe.rs)
//! with the run's connection count and frame size: the physical limit the run is judged
//! against. It prints the medians of the runs against each target, writes every figure to
//! `<out>/summary.json` (reports, probe results and logs lie next to it) and rewrites the
//! section between `<!-- bench-load:begin -->` and `<!-- bench-load:end -->` in
//! docs/benchmarks.md. A client-side limit (open files, ports, client-sim's CPU, pacing) or a
//! probe that could not write freely is carried into the table's notes, so a figure set by
//! the load tool is never read as the server's.
//!
//! ```sh
//! make bench-load                                      # build, then all targets, 3 runs each
//! make bench-load BENCH_LOAD_ARGS="--quick --runs 1 --no-docs"   # a smoke test
//! cargo bench --bench load_targets -- --only game,chat --runs 5 --out /tmp/bl
//! ```
//!
//! The binaries must be built first, which `make bench-load` does: target/release/tickroom,
//! target/release/client-sim and target/release/deps/write_probe-* (the newest).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::{Parser, ValueEnum};
use client_sim::toolkit::host;
use client_sim::toolkit::http::Blocking;
use client_sim::toolkit::prom::Metrics;
use serde::Serialize;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The issue's thresholds.

const GAME_MIN_SNAPSHOTS_PER_S: f64 = 59.0;
const GAME_MAX_P99_US: f64 = 30_000.0;
/// The game goal: N ≥ this share of what the probe says one core can write at the tick rate.
const GAME_GOAL_SHARE: f64 = 0.85;
const GAME_MAX_TICK_P99_US: f64 = 2_000.0;
const OVERHEAD_MAX: f64 = 1.25;
const TICKER_MAX_P99_US: f64 = 70_000.0;
const TICKER_MAX_RSS_BYTES: f64 = 100e6;
/// Conflation beyond what "newest value per tick" explains, in percentage points, that counts
/// as lost ticks. client-sim cannot tell a tick a session missed from values replaced within a
/// tick (both are a seq jump), so the measured share is held against the expected one.
const TICKER_CONFLATION_SLACK_PP: f64 = 0.5;
const CHAT_FANOUT_FACTOR: f64 = 1.25;
const CHAT_LATENCY_SLACK_US: f64 = 20_000.0;
/// SI units, as client-sim and the docs print them: 8 KB = 8,000 bytes.
const IDLE_MAX_RSS_PER_SESSION: f64 = 8_000.0;
const IDLE_MAX_CPU_PCT: f64 = 5.0;
const SPIKE_MAX_P99_US: f64 = 50_000.0;
const MAX_RSS_GROWTH_PCT: f64 = 10.0;
/// Sessions and tasks must be back within this many heartbeat (idle) timeouts.
const SETTLE_TIMEOUTS: f64 = 2.0;

// ---------------------------------------------------------------------------------------------
// How the runs are made.

const SERVER_CPU: usize = 0;
const CLIENT_CPU: usize = 1;
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Beyond a run's own ramp, hold and settle time: start-up, closing, report writing.
const RUN_SLACK: Duration = Duration::from_secs(60);
/// Descriptors a process keeps beyond one per socket (as client-sim and the probe count).
const FD_SLACK: u64 = 64;
/// One loopback source address has about 28,000 ephemeral ports towards one port.
const CONNECTIONS_PER_SOURCE_IP: u64 = 25_000;
/// Loopback source addresses client-sim spreads every run over. One address has 28,232
/// ephemeral ports, and the connections of the run before (its last 60 s of closes) still hold
/// theirs in TIME_WAIT: on one address the idle run's ramp stalled for seconds at about 13,800
/// sessions, until they expired.
const CLIENT_SOURCE_IPS: u64 = 8;
/// Clients started per second: fast enough that the ramp is short next to the hold.
const RAMP_PER_S: u64 = 1_000;
const FAST_RAMP_PER_S: u64 = 2_000;
const GAME_INPUT_HZ: u32 = 30;
/// The probe's frame when a run's own cannot be read: a game snapshot of 100 objects
/// (docs/benchmarks.md, "Snapshot size"); ticker writes and chat batches are smaller.
const FALLBACK_GAME_FRAME: u64 = 1_800;
const FALLBACK_TICKER_WRITE: u64 = 1_200;
const FALLBACK_CHAT_FRAME: u64 = 200;
const CHAT_RATE_PER_SENDER: u32 = 1;

/// The Prometheus series of the server's sessions, all kinds.
const SESSIONS_SERIES: &str = "tickroom_sessions_active";

const DOCS: &str = "docs/benchmarks.md";
const DEFAULT_CONFIG: &str = "config/default.toml";
const BEGIN: &str = "<!-- bench-load:begin -->";
const END: &str = "<!-- bench-load:end -->";
const HEADING: &str = "## Targets (make bench-load)";

#[derive(Parser, Debug)]
#[command(
    name = "load_targets",
    about = "Issue #7's end-to-end targets: release server on core 0, client-sim on core 1"
)]
struct Args {
    /// Runs of every target; the table shows their medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Only these targets (comma-separated); `overhead` comes from the game runs.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Target>,
    /// Short holds and small sizes: a smoke test of the procedure, not the issue's targets.
    #[arg(long)]
    quick: bool,
    /// Do not rewrite docs/benchmarks.md (its bench-load section becomes this run's table).
    #[arg(long)]
    no_docs: bool,
    /// Where the reports, logs and summary.json go.
    #[arg(long, default_value = "results/bench-load")]
    out: PathBuf,
    /// Server configuration holding the targets' rooms.
    #[arg(long, default_value = "benches/load.toml")]
    config: PathBuf,
    /// The server's public (WebSocket) port on 127.0.0.1.
    #[arg(long, default_value_t = 18280)]
    port: u16,
    /// The server's operations port on 127.0.0.1.
    #[arg(long, default_value_t = 19290)]
    ops_port: u16,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Game,
    Ticker,
    Chat,
    Idle,
    Spike,
    Churn,
    Overhead,
}

/// Sizes and durations: the issue's, or `--quick`'s.
struct Plan {
    /// Most game players tried: one client-sim process holds 19,936 sockets.
    game_cap: u64,
    /// Connections of the probe that gives the game search its first N.
    game_estimate_connections: u64,
    game_trials: u32,
    game_trial_hold: f64,
    game_hold: f64,
    ticker_sessions: u64,
    ticker_symbols: u64,
    ticker_hold: f64,
    chat_viewers: u64,
    chat_senders: u64,
    chat_hold: f64,
    idle_sessions: u64,
    idle_hold: f64,
    spike_sessions: u64,
    spike_ramp_s: f64,
    spike_hold: f64,
    churn_rate: u64,
    churn_secs: f64,
    probe_seconds: f64,
}

const FULL: Plan = Plan {
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

const QUICK: Plan = Plan {
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

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load_targets: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Measures the selected targets and reports them; false when a target could not be measured.
fn run(args: Args) -> Result<bool> {
    let started = Instant::now();
    let bench = Bench::new(args)?;
    let results: Vec<Measured> = bench
        .selected()
        .into_iter()
        .map(|t| bench.measure(t))
        .collect();
    let section = bench.render(&results, started.elapsed());
    println!("\n{section}");
    let summary = bench.args.out.join("summary.json");
    let text = serde_json::to_string_pretty(&bench.summary(&results, started.elapsed()))?;
    fs::write(&summary, text + "\n").with_context(|| format!("writing {}", summary.display()))?;
    println!("load_targets: every figure in {}", summary.display());
    if !bench.args.no_docs {
        let docs = bench.root.join(DOCS);
        rewrite_docs(&docs, &section)?;
        println!(
            "load_targets: rewrote the bench-load section of {}",
            docs.display()
        );
    }
    Ok(results.iter().all(|m| m.error.is_none()))
}

// ---------------------------------------------------------------------------------------------
// The bench: binaries, pinning, server and client-sim runs, the probe.

struct Bench {
    args: Args,
    plan: &'static Plan,
    root: PathBuf,
    bins: Bins,
    /// (server core, client core); `None` on a one-core machine, where nothing is pinned.
    pin: Option<(usize, usize)>,
    cores: usize,
    config: LoadConfig,
    /// The soft open-file limit, raised to the hard one for this process and its children.
    nofile: u64,
    /// When the measurement started, `YYYY-MM-DD HH:MM UTC`.
    started_utc: String,
}

struct Bins {
    tickroom: PathBuf,
    client_sim: PathBuf,
    probe: PathBuf,
}

impl Bins {
    /// The release binaries next to this bench executable (target/release/deps/..).
    fn find() -> Result<Bins> {
        let exe = std::env::current_exe().context("locating the bench executable")?;
        let deps = exe.parent().context("bench executable has no directory")?;
        let release = deps
            .parent()
            .context("bench executable is not under target/")?;
        let built = |name: &str| {
            let path = release.join(name);
            ensure!(
                path.is_file(),
                "{} is missing: run `make bench-load` (it builds the release binaries first)",
                path.display()
            );
            Ok(path)
        };
        Ok(Bins {
            tickroom: built("tickroom")?,
            client_sim: built("client-sim")?,
            probe: newest_probe(deps)?,
        })
    }
}

/// The newest `write_probe-<hash>` executable in `deps` (cargo keeps old builds there).
fn newest_probe(deps: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(deps)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        // Skip write_probe-<hash>.d and the like: the executable has no extension.
        if !name.starts_with("write_probe-") || name.contains('.') {
            continue;
        }
        let meta = fs::metadata(&path)?;
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            let modified = meta.modified()?;
            if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                newest = Some((modified, path));
            }
        }
    }
    newest.map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "no write_probe executable in {}: run `make bench-load` (it runs `cargo bench \
             --bench write_probe --no-run` first)",
            deps.display()
        )
    })
}

impl Bench {
    fn new(args: Args) -> Result<Bench> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let cores = host::usable_cores();
        let pin = if cores > CLIENT_CPU {
            ensure!(
                Command::new("taskset")
                    .arg("--version")
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success()),
                "taskset (util-linux) not found: the targets need the server on core \
                 {SERVER_CPU} and client-sim on core {CLIENT_CPU}"
            );
            Some((SERVER_CPU, CLIENT_CPU))
        } else {
            eprintln!(
                "load_targets: one core: server, client-sim and the probe share it, unpinned"
            );
            None
        };
        // Every client is a socket on both sides: take all the descriptors the hard limit
        // allows before starting anything, so the children inherit the raised limit.
        let nofile = host::raise_nofile()?;
        let config = LoadConfig::read(&args.config, &root.join(DEFAULT_CONFIG))?;
        fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let bench = Bench {
            plan: if args.quick { &QUICK } else { &FULL },
            bins: Bins::find()?,
            args,
            root,
            pin,
            cores,
            config,
            nofile,
            started_utc: utc_now(),
        };
        bench.ports_free()?;
        Ok(bench)
    }

    fn runs(&self) -> u32 {
        self.args.runs
    }

    /// The targets to run, in the issue's order; overhead comes with the game.
    fn selected(&self) -> Vec<Target> {
        let only = &self.args.only;
        let wanted = |t: Target| {
            only.is_empty()
                || only.contains(&t)
                || (t == Target::Game && only.contains(&Target::Overhead))
        };
        [
            Target::Game,
            Target::Ticker,
            Target::Chat,
            Target::Idle,
            Target::Spike,
            Target::Churn,
        ]
        .into_iter()
        .filter(|&t| wanted(t))
        .collect()
    }

    /// One target's rows; a target that fails to run gives one "not measured" row.
    fn measure(&self, target: Target) -> Measured {
        let name = target
            .to_possible_value()
            .map_or("?".into(), |v| v.get_name().to_owned());
        eprintln!("load_targets: {name}");
        let result = match target {
            Target::Game | Target::Overhead => self.game(),
            Target::Ticker => self.ticker(),
            Target::Chat => self.chat(),
            Target::Idle => self.idle(),
            Target::Spike => self.spike(),
            Target::Churn => self.churn(),
        };
        result.unwrap_or_else(|e| {
            eprintln!("load_targets: {name}: {e:#}");
            Measured::failed(name, &e)
        })
    }

    /// `<out>/<label>.<ext>`.
    fn file(&self, label: &str, ext: &str) -> PathBuf {
        self.args.out.join(format!("{label}.{ext}"))
    }

    /// `program` pinned to `cpu` with taskset (unpinned on one core).
    fn pinned(&self, cpu: usize, program: &Path) -> Command {
        match self.pin {
            Some(_) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(cpu.to_string()).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// A server already on our ports would be measured instead of the one we start.
    fn ports_free(&self) -> Result<()> {
        for port in [self.args.port, self.args.ops_port] {
            ensure!(
                !answering(port),
                "port {port} is already answering: stop what listens there or pass \
                 --port/--ops-port"
            );
        }
        Ok(())
    }

    fn start_server(&self, label: &str) -> Result<Server> {
        self.ports_free()?;
        let log = self.file(label, "server.log");
        let mut cmd = self.pinned(SERVER_CPU, &self.bins.tickroom);
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.args.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.args.port)])
            .args(["--ops-listen", &format!("127.0.0.1:{}", self.args.ops_port)])
            .args(["--log", "warn"]);
        let child = spawn_logged(cmd, &log)?;
        let mut server = Server {
            child: Some(child),
            log,
        };
        server.wait_ready(self.args.ops_port)?;
        Ok(server)
    }

    /// Runs `client-sim <scenario> <args>` (whitespace-separated) against a fresh server and
    /// returns its report. `expected` is how long the run should take (ramp, hold, settle).
    fn client_sim(
        &self,
        label: &str,
        scenario: &str,
        args: &str,
        expected: Duration,
    ) -> Result<Report> {
        let json = self.file(label, "json");
        let log = self.file(label, "log");
        let _ = fs::remove_file(&json);
        let server = self.start_server(label)?;
        let mut cmd = self.pinned(CLIENT_CPU, &self.bins.client_sim);
        cmd.arg(scenario)
            .args(["--url", &format!("ws://127.0.0.1:{}/ws", self.args.port)])
            .args([
                "--metrics-url",
                &format!("http://127.0.0.1:{}/metrics", self.args.ops_port),
            ])
            .args(args.split_whitespace())
            .args(["--source-ips", &CLIENT_SOURCE_IPS.to_string()])
            .arg("--json")
            .arg(&json);
        let status = run_logged(cmd, &log, expected + RUN_SLACK);
        let after = scrape_metrics(self.args.ops_port);
        // Stop the server whatever client-sim did, so the next run and the probe get core 0.
        let stopped = server.stop();
        let status = status?;
        let text = fs::read_to_string(&json).with_context(|| {
            format!(
                "client-sim wrote no report ({status}; see {})",
                log.display()
            )
        })?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("reading {}", json.display()))?;
        let mut notes = client_limit_notes(&value);
        if !status.success() {
            notes.push(format!(
                "client-sim exited with {status} (see its log {})",
                log.display()
            ));
        }
        match stopped {
            Ok(Stopped::Exited(s)) if !s.success() => {
                notes.push(format!("the server exited with {s} after SIGTERM"));
            }
            Ok(Stopped::Killed) => notes.push(format!(
                "the server did not stop within {} s of SIGTERM and was killed",
                STOP_GRACE.as_secs()
            )),
            Ok(Stopped::Exited(_)) => {}
            Err(e) => notes.push(format!("stopping the server: {e:#}")),
        }
        Ok(Report {
            value,
            path: json,
            after,
            notes,
        })
    }

    /// Runs the write probe: `connections` loopback sockets, one `frame_bytes` write each per
    /// round, writer on the server's core and reader on the client's (the server is stopped).
    fn probe(&self, label: &str, connections: u64, frame_bytes: u64) -> Result<Probe> {
        ensure!(
            connections + FD_SLACK <= self.nofile,
            "the probe cannot open {connections} connections: RLIMIT_NOFILE is {}",
            self.nofile
        );
        let json = self.file(label, "probe.json");
        let log = self.file(label, "probe.log");
        let _ = fs::remove_file(&json);
        let mut cmd = Command::new(&self.bins.probe);
        cmd.args(["--connections", &connections.to_string()])
            .args(["--frame-bytes", &frame_bytes.to_string()])
            .args(["--seconds", &self.plan.probe_seconds.to_string()])
            .arg("--json")
            .arg(&json);
        match self.pin {
            Some((writer, reader)) => {
                cmd.args(["--writer-cpu", &writer.to_string()]);
                cmd.args(["--reader-cpu", &reader.to_string()]);
            }
            None => {
                cmd.arg("--no-pin");
            }
        }
        // With both ends in one process each connection costs two descriptors.
        if 2 * connections + FD_SLACK > self.nofile {
            cmd.arg("--reader-process");
        }
        let source_ips = connections.div_ceil(CONNECTIONS_PER_SOURCE_IP);
        if source_ips > 1 {
            cmd.args(["--source-ips", &source_ips.to_string()]);
        }
        // Connecting takes about a second per 10,000 connections; a warm-up second precedes
        // the measurement.
        let expected = Duration::from_secs_f64(self.plan.probe_seconds + 1.0)
            + Duration::from_millis(connections / 5);
        let status = run_logged(cmd, &log, expected + RUN_SLACK)?;
        ensure!(
            status.success(),
            "the write probe failed ({status}; see {})",
            log.display()
        );
        let text = fs::read_to_string(&json)?;
        Probe::from_json(&serde_json::from_str(&text)?, json)
    }
}

/// Frame bytes of a run for the probe, and where they came from: the server's payload
/// bytes written per `per` (frames or socket flushes), else client-sim's bytes received
/// per frame, else `fallback`.
fn frame_bytes(report: &Value, per: &str, fallback: u64) -> (u64, String) {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some((a / b).round().max(1.0) as u64),
        _ => None,
    };
    let server = ratio(
        num(report, "/server/metrics/bytes_written_per_s"),
        num(report, &format!("/server/metrics/{per}")),
    );
    let client = ratio(
        num(report, "/traffic/hold_bytes"),
        num(report, "/traffic/hold_frames"),
    );
    match (server, client) {
        (Some(b), _) => (b, format!("server bytes_written ÷ {per}")),
        (None, Some(b)) => (b, "client-sim hold_bytes ÷ hold_frames".into()),
        (None, None) => (fallback, format!("fixed {fallback} B (no measured size)")),
    }
}

/// What a scenario's JSON says about limits other than the server's.
fn client_limit_notes(report: &Value) -> Vec<String> {
    let limits: Vec<&str> = report["client_limits"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if limits.is_empty() {
        return Vec::new();
    }
    let cpu = num(report, "/client_cpu/percent_of_one_core").map_or(String::new(), |c| {
        format!("; client-sim CPU {c:.0} % of one core")
    });
    vec![format!(
        "CLIENT LIMIT: {} (client-sim's own limit, not the server, shaped this run{cpu})",
        limits.join(", ")
    )]
}

/// A client-sim report and what to note about its run.
struct Report {
    value: Value,
    path: PathBuf,
    /// The server's metrics once client-sim had ended.
    after: Option<Metrics>,
    notes: Vec<String>,
}

/// The write probe's result (benches/write_probe.rs `--json`).
#[derive(Debug, Clone, Serialize)]
struct Probe {
    connections: u64,
    frame_bytes: u64,
    writes_per_s: f64,
    cpu_ns_per_write: f64,
    would_block: u64,
    writer_cpu_percent: f64,
    reader: String,
    json: PathBuf,
}

impl Probe {
    fn from_json(v: &Value, json: PathBuf) -> Result<Probe> {
        let field = |key: &str| {
            v[key]
                .as_f64()
                .with_context(|| format!("probe JSON: no {key}"))
        };
        Ok(Probe {
            connections: field("connections")? as u64,
            frame_bytes: field("frame_bytes")? as u64,
            writes_per_s: field("writes_per_s")?,
            cpu_ns_per_write: field("cpu_ns_per_write")?,
            would_block: field("would_block")? as u64,
            writer_cpu_percent: field("writer_cpu_percent")?,
            reader: v["reader"].as_str().unwrap_or("?").to_owned(),
            json,
        })
    }

    /// What limited the probe, if anything but the writer's own CPU did.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.would_block > 0 {
            notes.push(format!(
                "PROBE LIMIT: {} probe writes would block: its reader, not the writer, set \
                 writes/s",
                self.would_block
            ));
        }
        if self.writer_cpu_percent < 90.0 {
            notes.push(format!(
                "PROBE LIMIT: the probe's writer had only {:.0} % of its core (shared): \
                 writes/s is below this machine's limit",
                self.writer_cpu_percent
            ));
        }
        notes
    }
}

// ---------------------------------------------------------------------------------------------
// The targets.

/// A game run's pass/fail in the capacity search.
#[derive(Debug, Serialize)]
struct Trial {
    clients: u64,
    snapshots_per_s: Option<f64>,
    latency_p99_us: Option<f64>,
    failed_joins: Option<f64>,
    passed: bool,
    report: PathBuf,
    notes: Vec<String>,
}

/// The capacity search: the trials made and the largest N that passed.
struct Search {
    trials: Vec<Trial>,
    found: Option<u64>,
}

impl Bench {
    /// Targets 1 (game) and 7 (overhead).
    fn game(&self) -> Result<Measured> {
        let hz = self.config.tick_hz("arena")?;
        let estimate = self.probe(
            "game-estimate",
            self.plan.game_estimate_connections,
            FALLBACK_GAME_FRAME,
        )?;
        let start = goal_clients(estimate.writes_per_s, hz) as u64;
        let search = self.game_search(start.clamp(1, self.plan.game_cap))?;
        // With no N passing, the runs show the figures at the smallest N tried.
        let n = search
            .found
            .or_else(|| search.trials.iter().map(|t| t.clients).min())
            .context("no game trial ran")?;
        let runs = self.each_run("game", |label| self.game_run(label, n, hz))?;
        let s = Summary::of(&runs);
        let mut rows = game_rows(&search, n, hz, &s);
        rows.extend(overhead_rows(&s));
        let extra = json!({
            "estimate_probe": estimate,
            "search_start_clients": start,
            "search": search.trials,
            "found_clients": search.found,
            "runs_at_clients": n,
        });
        Ok(Measured::new("game", rows, &s, extra))
    }

    /// Bisects for the largest N that passes, starting from `start`: up by a quarter past
    /// the largest pass, down by 40 % under the smallest failure, then halfway between.
    fn game_search(&self, start: u64) -> Result<Search> {
        let (mut pass, mut fail) = (None::<u64>, None::<u64>);
        let mut trials = Vec::new();
        let mut n = Some(start);
        for k in 1..=self.plan.game_trials {
            let Some(clients) = n else { break };
            let trial = self.game_trial(k, clients)?;
            eprintln!(
                "load_targets: game trial {k}: N = {clients}: {} ({} snapshots/s, p99 {})",
                if trial.passed { "pass" } else { "fail" },
                fixed(trial.snapshots_per_s, 1),
                ms(trial.latency_p99_us)
            );
            if trial.passed {
                pass = pass.max(Some(clients));
            } else {
                fail = Some(fail.map_or(clients, |f| f.min(clients)));
            }
            trials.push(trial);
            n = next_trial(pass, fail, self.plan.game_cap);
        }
        Ok(Search {
            trials,
            found: pass,
        })
    }

    fn game_trial(&self, k: u32, clients: u64) -> Result<Trial> {
        let label = format!("game-search{k}-n{clients}");
        let report = self.game_client_sim(&label, clients, self.plan.game_trial_hold)?;
        let v = &report.value;
        let snapshots_per_s = num(v, "/snapshots/per_client_per_s/median");
        let latency_p99_us = num(v, "/snapshot_latency_us/p99");
        let failed_joins = num(v, "/clients/failed_joins");
        let passed = at_least(snapshots_per_s, GAME_MIN_SNAPSHOTS_PER_S) == Some(true)
            && at_most(latency_p99_us, GAME_MAX_P99_US) == Some(true)
            && failed_joins == Some(0.0);
        Ok(Trial {
            clients,
            snapshots_per_s,
            latency_p99_us,
            failed_joins,
            passed,
            report: report.path,
            notes: report.notes,
        })
    }

    fn game_client_sim(&self, label: &str, clients: u64, hold: f64) -> Result<Report> {
        let args = format!(
            "--clients {clients} --room arena --input-hz {GAME_INPUT_HZ} --ramp {RAMP_PER_S} \
             --duration {hold}"
        );
        let expected = secs(clients as f64 / RAMP_PER_S as f64 + hold);
        self.client_sim(label, "game", &args, expected)
    }

    /// One run at the found N, and the probe at N connections with the run's frame size.
    fn game_run(&self, label: &str, n: u64, hz: f64) -> Result<RunFigures> {
        let report = self.game_client_sim(label, n, self.plan.game_hold)?;
        let mut run = RunFigures::new(label, &report);
        run.set("clients", Some(n as f64));
        run.take_all(&report.value, GAME_FIGURES);
        let (frame, source) =
            frame_bytes(&report.value, "frames_written_per_s", FALLBACK_GAME_FRAME);
        run.frame(frame, &source);
        let probe = self.probe(label, n, frame)?;
        let ns_per_frame = match (run.get("server_cpu_pct"), run.get("frames_written_per_s")) {
            (Some(cpu), Some(frames)) if frames > 0.0 => Some(cpu / 100.0 * 1e9 / frames),
            _ => None,
        };
        run.set("goal_clients", Some(goal_clients(probe.writes_per_s, hz)));
        run.set("server_ns_per_frame", ns_per_frame);
        run.set(
            "overhead",
            ns_per_frame.map(|ns| ns / probe.cpu_ns_per_write),
        );
        run.set("capacity_ratio", Some(n as f64 * hz / probe.writes_per_s));
        run.probe(probe);
        eprintln!(
            "load_targets: {label}: N = {n}: {} snapshots/s, p99 {}, probe {} writes/s",
            fixed(run.get("snapshots_per_s"), 1),
            ms(run.get("latency_p99_us")),
            whole(run.get("probe_writes_per_s"))
        );
        Ok(run)
    }

    /// Target 2: 5,000 sessions × 20 symbols in the ticker room.
    fn ticker(&self) -> Result<Measured> {
        let p = self.plan;
        let lambda = self.config.feed_updates_per_tick("ticker")?;
        let runs = self.each_run("ticker", |label| {
            let args = format!(
                "--clients {} --symbols {} --room ticker --ramp {RAMP_PER_S} --duration {}",
                p.ticker_sessions, p.ticker_symbols, p.ticker_hold
            );
            let ramp = p.ticker_sessions as f64 / RAMP_PER_S as f64;
            let report = self.client_sim(label, "ticker", &args, secs(ramp + p.ticker_hold))?;
            let mut run = RunFigures::new(label, &report);
            run.take_all(&report.value, TICKER_FIGURES);
            // A session gets all of a tick's quotes in one write.
            let (frame, source) =
                frame_bytes(&report.value, "socket_flushes_per_s", FALLBACK_TICKER_WRITE);
            run.frame(frame, &source);
            run.probe(self.probe(label, p.ticker_sessions, frame)?);
            Ok(run)
        })?;
        let s = Summary::of(&runs);
        let expected = lambda.map(expected_conflation_pct);
        let extra = json!({
            "updates_per_symbol_per_tick": lambda,
            "expected_conflated_pct": expected,
        });
        Ok(Measured::new(
            "ticker",
            ticker_rows(p, &s, expected),
            &s,
            extra,
        ))
    }

    /// Target 3: 15,000 viewers and 100 senders at 1 msg/s in the chat room.
    fn chat(&self) -> Result<Measured> {
        let p = self.plan;
        let period_us = 1e6 / self.config.tick_hz("chat")?;
        let clients = p.chat_viewers + p.chat_senders;
        let runs = self.each_run("chat", |label| {
            let args = format!(
                "--viewers {} --senders {} --rate {CHAT_RATE_PER_SENDER} --room chat \
                 --ramp {FAST_RAMP_PER_S} --duration {}",
                p.chat_viewers, p.chat_senders, p.chat_hold
            );
            let ramp = clients as f64 / FAST_RAMP_PER_S as f64;
            let report = self.client_sim(label, "chat", &args, secs(ramp + p.chat_hold))?;
            let mut run = RunFigures::new(label, &report);
            run.take_all(&report.value, CHAT_FIGURES);
            chat_derived(&mut run, period_us);
            let (frame, source) =
                frame_bytes(&report.value, "frames_written_per_s", FALLBACK_CHAT_FRAME);
            run.frame(frame, &source);
            let probe = self.probe(label, clients, frame)?;
            let bound_us =
                CHAT_FANOUT_FACTOR * p.chat_viewers as f64 * probe.cpu_ns_per_write / 1e3;
            run.set("fanout_bound_us", Some(bound_us));
            run.set(
                "latency_bound_us",
                Some(period_us + bound_us + CHAT_LATENCY_SLACK_US),
            );
            run.probe(probe);
            Ok(run)
        })?;
        let s = Summary::of(&runs);
        let extra = json!({ "tick_period_us": period_us });
        Ok(Measured::new(
            "chat",
            chat_rows(p, period_us, &s),
            &s,
            extra,
        ))
    }

    /// Target 4: 19,000 sessions idle in the chat room.
    fn idle(&self) -> Result<Measured> {
        let p = self.plan;
        let runs = self.each_run("idle", |label| {
            let args = format!(
                "--sessions {} --room chat --ramp {FAST_RAMP_PER_S} --duration {} --workers 2",
                p.idle_sessions, p.idle_hold
            );
            let ramp = p.idle_sessions as f64 / FAST_RAMP_PER_S as f64;
            let report = self.client_sim(label, "idle", &args, secs(ramp + p.idle_hold))?;
            let mut run = RunFigures::new(label, &report);
            run.take_all(&report.value, IDLE_FIGURES);
            Ok(run)
        })?;
        let s = Summary::of(&runs);
        Ok(Measured::new("idle", idle_rows(p, &s), &s, json!({})))
    }

    /// Target 5: 0 → 10,000 sessions in 10 s in the lobby, then every socket reset.
    fn spike(&self) -> Result<Measured> {
        let p = self.plan;
        let (timeout_s, settle) = self.settle_timeout()?;
        let runs = self.each_run("spike", |label| {
            let args = format!(
                "--clients {} --ramp-secs {} --room lobby --duration {} --settle-timeout {settle}",
                p.spike_sessions, p.spike_ramp_s, p.spike_hold
            );
            let expected = secs(p.spike_ramp_s + p.spike_hold + settle);
            self.leak_run(label, "spike", &args, expected, SPIKE_FIGURES)
        })?;
        let s = Summary::of(&runs);
        let mut rows = vec![spike_join_row(p, &s)];
        rows.extend(leak_rows("5 spike", timeout_s, &s));
        let extra = json!({ "idle_timeout_s": timeout_s });
        Ok(Measured::new("spike", rows, &s, extra))
    }

    /// Target 6: 500 connects and disconnects a second for 60 s in the lobby.
    fn churn(&self) -> Result<Measured> {
        let p = self.plan;
        let (timeout_s, settle) = self.settle_timeout()?;
        let runs = self.each_run("churn", |label| {
            let args = format!(
                "--rate {} --duration {} --room lobby --settle-timeout {settle}",
                p.churn_rate, p.churn_secs
            );
            // client-sim gives the last sessions 10 s beyond their stay to end.
            let expected = secs(p.churn_secs + 10.0 + settle);
            self.leak_run(label, "churn", &args, expected, CHURN_FIGURES)
        })?;
        let s = Summary::of(&runs);
        let mut rows = vec![churn_join_row(p, &s)];
        rows.extend(leak_rows("6 churn", timeout_s, &s));
        let extra = json!({ "idle_timeout_s": timeout_s });
        Ok(Measured::new("churn", rows, &s, extra))
    }

    /// A spike or churn run: its own figures, the settle, and the sessions once it ended.
    fn leak_run(
        &self,
        label: &str,
        scenario: &str,
        args: &str,
        expected: Duration,
        figures: &[(&'static str, &str)],
    ) -> Result<RunFigures> {
        let report = self.client_sim(label, scenario, args, expected)?;
        let mut run = RunFigures::new(label, &report);
        run.take_all(&report.value, figures);
        run.take_all(&report.value, SETTLE_FIGURES);
        // client-sim's settle poll watches connections and tasks, not sessions, which the
        // room drops a tick later; they are read from the scrape made once client-sim ended
        // (3 s after it saw the server settle).
        let after = report.after.as_ref();
        run.set(
            "sessions_after",
            after.and_then(|m| m.sum(SESSIONS_SERIES, &[])),
        );
        rss_growth(&mut run);
        Ok(run)
    }

    /// The server's idle timeout, and client-sim's settle timeout past the target's limit
    /// (so that a late settle is measured, not cut off), in seconds.
    fn settle_timeout(&self) -> Result<(f64, f64)> {
        let timeout_s = self.config.idle_timeout_s()?;
        Ok((timeout_s, SETTLE_TIMEOUTS * timeout_s + 15.0))
    }

    /// `runs` runs of a target, labelled `<target>-run<N>`.
    fn each_run(
        &self,
        target: &str,
        run: impl Fn(&str) -> Result<RunFigures>,
    ) -> Result<Vec<RunFigures>> {
        (1..=self.runs())
            .map(|r| run(&format!("{target}-run{r}")))
            .collect()
    }
}

/// The N whose frames at `hz` are the goal share of the probe's writes/s.
fn goal_clients(probe_writes_per_s: f64, hz: f64) -> f64 {
    GAME_GOAL_SHARE * probe_writes_per_s / hz
}

/// The next N of the game search, or `None` when the bracket is narrow enough (5 %, at least
/// 10 players) or the search ran into the cap or down to one player.
fn next_trial(pass: Option<u64>, fail: Option<u64>, cap: u64) -> Option<u64> {
    match (pass, fail) {
        (Some(p), None) => (p < cap).then(|| (p + p.div_ceil(4)).min(cap)),
        (None, Some(f)) => (f > 1).then(|| (f * 3 / 5).max(1)),
        (Some(p), Some(f)) => (f.saturating_sub(p) > (f / 20).max(10)).then(|| (p + f) / 2),
        (None, None) => None,
    }
}

/// The share of feed values (in %) that newest-value-per-tick replaces when a symbol gets a
/// Poisson(λ) number of updates per tick (the synthetic feed's uniformly random updates):
/// 1 − P(at least one) ÷ E[updates] = 1 − (1 − e^−λ) ÷ λ; 36.8 % at λ = 1.
fn expected_conflation_pct(lambda: f64) -> f64 {
    100.0 * (1.0 - (1.0 - (-lambda).exp()) / lambda)
}

// ---------------------------------------------------------------------------------------------
// The figures each target reads from client-sim's JSON report: (name, JSON pointer).

const GAME_FIGURES: &[(&str, &str)] = &[
    ("snapshots_per_s", "/snapshots/per_client_per_s/median"),
    ("latency_p50_us", "/snapshot_latency_us/p50"),
    ("latency_p99_us", "/snapshot_latency_us/p99"),
    ("tick_p99_us", "/server/end_of_hold/tick_duration_us/p99"),
    ("failed_joins", "/clients/failed_joins"),
    ("server_cpu_pct", "/server/metrics/cpu_percent_of_one_core"),
    (
        "frames_written_per_s",
        "/server/metrics/frames_written_per_s",
    ),
    ("client_cpu_pct", "/client_cpu/percent_of_one_core"),
];

const TICKER_FIGURES: &[(&str, &str)] = &[
    ("feed_p50_us", "/feed_latency_us/p50"),
    ("feed_p99_us", "/feed_latency_us/p99"),
    ("delivery_p99_us", "/delivery_latency_us/p99"),
    ("updates_per_s_session", "/quotes/per_client_per_s/median"),
    ("conflated_pct", "/quotes/conflated_pct"),
    ("duplicates", "/quotes/duplicates"),
    ("reorders", "/quotes/reorders"),
    ("unexpected_symbols", "/quotes/unexpected_symbols"),
    ("first_values_missing", "/initial_values/missing"),
    ("subscribes_failed", "/subscriptions/failed"),
    ("failed_joins", "/clients/failed_joins"),
    ("ended_early", "/clients/ended_early"),
    ("skipped_ticks", "/server/skipped_ticks_during_run"),
    ("rss_peak_bytes", "/server/metrics/rss_peak_bytes"),
    ("client_cpu_pct", "/client_cpu/percent_of_one_core"),
];

const CHAT_FIGURES: &[(&str, &str)] = &[
    ("viewer_p50_us", "/viewer_latency_us/p50"),
    ("viewer_p99_us", "/viewer_latency_us/p99"),
    ("viewer_p999_us", "/viewer_latency_us/p999"),
    ("viewer_max_us", "/viewer_latency_us/max"),
    ("fanout_p50_us", "/batch_fanout_us/p50"),
    ("fanout_p99_us", "/batch_fanout_us/p99"),
    ("fanout_max_us", "/batch_fanout_us/max"),
    ("batches_per_s_viewer", "/viewers/batches_per_s/median"),
    ("lost", "/viewers/lost"),
    ("duplicates", "/viewers/duplicates"),
    ("failed_joins", "/clients/failed_joins"),
    ("server_cpu_pct", "/server/metrics/cpu_percent_of_one_core"),
    ("client_cpu_pct", "/client_cpu/percent_of_one_core"),
];

const IDLE_FIGURES: &[(&str, &str)] = &[
    ("rss_per_session_bytes", "/idle/rss_per_session_bytes"),
    ("server_cpu_pct", "/idle/server_cpu_percent_of_one_core"),
    ("sessions", "/idle/sessions"),
    ("rss_before_bytes", "/idle/rss_before_bytes"),
    ("rss_end_bytes", "/idle/rss_end_of_hold_bytes"),
    ("failed_joins", "/clients/failed_joins"),
    ("ended_early", "/clients/ended_early"),
];

const SPIKE_FIGURES: &[(&str, &str)] = &[
    ("first_snapshot_p50_us", "/first_snapshot_latency_us/p50"),
    ("first_snapshot_p99_us", "/first_snapshot_latency_us/p99"),
    ("failed_joins", "/clients/failed_joins"),
    ("without_snapshot", "/joined_without_snapshot"),
];

const CHURN_FIGURES: &[(&str, &str)] = &[
    ("achieved_rate_per_s", "/churn/achieved_rate_per_s"),
    ("started", "/churn/started"),
    ("first_snapshot_p99_us", "/first_snapshot_latency_us/p99"),
    ("failed_joins", "/clients/failed_joins"),
];

/// Spike and churn: the server before the run and once it settled after the drop.
const SETTLE_FIGURES: &[(&str, &str)] = &[
    ("settled", "/settle/settled"),
    ("settle_s", "/settle/settle_s"),
    (
        "sessions_before",
        "/server/metrics/before/tickroom_sessions_active",
    ),
    (
        "connections_before",
        "/server/metrics/before/tickroom_connections_active",
    ),
    (
        "connections_after",
        "/settle/last/tickroom_connections_active",
    ),
    ("tasks_before", "/server/metrics/before/tokio_alive_tasks"),
    ("tasks_after", "/settle/last/tokio_alive_tasks"),
    ("tasks_tolerance", "/settle/alive_tasks_tolerance"),
    ("rss_before_bytes", "/server/metrics/rss_before_bytes"),
    ("rss_peak_bytes", "/settle/rss_peak_bytes"),
    ("rss_after_bytes", "/settle/rss_after_bytes"),
];

/// Chat figures derived from the run's.
fn chat_derived(run: &mut RunFigures, period_us: f64) {
    // On its one core the server cannot fan a batch out faster than the CPU it spends on it;
    // this share also holds the heartbeats, the sends and the idle rooms' ticks.
    let cpu_per_batch = run.get("server_cpu_pct").map(|c| c / 100.0 * period_us);
    run.set("server_cpu_per_batch_us", cpu_per_batch);
}

/// RSS after the drop against the RSS before the run, in %.
fn rss_growth(run: &mut RunFigures) {
    let growth = match (run.get("rss_before_bytes"), run.get("rss_after_bytes")) {
        (Some(b), Some(a)) if b > 0.0 => Some((a / b - 1.0) * 100.0),
        _ => None,
    };
    run.set("rss_growth_pct", growth);
}

// ---------------------------------------------------------------------------------------------
// Runs, medians and rows.

/// One run of a target: its figures by name (absent when the run could not give one), the
/// probe beside it, and the limits and oddities to carry into the table's notes.
#[derive(Debug, Default, Serialize)]
struct RunFigures {
    label: String,
    report: PathBuf,
    figures: BTreeMap<&'static str, f64>,
    frame_bytes_source: Option<String>,
    probe: Option<Probe>,
    notes: Vec<String>,
}

impl RunFigures {
    fn new(label: &str, report: &Report) -> Self {
        RunFigures {
            label: label.into(),
            report: report.path.clone(),
            notes: report.notes.clone(),
            ..RunFigures::default()
        }
    }

    fn set(&mut self, key: &'static str, value: Option<f64>) {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.figures.insert(key, v);
        }
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.figures.get(key).copied()
    }

    /// Sets every `(name, pointer)` figure from the report.
    fn take_all(&mut self, report: &Value, figures: &[(&'static str, &str)]) {
        for &(key, pointer) in figures {
            self.set(key, num(report, pointer));
        }
    }

    fn frame(&mut self, bytes: u64, source: &str) {
        self.set("frame_bytes", Some(bytes as f64));
        if source.starts_with("fixed") {
            self.notes
                .push(format!("probe frame size: {source}, not the run's"));
        }
        self.frame_bytes_source = Some(source.into());
    }

    fn probe(&mut self, probe: Probe) {
        self.set("probe_writes_per_s", Some(probe.writes_per_s));
        self.set("probe_ns_per_write", Some(probe.cpu_ns_per_write));
        self.notes.extend(probe.notes());
        self.probe = Some(probe);
    }
}

/// Medians (and worst cases) over a target's runs.
struct Summary<'a> {
    runs: &'a [RunFigures],
}

impl<'a> Summary<'a> {
    fn of(runs: &'a [RunFigures]) -> Self {
        Summary { runs }
    }

    fn values(&self, key: &str) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r.get(key)).collect()
    }

    fn median(&self, key: &str) -> Option<f64> {
        median(self.values(key))
    }

    /// The largest value over the runs: counts that must be 0 must be 0 in every run.
    fn max(&self, key: &str) -> Option<f64> {
        self.values(key).into_iter().reduce(f64::max)
    }

    fn min(&self, key: &str) -> Option<f64> {
        self.values(key).into_iter().reduce(f64::min)
    }

    fn keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = self
            .runs
            .iter()
            .flat_map(|r| r.figures.keys().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    fn medians(&self) -> BTreeMap<&'static str, Option<f64>> {
        self.keys()
            .into_iter()
            .map(|k| (k, self.median(k)))
            .collect()
    }

    fn maxima(&self) -> BTreeMap<&'static str, Option<f64>> {
        self.keys().into_iter().map(|k| (k, self.max(k))).collect()
    }

    /// Every run's notes, each once, with the runs it came from.
    fn notes(&self) -> Vec<String> {
        let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in self.runs {
            for n in &r.notes {
                seen.entry(n).or_default().push(&r.label);
            }
        }
        seen.into_iter()
            .map(|(note, runs)| format!("{note} [{}]", runs.join(", ")))
            .collect()
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
enum Verdict {
    Met,
    NotMet,
    /// A figure it needs could not be measured.
    Unmeasured,
    /// A figure reported without a threshold.
    Reported,
}

impl Verdict {
    /// Met when every condition holds, NOT met when one fails, else unmeasured.
    fn all(conditions: &[Option<bool>]) -> Verdict {
        if conditions.contains(&Some(false)) {
            Verdict::NotMet
        } else if conditions.contains(&None) {
            Verdict::Unmeasured
        } else {
            Verdict::Met
        }
    }

    fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**NOT met**",
            Verdict::Unmeasured => "not measured",
            Verdict::Reported => "(reported)",
        }
    }
}

fn at_most(v: Option<f64>, limit: f64) -> Option<bool> {
    v.map(|v| v <= limit)
}

fn at_least(v: Option<f64>, limit: f64) -> Option<bool> {
    v.map(|v| v >= limit)
}

fn zero(v: Option<f64>) -> Option<bool> {
    v.map(|v| v == 0.0)
}

/// One line of the table.
#[derive(Debug, Serialize)]
struct Row {
    target: String,
    figure: String,
    threshold: String,
    verdict: Verdict,
    notes: Vec<String>,
}

/// A measured target: its rows, and every figure for summary.json.
struct Measured {
    name: String,
    rows: Vec<Row>,
    detail: Value,
    error: Option<String>,
}

impl Measured {
    /// A target's rows; its detail for summary.json is `extra` plus every run and the
    /// medians and maxima.
    fn new(name: &str, rows: Vec<Row>, s: &Summary, mut extra: Value) -> Measured {
        extra["runs"] = json!(s.runs);
        extra["median"] = json!(s.medians());
        extra["max"] = json!(s.maxima());
        Measured {
            name: name.into(),
            rows,
            detail: extra,
            error: None,
        }
    }

    fn failed(name: String, e: &anyhow::Error) -> Measured {
        Measured {
            rows: vec![Row {
                target: name.clone(),
                figure: "—".into(),
                threshold: "—".into(),
                verdict: Verdict::Unmeasured,
                notes: vec![format!("the run failed: {e:#}")],
            }],
            name,
            detail: Value::Null,
            error: Some(format!("{e:#}")),
        }
    }
}

fn game_rows(search: &Search, n: u64, hz: f64, s: &Summary) -> Vec<Row> {
    let goal = s.median("goal_clients");
    let (snapshots, p50, p99) = (
        s.median("snapshots_per_s"),
        s.median("latency_p50_us"),
        s.median("latency_p99_us"),
    );
    let found = match search.found {
        Some(n) => format!("N = {} found", count(n as f64)),
        None => format!(
            "no N passed (figures at the smallest tried, {})",
            count(n as f64)
        ),
    };
    let trials: Vec<String> = search
        .trials
        .iter()
        .map(|t| {
            format!(
                "{} {} ({}/s, p99 {})",
                count(t.clients as f64),
                if t.passed { "pass" } else { "fail" },
                fixed(t.snapshots_per_s, 1),
                ms(t.latency_p99_us)
            )
        })
        .collect();
    let mut notes = vec![format!("search: {}", trials.join(" → "))];
    notes.extend(search.trials.iter().flat_map(|t| {
        t.notes
            .iter()
            .map(move |n| format!("{n} [search N = {}]", t.clients))
    }));
    notes.extend(s.notes());
    notes.push(format!(
        "snapshots/s: the median client's (snapshots.per_client_per_s.median); latency: \
         snapshot_latency_us; goal from the probe at N connections with the run's frame \
         ({} B, server bytes ÷ frames written)",
        whole(s.median("frame_bytes"))
    ));
    let capacity = Row {
        target: format!("1 game: players at {hz:.0} Hz"),
        figure: format!(
            "{found}; goal {} (0.85 × {} probe writes/s ÷ {hz:.0}); at N: {} snapshots/s, \
             latency p50/p99 {}/{}",
            goal.map_or("?".into(), count),
            whole(s.median("probe_writes_per_s")),
            fixed(snapshots, 2),
            ms(p50),
            ms(p99)
        ),
        threshold: format!(
            "largest N with median client ≥ {GAME_MIN_SNAPSHOTS_PER_S:.0} snapshots/s and \
             p99 ≤ {}; N ≥ goal",
            ms(Some(GAME_MAX_P99_US))
        ),
        verdict: Verdict::all(&[
            search.found.map(|n| goal.is_some_and(|g| n as f64 >= g)),
            at_least(snapshots, GAME_MIN_SNAPSHOTS_PER_S),
            at_most(p99, GAME_MAX_P99_US),
            zero(s.max("failed_joins")),
        ]),
        notes,
    };
    let tick = s.median("tick_p99_us");
    let tick_row = Row {
        target: "1 game: room tick p99".into(),
        figure: format!("{} at N = {}", ms(tick), count(n as f64)),
        threshold: format!("≤ {}", ms(Some(GAME_MAX_TICK_P99_US))),
        verdict: Verdict::all(&[at_most(tick, GAME_MAX_TICK_P99_US)]),
        notes: vec![
            "arena's tick_duration_us.p99 from GET /rooms at the end of the hold \
             (server.end_of_hold)"
                .into(),
        ],
    };
    vec![capacity, tick_row]
}

fn overhead_rows(s: &Summary) -> Vec<Row> {
    let ratio = s.median("overhead");
    let overhead = Row {
        target: "7 overhead: server CPU per frame ÷ probe".into(),
        figure: format!(
            "{} server CPU per frame written ÷ {} probe CPU per write = {}",
            us(s.median("server_ns_per_frame").map(|ns| ns / 1e3)),
            us(s.median("probe_ns_per_write").map(|ns| ns / 1e3)),
            fixed(ratio, 2)
        ),
        threshold: format!("≤ {OVERHEAD_MAX}"),
        verdict: Verdict::all(&[at_most(ratio, OVERHEAD_MAX)]),
        notes: vec![format!(
            "the game runs at N: server cpu_percent_of_one_core ÷ frames_written_per_s \
             (server.metrics over the hold; process-wide counters, the other rooms have no \
             clients); server CPU {} % of one core",
            whole(s.median("server_cpu_pct"))
        )],
    };
    let capacity = Row {
        target: "7 overhead: capacity ÷ probe limit".into(),
        figure: format!(
            "N × tick rate ÷ probe writes/s = {}",
            fixed(s.median("capacity_ratio"), 2)
        ),
        threshold: "—".into(),
        verdict: Verdict::Reported,
        notes: Vec::new(),
    };
    vec![overhead, capacity]
}

fn ticker_rows(p: &Plan, s: &Summary, expected: Option<f64>) -> Vec<Row> {
    let sizes = format!(
        "{} sessions × {} symbols",
        count(p.ticker_sessions as f64),
        p.ticker_symbols
    );
    let p99 = s.median("feed_p99_us");
    let latency = Row {
        target: "2 ticker: feed → client p99".into(),
        figure: format!(
            "{} (p50 {}), {sizes}; {} updates/s per session; probe {} writes/s at {} B",
            ms(p99),
            ms(s.median("feed_p50_us")),
            fixed(s.median("updates_per_s_session"), 1),
            whole(s.median("probe_writes_per_s")),
            whole(s.median("frame_bytes"))
        ),
        threshold: format!("≤ {}", ms(Some(TICKER_MAX_P99_US))),
        verdict: Verdict::all(&[at_most(p99, TICKER_MAX_P99_US)]),
        notes: s.notes(),
    };
    let must_be_zero = [
        "duplicates",
        "reorders",
        "unexpected_symbols",
        "first_values_missing",
        "subscribes_failed",
        "failed_joins",
        "ended_early",
        "skipped_ticks",
    ];
    let worst: Vec<String> = must_be_zero
        .iter()
        .map(|k| format!("{k} {}", whole(s.max(k))))
        .collect();
    let conflated = s.max("conflated_pct");
    let mut conditions: Vec<Option<bool>> = must_be_zero.iter().map(|k| zero(s.max(k))).collect();
    conditions.push(match expected {
        Some(e) => at_most(conflated, e + TICKER_CONFLATION_SLACK_PP),
        None => None,
    });
    let loss = Row {
        target: "2 ticker: every changed tick delivered".into(),
        figure: format!(
            "worst run: {}; conflated {} % of values vs {} % replaced within a tick",
            worst.join(", "),
            fixed(conflated, 2),
            fixed(expected, 2)
        ),
        threshold: format!("all 0; conflation ≤ expected + {TICKER_CONFLATION_SLACK_PP} pp"),
        verdict: Verdict::all(&conditions),
        notes: vec![
            "client-sim counts a seq jump as conflation (quotes.gaps/skipped/conflated_pct) and \
             cannot tell a missed tick from values replaced within one; the expected share \
             assumes the synthetic feed's uniformly random updates (Poisson per tick), so a \
             session that missed ticks shows as conflation above it"
                .into(),
        ],
    };
    let rss = s.median("rss_peak_bytes");
    let memory = Row {
        target: "2 ticker: server RSS".into(),
        figure: format!(
            "{} (largest of the scrapes; server.metrics.rss_peak_bytes)",
            mb(rss)
        ),
        threshold: format!("≤ {}", mb(Some(TICKER_MAX_RSS_BYTES))),
        verdict: Verdict::all(&[at_most(rss, TICKER_MAX_RSS_BYTES)]),
        notes: Vec::new(),
    };
    vec![latency, loss, memory]
}

fn chat_rows(p: &Plan, period_us: f64, s: &Summary) -> Vec<Row> {
    let fanout = s.median("fanout_max_us");
    let bound = s.median("fanout_bound_us");
    let mut notes = vec![
        "client-sim's batch_fanout_us: at every viewer, receipt − the tick start the room \
         stamps on the batch's messages; its max is the worst batch's tick start → last \
         viewer, client-sim's own reading delay included, so an upper bound on the server's \
         tick start → last write"
            .to_string(),
    ];
    if s.max("lost").is_some_and(|l| l > 0.0) || s.max("duplicates").is_some_and(|d| d > 0.0) {
        notes.push(format!(
            "viewers lost {} messages, {} duplicates (worst run)",
            whole(s.max("lost")),
            whole(s.max("duplicates"))
        ));
    }
    notes.extend(s.notes());
    let fanout_row = Row {
        target: "3 chat: fan-out of one batch".into(),
        figure: format!(
            "{} worst batch to {} viewers (+{} senders); over batches × viewers p50 {}, \
             p99 {}; server CPU per batch {}; probe {} per write at {} connections, {} B",
            ms(fanout),
            count(p.chat_viewers as f64),
            p.chat_senders,
            ms(s.median("fanout_p50_us")),
            ms(s.median("fanout_p99_us")),
            ms(s.median("server_cpu_per_batch_us")),
            us(s.median("probe_ns_per_write").map(|ns| ns / 1e3)),
            count((p.chat_viewers + p.chat_senders) as f64),
            whole(s.median("frame_bytes"))
        ),
        threshold: format!(
            "≤ {CHAT_FANOUT_FACTOR} × {} × probe CPU per write = {}",
            count(p.chat_viewers as f64),
            ms(bound)
        ),
        verdict: Verdict::all(&[fanout.zip(bound).map(|(f, b)| f <= b)]),
        notes,
    };
    let p99 = s.median("viewer_p99_us");
    let latency_bound = s.median("latency_bound_us");
    let latency = Row {
        target: "3 chat: send → receive p99".into(),
        figure: format!(
            "{} (p50 {}; viewer_latency_us)",
            ms(p99),
            ms(s.median("viewer_p50_us"))
        ),
        threshold: format!(
            "≤ {} tick + fan-out bound + {} = {}",
            ms(Some(period_us)),
            ms(Some(CHAT_LATENCY_SLACK_US)),
            ms(latency_bound)
        ),
        verdict: Verdict::all(&[p99.zip(latency_bound).map(|(l, b)| l <= b)]),
        notes: Vec::new(),
    };
    vec![fanout_row, latency]
}

fn idle_rows(p: &Plan, s: &Summary) -> Vec<Row> {
    let per_session = s.median("rss_per_session_bytes");
    let mut notes = vec![format!(
        "(RSS at the end of the hold − RSS of the empty server before the ramp) ÷ sessions \
         joined (idle.rss_per_session_bytes); RSS {} → {}",
        mb(s.median("rss_before_bytes")),
        mb(s.median("rss_end_bytes"))
    )];
    if s.max("failed_joins").is_some_and(|f| f > 0.0) {
        notes.push(format!(
            "failed joins: {} (worst run)",
            whole(s.max("failed_joins"))
        ));
    }
    notes.extend(s.notes());
    let memory = Row {
        target: "4 idle: RSS per session".into(),
        figure: format!(
            "{} B ({} sessions joined)",
            whole(per_session),
            s.min("sessions").map_or("?".into(), count)
        ),
        threshold: format!("≤ {} B", count(IDLE_MAX_RSS_PER_SESSION)),
        verdict: Verdict::all(&[
            at_most(per_session, IDLE_MAX_RSS_PER_SESSION),
            s.min("sessions").map(|n| n >= p.idle_sessions as f64),
        ]),
        notes,
    };
    let cpu = s.median("server_cpu_pct");
    let cpu_row = Row {
        target: "4 idle: server CPU".into(),
        figure: format!(
            "{} % of one core over the hold (heartbeats only)",
            fixed(cpu, 1)
        ),
        threshold: format!("≤ {IDLE_MAX_CPU_PCT} %"),
        verdict: Verdict::all(&[at_most(cpu, IDLE_MAX_CPU_PCT)]),
        notes: Vec::new(),
    };
    vec![memory, cpu_row]
}

fn spike_join_row(p: &Plan, s: &Summary) -> Row {
    let p99 = s.median("first_snapshot_p99_us");
    let mut notes = vec![
        "first_snapshot_latency_us: connect start → first Snapshot; failed joins: every run".into(),
    ];
    notes.extend(s.notes());
    Row {
        target: "5 spike: join → first snapshot".into(),
        figure: format!(
            "p99 {} (p50 {}), {} sessions in {} s; failed joins {}, joined without a \
             snapshot {}",
            ms(p99),
            ms(s.median("first_snapshot_p50_us")),
            count(p.spike_sessions as f64),
            p.spike_ramp_s,
            whole(s.max("failed_joins")),
            whole(s.max("without_snapshot"))
        ),
        threshold: format!("p99 ≤ {}, no failed joins", ms(Some(SPIKE_MAX_P99_US))),
        verdict: Verdict::all(&[at_most(p99, SPIKE_MAX_P99_US), zero(s.max("failed_joins"))]),
        notes,
    }
}

fn churn_join_row(p: &Plan, s: &Summary) -> Row {
    let mut notes = vec![format!(
        "client-sim churn defaults: stay 500 ms, half the sessions leave by RST; join → \
         snapshot p99 {}",
        ms(s.median("first_snapshot_p99_us"))
    )];
    notes.extend(s.notes());
    Row {
        target: "6 churn: joins".into(),
        figure: format!(
            "{} sessions started at {}/s (asked {}/s for {} s); failed joins {}",
            whole(s.median("started")),
            fixed(s.median("achieved_rate_per_s"), 1),
            p.churn_rate,
            p.churn_secs,
            whole(s.max("failed_joins"))
        ),
        threshold: "no failed joins".into(),
        verdict: Verdict::all(&[zero(s.max("failed_joins"))]),
        notes,
    }
}

/// Spike and churn: back to the baseline in time, and the memory given back.
fn leak_rows(target: &str, timeout_s: f64, s: &Summary) -> Vec<Row> {
    let limit = SETTLE_TIMEOUTS * timeout_s;
    let settle = s.max("settle_s");
    let back = |after: &str, before: &str, slack: f64| {
        s.runs
            .iter()
            .map(|r| r.get(after).zip(r.get(before)).map(|(a, b)| a <= b + slack))
            .collect::<Option<Vec<bool>>>()
            .map(|v| v.iter().all(|&ok| ok))
    };
    let tolerance = s.max("tasks_tolerance").unwrap_or(0.0);
    let settle_row = Row {
        target: format!("{target}: sessions and tasks back"),
        figure: format!(
            "settled after {} (worst run; median {}); sessions {} → {}, alive tasks {} → {}",
            secs_text(settle),
            secs_text(s.median("settle_s")),
            whole(s.median("sessions_before")),
            whole(s.max("sessions_after")),
            whole(s.median("tasks_before")),
            whole(s.max("tasks_after"))
        ),
        threshold: format!(
            "within {SETTLE_TIMEOUTS} × idle timeout = {}",
            secs_text(Some(limit))
        ),
        verdict: Verdict::all(&[
            s.min("settled").map(|v| v == 1.0),
            at_most(settle, limit),
            back("sessions_after", "sessions_before", 0.0),
            back("connections_after", "connections_before", 0.0),
            back("tasks_after", "tasks_before", tolerance),
        ]),
        notes: vec![format!(
            "client-sim's settle poll every 250 ms after the drop (settle.settled, settle_s; \
             connections and alive tasks from settle.last, +{tolerance:.0} tasks tolerated); \
             sessions (tickroom_sessions_active) from a scrape once client-sim had ended, 3 s \
             after that; the idle timeout is the server config's session.idle_timeout_ms"
        )],
    };
    let growth = s.max("rss_growth_pct");
    let rss_row = Row {
        target: format!("{target}: RSS after"),
        figure: format!(
            "{} (worst run): {} before, {} peak, {} after",
            growth.map_or("?".into(), |g| format!("{g:+.1} %")),
            mb(s.median("rss_before_bytes")),
            mb(s.median("rss_peak_bytes")),
            mb(s.median("rss_after_bytes"))
        ),
        threshold: format!("within {MAX_RSS_GROWTH_PCT:.0} % of before"),
        verdict: Verdict::all(&[at_most(growth, MAX_RSS_GROWTH_PCT)]),
        notes: vec![
            "settle.rss_after_bytes (3 s after settling) against server.metrics.rss_before_bytes"
                .into(),
        ],
    };
    vec![settle_row, rss_row]
}

// ---------------------------------------------------------------------------------------------
// The report: table, summary.json, docs section.

impl Bench {
    fn render(&self, results: &[Measured], wall: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Measured {} on {}. {} run(s) per target, medians shown (counts that must be 0: \
             the worst run); {}; loopback. Command: `{}` (wall time {:.0} min).\n",
            self.started_utc,
            machine(self.cores),
            self.runs(),
            match self.pin {
                Some((s, c)) => format!("server on core {s}, client-sim on core {c}"),
                None => "one core: nothing pinned".into(),
            },
            command_line(),
            wall.as_secs_f64() / 60.0
        );
        if self.args.quick {
            out.push_str(
                "**`--quick`: smoke-test sizes and durations, not the issue's targets.**\n\n",
            );
        }
        out.push_str("| target | figure | target threshold | met | notes |\n");
        out.push_str("|---|---|---|---|---|\n");
        for row in results.iter().flat_map(|m| &m.rows) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&row.target),
                cell(&row.figure),
                cell(&row.threshold),
                row.verdict.label(),
                cell(&row.notes.join("; "))
            );
        }
        out
    }

    fn summary(&self, results: &[Measured], wall: Duration) -> Value {
        let targets: serde_json::Map<String, Value> = results
            .iter()
            .map(|m| {
                let v = json!({
                    "rows": m.rows,
                    "error": m.error,
                    "detail": m.detail,
                });
                (m.name.clone(), v)
            })
            .collect();
        json!({
            "date_utc": self.started_utc,
            "machine": {
                "cpu": host::cpu_model().unwrap_or_else(|| "unknown CPU".into()),
                "cores": self.cores,
                "memory_bytes": host::memory_bytes(),
            },
            "command": command_line(),
            "runs": self.runs(),
            "quick": self.args.quick,
            "config": self.args.config,
            "pinned": self.pin.map(|(s, c)| json!({ "server": s, "client": c })),
            "open_files": self.nofile,
            "wall_s": wall.as_secs_f64(),
            "targets": targets,
        })
    }
}

/// Replaces the marked section of the docs (adding the heading and markers before the first
/// `## ` section when absent); nothing else in the file changes.
fn rewrite_docs(path: &Path, section: &str) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = if text.contains(BEGIN) && text.contains(END) {
        text
    } else {
        let block = format!("{HEADING}\n\n{BEGIN}\n{END}\n\n");
        match text.find("\n## ") {
            Some(at) => format!("{}{block}{}", &text[..=at], &text[at + 1..]),
            None => format!("{text}\n{block}"),
        }
    };
    let (head, rest) = text.split_once(BEGIN).context("no begin marker")?;
    let (_, tail) = rest
        .split_once(END)
        .context("no end marker after the begin marker")?;
    let new = format!("{head}{BEGIN}\n{section}{END}{tail}");
    fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// A table cell: no pipes or newlines.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// How this bench was invoked, as a command to paste.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        "cargo bench --bench load_targets".into()
    } else {
        format!("cargo bench --bench load_targets -- {}", args.join(" "))
    }
}

fn machine(cores: usize) -> String {
    let memory = host::memory_bytes().map_or("? GiB".into(), |b| {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    });
    format!(
        "{}, {cores} cores, {memory} memory",
        host::cpu_model().unwrap_or_else(|| "unknown CPU".into())
    )
}

/// Now as `YYYY-MM-DD HH:MM UTC` (days to a civil date by H. Hinnant's algorithm).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

// ---------------------------------------------------------------------------------------------
// The server's configuration, as far as the targets need it.

/// `--config` laid over the embedded default (config/default.toml), as the server does: keys
/// replace the default's, and a `rooms` list replaces the default's whole.
struct LoadConfig {
    file: toml::Table,
    default: toml::Table,
}

impl LoadConfig {
    fn read(file: &Path, default: &Path) -> Result<LoadConfig> {
        let parse = |path: &Path| -> Result<toml::Table> {
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            text.parse()
                .with_context(|| format!("parsing {}", path.display()))
        };
        Ok(LoadConfig {
            file: parse(file)?,
            default: parse(default)?,
        })
    }

    /// `[session] idle_timeout_ms`, in seconds: the heartbeat timeout the leak checks allow
    /// twice.
    fn idle_timeout_s(&self) -> Result<f64> {
        let ms = |t: &toml::Table| t.get("session")?.get("idle_timeout_ms")?.as_integer();
        let ms = ms(&self.file)
            .or_else(|| ms(&self.default))
            .context("no session.idle_timeout_ms in the config or the default")?;
        Ok(ms as f64 / 1e3)
    }

    fn room(&self, name: &str) -> Result<&toml::Table> {
        let rooms = self
            .file
            .get("rooms")
            .or_else(|| self.default.get("rooms"))
            .and_then(|r| r.as_array())
            .context("the config has no rooms")?;
        rooms
            .iter()
            .filter_map(|r| r.as_table())
            .find(|r| r.get("name").and_then(|n| n.as_str()) == Some(name))
            .with_context(|| format!("the config has no room {name:?}, which a target needs"))
    }

    fn tick_hz(&self, room: &str) -> Result<f64> {
        let hz = self.room(room)?.get("tick_hz").and_then(|v| v.as_integer());
        Ok(hz.with_context(|| format!("room {room:?} sets no tick_hz"))? as f64)
    }

    /// Feed updates per symbol per tick of a ticker room with a synthetic feed (`None` for
    /// another feed, whose update process is unknown here).
    fn feed_updates_per_tick(&self, room: &str) -> Result<Option<f64>> {
        let feed = self.room(room)?.get("feed").and_then(|f| f.as_table());
        let synthetic =
            feed.is_some_and(|f| f.get("kind").and_then(|k| k.as_str()) == Some("synthetic"));
        let rate = feed
            .and_then(|f| f.get("updates_per_sec"))
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)));
        Ok(match (synthetic, rate) {
            (true, Some(r)) => Some(r / self.tick_hz(room)?),
            _ => None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A running server; killed if dropped without [`Server::stop`].
struct Server {
    child: Option<Child>,
    log: PathBuf,
}

enum Stopped {
    Exited(ExitStatus),
    Killed,
}

impl Server {
    fn wait_ready(&mut self, ops_port: u16) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let child = self.child.as_mut().context("server already stopped")?;
        let http = Blocking::default();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the server exited ({status}) before it was ready; its log {}:\n{}",
                    self.log.display(),
                    log_start(&self.log)
                );
            }
            let ready = http.get(&format!("http://127.0.0.1:{ops_port}/readyz"));
            if ready.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the server was not ready within {} s (log {})",
                READY_TIMEOUT.as_secs(),
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM (a graceful shutdown), then SIGKILL after [`STOP_GRACE`].
    fn stop(mut self) -> Result<Stopped> {
        let mut child = self.child.take().context("server already stopped")?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: plain syscall on our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Stopped::Exited(status));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill()?;
        child.wait()?;
        Ok(Stopped::Killed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `cmd` with its stdout and stderr going to `log`.
fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// Runs `cmd` to its end, its output to `log`; kills it after `timeout`.
fn run_logged(cmd: Command, log: &Path, timeout: Duration) -> Result<ExitStatus> {
    let program = format!("{:?}", cmd.get_program());
    let mut child = spawn_logged(cmd, log)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{program} ran past its {} s limit and was killed (log {})",
                timeout.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first lines of a log, for an error message: a server that fails to start says why
/// first (a backtrace may follow).
fn log_start(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines().take(6).collect::<Vec<_>>().join("\n")
}

fn answering(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The server's Prometheus metrics on 127.0.0.1:`port`, if it answers 200.
fn scrape_metrics(port: u16) -> Option<Metrics> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = Blocking::default()
        .get(&url)
        .ok()
        .filter(|r| r.status == 200)?;
    Some(Metrics::parse(&text.text()))
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// A number in a JSON report (booleans as 1 and 0), `None` when absent or null.
fn num(v: &Value, pointer: &str) -> Option<f64> {
    let x = v.pointer(pointer)?;
    x.as_f64().or_else(|| x.as_bool().map(f64::from))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map_or("?".into(), |v| format!("{v:.digits$}"))
}

/// µs as milliseconds.
fn ms(us: Option<f64>) -> String {
    us.map_or("?".into(), |us| format!("{:.1} ms", us / 1e3))
}

fn us(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.2} µs"))
}

fn secs_text(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.1} s"))
}

fn mb(bytes: Option<f64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.1} MB", b / 1e6))
}

/// A whole number with thousands separators, or `?`.
fn whole(v: Option<f64>) -> String {
    v.map_or("?".into(), count)
}

/// A whole number with thousands separators: 15,000.
fn count(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}
