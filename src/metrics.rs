//! Prometheus metrics of one server: its own recorder (no process-wide one, so two servers
//! in one process report independently), the names, and the handles each part records
//! through, registered once.
//!
//! Room threads record through [`RoomMetrics`], built from the [`Output`] of each tick.
//! Socket writers bump [`WriteCounters`] (atomic adds, no registry lookup per write).
//! docs/operations.md lists every metric.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tickroom_proto::v1::{ErrorCode, RoomKind};

use crate::engine::{LeaveReason, Output, kind_name};

/// Buckets for per-tick durations: fine below 1 ms (p99 of a healthy tick), up to two
/// 60 Hz periods, and on to half a second for a large fan-out.
const TICK_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002,
    0.004, 0.008, 0.012, 0.016_7, 0.025, 0.033, 0.05, 0.1, 0.2, 0.5,
];

/// Every error code a client can be answered with, for counters that start at zero.
const ERROR_CODES: [ErrorCode; 16] = [
    ErrorCode::Unspecified,
    ErrorCode::Malformed,
    ErrorCode::UnknownMessage,
    ErrorCode::NotInRoom,
    ErrorCode::RoomNotFound,
    ErrorCode::RoomFull,
    ErrorCode::RateLimited,
    ErrorCode::Busy,
    ErrorCode::InvalidArgument,
    ErrorCode::Unavailable,
    ErrorCode::UnknownSymbol,
    ErrorCode::LimitExceeded,
    ErrorCode::Blocked,
    ErrorCode::ContentRejected,
    ErrorCode::NameRequired,
    ErrorCode::Forbidden,
];

/// Why writes to a session were deferred (`tickroom_writes_deferred_total{reason}`).
const DEFERRED: [&str; 2] = ["unsent", "window"];

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Counters of socket writes, bumped by whoever writes (flushers, writer tasks).
#[derive(Debug, Clone)]
pub struct WriteCounters {
    pub frames: Counter,
    pub bytes: Counter,
    pub flushes: Counter,
}

/// One server's metrics. See the module docs.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    writes: WriteCounters,
    rejected: Vec<Counter>,
    flush: Histogram,
    /// Largest reliable backlog a writer found since the last scrape.
    reliable_backlog_max: AtomicU64,
    /// Most unsent bytes a socket held when a writer stopped writing to it, since the last
    /// scrape.
    unsent_max: AtomicU64,
    deferred: [Counter; 2],
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect()
}

