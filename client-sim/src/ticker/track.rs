//! One client's view of its quote stream: the last sequence number per symbol and what the
//! sequence numbers say (first values, skipped values, duplicates, reorders), and whether the
//! first values came in time. Plain values and no I/O, so the rules are tested directly.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// What one quote was, by its sequence number against the last one seen for its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first value of this object: the current value sent after subscribing.
    First,
    /// A newer value; `skipped` values came in between and were conflated away.
    Next { skipped: u64 },
    /// The same sequence number again.
    Duplicate,
    /// An older sequence number than one already seen.
    Older,
}

/// Last sequence number per object id, and the counts of [`Seen`] outcomes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SeqTrack {
    /// `(object id, last seq)`, sorted by id: a client holds a few dozen symbols, so this
    /// stays small and a binary search beats hashing. Only the client's own task needs it.
    #[serde(skip)]
    last: Vec<(u32, u64)>,
    pub firsts: u64,
    pub updates: u64,
    /// Updates that skipped values, and the values skipped in all.
    pub gaps: u64,
    pub skipped: u64,
    pub duplicates: u64,
    pub reorders: u64,
}

impl SeqTrack {
    pub fn observe(&mut self, id: u32, seq: u64) -> Seen {
        let seen = match self.last.binary_search_by_key(&id, |&(i, _)| i) {
            Err(at) => {
                self.last.insert(at, (id, seq));
                Seen::First
            }
            Ok(at) => {
                let last = &mut self.last[at].1;
                if seq > *last {
                    let skipped = seq - *last - 1;
                    *last = seq;
                    Seen::Next { skipped }
                } else if seq == *last {
                    Seen::Duplicate
                } else {
                    Seen::Older
                }
            }
        };
        match seen {
            Seen::First => self.firsts += 1,
            Seen::Next { skipped } => {
                self.updates += 1;
                if skipped > 0 {
                    self.gaps += 1;
                    self.skipped += skipped;
                }
            }
            Seen::Duplicate => self.duplicates += 1,
            Seen::Older => self.reorders += 1,
        }
        seen
    }
}

/// The first value of each symbol after subscribing: the server sends every subscribed
/// symbol's current value right after the Subscriptions ack.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FirstValues {
    /// First values of subscribed symbols that came within the window after the ack (or
    /// before it).
    pub in_time: u64,
    /// First values of subscribed symbols that came after the window.
    pub late: u64,
    /// First values of symbols this client did not subscribe to.
    pub unexpected: u64,
    /// When the last subscribed symbol's first value came in time.
    #[serde(with = "crate::wire::opt_instant")]
    pub complete_at: Option<Instant>,
}

impl FirstValues {
    /// Records a first value that came at `now`; `ack` is when the Subscriptions ack came (if
    /// it did yet), `wanted` how many symbols were subscribed.
    pub fn record(
        &mut self,
        subscribed: bool,
        now: Instant,
        ack: Option<Instant>,
        window: Duration,
        wanted: usize,
    ) {
        if !subscribed {
            self.unexpected += 1;
        } else if ack.is_none_or(|a| now <= a + window) {
            self.in_time += 1;
            if self.in_time == wanted as u64 {
                self.complete_at = Some(now);
            }
        } else {
            self.late += 1;
        }
    }

    /// Subscribed symbols still without a value in time, once the window after the ack has
    /// passed (`None` while it has not: the client ended too soon to tell).
    pub fn missing(
        &self,
        now: Instant,
        ack: Instant,
        window: Duration,
        wanted: usize,
    ) -> Option<u64> {
        let missing = (wanted as u64).saturating_sub(self.in_time);
        (missing == 0 || now >= ack + window).then_some(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_sequence_numbers_per_object() {
        let mut t = SeqTrack::default();
        assert_eq!(t.observe(7, 10), Seen::First);
        assert_eq!(t.observe(3, 0), Seen::First, "seq 0 is a value too");
        assert_eq!(t.observe(7, 11), Seen::Next { skipped: 0 });
        assert_eq!(t.observe(7, 14), Seen::Next { skipped: 2 });
        assert_eq!(t.observe(3, 1), Seen::Next { skipped: 0 });
        assert_eq!(t.observe(7, 14), Seen::Duplicate);
        assert_eq!(t.observe(7, 12), Seen::Older);
        assert_eq!(t.observe(7, 15), Seen::Next { skipped: 0 });
        assert_eq!(t.observe(5, 1), Seen::First);
        assert_eq!(
            (
                t.firsts,
                t.updates,
                t.gaps,
                t.skipped,
                t.duplicates,
                t.reorders
            ),
            (3, 4, 1, 2, 1, 1)
        );
    }

    #[test]
    fn first_values_count_in_time_late_and_unexpected() {
        let window = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut f = FirstValues::default();
        // A value before the ack is in time; so is one within the window.
        f.record(true, t0, None, window, 3);
        let ack = t0 + Duration::from_millis(1);
        f.record(true, ack + Duration::from_millis(50), Some(ack), window, 3);
        f.record(false, ack + Duration::from_millis(60), Some(ack), window, 3);
        assert_eq!(
            f.missing(ack + Duration::from_millis(99), ack, window, 3),
            None
        );
        assert_eq!(f.missing(ack + window, ack, window, 3), Some(1));
        f.record(true, ack + Duration::from_millis(101), Some(ack), window, 3);
        assert_eq!((f.in_time, f.late, f.unexpected), (2, 1, 1));
        assert_eq!(f.complete_at, None);
        assert_eq!(f.missing(ack + window, ack, window, 3), Some(1));

        let mut g = FirstValues::default();
        g.record(true, ack, Some(ack), window, 1);
        assert_eq!(g.complete_at, Some(ack));
        assert_eq!(
            g.missing(ack, ack, window, 1),
            Some(0),
            "complete: known at once"
        );
    }
}
