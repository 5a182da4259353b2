//! The churn report: its JSON schema (the field names) and its table. The parts every
//! scenario reports come from [`Common`] and print with the shared [`Table`].

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::limits::NofileLimit;
use crate::report::{Common, Head, LatencySummary, Outcome, Table, Tail, round2};
use crate::settle::Settle;

/// Achieved start rates below this share of the asked one mean the simulator fell behind.
const PACING_TOLERANCE: f64 = 0.98;

#[derive(Debug, Serialize)]
pub struct ChurnReport {
    pub scenario: &'static str,
    pub config: ChurnConfig,
    #[serde(flatten)]
    pub head: Head,
    pub churn: Churned,
    /// From starting to connect to Welcome, per session that joined.
    pub join_latency_us: LatencySummary,
    /// From starting to connect to the first Snapshot, per session that got one.
    pub first_snapshot_latency_us: LatencySummary,
    pub settle: Settle,
    #[serde(flatten)]
    pub tail: Tail,
    /// The open-file limits the run had (null if unreadable).
    pub open_files: Option<NofileLimit>,
}

#[derive(Debug, Serialize)]
pub struct ChurnConfig {
    pub url: String,
    pub room: String,
    pub rate_per_s: f64,
    pub duration_s: f64,
    pub stay_ms: u64,
    pub reset_share: f64,
    pub settle_timeout_s: f64,
}

/// The sessions' comings and goings.
#[derive(Debug, Default, Serialize)]
pub struct Churned {
    pub asked_rate_per_s: f64,
    /// Sessions started (`clients.requested`).
    pub started: u64,
    /// Starts per second between the first start and the last.
    pub achieved_rate_per_s: Option<f64>,
    /// The same for the sessions that joined.
    pub joined_per_s: Option<f64>,
    /// How late each start was against its schedule (session i at i ÷ rate), µs.
    pub start_lag_us: LatencySummary,
    /// Most sessions connected at once.
    pub peak_connected: u64,
    /// Joined sessions that left with a close frame, and those that reset their socket.
    pub polite_closes: u64,
    pub resets: u64,
    /// Joined sessions without a snapshot within 5 s.
    pub joined_without_snapshot: u64,
}

impl Churned {
    /// Adds the rates: `window` is from the first start to the last.
    pub fn fill(&mut self, common: &Common, asked: f64, window: Duration, lag: &Histogram<u64>) {
        let k = &common.head.clients;
        self.asked_rate_per_s = asked;
        self.started = k.requested as u64;
        let secs = window.as_secs_f64();
        self.achieved_rate_per_s =
            (self.started > 1 && secs > 0.0).then(|| (self.started - 1) as f64 / secs);
        self.joined_per_s = self
            .achieved_rate_per_s
            .map(|r| round2(r * k.connected as f64 / self.started as f64));
        self.achieved_rate_per_s = self.achieved_rate_per_s.map(round2);
        self.start_lag_us = LatencySummary::of(lag);
    }

    /// A warning when the starts fell behind the schedule.
    pub fn pacing_warning(&self) -> Option<String> {
        let achieved = self.achieved_rate_per_s?;
        (achieved < self.asked_rate_per_s * PACING_TOLERANCE).then(|| {
            format!(
                "CLIENT LIMIT: client-sim started {achieved:.1} sessions/s of the {:.1} asked \
                 (start lag p99 {} µs): the simulator fell behind its schedule",
                self.asked_rate_per_s, self.start_lag_us.p99
            )
        })
    }
}

impl Outcome for ChurnReport {
    fn summary(&self) -> (String, u64, &str) {
        (self.table(), self.head.clients.connected, &self.config.url)
    }

    fn failure(&self) -> Option<String> {
        self.settle.failure("churn")
    }
}

impl ChurnReport {
    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let c = &self.config;
        let what = format!(
            "{}/s for {} s -> {} room {:?}, stay {} ms, reset share {}",
            c.rate_per_s, c.duration_s, c.url, c.room, c.stay_ms, c.reset_share
        );
        let mut t = Table::titled(self.scenario, what, &self.head);
        let ch = &self.churn;
        let rate = |r: Option<f64>| r.map_or("?".into(), |r| format!("{r:.2}/s"));
        let lag = &ch.start_lag_us;
        t.row(
            "connect rate",
            format!(
                "asked {:.2}/s, started {} ({} achieved; start lag p50/p99/max {}/{}/{} µs), \
                 joined {}",
                ch.asked_rate_per_s,
                ch.started,
                rate(ch.achieved_rate_per_s),
                lag.p50,
                lag.p99,
                lag.max,
                rate(ch.joined_per_s),
            ),
        );
        t.row(
            "sessions",
            format!(
                "peak {} connected at once; left {} polite, {} reset, {} closed by the server; \
                 {} joined without a snapshot",
                ch.peak_connected,
                ch.polite_closes,
                ch.resets,
                self.head.clients.ended_early,
                ch.joined_without_snapshot
            ),
        );
        let m = self.tail.server.metrics.clone().unwrap_or_default();
        self.settle.rows(&mut t, &m, "at the end of the starts");
        t.traffic(&self.tail.traffic);
        t.errors(&self.tail);
        t.latencies(&[
            ("connect -> welcome", &self.join_latency_us),
            ("join -> snapshot", &self.first_snapshot_latency_us),
        ]);
        t.footer(&self.tail);
        self.settle.poll_warning(&mut t);
        t.into_string()
    }
}