impl Metrics {
    /// A fresh recorder with every fixed-label counter at zero, so dashboards and `rate()`
    /// see them before the first event.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), TICK_BUCKETS)
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        let mut m = Self {
            writes: WriteCounters {
                frames: Counter::noop(),
                bytes: Counter::noop(),
                flushes: Counter::noop(),
            },
            rejected: Vec::new(),
            flush: Histogram::noop(),
            reliable_backlog_max: AtomicU64::new(0),
            unsent_max: AtomicU64::new(0),
            deferred: [Counter::noop(), Counter::noop()],
            recorder,
            handle,
        };
        m.writes = WriteCounters {
            frames: m.counter("tickroom_frames_written_total", &[]),
            bytes: m.counter("tickroom_bytes_written_total", &[]),
            flushes: m.counter("tickroom_socket_flushes_total", &[]),
        };
        m.rejected = ERROR_CODES
            .iter()
            .map(|&code| {
                m.counter(
                    "tickroom_messages_rejected_total",
                    &[("reason", reject_label(code))],
                )
            })
            .collect();
        m.flush = m.histogram("tickroom_flush_duration_seconds", &[]);
        m.deferred =
            DEFERRED.map(|why| m.counter("tickroom_writes_deferred_total", &[("reason", why)]));
        for c in &m.deferred {
            c.increment(0);
        }
        for c in [
            m.counter("tickroom_slow_consumer_disconnects_total", &[]),
            m.counter("tickroom_snapshots_conflated_total", &[]),
            m.writes.frames.clone(),
        ] {
            c.increment(0);
        }
        for reason in ["missing", "invalid", "expired"] {
            m.counter("tickroom_auth_failures_total", &[("reason", reason)])
                .increment(0);
        }
        for reason in ["capacity", "per_ip", "rate"] {
            m.counter("tickroom_connections_refused_total", &[("reason", reason)])
                .increment(0);
        }
        for outcome in ["broadcast", "dropped_cap", "blocked"] {
            m.counter("tickroom_chat_messages_total", &[("outcome", outcome)])
                .increment(0);
        }
        for c in &m.rejected {
            c.increment(0);
        }
        m
    }

    /// The counter `name{labels}` of this server (registered on first use).
    pub fn counter(&self, name: &'static str, labels_: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels(labels_)), &METADATA)
    }

    pub fn gauge(&self, name: &'static str, labels_: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels(labels_)), &METADATA)
    }

    pub fn histogram(&self, name: &'static str, labels_: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&Key::from_parts(name, labels(labels_)), &METADATA)
    }

    pub fn writes(&self) -> &WriteCounters {
        &self.writes
    }

    /// One flusher pass: from its wake-up to its last session's write, i.e. how long a room's
    /// hand-out takes to reach every socket (a chat batch's fan-out).
    pub fn flush_duration(&self) -> &Histogram {
        &self.flush
    }

    /// A writer found `n` reliable frames waiting.
    pub fn reliable_backlog(&self, n: usize) {
        self.reliable_backlog_max.fetch_max(n as u64, Relaxed);
    }

    /// A writer stopped writing to a session: its socket held as many unsent bytes as allowed
    /// (`unsent`), or the client's flow-control window was used up (`window`).
    pub fn writes_deferred(&self, reason: &str) {
        if let Some(i) = DEFERRED.iter().position(|r| *r == reason) {
            self.deferred[i].increment(1);
        }
    }

    /// A socket held `n` unsent bytes when a writer stopped writing to it.
    pub fn unsent_bytes(&self, n: usize) {
        self.unsent_max.fetch_max(n as u64, Relaxed);
    }

    /// A client message answered with an `Error` (or dropped by the rate limit).
    pub fn message_rejected(&self, code: ErrorCode) {
        if let Some(c) = usize::try_from(code as i32)
            .ok()
            .and_then(|i| self.rejected.get(i))
        {
            c.increment(1);
        }
    }

    /// A session's connection ended, whether or not it was in a room; `reason` is the
    /// transport's label for it, one of a small fixed set.
    pub fn connection_closed(&self, reason: &'static str, slow_consumer: bool) {
        self.counter("tickroom_connections_closed_total", &[("reason", reason)])
            .increment(1);
        if slow_consumer {
            self.counter("tickroom_slow_consumer_disconnects_total", &[])
                .increment(1);
        }
    }

    /// A token was refused (`missing`, `invalid`, `expired`).
    pub fn auth_failed(&self, reason: &'static str) {
        self.counter("tickroom_auth_failures_total", &[("reason", reason)])
            .increment(1);
    }

    /// A connection was refused at admission (`capacity`, `per_ip`, `rate`).
    pub fn connection_refused(&self, reason: &'static str) {
        self.counter("tickroom_connections_refused_total", &[("reason", reason)])
            .increment(1);
    }

    /// The handles a room's driver records through.
    pub fn room(&self, kind: RoomKind, room: &str) -> RoomMetrics {
        let kind = kind_name(kind);
        let m = RoomMetrics {
            tick: self.histogram("tickroom_tick_duration_seconds", &[("kind", kind)]),
            encode: self.histogram("tickroom_encode_duration_seconds", &[("kind", kind)]),
            handout: self.histogram("tickroom_handout_duration_seconds", &[("kind", kind)]),
            overruns: self.counter("tickroom_tick_overruns_total", &[("kind", kind)]),
            skipped: self.counter("tickroom_ticks_skipped_total", &[("kind", kind)]),
            ticks: self.counter("tickroom_ticks_total", &[("kind", kind)]),
            // Rooms are few and named by the operator (or capped auto-creation).
            queue_depth: self.gauge("tickroom_command_queue_depth", &[("room", room)]),
            joins: self.counter("tickroom_joins_total", &[("kind", kind)]),
            active: self.gauge("tickroom_sessions_active", &[("kind", kind)]),
            leaves: LeaveReason::ALL.map(|r| {
                let c = self.counter(
                    "tickroom_leaves_total",
                    &[("kind", kind), ("reason", r.as_str())],
                );
                c.increment(0);
                c
            }),
            rejected: self.rejected.clone(),
            conflated: self.counter("tickroom_snapshots_conflated_total", &[]),
            failures: self.counter("tickroom_room_failures_total", &[("kind", kind)]),
        };
        m.joins.increment(0);
        m.failures.increment(0);
        m.active.increment(0.0);
        m
    }

    /// Sets the figures read at scrape time (connections, tasks, the process), then renders
    /// the text exposition format.
    pub fn render(&self, connections_active: u64) -> String {
        self.gauge("tickroom_reliable_queue_max", &[])
            .set(self.reliable_backlog_max.swap(0, Relaxed) as f64);
        self.gauge("tickroom_socket_unsent_bytes_max", &[])
            .set(self.unsent_max.swap(0, Relaxed) as f64);
        self.gauge("tickroom_connections_active", &[])
            .set(connections_active as f64);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.gauge("tokio_alive_tasks", &[])
                .set(rt.metrics().num_alive_tasks() as f64);
        }
        if let Some((rss, cpu)) = process_figures() {
            self.gauge("process_resident_memory_bytes", &[])
                .set(rss as f64);
            // Prometheus' conventional name; a gauge because the value is fractional seconds.
            self.gauge("process_cpu_seconds_total", &[])
                .set(cpu.as_secs_f64());
        }
        self.handle.render()
    }

    /// Keeps histogram memory bounded between scrapes (call every few seconds).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

