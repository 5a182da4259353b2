//! What a run found: the report structure (serialized as-is for `--json`), the summaries of
//! latency histograms and per-client rates, and the human-readable table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::server_stats::RoomStats;

/// The largest latency a histogram tells apart, in µs; larger samples count as this value.
pub const LATENCY_MAX_US: u64 = 60_000_000;

/// An empty latency histogram in µs, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Full report of one scenario run. Field names are the JSON schema.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub config: RunConfig,
    pub timing: Timing,
    /// Tick rate announced in Welcome (absent when no client joined).
    pub tick_rate_hz: Option<u32>,
    pub clients: Clients,
    pub snapshots: Snapshots,
    pub snapshot_latency_us: LatencySummary,
    pub input_ack_latency_us: LatencySummary,
    pub inputs: Inputs,
    pub traffic: Traffic,
    /// Error messages received, by code name (`rate_limited`, `busy`, ...).
    pub errors: BTreeMap<String, u64>,
    /// WebSocket close codes the server sent before the run ended, by code.
    pub close_codes: BTreeMap<u16, u64>,
    /// Binary frames that did not decode as a ServerMessage.
    pub decode_errors: u64,
    pub server: ServerSide,
    pub client_cpu: ClientCpu,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RunConfig {
    pub url: String,
    pub room: String,
    pub clients: usize,
    pub ramp_per_s: f64,
    pub duration_s: f64,
    pub input_hz: f64,
}

#[derive(Debug, Serialize)]
pub struct Timing {
    /// Time over which clients were started.
    pub ramp_s: f64,
    /// Hold actually run (shorter than `duration_s` when interrupted).
    pub hold_s: f64,
    /// Whole run, from the first connect to the last client finishing.
    pub wall_s: f64,
    pub interrupted: bool,
}

#[derive(Debug, Serialize)]
pub struct Clients {
    pub requested: usize,
    /// Clients that got a Welcome.
    pub connected: u64,
    pub failed_joins: u64,
    /// `connect`, `timeout`, `rejected` or `closed`, with counts.
    pub failed_join_reasons: BTreeMap<String, u64>,
    /// One failure message, to make "connection refused" and the like obvious.
    pub first_join_error: Option<String>,
    /// Joined clients whose connection ended before the hold did.
    pub ended_early: u64,
    /// Client tasks that did not finish within the grace period and were aborted.
    pub aborted: u64,
}

#[derive(Debug, Serialize)]
pub struct Snapshots {
    /// Snapshots received within the clients' measurement windows.
    pub received: u64,
    pub per_client_per_s: RateSummary,
    /// Times a snapshot's tick jumped by more than one.
    pub gaps: u64,
    /// Ticks skipped in those jumps.
    pub missing_ticks: u64,
}

#[derive(Debug, Serialize)]
pub struct Inputs {
    pub sent: u64,
    /// Inputs acknowledged within the measurement window (each gives one latency sample).
    pub acked: u64,
}

#[derive(Debug, Serialize)]
pub struct Traffic {
    /// Everything received, ramp and hold.
    pub frames: u64,
    pub bytes: u64,
    /// Received during the hold only; the rates below divide these by `timing.hold_s`.
    pub hold_frames: u64,
    pub hold_bytes: u64,
    pub frames_per_s: f64,
    pub bytes_per_s: f64,
}

#[derive(Debug, Serialize)]
pub struct ServerSide {
    /// The target room's `/rooms` row before the first client connected.
    pub before: Option<RoomStats>,
    /// The same at the end of the hold, all clients still connected.
    pub end_of_hold: Option<RoomStats>,
    /// Counter deltas between the two samples.
    pub overruns_during_run: Option<u64>,
    pub skipped_ticks_during_run: Option<u64>,
    /// Why a sample is missing.
    pub fetch_errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ClientCpu {
    /// Over ramp and hold; 100 = one core busy.
    pub percent_of_one_core: Option<f64>,
    pub cores: usize,
    /// Above 90 % of `cores`: the figures may show the simulator's limit, not the server's.
    pub saturated: bool,
}

/// Percentiles of a latency histogram, in µs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub samples: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        LatencySummary {
            samples: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: round2(h.mean()),
        }
    }
}

/// Distribution of a per-client rate. The low tail matters: one starved client is a failure
/// even when the median looks fine.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RateSummary {
    /// Clients with a measurement window long enough to give a rate.
    pub clients: usize,
    pub median: f64,
    pub p10: f64,
    pub min: f64,
    pub max: f64,
}

