//! Giving memory back to the system after load drops.
//!
//! glibc's allocator keeps what sessions freed in its per-thread arenas, so after a spike of
//! connections the process would stay at the spike's RSS. When the number of connections has
//! fallen well below its high-water mark, `malloc_trim` returns the free pages; it runs off
//! the hot path (the server's upkeep task, every few seconds) and only after such a drop.

/// Decides when to trim: after the connection count fell by a quarter (and by at least
/// `MIN_DROP` connections) from the highest count seen since the last trim. Checked about
/// once a second, so a trim follows a drop within a second or two.
#[derive(Debug, Default)]
pub struct Trimmer {
    high_water: u64,
}

/// Below this many connections gone, the memory at stake is not worth a trim.
const MIN_DROP: u64 = 32;

impl Trimmer {
    /// Takes the current connection count; trims and returns true when it has dropped enough.
    pub fn observe(&mut self, connections: u64) -> bool {
        if connections >= self.high_water {
            self.high_water = connections;
            return false;
        }
        let drop = self.high_water - connections;
        if drop < MIN_DROP || drop * 4 < self.high_water {
            return false;
        }
        self.high_water = connections;
        trim();
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
        assert!(!t.observe(100), "nothing new to give back");
        let mut small = Trimmer::default();
        small.observe(20);
        assert!(!small.observe(0), "fewer than 32 connections gone");
    }
}
