//! Worker processes, for runs with more clients than one process may hold sockets (the hard
//! open-file limit cannot be raised). The parent re-executes its own binary with the same
//! command line and the hidden `--worker-index i --worker-count K --worker-start-us T
//! --worker-out FILE`. Worker i runs the clients whose number is i modulo K, on the common
//! timeline that starts at Unix time T (so together they ramp as one swarm would), prints a
//! JSON progress line a second on stdout, holds until the parent closes its stdin (after it
//! sampled the server at the end of the hold), and writes its clients' outcomes and its
//! latency histograms to FILE. The parent samples the server, shows the combined progress,
//! and merges the workers' files into the one report a single process would have made.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::drive::{GRACE, Gathered, Joint, Run, Scenario};
use crate::limits;
use crate::swarm::{Conn, Swarm, SwarmArgs};
use crate::wire;

/// Most worker processes a run may use.
const MAX_WORKERS: u32 = 64;
/// Time workers get from being started to the common start of the ramp.
pub const LEAD: Duration = Duration::from_secs(1);
/// Time a worker gets, after the grace period its clients have, to write its file and exit.
const HAND_IN: Duration = Duration::from_secs(10);

/// The hidden options of a worker process (see the module's documentation).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct WorkerFlags {
    #[arg(long, hide = true, requires_all = ["worker_count", "worker_start_us", "worker_out"])]
    pub worker_index: Option<u32>,
    #[arg(long, hide = true)]
    pub worker_count: Option<u32>,
    #[arg(long, hide = true)]
    pub worker_start_us: Option<i64>,
    #[arg(long, hide = true)]
    pub worker_out: Option<PathBuf>,
}

/// This process's part in a run.
pub enum Role {
    /// All clients here.
    Local,
    /// Clients in this many worker processes; this one samples the server and merges.
    Parent(u32),
    /// One worker's share.
    Worker(WorkerSpec),
}

pub struct WorkerSpec {
    pub index: u32,
    count: u32,
    start_us: i64,
    out: PathBuf,
}

impl Role {
    /// The role the options give: a worker when the hidden flags say so; else as many
    /// processes as `--workers` (default: as the open-file limit needs for `clients`).
    pub fn of(args: &SwarmArgs, clients: usize) -> anyhow::Result<Role> {
        let f = &args.worker;
        if let Some(index) = f.worker_index {
            let (Some(count), Some(start_us), Some(out)) =
                (f.worker_count, f.worker_start_us, f.worker_out.clone())
            else {
                bail!("--worker-index needs --worker-count, --worker-start-us and --worker-out");
            };
            ensure!(index < count, "--worker-index must be below --worker-count");
            return Ok(Role::Worker(WorkerSpec {
                index,
                count,
                start_us,
                out,
            }));
        }
        let count = args
            .workers
            .unwrap_or_else(|| auto_workers(clients))
            .min(clients.max(1) as u32);
        if count <= 1 {
            return Ok(Role::Local);
        }
        ensure!(
            args.joint.is_none(),
            "this run is part of another and cannot have worker processes"
        );
        ensure!(
            !args.argv.is_empty(),
            "worker processes need the command line to start them with"
        );
        Ok(Role::Parent(count))
    }

    pub fn is_worker(&self) -> bool {
        matches!(self, Role::Worker(_))
    }

    /// Whether client `id` runs in this process.
    pub fn owns(&self, id: usize) -> bool {
        match self {
            Role::Worker(w) => id % w.count as usize == w.index as usize,
            _ => true,
        }
    }

    /// The most clients one process holds.
    pub fn clients_per_process(&self, clients: usize) -> usize {
        match self {
            Role::Local => clients,
            Role::Parent(count) => clients.div_ceil(*count as usize),
            Role::Worker(w) => clients.div_ceil(w.count as usize),
        }
    }

    /// `, K worker processes, S source addresses` where there is more than one.
    pub fn describe(&self, source_ips: u8) -> String {
        let mut s = String::new();
        if let Role::Parent(count) = self {
            s += &format!(", {count} worker processes");
        }
        if source_ips > 1 {
            s += &format!(", {source_ips} source addresses");
        }
        s
    }
}

/// Workers for `clients` clients under this process's open-file limit (which the workers
/// share: it is per process).
fn auto_workers(clients: usize) -> u32 {
    let per_process = limits::nofile_limit().map_or(u64::MAX, |l| l.max_clients.max(1));
    (clients as u64)
        .div_ceil(per_process)
        .clamp(1, u64::from(MAX_WORKERS)) as u32
}

