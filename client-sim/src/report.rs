//! What a run found: the parts every scenario reports ([`Common`]), the game report
//! (serialized as-is for `--json`), the summaries of latency histograms and per-client rates,
//! and the human-readable [`Table`] every scenario prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::limits::NofileLimit;
use crate::server_metrics::{Sample, ServerMetrics};
use crate::server_stats::RoomStats;

/// The largest latency a histogram tells apart, in µs; larger samples count as this value.
pub const LATENCY_MAX_US: u64 = 60_000_000;

/// An empty latency histogram in µs, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// What `main` needs of every scenario's report.
pub trait Outcome: Serialize {
    /// The table to print, the clients that connected, and the URL the run targeted.
    fn summary(&self) -> (String, u64, &str);

    /// Why the run failed although clients connected (printed, and the exit status).
    fn failure(&self) -> Option<String> {
        None
    }
}

/// Implements [`Outcome`] for a report with a `table()`, a `head` and a `config.url`.
macro_rules! outcome {
    ($report:ty) => {
        impl $crate::report::Outcome for $report {
            fn summary(&self) -> (String, u64, &str) {
                (self.table(), self.head.clients.connected, &self.config.url)
            }
        }
    };
}
pub(crate) use outcome;

outcome!(Report);

/// Full report of a game run. Field names are the JSON schema.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub config: RunConfig,
    #[serde(flatten)]
    pub head: Head,
    pub snapshots: Snapshots,
    pub snapshot_latency_us: LatencySummary,
    pub input_ack_latency_us: LatencySummary,
    pub inputs: Inputs,
    /// Protocol 2 views (absent with protocol 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub views: Option<Views>,
    /// `Join.protocol` the clients spoke.
    pub protocol: u32,
    /// The verified clients' snapshots: bytes and objects (see [`ViewSizes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view_sizes: Option<ViewSizes>,
    #[serde(flatten)]
    pub tail: Tail,
}

/// What the verified clients' snapshots cost, per snapshot and per object.
#[derive(Debug, Serialize)]
pub struct ViewSizes {
    pub totals: client_sim::toolkit::sizes::Sizes,
    pub bytes_per_snapshot: f64,
    /// The objects' part of a snapshot (see `Sizes::object_bytes`).
    pub object_bytes_per_snapshot: f64,
    pub objects_per_snapshot: f64,
    pub moving_per_snapshot: f64,
    pub resting_per_snapshot: f64,
    /// Object bytes over moving objects: everything the objects cost, charged to the ones
    /// that moved.
    pub object_bytes_per_moving_object: Option<f64>,
    /// Whole messages over moving objects.
    pub bytes_per_moving_object: Option<f64>,
}

impl ViewSizes {
    pub fn of(t: client_sim::toolkit::sizes::Sizes) -> Option<Self> {
        (t.snapshots > 0).then(|| {
            let n = t.snapshots as f64;
            let per_moving = |b: u64| (t.moving > 0).then(|| round2(b as f64 / t.moving as f64));
            ViewSizes {
                bytes_per_snapshot: round2(t.frame_bytes as f64 / n),
                object_bytes_per_snapshot: round2(t.object_bytes as f64 / n),
                objects_per_snapshot: round2(t.objects as f64 / n),
                moving_per_snapshot: round2(t.moving as f64 / n),
                resting_per_snapshot: round2(t.resting as f64 / n),
                object_bytes_per_moving_object: per_moving(t.object_bytes),
                bytes_per_moving_object: per_moving(t.frame_bytes),
                totals: t,
            }
        })
    }
}

/// What the game clients' protocol 2 views did during the hold.
#[derive(Debug, Serialize)]
pub struct Views {
    /// Clients that rebuilt their whole view and checked every checksum.
    pub verified_clients: usize,
    /// Every client (the others follow only their own avatar).
    pub all: crate::views::ViewCounts,
    /// The verified clients alone; `mismatches` must be 0.
    pub verified: crate::views::ViewCounts,
    /// Verified clients: from a delta on a missed base to the next view that applied.
    pub recovery_us: LatencySummary,
}

