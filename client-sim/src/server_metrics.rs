//! The server's own figures from its Prometheus text (`--metrics-url`, `/metrics` on the
//! operations port): the few series a report needs, scraped before the ramp, at the start and
//! the end of the hold (and, when a scenario asks, every so often in between), and what they
//! say over the hold: server CPU, memory, frames and socket writes per second.

use client_sim::toolkit::prom::Metrics;
use serde::Serialize;
use tokio::time::Instant;

use crate::report::round2;
use crate::target::Target;

/// The series read, as the server names them (docs/operations.md). Labelled series are summed
/// over their labels (`tickroom_sessions_active` has one per room kind).
const SERIES: [&str; 8] = [
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "tokio_alive_tasks",
    "tickroom_connections_active",
    "tickroom_sessions_active",
    "tickroom_frames_written_total",
    "tickroom_socket_flushes_total",
    "tickroom_bytes_written_total",
];

/// One scrape. Field names are the series' names; `null` when the server did not export one.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the run started (its first scrape), for reading a timeline.
    pub at_s: f64,
    pub process_resident_memory_bytes: Option<u64>,
    pub process_cpu_seconds_total: Option<f64>,
    pub tokio_alive_tasks: Option<u64>,
    pub tickroom_connections_active: Option<u64>,
    /// Summed over room kinds.
    pub tickroom_sessions_active: Option<u64>,
    pub tickroom_frames_written_total: Option<u64>,
    pub tickroom_socket_flushes_total: Option<u64>,
    pub tickroom_bytes_written_total: Option<u64>,
    #[serde(skip)]
    pub at: Option<Instant>,
}

impl Sample {
    /// The series of [`SERIES`] that the text lacked.
    pub fn missing(&self) -> Vec<&'static str> {
        let present = [
            self.process_resident_memory_bytes.is_some(),
            self.process_cpu_seconds_total.is_some(),
            self.tokio_alive_tasks.is_some(),
            self.tickroom_connections_active.is_some(),
            self.tickroom_sessions_active.is_some(),
            self.tickroom_frames_written_total.is_some(),
            self.tickroom_socket_flushes_total.is_some(),
            self.tickroom_bytes_written_total.is_some(),
        ];
        SERIES
            .iter()
            .zip(present)
            .filter(|(_, p)| !p)
            .map(|(s, _)| *s)
            .collect()
    }
}

/// Reads the series of [`SERIES`] from Prometheus text, each summed over its labels; values
/// that are not finite numbers are ignored.
pub fn parse(text: &str) -> Sample {
    let metrics = Metrics::parse(text);
    let sums: Vec<Option<f64>> = SERIES.iter().map(|s| metrics.sum(s, &[])).collect();
    let int = |i: usize| sums[i].map(|v| v.max(0.0).round() as u64);
    Sample {
        at_s: 0.0,
        process_resident_memory_bytes: int(0),
        process_cpu_seconds_total: sums[1],
        tokio_alive_tasks: int(2),
        tickroom_connections_active: int(3),
        tickroom_sessions_active: int(4),
        tickroom_frames_written_total: int(5),
        tickroom_socket_flushes_total: int(6),
        tickroom_bytes_written_total: int(7),
        at: None,
    }
}

/// One `GET` of the metrics URL, parsed; `epoch` is the run's first scrape (for `at_s`).
pub async fn scrape(target: &Target, epoch: Instant) -> anyhow::Result<Sample> {
    let text = target
        .http()
        .get_text(&target.http_url(&target.path))
        .await?;
    let now = Instant::now();
    Ok(Sample {
        at_s: round2(now.saturating_duration_since(epoch).as_secs_f64()),
        at: Some(now),
        ..parse(&text)
    })
}

/// The scrapes of one run, as [`crate::swarm::drive`] takes them.
#[derive(Debug)]
pub struct Timeline {
    pub target: Target,
    pub epoch: Instant,
    pub before: Option<Sample>,
    pub hold_start: Option<Sample>,
    pub end_of_hold: Option<Sample>,
    /// Largest RSS of any scrape.
    pub rss_peak: Option<u64>,
    pub samples: u64,
    /// Why a named scrape failed (`before: ...`).
    pub errors: Vec<String>,
    /// Periodic scrapes that failed (not named one by one).
    pub periodic_failures: u64,
}

