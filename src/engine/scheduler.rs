//! The fixed-tick schedule: tick k is due at `start + k·period`, whatever earlier ticks cost.
//!
//! Sans-IO: it is told the time and never reads a clock, so tests drive it exactly. A late
//! room runs its missed ticks back to back, at most `max_catchup` behind; further behind, it
//! skips to the newest due tick instead of spiralling.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TickSchedule {
    start: Instant,
    period: Duration,
    next: u64,
    max_catchup: u64,
}

/// The tick to run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickStart {
    pub tick: u64,
    /// Ticks dropped because the room was too far behind.
    pub skipped: u64,
}

impl TickSchedule {
    /// The first tick (number 1) is due one period after `start`.
    pub fn new(start: Instant, period: Duration, max_catchup: u32) -> Self {
        assert!(!period.is_zero(), "tick period must be positive");
        Self {
            start,
            period,
            next: 1,
            max_catchup: u64::from(max_catchup),
        }
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    fn due(&self, tick: u64) -> Instant {
        // Duration * u32 would overflow after ~2^32 ticks; go through nanos instead.
        self.start + Duration::from_nanos((self.period.as_nanos() as u64).saturating_mul(tick))
    }

    /// When the next tick is due.
    pub fn deadline(&self) -> Instant {
        self.due(self.next)
    }

    /// Starts the next tick at `now` (at or after its deadline).
    pub fn begin(&mut self, now: Instant) -> TickStart {
        let mut skipped = 0;
        let late_by = now.saturating_duration_since(self.due(self.next));
        if late_by > self.period.mul_f64(self.max_catchup as f64) {
            // Too far behind: jump to the newest tick that is due, keeping the grid.
            let elapsed = now.saturating_duration_since(self.start).as_nanos();
            let newest = (elapsed / self.period.as_nanos()) as u64;
            skipped = newest.saturating_sub(self.next);
            self.next = newest.max(self.next);
        }
        let tick = self.next;
        self.next += 1;
        TickStart { tick, skipped }
    }

    /// Ends the tick begun last; true when it finished after the next tick was already due
    /// (an overrun: the room is behind schedule).
    pub fn end(&self, now: Instant) -> bool {
        now > self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(10);

    #[test]
    fn ticks_stay_on_the_grid_regardless_of_their_cost() {
        let t0 = Instant::now();
        let mut s = TickSchedule::new(t0, P, 3);
        for k in 1..=100u64 {
            let due = s.deadline();
            assert_eq!(due, t0 + P * k as u32);
            // Woken 1 ms late and taking 4 ms: no drift accumulates.
            let start = s.begin(due + Duration::from_millis(1));
            assert_eq!(
                start,
                TickStart {
                    tick: k,
                    skipped: 0
                }
            );
            assert!(!s.end(due + Duration::from_millis(5)));
        }
        assert_eq!(s.deadline(), t0 + P * 101);
    }

    #[test]
    fn a_slow_tick_is_an_overrun_and_is_caught_up_back_to_back() {
        let t0 = Instant::now();
        let mut s = TickSchedule::new(t0, P, 3);
        let first = s.begin(t0 + P);
        assert_eq!(first.tick, 1);
        // Tick 1 took 25 ms: ticks 2 and 3 are already due.
        let end = t0 + P + Duration::from_millis(25);
        assert!(s.end(end));
        assert!(s.deadline() < end);
        assert_eq!(
            s.begin(end),
            TickStart {
                tick: 2,
                skipped: 0
            }
        );
        assert_eq!(
            s.begin(end),
            TickStart {
                tick: 3,
                skipped: 0
            }
        );
        assert_eq!(s.deadline(), t0 + P * 4);
    }

    #[test]
    fn a_long_stall_skips_instead_of_spiralling() {
        let t0 = Instant::now();
        let mut s = TickSchedule::new(t0, P, 3);
        s.begin(t0 + P);
        // Stalled for one second: 100 ticks are due; only the newest runs.
        let now = t0 + Duration::from_millis(1_015);
        let start = s.begin(now);
        assert_eq!(
            start,
            TickStart {
                tick: 101,
                skipped: 99
            }
        );
        assert_eq!(s.deadline(), t0 + P * 102);
        assert!(!s.end(now + Duration::from_millis(1)));
    }

    #[test]
    fn lateness_within_the_catchup_bound_skips_nothing() {
        let t0 = Instant::now();
        let mut s = TickSchedule::new(t0, P, 3);
        let start = s.begin(t0 + P + Duration::from_millis(29));
        assert_eq!(
            start,
            TickStart {
                tick: 1,
                skipped: 0
            }
        );
    }
}
