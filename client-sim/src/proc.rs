//! The simulator's own resource use: CPU time from `/proc/self/stat`, usable cores and the
//! open-file limit, so a report can tell when the load generator, not the server, was the
//! bottleneck.

use std::time::{Duration, Instant};

/// `USER_HZ`, the unit of utime/stime in `/proc/<pid>/stat`. It is 100 on every Linux ABI
/// this runs on, and reading it via sysconf would need libc for one constant.
const CLOCK_TICKS_PER_SEC: u64 = 100;

/// User plus system CPU time of the whole process (all threads), if `/proc` is readable.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may contain spaces, so fields are
    // counted from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come field 3 (state) onwards; utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / CLOCK_TICKS_PER_SEC,
    ))
}

/// CPU use between two points in time, as a percentage of one core.
pub struct CpuMeter {
    cpu: Option<Duration>,
    wall: Instant,
}

impl CpuMeter {
    pub fn start() -> Self {
        CpuMeter {
            cpu: cpu_time(),
            wall: Instant::now(),
        }
    }

    /// Percent of one core used since [`CpuMeter::start`] (200 = two cores busy).
    pub fn percent_of_one_core(&self) -> Option<f64> {
        let used = cpu_time()?.checked_sub(self.cpu?)?;
        let wall = self.wall.elapsed().as_secs_f64();
        (wall > 0.0).then(|| used.as_secs_f64() / wall * 100.0)
    }
}

/// Cores this process may run on (affinity and cgroup quota included).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Soft limit on open file descriptors, which caps how many sockets the swarm can hold.
pub fn nofile_soft_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time_and_limits() {
        let before = cpu_time().expect("/proc/self/stat");
        // Burn a little CPU so the counter has a chance to move; only monotonicity is checked.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time().unwrap() >= before);
        assert!(nofile_soft_limit().unwrap_or(1) > 0);
        assert!(available_cores() >= 1);
    }
}