/// The fields every report has right after its `config` (flattened into it).
#[derive(Debug, Serialize)]
pub struct Head {
    pub timing: Timing,
    /// Tick rate announced in Welcome (absent when no client joined).
    pub tick_rate_hz: Option<u32>,
    pub clients: Clients,
}

/// The fields every report ends with (flattened into it).
#[derive(Debug, Serialize)]
pub struct Tail {
    pub traffic: Traffic,
    /// Error messages received, by code name (`rate_limited`, `unknown_symbol`, ...).
    pub errors: BTreeMap<String, u64>,
    /// WebSocket close codes the server sent before the run ended, by code.
    pub close_codes: BTreeMap<u16, u64>,
    /// Binary frames that did not decode as a ServerMessage.
    pub decode_errors: u64,
    pub server: ServerSide,
    pub client_cpu: ClientCpu,
    pub client_processes: ClientProcesses,
    /// Limits of the client side that shaped the run (`open_files`, `ephemeral_ports`,
    /// `client_cpu`); empty when nothing but the server did.
    pub client_limits: Vec<&'static str>,
    pub warnings: Vec<String>,
}

/// What every scenario reports besides its own measurements, as the swarm summarized it.
#[derive(Debug)]
pub struct Common {
    pub head: Head,
    pub tail: Tail,
    pub nofile: Option<NofileLimit>,
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
    /// `connect`, `timeout`, `rejected`, `closed`, `redirect_loop`, `redirect_refused`, ...,
    /// with counts.
    pub failed_join_reasons: BTreeMap<String, u64>,
    /// One failure message, to make "connection refused" and the like obvious.
    pub first_join_error: Option<String>,
    /// Redirects followed to reach the room: a node of a cluster answered `Join` with
    /// `ERROR_CODE_REDIRECT` (the room lives on another node) and the client joined there.
    pub redirects: u64,
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
    /// What the server's Prometheus metrics say about the hold; absent in a part of the mix
    /// (the mix report has them once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<ServerMetrics>,
}

#[derive(Debug, Serialize)]
pub struct ClientCpu {
    /// Over ramp and hold; 100 = one core busy.
    pub percent_of_one_core: Option<f64>,
    pub cores: usize,
    /// Above 90 % of `cores`: the figures may show the simulator's limit, not the server's.
    pub saturated: bool,
}

/// How the clients ran.
#[derive(Debug, Clone, Serialize)]
pub struct ClientProcesses {
    /// Processes holding the clients: 1 is this one; more are worker processes.
    pub workers: u32,
    /// Loopback addresses the clients connected from (1: the kernel's choice).
    pub source_ips: u8,
    /// Each worker's CPU over ramp and hold (100 = one core), in worker order.
    pub worker_cpu_percent: Vec<Option<f64>>,
}

impl Default for ClientProcesses {
    fn default() -> Self {
        ClientProcesses {
            workers: 1,
            source_ips: 1,
            worker_cpu_percent: Vec::new(),
        }
    }
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

/// The nearest-rank `q` quantile of sorted values (`None` for none): a value some client
/// really had.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
}

impl RateSummary {
    pub fn of(mut rates: Vec<f64>) -> Self {
        if rates.is_empty() {
            return Self::default();
        }
        rates.sort_by(f64::total_cmp);
        // Nearest rank, so p10 is a rate some client really had.
        let rank = |q: f64| nearest_rank(&rates, q).expect("rates is not empty");
        RateSummary {
            clients: rates.len(),
            median: round2(rank(0.5)),
            p10: round2(rank(0.1)),
            min: round2(rates[0]),
            max: round2(rates[rates.len() - 1]),
        }
    }
}

