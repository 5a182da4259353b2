//! Prometheus metrics: the process-wide recorder, the names, and the counters the hot path
//! bumps without touching the recorder.
//!
//! Room threads record through handles registered once per room ([`RoomMetrics`]). Per-frame
//! counts (frames and bytes written, conflated snapshots, reliable backlog) are plain relaxed
//! atomics in [`HOT`], copied into the recorder when `/metrics` is scraped, so a socket write
//! never pays for a registry lookup. docs/operations.md lists every metric.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tickroom_proto::v1::{ErrorCode, RoomKind};

use crate::engine::LeaveReason;
use crate::outbox::CloseReason;

/// Buckets for per-tick durations: fine below 1 ms (p99 of a healthy tick), up to two
/// 60 Hz periods.
const TICK_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002,
    0.004, 0.008, 0.012, 0.016_7, 0.025, 0.033, 0.05, 0.1, 0.2, 0.5,
];

/// Counters the hot path bumps; exported at scrape time.
#[derive(Debug, Default)]
pub struct Hot {
    pub frames_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub flushes: AtomicU64,
    pub snapshots_conflated: AtomicU64,
    /// Largest reliable backlog a writer found since the last scrape.
    pub reliable_backlog_max: AtomicU64,
}

pub static HOT: Hot = Hot {
    frames_written: AtomicU64::new(0),
    bytes_written: AtomicU64::new(0),
    flushes: AtomicU64::new(0),
    snapshots_conflated: AtomicU64::new(0),
    reliable_backlog_max: AtomicU64::new(0),
};

/// Installs the process-wide recorder once and returns its handle (later servers in the
/// same process, e.g. tests, share it).
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = build();
            register_zeroes();
            handle
        })
        .clone()
}

/// Counters exist from the start at 0, so dashboards and `rate()` see them before the first
/// event. Every label set here is a small fixed one.
fn register_zeroes() {
    counter!("tickroom_slow_consumer_disconnects_total").increment(0);
    let chat = ChatCounters::new();
    for c in [chat.broadcast, chat.dropped_cap, chat.blocked] {
        c.increment(0);
    }
    for code in [
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
    ] {
        counter!("tickroom_messages_rejected_total", "reason" => reject_label(code)).increment(0);
    }
    for reason in ALL_CLOSE_REASONS {
        counter!("tickroom_connections_closed_total", "reason" => reason.as_str()).increment(0);
    }
}

const ALL_CLOSE_REASONS: [CloseReason; 12] = [
    CloseReason::ClientClosed,
    CloseReason::PeerGone,
    CloseReason::HeartbeatTimeout,
    CloseReason::SlowConsumer,
    CloseReason::RateAbuse,
    CloseReason::MessageTooBig,
    CloseReason::TextFrame,
    CloseReason::ProtocolError,
    CloseReason::ResumedElsewhere,
    CloseReason::ShuttingDown,
    CloseReason::RoomClosed,
    CloseReason::UnknownSession,
];

fn build() -> PrometheusHandle {
    {
        {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), TICK_BUCKETS)
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is already global (an embedding application's): keep
                // ours private so /metrics still works, though it then sees only scrape-time
                // figures.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        }
    }
}

pub fn kind_label(kind: RoomKind) -> &'static str {
    crate::engine::kind_name(kind)
}

/// The leave reasons operators see, a small fixed set.
pub fn leave_label(reason: LeaveReason) -> &'static str {
    match reason {
        LeaveReason::Left => "leave",
        LeaveReason::Closed(c) => match c {
            CloseReason::HeartbeatTimeout => "timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ResumedElsewhere => "kicked",
            CloseReason::ShuttingDown | CloseReason::RoomClosed => "shutdown",
            CloseReason::ClientClosed | CloseReason::PeerGone => "disconnect",
            CloseReason::RateAbuse
            | CloseReason::MessageTooBig
            | CloseReason::TextFrame
            | CloseReason::ProtocolError
            | CloseReason::UnknownSession => "error",
        },
    }
}

pub fn session_joined(kind: RoomKind) {
    let kind = kind_label(kind);
    counter!("tickroom_joins_total", "kind" => kind).increment(1);
    gauge!("tickroom_sessions_active", "kind" => kind).increment(1.0);
}

pub fn session_left(kind: RoomKind, reason: LeaveReason) {
    let kind = kind_label(kind);
    counter!("tickroom_leaves_total", "kind" => kind, "reason" => leave_label(reason)).increment(1);
    gauge!("tickroom_sessions_active", "kind" => kind).decrement(1.0);
}

/// A session's connection ended (whether or not it was in a room).
pub fn connection_closed(reason: CloseReason) {
    counter!("tickroom_connections_closed_total", "reason" => reason.as_str()).increment(1);
    if reason == CloseReason::SlowConsumer {
        counter!("tickroom_slow_consumer_disconnects_total").increment(1);
    }
}

/// Chat message counters, registered once per chat room: messages broadcast, dropped by the
/// per-tick cap, and held back because their sender was blocked after they were accepted.
#[derive(Debug, Clone)]
pub struct ChatCounters {
    pub broadcast: Counter,
    pub dropped_cap: Counter,
    pub blocked: Counter,
}

