//! The write probe (benches/write_probe.rs) beside every run: the frame size it is given,
//! how it is started, and what its JSON says.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde::Serialize;
use serde_json::Value;

use crate::bench::{Bench, RUN_SLACK};
use crate::fmt::num;
use crate::process::run_logged;

/// Descriptors a process keeps beyond one per socket (as client-sim and the probe count).
pub const FD_SLACK: u64 = 64;
/// One loopback source address has about 28,000 ephemeral ports towards one port.
pub const CONNECTIONS_PER_SOURCE_IP: u64 = 25_000;
/// Reader threads of the sleep-mode probe: with one, the reader finds new data every time it
/// comes back to `epoll_wait` and seldom sleeps; with a few, each holding a share of the
/// sockets, most paced writes wake a sleeping one (docs/benchmarks.md, "Write probe").
pub const SLEEP_READERS: u64 = 4;

/// How the probe's readers wait (benches/write_probe.rs `--reader`).
#[derive(Debug, Clone, Copy)]
pub enum ProbeMode {
    /// One reader thread draining as fast as it can; the writer unpaced (the limit).
    Busy,
    /// `SLEEP_READERS` readers blocking in `epoll_wait`; the writer paced at a run's own
    /// frames per second, in bursts at its room's tick rate.
    Sleep { rate: u64, tick_hz: f64 },
}

impl Bench {
    /// Runs the write probe: `connections` loopback sockets, one `frame_bytes` write each per
    /// round, writer on the server's core and reader on the client's (the server is stopped).
    pub fn probe(
        &self,
        label: &str,
        connections: u64,
        frame_bytes: u64,
        mode: ProbeMode,
    ) -> Result<Probe> {
        ensure!(
            connections + FD_SLACK <= self.nofile,
            "the probe cannot open {connections} connections: RLIMIT_NOFILE is {}",
            self.nofile
        );
        let name = match mode {
            ProbeMode::Busy => "probe",
            ProbeMode::Sleep { .. } => "probe-sleep",
        };
        let json = self.file(label, &format!("{name}.json"));
        let log = self.file(label, &format!("{name}.log"));
        let _ = fs::remove_file(&json);
        let mut cmd = Command::new(&self.bins.probe);
        cmd.args(["--connections", &connections.to_string()])
            .args(["--frame-bytes", &frame_bytes.to_string()])
            .args(["--seconds", &self.plan.probe_seconds.to_string()])
            .arg("--json")
            .arg(&json);
        if let ProbeMode::Sleep { rate, tick_hz } = mode {
            let readers = SLEEP_READERS.min(connections);
            cmd.args(["--reader", "sleep", "--readers", &readers.to_string()])
                .args(["--rate", &rate.max(1).to_string()])
                .args(["--tick-hz", &tick_hz.to_string()]);
        }
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
pub fn frame_bytes(report: &Value, per: &str, fallback: u64) -> (u64, String) {
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

/// The write probe's result (benches/write_probe.rs `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub connections: u64,
    pub frame_bytes: u64,
    pub writes_per_s: f64,
    pub cpu_ns_per_write: f64,
    pub would_block: u64,
    pub writer_cpu_percent: f64,
    pub reader: String,
    /// `busy` or `sleep` (absent from an older probe's JSON: busy).
    pub reader_mode: String,
    /// The readers' sleeps in `epoll_wait` per write: how often a write had one to wake.
    pub reader_sleeps_per_write: Option<f64>,
    /// Writes per second the writer was paced at (0: unpaced).
    pub rate: u64,
    pub json: PathBuf,
}

impl Probe {
    pub fn from_json(v: &Value, json: PathBuf) -> Result<Probe> {
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
            reader_mode: v["reader_mode"].as_str().unwrap_or("busy").to_owned(),
            reader_sleeps_per_write: v["reader_sleeps_per_write"].as_f64(),
            rate: v["rate"].as_u64().unwrap_or(0),
            json,
        })
    }

    /// What limited the probe, if anything but the writer's own CPU did.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.would_block > 0 {
            notes.push(format!(
                "PROBE LIMIT: {} probe writes would block: its reader, not the writer, set \
                 writes/s",
                self.would_block
            ));
        }
        if self.rate > 0 {
            // Paced: the writer idles by design; what matters is that it kept the pace and
            // that its readers slept.
            if self.writes_per_s < 0.9 * self.rate as f64 {
                notes.push(format!(
                    "PROBE LIMIT: the {} probe wrote {:.0} of the {} writes/s it was paced at",
                    self.reader_mode, self.writes_per_s, self.rate
                ));
            }
            if self.reader_mode == "sleep" && self.reader_sleeps_per_write.is_some_and(|s| s < 0.5)
            {
                notes.push(format!(
                    "PROBE: the sleep-mode probe's readers slept at only {:.2} of its writes",
                    self.reader_sleeps_per_write.unwrap_or(0.0)
                ));
            }
        } else if self.writer_cpu_percent < 90.0 {
            notes.push(format!(
                "PROBE LIMIT: the probe's writer had only {:.0} % of its core (shared): \
                 writes/s is below this machine's limit",
                self.writer_cpu_percent
            ));
        }
        notes
    }
}
