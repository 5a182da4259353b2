//! The spike report: its JSON schema (the field names) and its table. The parts every
//! scenario reports come from [`Common`] and print with the shared [`Table`].

use serde::Serialize;

use crate::limits::NofileLimit;
use crate::report::{Common, Head, LatencySummary, Outcome, Table, Tail};
use crate::settle::Settle;

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

impl Outcome for SpikeReport {
    fn summary(&self) -> (String, u64, &str) {
        (self.table(), self.head.clients.connected, &self.config.url)
    }

    fn failure(&self) -> Option<String> {
        self.settle.failure("spike")
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
        let m = self.tail.server.metrics.clone().unwrap_or_default();
        self.settle.rows(&mut t, &m, "at the peak");
        t.traffic(&self.tail.traffic);
        t.errors(&self.tail);
        t.latencies(&[("join -> snapshot", &self.first_snapshot_latency_us)]);
        t.footer(&self.tail);
        self.settle.poll_warning(&mut t);
        t.into_string()
    }
}
