//! Rate limits. [`TokenBucket`] is the bare bucket (chat rooms limit sends per session with
//! it); [`RateLimiter`] adds a window that turns sustained excess into a disconnect (every
//! client message passes one). Sans-IO: callers pass the time.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Drop the message; `notify` is true for the first drop of a window, so the client
    /// hears about it once rather than once per dropped message.
    Drop {
        notify: bool,
    },
    /// Too many drops within the window: close the session.
    Abuse,
}

/// `rate` tokens a second, at most `burst` saved up; starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
}

impl TokenBucket {
    pub fn new(rate_per_sec: f64, burst: f64) -> Self {
        Self {
            rate: rate_per_sec,
            burst,
            tokens: burst,
        }
    }

    /// Refills for `elapsed` seconds since the last call, then takes one token if there is
    /// one.
    pub fn take(&mut self, elapsed: f64) -> bool {
        self.tokens = (self.tokens + elapsed.max(0.0) * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
pub struct RateLimiter {
    bucket: TokenBucket,
    last: Instant,
    window: Duration,
    window_start: Instant,
    window_drops: u32,
    abuse_drops: u32,
    dropped_total: u64,
}

impl RateLimiter {
    pub fn new(
        rate_per_sec: u32,
        burst: u32,
        abuse_drops: u32,
        window: Duration,
        now: Instant,
    ) -> Self {
        Self {
            bucket: TokenBucket::new(f64::from(rate_per_sec), f64::from(burst)),
            last: now,
            window,
            window_start: now,
            window_drops: 0,
            abuse_drops,
            dropped_total: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        if self.bucket.take(elapsed) {
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) >= self.window {
            self.window_start = now;
            self.window_drops = 0;
        }
        self.window_drops += 1;
        self.dropped_total += 1;
        if self.window_drops > self.abuse_drops {
            Verdict::Abuse
        } else {
            Verdict::Drop {
                notify: self.window_drops == 1,
            }
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(10, 5, 100, Duration::from_secs(10), t0);
        for _ in 0..5 {
            assert_eq!(r.check(t0), Verdict::Allow);
        }
        assert_eq!(r.check(t0), Verdict::Drop { notify: true });
        assert_eq!(r.check(t0), Verdict::Drop { notify: false });
        // 100 ms later one token has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.check(t1), Verdict::Allow);
        assert_eq!(r.check(t1), Verdict::Drop { notify: false });
        assert_eq!(r.dropped_total(), 3);
    }

    #[test]
    fn a_client_at_the_rate_is_never_dropped() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(60, 10, 5, Duration::from_secs(1), t0);
        for i in 1..=6_000u64 {
            let now = t0 + Duration::from_micros(i * 1_000_000 / 60);
            assert_eq!(r.check(now), Verdict::Allow, "message {i}");
        }
    }

    #[test]
    fn sustained_excess_is_abuse_and_a_quiet_window_forgives() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1, 1, 3, Duration::from_secs(1), t0);
        assert_eq!(r.check(t0), Verdict::Allow);
        for _ in 0..3 {
            assert!(matches!(r.check(t0), Verdict::Drop { .. }));
        }
        assert_eq!(r.check(t0), Verdict::Abuse);
        // In a new window the count starts again.
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(r.check(later), Verdict::Allow);
        assert_eq!(r.check(later), Verdict::Drop { notify: true });
    }
}
