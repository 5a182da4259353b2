//! After a run that drops its sessions (spike, churn): polling the server's metrics until its
//! connections and tokio tasks are back to where they were before the run, with the RSS on
//! the way, and the report's part about it.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::report::{Table, bytes, round2};
use crate::server_metrics::{self, Sample, ServerMetrics};
use crate::target::Target;

/// How often the metrics are scraped, during a run that watches the peak RSS and after it.
pub const POLL: Duration = Duration::from_millis(250);

/// Alive tokio tasks above the baseline that still count as settled: the scrape's own
/// connection task, and a few short-lived ones (another monitoring scrape, a timer) the
/// server may be running at that moment. Two tasks per session remain, so a leak of even one
/// session shows as 2 more than this.
pub const ALIVE_TASKS_TOLERANCE: u64 = 5;

/// RSS after the run within this fraction of RSS before counts as "back".
const RSS_TOLERANCE: f64 = 0.10;

/// How long after settling the RSS is still watched before it counts as the RSS after.
const RSS_WAIT: Duration = Duration::from_secs(3);

/// The server after the sessions were dropped. Its state before the run and at the end of
/// the hold is in `server.metrics.before` and `.end_of_hold`.
#[derive(Debug, Default, Serialize)]
pub struct Settle {
    /// Back to the baseline within the settle timeout.
    pub settled: bool,
    /// From the drop to the first scrape that was back.
    pub settle_s: Option<f64>,
    /// Scrapes after the drop (every 250 ms).
    pub polls: u64,
    /// Alive tasks above the baseline that still count as back.
    pub alive_tasks_tolerance: u64,
    /// Largest RSS of any scrape, during or after the run.
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

/// Polls `metrics` every [`POLL`] from `dropped_at` until the server is back to the baseline
/// that `server.before` gives, or `timeout` passes; `server` is the run's metrics summary
/// (the peak RSS so far).
pub async fn wait(
    server: &ServerMetrics,
    metrics: &Target,
    dropped_at: Instant,
    timeout: Duration,
) -> Settle {
    let mut settle = Settle {
        alive_tasks_tolerance: ALIVE_TASKS_TOLERANCE,
        rss_peak_bytes: server.rss_peak_bytes,
        ..Settle::default()
    };
    match Baseline::of(server.before.as_ref()) {
        Some(base) => {
            let deadline = dropped_at + timeout;
            poll_until_settled(&mut settle, &base, metrics, dropped_at, deadline).await;
        }
        None => settle.error = Some("no baseline: the scrape before the ramp failed".into()),
    }
    settle
}

/// Scrapes every [`POLL`] until the server is back to its baseline or `deadline` passes.
async fn poll_until_settled(
    settle: &mut Settle,
    base: &Baseline,
    metrics: &Target,
    dropped_at: Instant,
    deadline: Instant,
) {
    let mut timer = tokio::time::interval(POLL);
    loop {
        timer.tick().await;
        match server_metrics::scrape(metrics, dropped_at).await {
            Ok(sample) => {
                let done = settle.observe(base, sample);
                if done {
                    // The server returns freed memory to the system within a second or two
                    // of a drop; the RSS after is the one once it had that chance.
                    let until = Instant::now() + RSS_WAIT;
                    while Instant::now() < until {
                        timer.tick().await;
                        if let Ok(sample) = server_metrics::scrape(metrics, dropped_at).await {
                            settle.observe_rss(base, &sample);
                        }
                    }
                    return;
                }
            }
            Err(e) => {
                settle.poll_failures += 1;
                settle.first_poll_error.get_or_insert(format!("{e:#}"));
            }
        }
        if Instant::now() >= deadline {
            settle.error = Some(format!(
                "not back to the baseline within {:.1} s",
                deadline.duration_since(dropped_at).as_secs_f64()
            ));
            return;
        }
    }
}

/// The server before the run, from the scrape before the ramp.
struct Baseline {
    connections: u64,
    alive_tasks: u64,
    rss_bytes: Option<u64>,
}

impl Baseline {
    fn of(before: Option<&Sample>) -> Option<Baseline> {
        let before = before?;
        Some(Baseline {
            connections: before.tickroom_connections_active?,
            alive_tasks: before.tokio_alive_tasks?,
            rss_bytes: before.process_resident_memory_bytes,
        })
    }
}

impl Settle {
    /// Takes one poll after the drop (`at_s` counts from the drop); true once the server's
    /// connections and alive tasks are back to the baseline.
    fn observe(&mut self, base: &Baseline, sample: Sample) -> bool {
        self.polls += 1;
        self.observe_rss(base, &sample);
        let back = match (sample.tickroom_connections_active, sample.tokio_alive_tasks) {
            (Some(c), Some(t)) => {
                c <= base.connections && t <= base.alive_tasks + self.alive_tasks_tolerance
            }
            _ => false,
        };
        if back {
            self.settled = true;
            self.settle_s = Some(round2(sample.at_s));
        }
        self.last = Some(sample);
        back
    }