impl ChatCounters {
    pub fn new() -> Self {
        let c =
            |outcome: &'static str| counter!("tickroom_chat_messages_total", "outcome" => outcome);
        Self {
            broadcast: c("broadcast"),
            dropped_cap: c("dropped_cap"),
            blocked: c("blocked"),
        }
    }
}

impl Default for ChatCounters {
    fn default() -> Self {
        Self::new()
    }
}

/// A client message answered with an `Error` (or dropped by the rate limit).
pub fn message_rejected(code: ErrorCode) {
    counter!("tickroom_messages_rejected_total", "reason" => reject_label(code)).increment(1);
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
        ErrorCode::Unspecified => "other",
    }
}

/// Handles a room thread records through, registered once per room.
#[derive(Debug)]
pub struct RoomMetrics {
    tick: Histogram,
    encode: Histogram,
    handout: Histogram,
    overruns: Counter,
    skipped: Counter,
    ticks: Counter,
    queue_depth: Gauge,
}

/// One flusher pass: from its wake-up to its last session's write, i.e. how long a room's
/// hand-out takes to reach every socket (a chat batch's fan-out).
pub fn flush_duration() -> Histogram {
    histogram!("tickroom_flush_duration_seconds")
}

impl RoomMetrics {
    pub fn new(kind: RoomKind, room: &str) -> Self {
        let kind = kind_label(kind);
        counter!("tickroom_joins_total", "kind" => kind).increment(0);
        gauge!("tickroom_sessions_active", "kind" => kind).increment(0.0);
        for reason in
            std::iter::once(LeaveReason::Left).chain(ALL_CLOSE_REASONS.map(LeaveReason::Closed))
        {
            counter!("tickroom_leaves_total", "kind" => kind, "reason" => leave_label(reason))
                .increment(0);
        }
        Self {
            tick: histogram!("tickroom_tick_duration_seconds", "kind" => kind),
            encode: histogram!("tickroom_encode_duration_seconds", "kind" => kind),
            handout: histogram!("tickroom_handout_duration_seconds", "kind" => kind),
            overruns: counter!("tickroom_tick_overruns_total", "kind" => kind),
            skipped: counter!("tickroom_ticks_skipped_total", "kind" => kind),
            ticks: counter!("tickroom_ticks_total", "kind" => kind),
            // Rooms are few and named by the operator (or capped auto-creation).
            queue_depth: gauge!("tickroom_command_queue_depth", "room" => room.to_owned()),
        }
    }

    pub fn record_tick(
        &self,
        tick: Duration,
        encode: Duration,
        handout: Duration,
        overrun: bool,
        skipped: u64,
        queue_depth: usize,
    ) {
        self.ticks.increment(1);
        self.tick.record(tick.as_secs_f64());
        self.encode.record(encode.as_secs_f64());
        self.handout.record(handout.as_secs_f64());
        if overrun {
            self.overruns.increment(1);
        }
        if skipped > 0 {
            self.skipped.increment(skipped);
        }
        self.queue_depth.set(queue_depth as f64);
    }
}

/// Copies the hot counters, the server's connection count and process figures into the
/// recorder, then renders the text exposition format.
pub fn render(handle: &PrometheusHandle, connections_active: u64) -> String {
    let h = &HOT;
    counter!("tickroom_frames_written_total").absolute(h.frames_written.load(Relaxed));
    counter!("tickroom_bytes_written_total").absolute(h.bytes_written.load(Relaxed));
    counter!("tickroom_socket_flushes_total").absolute(h.flushes.load(Relaxed));
    counter!("tickroom_snapshots_conflated_total").absolute(h.snapshots_conflated.load(Relaxed));
    gauge!("tickroom_reliable_queue_max").set(h.reliable_backlog_max.swap(0, Relaxed) as f64);
    gauge!("tickroom_connections_active").set(connections_active as f64);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        gauge!("tokio_alive_tasks").set(rt.metrics().num_alive_tasks() as f64);
    }
    if let Some((rss, cpu)) = process_figures() {
        gauge!("process_resident_memory_bytes").set(rss as f64);
        // Prometheus' conventional name; a gauge because the value is fractional seconds.
        gauge!("process_cpu_seconds_total").set(cpu.as_secs_f64());
    }
    handle.render()
}

/// (RSS bytes, user + system CPU time) of this process, from /proc (Linux).
pub fn process_figures() -> Option<(u64, Duration)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // Linux reports both in clock ticks of 100 Hz (USER_HZ) and pages of 4 KiB on the
    // machines this runs on.
    Some((
        rss_pages * 4096,
        Duration::from_millis((utime + stime) * 10),
    ))
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
    fn leave_reasons_map_to_a_small_fixed_set() {
        assert_eq!(leave_label(LeaveReason::Left), "leave");
        assert_eq!(
            leave_label(LeaveReason::Closed(CloseReason::HeartbeatTimeout)),
            "timeout"
        );
        assert_eq!(
            leave_label(LeaveReason::Closed(CloseReason::SlowConsumer)),
            "slow_consumer"
        );
    }
}
