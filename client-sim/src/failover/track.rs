//! What one failover client keeps: the snapshots it got (how many, the longest wait between
//! two), each time it lost its connection, the tries it took to get back into the room, and
//! when the first snapshot after that came. Plain values and no I/O, so the rules are tested
//! directly.

use std::time::Duration;

use tokio::time::Instant;

/// One lost connection and the way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    /// When the connection ended.
    pub at: Instant,
    /// How it ended: [`DROPPED`], or `close CODE` for a close frame.
    pub cause: String,
    /// Tries since (connect + Join, redirects followed, through one URL each), the one that
    /// got back in included.
    pub attempts: u32,
    /// The first snapshot after it: the client is back.
    pub recovered_at: Option<Instant>,
}

/// The cause of a loss without a close frame: a reset or an end of stream (a killed node).
pub const DROPPED: &str = "dropped";

impl Loss {
    /// From the loss to the first snapshot after it.
    pub fn recovery(&self) -> Option<Duration> {
        self.recovered_at.map(|at| at.duration_since(self.at))
    }
}

/// One client's snapshots and losses over the run.
#[derive(Debug, Default)]
pub struct History {
    /// The first snapshot of the first connection.
    pub joined_at: Option<Instant>,
    pub losses: Vec<Loss>,
    pub snapshots: u64,
    last_snapshot: Option<Instant>,
    /// The longest time between two snapshots, across losses too.
    pub max_gap: Duration,
}

impl History {
    /// A snapshot came at `at`; the first one after a loss ends it.
    pub fn snapshot(&mut self, at: Instant) {
        if let Some(last) = self.last_snapshot {
            self.max_gap = self.max_gap.max(at.saturating_duration_since(last));
        }
        self.last_snapshot = Some(at);
        self.snapshots += 1;
        self.joined_at.get_or_insert(at);
        if let Some(loss) = self.pending() {
            loss.recovered_at = Some(at);
        }
    }

    /// The connection ended at `at`, as `cause` says.
    pub fn lost(&mut self, at: Instant, cause: impl Into<String>) {
        self.losses.push(Loss {
            at,
            cause: cause.into(),
            attempts: 0,
            recovered_at: None,
        });
    }

    /// One more try to get back in after a loss (tries before the first join are not).
    pub fn attempt(&mut self) {
        if let Some(loss) = self.pending() {
            loss.attempts += 1;
        }
    }

    /// The loss the client has not recovered from yet.
    fn pending(&mut self) -> Option<&mut Loss> {
        self.losses.last_mut().filter(|l| l.recovered_at.is_none())
    }

    /// It lost its connection at least once.
    pub fn lost_any(&self) -> bool {
        !self.losses.is_empty()
    }

    /// It lost its connection and got back in after every loss.
    pub fn recovered(&self) -> bool {
        self.lost_any() && self.losses.iter().all(|l| l.recovered_at.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_ends_with_the_first_snapshot_after_it() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = History::default();
        h.attempt();
        assert!(h.losses.is_empty() && !h.lost_any() && !h.recovered());
        for i in 0..3 {
            h.snapshot(t0 + ms(i * 16));
        }
        assert_eq!((h.joined_at, h.snapshots, h.max_gap), (Some(t0), 3, ms(16)));
        h.lost(t0 + ms(40), DROPPED);
        assert!(h.lost_any() && !h.recovered());
        for _ in 0..3 {
            h.attempt();
        }
        // The first snapshot after the loss (on the new node) recovers it.
        h.snapshot(t0 + ms(1_040));
        h.attempt();
        assert!(h.recovered());
        let loss = &h.losses[0];
        assert_eq!((loss.attempts, loss.recovery()), (3, Some(ms(1_000))));
        assert_eq!(h.max_gap, ms(1_040 - 32), "the gap spans the loss");
        h.snapshot(t0 + ms(1_056));
        assert_eq!(h.losses[0].recovered_at, Some(t0 + ms(1_040)));
        assert_eq!((h.joined_at, h.snapshots), (Some(t0), 5));

        // A second loss, not recovered by the end: the client counts as not recovered.
        h.lost(t0 + ms(2_000), "close 1001");
        h.attempt();
        assert!(h.lost_any() && !h.recovered());
        let second = &h.losses[1];
        assert_eq!((second.cause.as_str(), second.attempts), ("close 1001", 1));
        assert_eq!(second.recovery(), None);
    }
}
