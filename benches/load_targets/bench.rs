//! The bench itself: the release binaries, pinning, a target's selection, a server and a
//! client-sim run against it, and what the run's report says about client-side limits.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, ensure};
use clap::ValueEnum;
use client_sim::toolkit::host;
use client_sim::toolkit::prom::Metrics;
use serde_json::Value;

use crate::args::{Args, FULL, Plan, QUICK, Target};
use crate::config::LoadConfig;
use crate::figures::Measured;
use crate::fmt::num;
use crate::process::{
    STOP_GRACE, Server, Stopped, answering, run_logged, scrape_metrics, spawn_logged,
};
use crate::report::utc_now;

pub const SERVER_CPU: usize = 0;
pub const CLIENT_CPU: usize = 1;
/// Beyond a run's own ramp, hold and settle time: start-up, closing, report writing.
pub const RUN_SLACK: Duration = Duration::from_secs(60);
/// Loopback source addresses client-sim spreads every run over. One address has 28,232
/// ephemeral ports, and the connections of the run before (its last 60 s of closes) still hold
/// theirs in TIME_WAIT: on one address the idle run's ramp stalled for seconds at about 13,800
/// sessions, until they expired.
pub const CLIENT_SOURCE_IPS: u64 = 8;
pub const DEFAULT_CONFIG: &str = "config/default.toml";

pub struct Bench {
    pub args: Args,
    pub plan: &'static Plan,
    pub root: PathBuf,
    pub bins: Bins,
    /// (server core, client core); `None` on a one-core machine, where nothing is pinned.
    pub pin: Option<(usize, usize)>,
    pub cores: usize,
    pub config: LoadConfig,
    /// The soft open-file limit, raised to the hard one for this process and its children.
    pub nofile: u64,
    /// When the measurement started, `YYYY-MM-DD HH:MM UTC`.
    pub started_utc: String,
}

pub struct Bins {
    pub tickroom: PathBuf,
    pub client_sim: PathBuf,
    pub probe: PathBuf,
}

impl Bins {
    /// The release binaries next to this bench executable (target/release/deps/..).
    pub fn find() -> Result<Bins> {
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
pub fn newest_probe(deps: &Path) -> Result<PathBuf> {
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
    pub fn new(args: Args) -> Result<Bench> {
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

    pub fn runs(&self) -> u32 {
        self.args.runs
    }

    /// The targets to run, in the order; overhead comes with the game.
    pub fn selected(&self) -> Vec<Target> {
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
    pub fn measure(&self, target: Target) -> Measured {
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
    pub fn file(&self, label: &str, ext: &str) -> PathBuf {
        self.args.out.join(format!("{label}.{ext}"))
    }

    /// `program` pinned to `cpu` with taskset (unpinned on one core).
    pub fn pinned(&self, cpu: usize, program: &Path) -> Command {
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
    pub fn ports_free(&self) -> Result<()> {
        for port in [self.args.port, self.args.ops_port] {
            ensure!(
                !answering(port),
                "port {port} is already answering: stop what listens there or pass \
                 --port/--ops-port"
            );
        }
        Ok(())
    }

    pub fn start_server(&self, label: &str) -> Result<Server> {
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
    pub fn client_sim(
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
}

/// What a scenario's JSON says about limits other than the server's.
pub fn client_limit_notes(report: &Value) -> Vec<String> {
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
pub struct Report {
    pub value: Value,
    pub path: PathBuf,
    /// The server's metrics once client-sim had ended.
    pub after: Option<Metrics>,
    pub notes: Vec<String>,
}