    /// Takes a poll's RSS: the peak so far and the RSS after (the latest).
    fn observe_rss(&mut self, base: &Baseline, sample: &Sample) {
        if let Some(rss) = sample.process_resident_memory_bytes {
            self.rss_peak_bytes = Some(self.rss_peak_bytes.map_or(rss, |p| p.max(rss)));
            self.rss_after_bytes = Some(rss);
            self.rss_after_within_10pct = base
                .rss_bytes
                .map(|b| rss as f64 <= b as f64 * (1.0 + RSS_TOLERANCE));
        }
    }

    /// Why the run failed, when the server did not settle (the exit status).
    pub fn failure(&self, after: &str) -> Option<String> {
        (!self.settled).then(|| {
            format!(
                "the server did not settle after the {after}: {}",
                self.error.as_deref().unwrap_or("unknown reason")
            )
        })
    }

    /// The settle, connections, alive tasks and server RSS rows; `end` names the scrape at
    /// the end of the hold (`at the peak`).
    pub fn rows(&self, t: &mut Table, m: &ServerMetrics, end: &str) {
        let n = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
        let at =
            |sample: &Option<Sample>, f: fn(&Sample) -> Option<u64>| n(sample.as_ref().and_then(f));
        t.row(
            "settle",
            match (self.settled, self.settle_s) {
                (true, Some(secs)) => format!("back to the baseline {secs:.2} s after the drop"),
                _ => format!(
                    "NOT SETTLED: {}",
                    self.error.as_deref().unwrap_or("unknown reason")
                ),
            },
        );
        let (before, peak, last) = (&m.before, &m.end_of_hold, &self.last);
        t.row(
            "connections",
            format!(
                "{} before, {} {end}, {} at the last of {} polls",
                at(before, |x| x.tickroom_connections_active),
                at(peak, |x| x.tickroom_connections_active),
                at(last, |x| x.tickroom_connections_active),
                self.polls
            ),
        );
        t.row(
            "alive tasks",
            format!(
                "{} before (+{} tolerated), {} {end}, {} at the last poll",
                at(before, |x| x.tokio_alive_tasks),
                self.alive_tasks_tolerance,
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
                mb(self.rss_peak_bytes),
                mb(self.rss_after_bytes),
                match self.rss_after_within_10pct {
                    Some(true) => "within 10 % of before",
                    Some(false) => "NOT within 10 % of before",
                    None => "?",
                }
            ),
        );
    }

    /// The warning line about failed polls, if any failed.
    pub fn poll_warning(&self, t: &mut Table) {
        if let Some(e) = &self.first_poll_error {
            t.line(format_args!(
                "WARNING: {} scrapes after the drop failed, the first with: {e}",
                self.poll_failures
            ));
        }
    }
}