impl RateSummary {
    pub fn of(mut rates: Vec<f64>) -> Self {
        if rates.is_empty() {
            return Self::default();
        }
        rates.sort_by(f64::total_cmp);
        // Nearest rank, so p10 is a rate some client really had.
        let rank =
            |q: f64| rates[((q * rates.len() as f64).ceil() as usize).clamp(1, rates.len()) - 1];
        RateSummary {
            clients: rates.len(),
            median: round2(rank(0.5)),
            p10: round2(rank(0.1)),
            min: round2(rates[0]),
            max: round2(rates[rates.len() - 1]),
        }
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Report {
    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.config;
        let _ = writeln!(
            t,
            "client-sim {}: {} clients -> {} room {:?}, ramp {:.1} s, hold {:.1} s{}, input {} Hz",
            self.scenario,
            c.clients,
            c.url,
            c.room,
            self.timing.ramp_s,
            self.timing.hold_s,
            if self.timing.interrupted {
                " (interrupted)"
            } else {
                ""
            },
            c.input_hz,
        );
        let k = &self.clients;
        let mut row = |label: &str, value: String| {
            let _ = writeln!(t, "  {label:<20} {value}");
        };
        row(
            "clients",
            format!(
                "connected {}/{}, failed joins {}{}, ended early {}{}",
                k.connected,
                k.requested,
                k.failed_joins,
                counts(&k.failed_join_reasons),
                k.ended_early,
                if k.aborted > 0 {
                    format!(", aborted {}", k.aborted)
                } else {
                    String::new()
                },
            ),
        );
        if let Some(e) = &k.first_join_error {
            row("first join error", e.clone());
        }
        let s = &self.snapshots;
        let r = &s.per_client_per_s;
        row(
            "snapshots/s/client",
            format!(
                "median {:.1}, p10 {:.1}, min {:.1}, max {:.1} (tick rate {}, {} clients)",
                r.median,
                r.p10,
                r.min,
                r.max,
                self.tick_rate_hz
                    .map_or("?".into(), |hz| format!("{hz} Hz")),
                r.clients,
            ),
        );
        row(
            "snapshots",
            format!(
                "{} received, {} gaps, {} missing ticks",
                s.received, s.gaps, s.missing_ticks
            ),
        );
        let tr = &self.traffic;
        row(
            "traffic (hold)",
            format!(
                "{:.0} frames/s, {}/s ({} frames, {} in all)",
                tr.frames_per_s,
                bytes(tr.bytes_per_s),
                tr.hold_frames,
                bytes(tr.bytes as f64),
            ),
        );
        row(
            "inputs",
            format!("{} sent, {} acked", self.inputs.sent, self.inputs.acked),
        );
        row(
            "errors",
            if self.errors.is_empty() {
                "none".into()
            } else {
                counts(&self.errors).trim().into()
            },
        );
        row(
            "close codes",
            if self.close_codes.is_empty() {
                "none".into()
            } else {
                let named: BTreeMap<String, u64> = self
                    .close_codes
                    .iter()
                    .map(|(code, n)| (code.to_string(), *n))
                    .collect();
                counts(&named).trim().into()
            },
        );
        if self.decode_errors > 0 {
            row("decode errors", self.decode_errors.to_string());
        }
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "  {:<20} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency (µs)", "samples", "p50", "p90", "p99", "p99.9", "max"
        );
        for (label, l) in [
            ("snapshot", &self.snapshot_latency_us),
            ("input -> ack", &self.input_ack_latency_us),
        ] {
            if l.samples == 0 {
                let _ = writeln!(t, "  {label:<20} {:>9} {:>8}", 0, "-");
            } else {
                let _ = writeln!(
                    t,
                    "  {label:<20} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    l.samples, l.p50, l.p90, l.p99, l.p999, l.max
                );
            }
        }
        let _ = writeln!(t);
        let sv = &self.server;
        let room_line = |r: &Option<RoomStats>| match r {
            Some(r) => format!(
                "sessions {}, tick p50/p99/max {}/{}/{} µs, tick {}",
                r.sessions,
                r.tick_duration_us.p50,
                r.tick_duration_us.p99,
                r.tick_duration_us.max,
                r.tick
            ),
            None => "-".into(),
        };
        let _ = writeln!(t, "  {:<20} {}", "server before", room_line(&sv.before));
        let _ = writeln!(
            t,
            "  {:<20} {}",
            "server end of hold",
            room_line(&sv.end_of_hold)
        );
        if let (Some(o), Some(s)) = (sv.overruns_during_run, sv.skipped_ticks_during_run) {
            let _ = writeln!(
                t,
                "  {:<20} {o} overruns, {s} skipped ticks",
                "server during run"
            );
        }
        let cpu = &self.client_cpu;
        let _ = writeln!(
            t,
            "  {:<20} {} of one core ({} cores available)",
            "client cpu",
            cpu.percent_of_one_core
                .map_or("?".into(), |p| format!("{p:.0} %")),
            cpu.cores,
        );
        for w in &self.warnings {
            let _ = writeln!(t, "WARNING: {w}");
        }
        t
    }
}

/// ` (a 1, b 2)`, or nothing for an empty map.
fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    let items: Vec<String> = map.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(" ({})", items.join(", "))
}

fn bytes(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.2} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_summary_uses_nearest_rank() {
        let r = RateSummary::of((1..=10).map(f64::from).collect());
        assert_eq!(
            (r.median, r.p10, r.min, r.max, r.clients),
            (5.0, 1.0, 1.0, 10.0, 10)
        );
        assert_eq!(RateSummary::of(vec![]).clients, 0);
    }

    #[test]
    fn latency_summary_of_empty_and_filled() {
        let mut h = latency_histogram();
        assert_eq!(LatencySummary::of(&h).samples, 0);
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let s = LatencySummary::of(&h);
        assert_eq!((s.samples, s.p50, s.max), (1000, 500, 1000));
        assert!(s.p99 >= 990 && s.p999 >= s.p99);
    }
}
