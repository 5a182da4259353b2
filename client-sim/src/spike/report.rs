//! The spike report: its JSON schema (the field names) and its table. The parts every
//! scenario reports come from [`Common`] and print with the shared [`Table`].

use serde::Serialize;

use crate::proc::NofileLimit;
use crate::report::{Common, Head, LatencySummary, Outcome, Table, Tail, bytes};
use crate::server_metrics::Sample;

#[derive(Debug, Serialize)]
pub struct SpikeReport {
    pub scenario: &'static str,
    pub config: SpikeConfig,
    #[serde(flatten)]
    pub head: Head,
    /// From starting to connect to the first Snapshot, per client that got one.
    pub first_snapshot_latency_us: LatencySummary,
    /// Joined clients that had no snapshot before the drop.
    pub joined_without_snapshot: u64,
    pub settle: Settle,
    #[serde(flatten)]
    pub tail: Tail,
    /// The open-file limits the run had (null if unreadable).
    pub open_files: Option<NofileLimit>,
}

#[derive(Debug, Serialize)]
pub struct SpikeConfig {
    pub url: String,
    pub room: String,
    pub clients: usize,
    pub ramp_per_s: f64,
    pub duration_s: f64,
    pub settle_timeout_s: f64,
}

/// The server after every socket was reset. Its state before the ramp and at the end of the
/// hold (the baseline and the peak) is in `server.metrics.before` and `.end_of_hold`.
#[derive(Debug, Default, Serialize)]
pub struct Settle {
    /// Back to the baseline within `config.settle_timeout_s`.
    pub settled: bool,
    /// From the drop to the first scrape that was back.
    pub settle_s: Option<f64>,
    /// Scrapes after the drop (every 250 ms).
    pub polls: u64,
    /// Alive tasks above the baseline that still count as back.
    pub alive_tasks_tolerance: u64,
    /// Largest RSS of any scrape, during or after the spike.
    pub rss_peak_bytes: Option<u64>,
    /// At the last poll (the settled one, or the one at the timeout), and whether that is
    /// within 10 % of the RSS before the ramp.
    pub rss_after_bytes: Option<u64>,
    pub rss_after_within_10pct: Option<bool>,
    /// The last poll.
    pub last: Option<Sample>,
    /// Why it did not settle (timeout, no baseline).
    pub error: Option<String>,
    /// Polls after the drop that failed, and the first one's error.
    pub poll_failures: u64,
    pub first_poll_error: Option<String>,
}

impl Outcome for SpikeReport {
    fn summary(&self) -> (String, &Head, &str) {
        (self.table(), &self.head, &self.config.url)
    }

    fn failure(&self) -> Option<String> {
        let s = &self.settle;
        (!s.settled).then(|| {
            format!(
                "the server did not settle after the spike: {}",
                s.error.as_deref().unwrap_or("unknown reason")
            )
        })
    }
}

impl SpikeReport {
    pub fn new(common: Common, config: SpikeConfig, settle: Settle) -> Self {
        SpikeReport {
            scenario: "spike",
            config,
            head: common.head,
            first_snapshot_latency_us: LatencySummary::default(),
            joined_without_snapshot: 0,
            settle,
            tail: common.tail,
            open_files: common.nofile,
        }
    }

    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let c = &self.config;
        let what = format!(
            "{} clients -> {} room {:?}, every socket reset after the hold",
            c.clients, c.url, c.room,
        );
        let mut t = Table::titled(self.scenario, what, &self.head);
        t.row(
            "first snapshot",
            format!(
                "{} clients, {} joined without one",
                self.first_snapshot_latency_us.samples, self.joined_without_snapshot
            ),
        );
        let (s, m) = (&self.settle, &self.tail.server.metrics);
        let n = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
        let at =
            |sample: &Option<Sample>, f: fn(&Sample) -> Option<u64>| n(sample.as_ref().and_then(f));
        t.row(
            "settle",
            match (s.settled, s.settle_s) {
                (true, Some(secs)) => format!("back to the baseline {secs:.2} s after the drop"),
                _ => format!(
                    "NOT SETTLED: {}",
                    s.error.as_deref().unwrap_or("unknown reason")
                ),
            },
        );
        let (before, peak, last) = (&m.before, &m.end_of_hold, &s.last);
        t.row(
            "connections",
            format!(
                "{} before, {} at the peak, {} at the last of {} polls",
                at(before, |x| x.tickroom_connections_active),
                at(peak, |x| x.tickroom_connections_active),
                at(last, |x| x.tickroom_connections_active),
                s.polls
            ),
        );
        t.row(
            "alive tasks",
            format!(
                "{} before (+{} tolerated), {} at the peak, {} at the last poll",
                at(before, |x| x.tokio_alive_tasks),
                s.alive_tasks_tolerance,
                at(peak, |x| x.tokio_alive_tasks),
                at(last, |x| x.tokio_alive_tasks),
            ),
        );
        let mb = |b: Option<u64>| b.map_or("?".into(), |b| bytes(b as f64));
        t.row(
            "server rss",
            format!(
                "{} before, {} peak, {} after ({})",
                mb(m.rss_before_bytes),
                mb(s.rss_peak_bytes),
                mb(s.rss_after_bytes),
                match s.rss_after_within_10pct {
                    Some(true) => "within 10 % of before",
                    Some(false) => "NOT within 10 % of before",
                    None => "?",
                }
            ),
        );
        t.traffic(&self.tail.traffic);
        t.errors(&self.tail);
        t.latencies(&[("join -> snapshot", &self.first_snapshot_latency_us)]);
        t.footer(&self.tail);
        if let Some(e) = &s.first_poll_error {
            t.line(format_args!(
                "WARNING: {} scrapes after the drop failed, the first with: {e}",
                s.poll_failures
            ));
        }
        t.into_string()
    }
}