fn reject_label(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Malformed => "malformed",
        ErrorCode::UnknownMessage => "unknown_message",
        ErrorCode::NotInRoom => "not_in_room",
        ErrorCode::RoomNotFound => "room_not_found",
        ErrorCode::RoomFull => "room_full",
        ErrorCode::RateLimited => "rate_limited",
        ErrorCode::Busy => "busy",
        ErrorCode::InvalidArgument => "invalid_argument",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::UnknownSymbol => "unknown_symbol",
        ErrorCode::LimitExceeded => "limit_exceeded",
        ErrorCode::Blocked => "blocked",
        ErrorCode::ContentRejected => "content_rejected",
        ErrorCode::NameRequired => "name_required",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::Redirect => "redirect",
        ErrorCode::Unspecified => "other",
    }
}

/// Handles a room's driver records through, registered once per room.
#[derive(Debug)]
pub struct RoomMetrics {
    tick: Histogram,
    encode: Histogram,
    handout: Histogram,
    overruns: Counter,
    skipped: Counter,
    ticks: Counter,
    queue_depth: Gauge,
    joins: Counter,
    active: Gauge,
    leaves: [Counter; LeaveReason::ALL.len()],
    rejected: Vec<Counter>,
    conflated: Counter,
    failures: Counter,
}

/// What the driver measured of one tick besides the room's [`Output`].
#[derive(Debug, Clone, Copy)]
pub struct TickRecord {
    pub duration: Duration,
    pub overrun: bool,
    pub skipped: u64,
    pub queue_depth: usize,
}

impl RoomMetrics {
    /// Records one tick: its figures and what its output says happened.
    pub fn record(&self, t: TickRecord, out: &Output) {
        self.ticks.increment(1);
        self.tick.record(t.duration.as_secs_f64());
        self.encode.record(out.encode_time.as_secs_f64());
        self.handout.record(out.handout_time.as_secs_f64());
        if t.overrun {
            self.overruns.increment(1);
        }
        if t.skipped > 0 {
            self.skipped.increment(t.skipped);
        }
        self.queue_depth.set(t.queue_depth as f64);
        self.outcomes(out);
    }

    /// The room's simulation panicked and the room was closed.
    pub fn failed(&self) {
        self.failures.increment(1);
    }

    /// Records joins, leaves, refusals and conflation of an output (also after the last
    /// tick, when the room closes its members).
    pub fn outcomes(&self, out: &Output) {
        if out.joined > 0 {
            self.joins.increment(out.joined);
            self.active.increment(out.joined as f64);
        }
        for reason in &out.left {
            let i = LeaveReason::ALL
                .iter()
                .position(|r| r == reason)
                .expect("ALL lists every reason");
            self.leaves[i].increment(1);
            self.active.decrement(1.0);
        }
        for code in &out.rejected {
            if let Some(c) = usize::try_from(*code as i32)
                .ok()
                .and_then(|i| self.rejected.get(i))
            {
                c.increment(1);
            }
        }
        if out.conflated > 0 {
            self.conflated.increment(out.conflated);
        }
    }
}

/// (RSS bytes, user + system CPU time) of this process, from /proc (Linux), in the
/// machine's own page size and clock ticks.
pub fn process_figures() -> Option<(u64, Duration)> {
    let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
    let rss = stat.rss * procfs::page_size();
    let ticks = procfs::ticks_per_second();
    let cpu = Duration::from_secs_f64((stat.utime + stat.stime) as f64 / ticks as f64);
    Some((rss, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_figures_are_read() {
        let (rss, _cpu) = process_figures().expect("linux /proc");
        assert!(rss > 1024 * 1024);
    }

    #[test]
    fn two_instances_count_apart() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.message_rejected(ErrorCode::Busy);
        a.message_rejected(ErrorCode::Busy);
        let line = |m: &Metrics| {
            m.render(0)
                .lines()
                .find(|l| l.starts_with("tickroom_messages_rejected_total{reason=\"busy\"}"))
                .map(str::to_owned)
        };
        assert_eq!(
            line(&a).as_deref(),
            Some("tickroom_messages_rejected_total{reason=\"busy\"} 2")
        );
        assert_eq!(
            line(&b).as_deref(),
            Some("tickroom_messages_rejected_total{reason=\"busy\"} 0")
        );
    }

    #[test]
    fn a_rooms_output_becomes_its_counters() {
        let m = Metrics::new();
        let room = m.room(RoomKind::Chat, "c");
        let out = Output {
            joined: 2,
            left: vec![LeaveReason::TimedOut],
            conflated: 3,
            ..Default::default()
        };
        room.outcomes(&out);
        let text = m.render(0);
        for want in [
            "tickroom_joins_total{kind=\"chat\"} 2",
            "tickroom_sessions_active{kind=\"chat\"} 1",
            "tickroom_leaves_total{kind=\"chat\",reason=\"timeout\"} 1",
            "tickroom_snapshots_conflated_total 3",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in:\n{text}");
        }
    }
}