impl RateSummary {
    /// `median M, p10 P, min A, max B (tick rate R Hz, N clients)`, for tables.
    pub fn describe(&self, tick_rate_hz: Option<u32>) -> String {
        format!(
            "median {:.1}, p10 {:.1}, min {:.1}, max {:.1} (tick rate {}, {} clients)",
            self.median,
            self.p10,
            self.min,
            self.max,
            tick_rate_hz.map_or("?".into(), |hz| format!("{hz} Hz")),
            self.clients,
        )
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Report {
    /// The game report around what every scenario measures.
    pub fn new(
        common: Common,
        config: RunConfig,
        snapshots: Snapshots,
        snapshot_latency_us: LatencySummary,
        input_ack_latency_us: LatencySummary,
        inputs: Inputs,
    ) -> Self {
        Report {
            scenario: "game",
            config,
            head: common.head,
            snapshots,
            snapshot_latency_us,
            input_ack_latency_us,
            inputs,
            views: None,
            protocol: 1,
            view_sizes: None,
            tail: common.tail,
        }
    }

    /// Adds what the verified clients' snapshots cost.
    pub fn with_sizes(mut self, sizes: client_sim::toolkit::sizes::Sizes) -> Self {
        self.view_sizes = ViewSizes::of(sizes);
        self
    }

    /// Adds what protocol 2 views did (nothing for protocol 1).
    pub fn with_views(mut self, protocol: u32, views: Views) -> Self {
        self.protocol = protocol;
        if protocol >= 2 {
            self.views = Some(views);
        }
        self
    }

    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let c = &self.config;
        let what = format!(
            "{} clients -> {} room {:?}, input {} Hz",
            c.clients, c.url, c.room, c.input_hz,
        );
        let mut t = Table::titled(self.scenario, what, &self.head);
        let s = &self.snapshots;
        t.row(
            "snapshots/s/client",
            s.per_client_per_s.describe(self.head.tick_rate_hz),
        );
        t.row(
            "snapshots",
            format!(
                "{} received, {} gaps, {} missing ticks",
                s.received, s.gaps, s.missing_ticks
            ),
        );
        t.traffic(&self.tail.traffic);
        t.row(
            "inputs",
            format!("{} sent, {} acked", self.inputs.sent, self.inputs.acked),
        );
        t.row("protocol", self.protocol);
        if let Some(z) = &self.view_sizes {
            t.row(
                "snapshot size",
                format!(
                    "{} B ({} B of objects) for {} objects, {} moving, {} resting",
                    z.bytes_per_snapshot,
                    z.object_bytes_per_snapshot,
                    z.objects_per_snapshot,
                    z.moving_per_snapshot,
                    z.resting_per_snapshot
                ),
            );
            if let (Some(o), Some(b)) =
                (z.object_bytes_per_moving_object, z.bytes_per_moving_object)
            {
                t.row(
                    "per moving object",
                    format!("{o} B of objects, {b} B of messages"),
                );
            }
        }
        if let Some(v) = &self.views {
            let (a, f) = (&v.all, &v.verified);
            t.row(
                "views",
                format!(
                    "{} keyframes, {} deltas, {} missed bases",
                    a.keyframes, a.deltas, a.missed_bases
                ),
            );
            t.row(
                "verified views",
                format!(
                    "{} clients: {} keyframes, {} deltas, {} missed bases, {} mismatches",
                    v.verified_clients, f.keyframes, f.deltas, f.missed_bases, f.mismatches
                ),
            );
        }
        t.errors(&self.tail);
        let mut latencies = vec![
            ("snapshot", &self.snapshot_latency_us),
            ("input -> ack", &self.input_ack_latency_us),
        ];
        if let Some(v) = self.views.as_ref().filter(|v| v.recovery_us.samples > 0) {
            latencies.push(("missed base -> view", &v.recovery_us));
        }
        t.latencies(&latencies);
        t.footer(&self.tail);
        t.0
    }
}

/// `n / secs` rounded, 0 for an empty window.
pub fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        round2(n as f64 / secs)
    } else {
        0.0
    }
}

impl Timing {
    /// `ramp R s, hold H s` and whether it was interrupted, for table headers.
    pub fn describe(&self) -> String {
        format!(
            "ramp {:.1} s, hold {:.1} s{}",
            self.ramp_s,
            self.hold_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        )
    }
}

