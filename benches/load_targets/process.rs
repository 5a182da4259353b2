//! The processes of a run: the server (started, waited for, stopped), the children whose
//! output goes to a log, and the server's ports and metrics seen from outside.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use client_sim::toolkit::http::Blocking;
use client_sim::toolkit::prom::Metrics;

pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A running server; killed if dropped without [`Server::stop`].
pub struct Server {
    pub child: Option<Child>,
    pub log: PathBuf,
}

pub enum Stopped {
    Exited(ExitStatus),
    Killed,
}

impl Server {
    pub fn wait_ready(&mut self, ops_port: u16) -> Result<()> {
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
    pub fn stop(mut self) -> Result<Stopped> {
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
pub fn spawn_logged(mut cmd: Command, log: &Path) -> Result<Child> {
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// Runs `cmd` to its end, its output to `log`; kills it after `timeout`.
pub fn run_logged(cmd: Command, log: &Path, timeout: Duration) -> Result<ExitStatus> {
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
pub fn log_start(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines().take(6).collect::<Vec<_>>().join("\n")
}

pub fn answering(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The server's Prometheus metrics on 127.0.0.1:`port`, if it answers 200.
pub fn scrape_metrics(port: u16) -> Option<Metrics> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = Blocking::default()
        .get(&url)
        .ok()
        .filter(|r| r.status == 200)?;
    Some(Metrics::parse(&text.text()))
}