impl WorkerSpec {
    /// The common start, and the parent's word to stop: its closing this process's stdin.
    pub fn joint(&self) -> Joint {
        let (tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 64];
            while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = tx.send(true);
        });
        Joint {
            start: wire::from_unix_us(self.start_us),
            stop,
        }
    }
}

/// What a worker hands its parent.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "O: Serialize", deserialize = "O: DeserializeOwned"))]
struct Part<O> {
    outcomes: Vec<(Conn, O)>,
    /// [`Scenario::shards`], each merged, as [`wire::buckets`].
    histograms: Vec<Vec<(u64, u64)>>,
    cpu_percent: Option<f64>,
    aborted: u64,
    interrupted: bool,
    tick_rate_hz: u32,
    warnings: Vec<String>,
}

/// The end of a worker's run: it wrote its share, and prints no report of its own.
#[derive(Debug)]
pub struct WorkerDone;

impl std::fmt::Display for WorkerDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("worker done")
    }
}

impl std::error::Error for WorkerDone {}

/// Writes a worker's share to its `--worker-out` file; [`WorkerDone`] when it did.
pub fn hand_in<S: Scenario, O: Serialize>(
    w: &WorkerSpec,
    run: &Run<S>,
    gathered: Gathered<O>,
    cpu_percent: Option<f64>,
    warnings: Vec<String>,
) -> anyhow::Error {
    let part = Part {
        outcomes: gathered.outcomes,
        histograms: run
            .scenario
            .shards()
            .iter()
            .map(|s| wire::buckets(&s.merged()))
            .collect(),
        cpu_percent,
        aborted: gathered.aborted,
        interrupted: gathered.interrupted,
        tick_rate_hz: run
            .swarm
            .tick_rate_hz
            .load(std::sync::atomic::Ordering::Relaxed),
        warnings,
    };
    match write_part(&w.out, &part) {
        Ok(()) => WorkerDone.into(),
        Err(e) => e,
    }
}

fn write_part<O: Serialize>(path: &Path, part: &Part<O>) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut out, part)?;
    std::io::Write::flush(&mut out).with_context(|| format!("writing {}", path.display()))
}

/// One worker's progress line.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Progress {
    pub worker: u32,
    pub live: u64,
    pub frames: u64,
    pub cpu: Option<f64>,
}

/// Prints a worker's progress line for its parent.
pub fn report_progress(worker: u32, live: u64, frames: u64, cpu: Option<f64>) {
    let line = Progress {
        worker,
        live,
        frames,
        cpu,
    };
    if let Ok(text) = serde_json::to_string(&line) {
        println!("{text}");
    }
}

/// The workers' latest progress lines.
pub struct Status(Mutex<Vec<Progress>>);

impl Status {
    pub fn workers(&self) -> usize {
        self.0.lock().map_or(0, |p| p.len())
    }

    /// All workers together (CPU summed; unknown while any worker's is).
    pub fn sum(&self) -> Progress {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().fold(
            Progress {
                cpu: Some(0.0),
                ..Progress::default()
            },
            |sum, p| Progress {
                worker: 0,
                live: sum.live + p.live,
                frames: sum.frames + p.frames,
                cpu: sum.cpu.zip(p.cpu).map(|(a, b)| a + b),
            },
        )
    }
}

/// The parent's worker processes.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    readers: Vec<JoinHandle<()>>,
    /// Clients each worker runs.
    shares: Vec<u64>,
    dir: PathBuf,
    status: Arc<Status>,
}

