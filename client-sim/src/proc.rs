//! The simulator's own resource use: CPU time from `/proc/self/stat`, usable cores and the
//! open-file limit (raised to the hard limit at start), so a report can tell when the load
//! generator, not the server, was the bottleneck.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;

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

/// File descriptors kept free for the runtime, stdio and HTTP requests: the rest is one
/// socket per client.
pub const RESERVED_FDS: u64 = 64;

/// The soft limit before [`raise_nofile_limit`] raised it.
static NOFILE_BEFORE: OnceLock<u64> = OnceLock::new();

/// The open-file limits, which cap how many sockets the swarm can hold.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NofileLimit {
    /// Soft limit in force (what `open` and `connect` are held to).
    pub soft: u64,
    /// Hard limit: the soft one cannot be raised past it without privileges.
    pub hard: u64,
    /// Soft limit at start, when client-sim raised it.
    pub raised_from: Option<u64>,
    /// Clients the soft limit leaves room for (one socket each, [`RESERVED_FDS`] kept).
    pub max_clients: u64,
}

impl NofileLimit {
    /// The limit as a warning when `clients` need more sockets than it allows.
    pub fn warning(&self, clients: usize) -> Option<String> {
        ((clients as u64) > self.max_clients).then(|| {
            format!(
                "{clients} clients exceed the open-file limit: the soft limit is {} (hard {}), \
                 room for about {} clients in one process; the rest fail to connect \
                 (run several client-sim processes)",
                self.soft, self.hard, self.max_clients
            )
        })
    }
}

/// Raises the soft open-file limit to the hard limit, once at start.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let raised = rlimit::increase_nofile_limit(u64::MAX)?;
    if raised > soft {
        let _ = NOFILE_BEFORE.set(soft);
    }
    Ok(raised)
}

/// The open-file limits in force, if they can be read.
pub fn nofile_limit() -> Option<NofileLimit> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
    Some(NofileLimit {
        soft,
        hard,
        raised_from: NOFILE_BEFORE.get().copied(),
        max_clients: soft.saturating_sub(RESERVED_FDS),
    })
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
        let before = nofile_limit().unwrap();
        let raised = raise_nofile_limit().unwrap();
        let after = nofile_limit().unwrap();
        assert!(after.soft >= before.soft && after.soft == raised && after.soft <= after.hard);
        assert_eq!(after.max_clients, after.soft - RESERVED_FDS);
        assert!(after.warning(after.max_clients as usize).is_none());
        assert!(
            after
                .warning(after.max_clients as usize + 1)
                .unwrap()
                .contains("exceed")
        );
        assert!(available_cores() >= 1);
    }
}