impl Timeline {
    pub fn new(target: Target) -> Self {
        Timeline {
            target,
            epoch: Instant::now(),
            before: None,
            hold_start: None,
            end_of_hold: None,
            rss_peak: None,
            samples: 0,
            errors: Vec::new(),
            periodic_failures: 0,
        }
    }

    /// Scrapes once; a failure is kept under `label`, or counted when there is none.
    pub async fn sample(&mut self, label: Option<&str>) -> Option<Sample> {
        match scrape(&self.target, self.epoch).await {
            Ok(s) => {
                self.samples += 1;
                if let Some(rss) = s.process_resident_memory_bytes {
                    self.rss_peak = Some(self.rss_peak.map_or(rss, |p| p.max(rss)));
                }
                Some(s)
            }
            Err(e) => {
                match label {
                    Some(label) => self.errors.push(format!("{label}: {e:#}")),
                    None => self.periodic_failures += 1,
                }
                None
            }
        }
    }

    /// What the scrapes say over the hold: rates between the hold's start (the sample before
    /// the ramp when that one failed) and its end.
    pub fn summarize(self, tick_p99_us: Option<u64>) -> ServerMetrics {
        let start = self.hold_start.as_ref().or(self.before.as_ref());
        let end = self.end_of_hold.as_ref();
        let window = match (start.and_then(|s| s.at), end.and_then(|e| e.at)) {
            (Some(a), Some(b)) if b > a => Some(b.duration_since(a).as_secs_f64()),
            _ => None,
        };
        let per_s = |f: fn(&Sample) -> Option<u64>| {
            let (a, b, secs) = (f(start?)?, f(end?)?, window?);
            Some(round2(b.saturating_sub(a) as f64 / secs))
        };
        let cpu_percent = (|| {
            let used = end?.process_cpu_seconds_total? - start?.process_cpu_seconds_total?;
            Some(round2(used.max(0.0) / window? * 100.0))
        })();
        let frames_per_s = per_s(|s| s.tickroom_frames_written_total);
        let flushes_per_s = per_s(|s| s.tickroom_socket_flushes_total);
        let missing = self
            .end_of_hold
            .as_ref()
            .or(self.before.as_ref())
            .map(Sample::missing)
            .unwrap_or_default();
        ServerMetrics {
            url: self.target.url,
            hold_window_s: window.map(round2),
            cpu_percent_of_one_core: cpu_percent,
            rss_before_bytes: self
                .before
                .as_ref()
                .and_then(|s| s.process_resident_memory_bytes),
            rss_end_of_hold_bytes: end.and_then(|s| s.process_resident_memory_bytes),
            rss_peak_bytes: self.rss_peak,
            frames_written_per_s: frames_per_s,
            socket_flushes_per_s: flushes_per_s,
            bytes_written_per_s: per_s(|s| s.tickroom_bytes_written_total),
            frames_per_flush: match (frames_per_s, flushes_per_s) {
                (Some(f), Some(w)) if w > 0.0 => Some(round2(f / w)),
                _ => None,
            },
            tick_p99_us,
            samples: self.samples,
            before: self.before,
            hold_start: self.hold_start,
            end_of_hold: self.end_of_hold,
            missing_series: missing,
            scrape_errors: self.errors,
            periodic_failures: self.periodic_failures,
        }
    }
}

/// The server's figures in a report (`server.metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerMetrics {
    /// `--metrics-url`.
    pub url: String,
    /// Seconds between the hold-start and end-of-hold scrapes: the rates' window.
    pub hold_window_s: Option<f64>,
    /// Server CPU over the hold (100 = one core busy).
    pub cpu_percent_of_one_core: Option<f64>,
    pub rss_before_bytes: Option<u64>,
    pub rss_end_of_hold_bytes: Option<u64>,
    /// Largest RSS of any scrape (the spike scenario scrapes every 250 ms).
    pub rss_peak_bytes: Option<u64>,
    /// What the server wrote over the hold, per second.
    pub frames_written_per_s: Option<f64>,
    pub socket_flushes_per_s: Option<f64>,
    pub bytes_written_per_s: Option<f64>,
    /// frames ÷ flushes over the hold (frames a socket write carried on average).
    pub frames_per_flush: Option<f64>,
    /// The room's tick duration p99 at the end of the hold (µs, from `GET /rooms`).
    pub tick_p99_us: Option<u64>,
    /// Scrapes that succeeded.
    pub samples: u64,
    /// Before the ramp, at the start and at the end of the hold.
    pub before: Option<Sample>,
    pub hold_start: Option<Sample>,
    pub end_of_hold: Option<Sample>,
    /// Series the server did not export.
    pub missing_series: Vec<&'static str>,
    pub scrape_errors: Vec<String>,
    pub periodic_failures: u64,
}