impl Fleet {
    /// Starts `count` workers for `clients` clients on `args.argv`, their common timeline
    /// starting at `start` (at least [`LEAD`] ahead, for them to get ready).
    pub fn spawn(
        args: &SwarmArgs,
        count: u32,
        clients: usize,
        start: Instant,
    ) -> anyhow::Result<Fleet> {
        let start_us = wire::to_unix_us(start);
        let dir =
            std::env::temp_dir().join(format!("client-sim-{}-{}", std::process::id(), start_us));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            readers: Vec::new(),
            shares: (0..count as usize)
                .map(|i| (clients + count as usize - 1 - i) as u64 / u64::from(count))
                .collect(),
            dir,
            status: Arc::new(Status(Mutex::new(vec![
                Progress::default();
                count as usize
            ]))),
        };
        for index in 0..count {
            let mut argv = args.argv.clone();
            argv.extend([
                "--worker-index".into(),
                index.to_string(),
                "--worker-count".into(),
                count.to_string(),
                "--worker-start-us".into(),
                start_us.to_string(),
                "--worker-out".into(),
                fleet.part_path(index as usize).display().to_string(),
            ]);
            let mut child = command(&argv)?
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                bail!("worker {index} has no stdin or stdout");
            };
            let status = fleet.status.clone();
            fleet.readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(p) = serde_json::from_str::<Progress>(&line)
                        && let Some(slot) = status.0.lock().unwrap().get_mut(p.worker as usize)
                    {
                        *slot = p;
                    }
                }
            }));
            fleet.children.push(child);
            fleet.stdins.push(stdin);
        }
        Ok(fleet)
    }

    fn part_path(&self, index: usize) -> PathBuf {
        part_path(&self.dir, index)
    }

    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Tells the workers to stop (closes their stdin), waits for them (bounded: a worker
    /// still running then is killed) and merges what they wrote: the outcomes as they are,
    /// the histograms into `scenario`'s own.
    pub async fn finish<S: Scenario, O: DeserializeOwned>(
        &mut self,
        scenario: &S,
        swarm: &Swarm,
    ) -> Gathered<O> {
        self.stdins.clear();
        let deadline = Instant::now() + GRACE + HAND_IN;
        let mut gathered = Gathered::new(Vec::new());
        for (index, child) in self.children.iter_mut().enumerate() {
            let exit = match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) => Some(status),
                Ok(Err(e)) => {
                    gathered
                        .warnings
                        .push(format!("worker {index}: waiting failed: {e}"));
                    None
                }
                Err(_) => {
                    let _ = child.start_kill();
                    gathered.warnings.push(format!(
                        "worker {index} did not finish in time and was killed"
                    ));
                    None
                }
            };
            match read_part::<O>(&part_path(&self.dir, index)) {
                Ok(part) => merge(&mut gathered, part, index, scenario, swarm),
                Err(e) => {
                    gathered.aborted += self.shares[index];
                    gathered.worker_cpu.push(None);
                    gathered.warnings.push(format!(
                        "worker {index} handed in nothing ({}): {e:#}",
                        exit.map_or("no exit status".into(), describe_exit)
                    ));
                }
            }
        }
        for reader in self.readers.drain(..) {
            reader.abort();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        gathered
    }
}

fn part_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("worker-{index}.json"))
}

fn read_part<O: DeserializeOwned>(path: &Path) -> anyhow::Result<Part<O>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))
}

/// Adds worker `index`'s part to what the others handed in.
fn merge<S: Scenario, O>(
    gathered: &mut Gathered<O>,
    mut part: Part<O>,
    index: usize,
    scenario: &S,
    swarm: &Swarm,
) {
    gathered.outcomes.append(&mut part.outcomes);
    for (shards, buckets) in scenario.shards().iter().zip(&part.histograms) {
        shards.absorb(buckets);
    }
    let _ = swarm.tick_rate_hz.compare_exchange(
        0,
        part.tick_rate_hz,
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
    gathered.aborted += part.aborted;
    gathered.interrupted |= part.interrupted;
    gathered.worker_cpu.push(part.cpu_percent);
    gathered.warnings.extend(
        part.warnings
            .into_iter()
            .map(|w| format!("worker {index}: {w}")),
    );
}

fn describe_exit(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".into(),
    }
}

/// The command that starts a worker with `argv`: this binary again. Test builds start the
/// test binary instead, on [`tests::worker_entry`], with `argv` in [`ARGV_ENV`].
fn command(argv: &[String]) -> anyhow::Result<Command> {
    let exe = std::env::current_exe().context("locating this binary to start workers")?;
    let mut cmd = Command::new(exe);
    if cfg!(test) {
        cmd.args([
            "workers::tests::worker_entry",
            "--exact",
            "--nocapture",
            "-q",
        ])
        .env(ARGV_ENV, serde_json::to_string(argv)?);
    } else {
        cmd.args(argv);
    }
    Ok(cmd)
}

/// Test builds: the worker's command line, as a JSON list.
const ARGV_ENV: &str = "CLIENT_SIM_TEST_WORKER_ARGV";

#[cfg(test)]
pub(crate) mod tests;
