//! Figures a room's driver publishes for the rest of the server (`/rooms`, readiness).
//!
//! The room thread is the only writer; readers see relaxed atomics, which is enough for
//! monitoring. Tick durations are kept in a ring on the room thread and summarised about
//! once a second, so readers never touch the ring.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct RoomStats {
    pub sessions: AtomicU64,
    pub tick: AtomicU64,
    pub ticks_total: AtomicU64,
    pub overruns_total: AtomicU64,
    pub skipped_ticks_total: AtomicU64,
    pub commands_total: AtomicU64,
    /// Unix time (µs) when the last tick ended.
    pub last_tick_end_us: AtomicU64,
    pub tick_p50_us: AtomicU64,
    pub tick_p99_us: AtomicU64,
    pub tick_max_us: AtomicU64,
    /// Most frames waiting in one member's outbox at the last sweep (about once a second).
    pub outbox_pending_max: AtomicU64,
    pub stopped: AtomicBool,
}

impl RoomStats {
    pub fn get(v: &AtomicU64) -> u64 {
        v.load(Relaxed)
    }

    pub(crate) fn set(v: &AtomicU64, x: u64) {
        v.store(x, Relaxed)
    }

    pub(crate) fn add(v: &AtomicU64, x: u64) {
        v.fetch_add(x, Relaxed);
    }
}

/// Recent tick durations, owned by the room thread.
#[derive(Debug)]
pub struct TickDurations {
    ring: Vec<u32>,
    next: usize,
    filled: bool,
    scratch: Vec<u32>,
}

impl TickDurations {
    pub fn new(capacity: usize) -> Self {
        Self {
            ring: vec![0; capacity.max(1)],
            next: 0,
            filled: false,
            scratch: Vec::with_capacity(capacity.max(1)),
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.ring[self.next] = d.as_micros().min(u32::MAX as u128) as u32;
        self.next += 1;
        if self.next == self.ring.len() {
            self.next = 0;
            self.filled = true;
        }
    }

    /// (p50, p99, max) in µs over the ring, or None before the first tick.
    pub fn summary(&mut self) -> Option<(u32, u32, u32)> {
        let n = if self.filled {
            self.ring.len()
        } else {
            self.next
        };
        if n == 0 {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.ring[..n]);
        self.scratch.sort_unstable();
        let at = |q: f64| self.scratch[((n as f64 * q).ceil() as usize).clamp(1, n) - 1];
        Some((at(0.50), at(0.99), self.scratch[n - 1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_over_the_last_ticks() {
        let mut t = TickDurations::new(100);
        assert_eq!(t.summary(), None);
        for us in 1..=100u64 {
            t.record(Duration::from_micros(us));
        }
        assert_eq!(t.summary(), Some((50, 99, 100)));
        // The ring forgets the oldest.
        for _ in 0..100 {
            t.record(Duration::from_micros(7));
        }
        assert_eq!(t.summary(), Some((7, 7, 7)));
    }
}