/// Writes a report as pretty JSON.
pub fn write_json(report: &impl Serialize, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// The plain-text report: labelled rows, the latency table and the common footer.
#[derive(Default)]
pub struct Table(String);

impl Table {
    /// A table that starts with `client-sim SCENARIO: WHAT, ramp .., hold ..` and the
    /// clients row.
    pub fn titled(scenario: &str, what: impl std::fmt::Display, head: &Head) -> Self {
        let mut t = Table::default();
        t.line(format_args!(
            "client-sim {scenario}: {what}, {}",
            head.timing.describe()
        ));
        t.clients(&head.clients);
        t
    }

    pub fn line(&mut self, text: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{text}");
    }

    pub fn row(&mut self, label: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "  {label:<20} {value}");
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn clients(&mut self, k: &Clients) {
        self.row(
            "clients",
            format!(
                "connected {}/{}, failed joins {}{}, ended early {}{}{}",
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
                if k.redirects > 0 {
                    format!(", redirects {}", k.redirects)
                } else {
                    String::new()
                },
            ),
        );
        if let Some(e) = &k.first_join_error {
            self.row("first join error", e);
        }
    }

    pub fn traffic(&mut self, tr: &Traffic) {
        self.row(
            "traffic (hold)",
            format!(
                "{:.0} frames/s, {}/s ({} frames, {} in all)",
                tr.frames_per_s,
                bytes(tr.bytes_per_s),
                tr.hold_frames,
                bytes(tr.bytes as f64),
            ),
        );
    }

    /// Errors, close codes and decode errors.
    pub fn errors(&mut self, tail: &Tail) {
        self.row("errors", list(&tail.errors));
        self.row("close codes", list(&tail.close_codes));
        if tail.decode_errors > 0 {
            self.row("decode errors", tail.decode_errors);
        }
    }

    /// The latency table, between blank lines.
    pub fn latencies(&mut self, rows: &[(&str, &LatencySummary)]) {
        self.line("");
        self.line(format_args!(
            "  {:<20} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency (µs)", "samples", "p50", "p90", "p99", "p99.9", "max"
        ));
        for (label, l) in rows {
            if l.samples == 0 {
                self.line(format_args!("  {label:<20} {:>9} {:>8}", 0, "-"));
            } else {
                self.line(format_args!(
                    "  {label:<20} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    l.samples, l.p50, l.p90, l.p99, l.p999, l.max
                ));
            }
        }
        self.line("");
    }

    /// Server samples, client CPU and warnings.
    pub fn footer(&mut self, tail: &Tail) {
        let (sv, cpu) = (&tail.server, &tail.client_cpu);
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
        self.row("server before", room_line(&sv.before));
        self.row("server end of hold", room_line(&sv.end_of_hold));
        if let (Some(o), Some(s)) = (sv.overruns_during_run, sv.skipped_ticks_during_run) {
            self.row(
                "server during run",
                format!("{o} overruns, {s} skipped ticks"),
            );
        }
        if let Some(m) = &sv.metrics {
            self.server_metrics(m);
        }
        self.client_cpu(cpu, &tail.client_processes);
        for w in &tail.warnings {
            self.line(format_args!("WARNING: {w}"));
        }
    }
}

impl Table {
    /// Client CPU, and the worker processes and source addresses when there are more than
    /// one.
    pub fn client_cpu(&mut self, cpu: &ClientCpu, p: &ClientProcesses) {
        let pct = |p: Option<f64>| p.map_or("?".into(), |p| format!("{p:.0} %"));
        self.row(
            "client cpu",
            format!(
                "{} of one core ({} cores available)",
                pct(cpu.percent_of_one_core),
                cpu.cores,
            ),
        );
        if p.workers > 1 || p.source_ips > 1 {
            let each: Vec<String> = p.worker_cpu_percent.iter().map(|&c| pct(c)).collect();
            self.row(
                "client processes",
                format!(
                    "{} workers (cpu {}), {} source addresses",
                    p.workers,
                    if each.is_empty() {
                        "-".into()
                    } else {
                        each.join(", ")
                    },
                    p.source_ips
                ),
            );
        }
    }

    /// The rows of the server's Prometheus figures.
    pub fn server_metrics(&mut self, m: &ServerMetrics) {
        if m.samples == 0 {
            self.row("server metrics", format!("none ({} not scraped)", m.url));
            return;
        }
        let mb = |b: Option<u64>| b.map_or("?".into(), |b| bytes(b as f64));
        let num = |v: Option<f64>, digits: usize| v.map_or("?".into(), |v| format!("{v:.digits$}"));
        self.row(
            "server cpu, memory",
            format!(
                "{} % of one core over the hold; RSS {} before, {} end of hold, peak {}",
                num(m.cpu_percent_of_one_core, 0),
                mb(m.rss_before_bytes),
                mb(m.rss_end_of_hold_bytes),
                mb(m.rss_peak_bytes),
            ),
        );
        self.row(
            "server writes",
            format!(
                "{} frames/s, {} flushes/s ({} frames per flush), {}/s",
                num(m.frames_written_per_s, 0),
                num(m.socket_flushes_per_s, 0),
                num(m.frames_per_flush, 2),
                m.bytes_written_per_s.map_or("?".into(), bytes),
            ),
        );
        let pair = |f: fn(&Sample) -> Option<u64>| {
            let at =
                |s: &Option<Sample>| s.as_ref().and_then(f).map_or("?".into(), |v| v.to_string());
            format!("{} -> {}", at(&m.before), at(&m.end_of_hold))
        };
        self.row(
            "server tasks",
            format!(
                "alive tasks {}, connections {}, sessions {} (before -> end of hold)",
                pair(|s| s.tokio_alive_tasks),
                pair(|s| s.tickroom_connections_active),
                pair(|s| s.tickroom_sessions_active),
            ),
        );
    }
}

/// `a 1, b 2`, or `none` for an empty map.
pub fn list<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    let items: Vec<String> = map.iter().map(|(k, n)| format!("{k} {n}")).collect();
    items.join(", ")
}