impl ServerMetrics {
    /// Why figures are missing, for the report's warnings.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .scrape_errors
            .iter()
            .map(|e| format!("scraping {} failed ({e})", self.url))
            .collect();
        if self.periodic_failures > 0 {
            w.push(format!(
                "{} periodic scrapes of {} failed",
                self.periodic_failures, self.url
            ));
        }
        if !self.missing_series.is_empty() {
            w.push(format!(
                "{} lacks {}",
                self.url,
                self.missing_series.join(", ")
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP process_resident_memory_bytes RSS
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 12345678
process_cpu_seconds_total 1.5
tokio_alive_tasks 7
tickroom_connections_active 3
tickroom_sessions_active{kind=\"game\"} 2
tickroom_sessions_active{kind=\"chat\"} 1
tickroom_sessions_active_other 99
tickroom_frames_written_total 1e+06
tickroom_socket_flushes_total{x=\"a b\"} 500 1700000000000
tickroom_bytes_written_total NaN
";

    #[test]
    fn parses_the_series_it_needs() {
        let s = parse(TEXT);
        assert_eq!(s.process_resident_memory_bytes, Some(12_345_678));
        assert_eq!(s.process_cpu_seconds_total, Some(1.5));
        assert_eq!(s.tokio_alive_tasks, Some(7));
        assert_eq!(s.tickroom_connections_active, Some(3));
        assert_eq!(
            s.tickroom_sessions_active,
            Some(3),
            "summed over kinds only"
        );
        assert_eq!(s.tickroom_frames_written_total, Some(1_000_000));
        assert_eq!(s.tickroom_socket_flushes_total, Some(500));
        assert_eq!(s.tickroom_bytes_written_total, None, "NaN is no value");
        assert_eq!(s.missing(), ["tickroom_bytes_written_total"]);
        assert_eq!(parse("").missing().len(), SERIES.len());
    }

    #[test]
    fn derives_rates_over_the_hold() {
        let t0 = Instant::now();
        let sample = |secs: u64, cpu: f64, rss: u64, frames: u64, flushes: u64| Sample {
            at: Some(t0 + std::time::Duration::from_secs(secs)),
            process_cpu_seconds_total: Some(cpu),
            process_resident_memory_bytes: Some(rss),
            tickroom_frames_written_total: Some(frames),
            tickroom_socket_flushes_total: Some(flushes),
            ..Sample::default()
        };
        let mut t = Timeline::new(crate::testing::placeholder_target(
            "http://127.0.0.1:9/metrics",
        ));
        t.before = Some(sample(0, 1.0, 100, 0, 0));
        t.hold_start = Some(sample(1, 2.0, 150, 10, 10));
        t.end_of_hold = Some(sample(3, 3.0, 200, 410, 210));
        t.rss_peak = Some(250);
        t.errors.push("x: refused".into());
        let m = t.summarize(Some(90));
        assert_eq!(m.hold_window_s, Some(2.0));
        assert_eq!(m.cpu_percent_of_one_core, Some(50.0));
        assert_eq!(
            (m.frames_written_per_s, m.socket_flushes_per_s),
            (Some(200.0), Some(100.0))
        );
        assert_eq!(m.frames_per_flush, Some(2.0));
        assert_eq!(m.bytes_written_per_s, None);
        assert_eq!(
            (
                m.rss_before_bytes,
                m.rss_end_of_hold_bytes,
                m.rss_peak_bytes
            ),
            (Some(100), Some(200), Some(250))
        );
        assert_eq!(m.tick_p99_us, Some(90));
        let w = m.warnings();
        assert!(
            w[0].contains("x: refused") && w[1].contains("lacks"),
            "{w:?}"
        );
    }
}
