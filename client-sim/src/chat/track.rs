//! What the chat scenario's clients keep: a sender's log of its own messages (when each went
//! out, which were refused), the ids a receiver got from each sender, and the count of those
//! it should have got. Plain values and no I/O, so the rules are tested directly.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One sender's own messages. Ids are `client_msg_id`s: 1, 2, 3, ... in sending order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SenderLog {
    /// When id `i + 1` was sent.
    #[serde(with = "crate::wire::instants")]
    pub sent: Vec<Instant>,
    /// Ids neither echoed back nor known to be refused yet, oldest first.
    unresolved: VecDeque<u64>,
    /// Errors received that no id has been matched to yet.
    pending_errors: u64,
    /// Ids the room refused (sorted).
    pub refused: Vec<u64>,
    /// Ids that were neither echoed to the sender nor refused: accepted, then dropped by the
    /// room's per-tick cap (or lost on the way to the sender itself).
    pub unechoed: u64,
}

impl SenderLog {
    /// Records a message sent at `at` and returns its id.
    pub fn send(&mut self, at: Instant) -> u64 {
        self.sent.push(at);
        let id = self.sent.len() as u64;
        self.unresolved.push_back(id);
        id
    }

    /// An Error came back: one send was refused (rate limit, filter, ...). Which one is known
    /// once a later id comes back or the run ends (see [`SenderLog::echoed`]).
    pub fn refused_one(&mut self) {
        self.pending_errors += 1;
    }

    /// The sender's own message `id` came back in a batch. The room answers one session's
    /// sends in order, and a refusal's Error reaches the sender before the batch of its tick,
    /// so every older id still unresolved was refused (while errors are pending) or else
    /// accepted and dropped by the cap.
    pub fn echoed(&mut self, id: u64) {
        while let Some(&older) = self.unresolved.front() {
            if older > id {
                return;
            }
            self.unresolved.pop_front();
            if older == id {
                return;
            }
            self.resolve_missing(older);
        }
    }

    /// At the end: errors still pending go to the oldest ids still unresolved.
    pub fn finish(&mut self) {
        while self.pending_errors > 0 {
            let Some(id) = self.unresolved.pop_front() else {
                break;
            };
            self.resolve_missing(id);
        }
    }

    fn resolve_missing(&mut self, id: u64) {
        if self.pending_errors > 0 {
            self.pending_errors -= 1;
            self.refused.push(id);
        } else {
            self.unechoed += 1;
        }
    }

    /// The highest id sent at or before `at` (0: none).
    pub fn last_sent_by(&self, at: Instant) -> u64 {
        self.sent.partition_point(|&t| t <= at) as u64
    }
}

/// Ids received from one sender, as sorted runs of consecutive ids (one run when nothing
/// was missed).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Runs(Vec<(u64, u64)>);

impl Runs {
    /// Adds `id`; false when it was already there or older than the newest (a duplicate or a
    /// reorder: chat is reliable and ordered, so both should be 0).
    pub fn add(&mut self, id: u64) -> bool {
        match self.0.last_mut() {
            Some((_, end)) if id == *end + 1 => *end = id,
            Some((_, end)) if id <= *end => return false,
            _ => self.0.push((id, id)),
        }
        true
    }

    pub fn contains(&self, id: u64) -> bool {
        let at = self.0.partition_point(|&(_, end)| end < id);
        self.0.get(at).is_some_and(|&(start, _)| start <= id)
    }
}

/// What one receiver should have got from one sender: the ids sent after the receiver's
/// Welcome up to the sender's cutoff, less the refused ones.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub expected: u64,
    pub received: u64,
}

impl Tally {
    pub fn missing(&self) -> u64 {
        self.expected - self.received
    }

    /// Counts sender `log`'s ids `1..=cutoff` sent after `joined_at` that are not refused,
    /// and those of them in `got`.
    pub fn of(log: &SenderLog, cutoff: u64, joined_at: Instant, got: &Runs) -> Tally {
        let first = log.last_sent_by(joined_at) + 1;
        let mut t = Tally::default();
        for id in first..=cutoff {
            if log.refused.binary_search(&id).is_ok() {
                continue;
            }
            t.expected += 1;
            t.received += u64::from(got.contains(id));
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refusals_go_to_the_ids_before_the_next_echo() {
        let t0 = Instant::now();
        let mut log = SenderLog::default();
        let ids: Vec<u64> = (0..6)
            .map(|i| log.send(t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
        log.echoed(1);
        // 2 refused; its Error comes before the batch that echoes 3.
        log.refused_one();
        log.echoed(3);
        // 4 accepted but dropped by the cap: no error, no echo.
        log.echoed(5);
        // 6 refused; the run ends before anything later comes back.
        log.refused_one();
        log.echoed(5);
        log.finish();
        assert_eq!((log.refused.as_slice(), log.unechoed), (&[2, 6][..], 1));
        // An error for an id after the echoed one stays pending until then.
        let mut log = SenderLog::default();
        log.send(t0);
        log.send(t0);
        log.refused_one();
        log.echoed(1);
        assert!(log.refused.is_empty());
        log.finish();
        assert_eq!(log.refused, [2]);
        assert_eq!(log.last_sent_by(t0), 2);
        assert_eq!(log.last_sent_by(t0 - Duration::from_millis(1)), 0);
    }

    #[test]
    fn runs_track_ids_in_order() {
        let mut r = Runs::default();
        for id in [1, 2, 3, 5, 6, 9] {
            assert!(r.add(id));
        }
        assert!(!r.add(6) && !r.add(2), "duplicate and older");
        assert_eq!(r.0, [(1, 3), (5, 6), (9, 9)]);
        let has: Vec<u64> = (0..=10).filter(|&i| r.contains(i)).collect();
        assert_eq!(has, [1, 2, 3, 5, 6, 9]);
    }

    #[test]
    fn tallies_only_what_was_sent_after_the_join_and_not_refused() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = SenderLog::default();
        for i in 0..10 {
            log.send(t0 + ms(i * 100));
        }
        log.refused = vec![7];
        let mut got = Runs::default();
        for id in [4, 5, 6, 8] {
            got.add(id);
        }
        // Joined after id 3 was sent; cutoff 9: expected 4, 5, 6, 8, 9; got all but 9.
        let t = Tally::of(&log, 9, t0 + ms(250), &got);
        assert_eq!(
            t,
            Tally {
                expected: 5,
                received: 4
            }
        );
        assert_eq!(t.missing(), 1);
        assert_eq!(Tally::of(&log, 0, t0, &got).expected, 0);
    }
}