/// ` (a 1, b 2)`, or nothing for an empty map.
pub fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    format!(" ({})", list(map))
}

pub fn bytes(n: f64) -> String {
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
    fn nearest_rank_picks_real_values() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(nearest_rank(&v, 0.5), Some(5));
        assert_eq!(nearest_rank(&v, 0.99), Some(10));
        assert_eq!(nearest_rank(&v, 0.0), Some(1));
        assert_eq!(nearest_rank(&[7], 0.99), Some(7));
        assert_eq!(nearest_rank::<u32>(&[], 0.5), None);
    }

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

    /// Server metrics with every field set.
    fn sample_metrics() -> ServerMetrics {
        let sample = |at_s, rss, tasks, conns| Sample {
            at_s,
            process_resident_memory_bytes: Some(rss),
            process_cpu_seconds_total: Some(at_s * 0.5),
            tokio_alive_tasks: Some(tasks),
            tickroom_connections_active: Some(conns),
            tickroom_sessions_active: Some(conns),
            tickroom_frames_written_total: Some(1000),
            tickroom_socket_flushes_total: Some(900),
            tickroom_bytes_written_total: Some(90_000),
            at: None,
        };
        ServerMetrics {
            url: "http://127.0.0.1:9090/metrics".into(),
            hold_window_s: Some(10.0),
            cpu_percent_of_one_core: Some(35.5),
            rss_before_bytes: Some(12_000_000),
            rss_end_of_hold_bytes: Some(20_000_000),
            rss_peak_bytes: Some(21_000_000),
            frames_written_per_s: Some(480.0),
            socket_flushes_per_s: Some(470.0),
            bytes_written_per_s: Some(800_000.0),
            frames_per_flush: Some(1.02),
            tick_p99_us: Some(200),
            samples: 3,
            before: Some(sample(0.0, 12_000_000, 5, 0)),
            hold_start: Some(sample(0.1, 19_000_000, 21, 8)),
            end_of_hold: Some(sample(10.1, 20_000_000, 21, 8)),
            missing_series: vec![],
            scrape_errors: vec![],
            periodic_failures: 0,
        }
    }

    /// A game report with every field set, against the files in `testdata/`: the game table
    /// and JSON schema must not change by accident.
    fn sample_game_report() -> Report {
        use crate::server_stats::TickDuration;
        let room = |sessions| RoomStats {
            name: "arena".into(),
            kind: "game".into(),
            sessions,
            tick_rate_hz: 60,
            tick: 1234,
            tick_duration_us: TickDuration {
                p50: 100,
                p99: 200,
                max: 300,
            },
            ticks_total: 1234,
            overruns_total: 2,
            skipped_ticks_total: 1,
            command_queue_depth: 0,
        };
        let mut h = latency_histogram();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let common = Common {
            head: Head {
                timing: Timing {
                    ramp_s: 0.02,
                    hold_s: 10.0,
                    wall_s: 10.5,
                    interrupted: true,
                },
                tick_rate_hz: Some(60),
                clients: Clients {
                    requested: 10,
                    connected: 8,
                    failed_joins: 2,
                    failed_join_reasons: [("connect".to_owned(), 1), ("timeout".to_owned(), 1)]
                        .into(),
                    first_join_error: Some("connect: refused".into()),
                    redirects: 3,
                    ended_early: 1,
                    aborted: 1,
                },
            },
            tail: Tail {
                traffic: Traffic {
                    frames: 5000,
                    bytes: 9_000_000,
                    hold_frames: 4800,
                    hold_bytes: 8_000_000,
                    frames_per_s: 480.0,
                    bytes_per_s: 800_000.0,
                },
                errors: [("rate_limited".to_owned(), 2)].into(),
                close_codes: [(1000, 3), (4000, 1)].into(),
                decode_errors: 1,
                server: ServerSide {
                    before: Some(room(0)),
                    end_of_hold: Some(room(8)),
                    overruns_during_run: Some(2),
                    skipped_ticks_during_run: Some(1),
                    fetch_errors: vec!["x".into()],
                    metrics: Some(sample_metrics()),
                },
                client_cpu: ClientCpu {
                    percent_of_one_core: Some(42.5),
                    cores: 2,
                    saturated: false,
                },
                client_processes: ClientProcesses {
                    workers: 2,
                    source_ips: 1,
                    worker_cpu_percent: vec![Some(20.4), None],
                },
                client_limits: vec!["client_cpu"],
                warnings: vec!["w1".into()],
            },
            nofile: None,
        };
        Report::new(
            common,
            RunConfig {
                url: "ws://127.0.0.1:8080/ws".into(),
                room: "arena".into(),
                clients: 10,
                ramp_per_s: 500.0,
                duration_s: 10.0,
                input_hz: 30.0,
            },
            Snapshots {
                received: 4800,
                per_client_per_s: RateSummary::of(vec![59.9, 60.0, 58.0]),
                gaps: 3,
                missing_ticks: 4,
            },
            LatencySummary::of(&h),
            LatencySummary::default(),
            Inputs {
                sent: 100,
                acked: 90,
            },
        )
        .with_sizes(client_sim::toolkit::sizes::Sizes {
            snapshots: 400,
            frame_bytes: 24_000,
            object_bytes: 8_000,
            objects: 4_000,
            moving: 3_000,
            resting: 800,
        })
        .with_views(
            2,
            Views {
                verified_clients: 4,
                all: crate::views::ViewCounts {
                    keyframes: 12,
                    deltas: 4_700,
                    missed_bases: 1,
                    mismatches: 0,
                },
                verified: crate::views::ViewCounts {
                    keyframes: 5,
                    deltas: 395,
                    missed_bases: 1,
                    mismatches: 0,
                },
                recovery_us: LatencySummary::of(&h),
            },
        )
    }

    #[test]
    fn game_table_and_json_are_stable() {
        let r = sample_game_report();
        if std::env::var_os("REGENERATE_GOLDEN").is_some() {
            std::fs::write("testdata/game-report.txt", r.table()).unwrap();
            std::fs::write(
                "testdata/game-report.json",
                serde_json::to_string_pretty(&r).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(r.table(), include_str!("../testdata/game-report.txt"));
        assert_eq!(
            serde_json::to_string_pretty(&r).unwrap(),
            include_str!("../testdata/game-report.json")
        );
    }
}
