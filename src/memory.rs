//! Giving memory back to the system after load drops.
//!
//! glibc's allocator keeps what sessions freed in its per-thread arenas, so after a spike of
//! connections the process would stay at the spike's RSS. When the number of connections has
//! fallen well below its high-water mark, `malloc_trim` returns the free pages; it runs off
//! the hot path (the server's upkeep task, every few seconds) and only after such a drop,
//! then once more a few seconds later for what the rooms gave back meanwhile.

/// Decides when to trim: after the connection count fell by a quarter (and by at least
/// `MIN_DROP` connections) from the highest count seen since the last trim, and once more
/// `FOLLOW_UP` checks after that: the rooms give back their per-session maps at their next
/// sweep (`engine::shrink`, about once a second), after the sessions have gone. Checked about
/// once a second, so a trim follows a drop within a second or two.
#[derive(Debug, Default)]
pub struct Trimmer {
    high_water: u64,
    /// Checks left until the follow-up trim.
    follow_up: Option<u32>,
}

/// Below this many connections gone, the memory at stake is not worth a trim.
const MIN_DROP: u64 = 32;

/// Checks (seconds) from a trim to its follow-up.
const FOLLOW_UP: u32 = 3;

impl Trimmer {
    /// Takes the current connection count; trims and returns true when it has dropped enough,
    /// or when a follow-up is due.
    pub fn observe(&mut self, connections: u64) -> bool {
        if self.should_trim(connections) {
            trim();
            true
        } else {
            false
        }
    }

    fn should_trim(&mut self, connections: u64) -> bool {
        if let Some(left) = self.follow_up.as_mut() {
            *left -= 1;
            if *left == 0 {
                self.follow_up = None;
                return true;
            }
        }
        if connections >= self.high_water {
            self.high_water = connections;
            return false;
        }
        let drop = self.high_water - connections;
        if drop < MIN_DROP || drop * 4 < self.high_water {
            return false;
        }
        self.high_water = connections;
        self.follow_up = Some(FOLLOW_UP);
        true
    }
}

/// Returns freed memory to the system now (after a burst of frees off the hot path: a sweep
/// of expired prepared sessions, a CPU profile).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_a_large_drop_from_the_high_water_mark() {
        let mut t = Trimmer::default();
        assert!(!t.observe(10_000));
        assert!(!t.observe(9_000), "a 10 % drop is normal churn");
        assert!(t.observe(5_000), "half gone");
        assert!(!t.observe(4_900), "the mark moved down to 5,000");
        assert!(t.observe(100), "4,900 below the mark of 5,000");
        assert!(!t.observe(100), "nothing new to give back yet");
        assert!(!t.observe(100));
        assert!(
            t.observe(100),
            "the follow-up, three checks after the last trim"
        );
        assert!(!t.observe(100), "then nothing until the next drop");
        let mut small = Trimmer::default();
        small.observe(20);
        assert!(!small.observe(0), "fewer than 32 connections gone");
    }
}
