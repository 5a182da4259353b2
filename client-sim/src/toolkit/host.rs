//! This machine and its processes as the tools see them: a process's CPU time and RSS (from
//! `/proc` via `procfs`, in the kernel's own clock ticks and page size), CPU use over a
//! stretch of time, the open-file limit (raised via `rlimit`), the CPU model, total memory,
//! usable cores and each core's busy and stolen time.

use std::time::{Duration, Instant};

use procfs::process::Process as Proc;
use procfs::{Current, CurrentSI, WithCurrentSystemInfo};

pub use procfs::ProcError as Error;

/// Whose figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    Myself,
    Pid(i32),
}

impl Process {
    fn open(self) -> Result<Proc, Error> {
        match self {
            Process::Myself => Proc::myself(),
            Process::Pid(pid) => Proc::new(pid),
        }
    }
}

/// A process's resource use at one moment (all threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// User plus system CPU time.
    pub cpu: Duration,
    /// Resident set size.
    pub rss_bytes: u64,
}

/// CPU time and RSS of `process`, from one read of its `stat`.
pub fn usage(process: Process) -> Result<Usage, Error> {
    let stat = process.open()?.stat()?;
    Ok(Usage {
        cpu: ticks(stat.utime + stat.stime),
        rss_bytes: stat.rss_bytes().get(),
    })
}

/// User plus system CPU time of `process` (all threads).
pub fn cpu_time(process: Process) -> Result<Duration, Error> {
    usage(process).map(|u| u.cpu)
}

/// Resident set size of `process`, in bytes.
pub fn rss_bytes(process: Process) -> Result<u64, Error> {
    usage(process).map(|u| u.rss_bytes)
}

/// The unit of the kernel's CPU times (`USER_HZ`, from sysconf).
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// Clock ticks as a duration.
pub fn ticks(n: u64) -> Duration {
    let nanos = u128::from(n) * 1_000_000_000 / u128::from(ticks_per_second().max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// This process's CPU use between two points in time, as a percentage of one core.
#[derive(Debug)]
pub struct CpuMeter {
    cpu: Option<Duration>,
    wall: Instant,
}

impl CpuMeter {
    pub fn start() -> Self {
        CpuMeter {
            cpu: cpu_time(Process::Myself).ok(),
            wall: Instant::now(),
        }
    }

    /// Percent of one core used since [`CpuMeter::start`] (200 = two cores busy); `None`
    /// when `/proc` cannot be read.
    pub fn percent_of_one_core(&self) -> Option<f64> {
        let used = cpu_time(Process::Myself).ok()?.checked_sub(self.cpu?)?;
        let wall = self.wall.elapsed().as_secs_f64();
        (wall > 0.0).then(|| used.as_secs_f64() / wall * 100.0)
    }
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
pub fn raise_nofile() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// The open-file limits in force: (soft, hard).
pub fn nofile() -> std::io::Result<(u64, u64)> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
}

/// The CPU's model name, if `/proc/cpuinfo` says.
pub fn cpu_model() -> Option<String> {
    let info = procfs::CpuInfo::current().ok()?;
    info.model_name(0).map(|m| m.trim().to_owned())
}

/// Total usable memory, in bytes.
pub fn memory_bytes() -> Option<u64> {
    procfs::Meminfo::current().ok().map(|m| m.mem_total)
}

/// Cores this process may run on (affinity and cgroup quota included).
pub fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One core's time since boot, in clock ticks ([`ticks_per_second`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreTicks {
    /// user + nice + system + irq + softirq, of every task on the core.
    pub busy: u64,
    /// Time the hypervisor ran something else while the vCPU wanted to run.
    pub steal: u64,
}

/// Every core's [`CoreTicks`] from `/proc/stat`, in core order; empty when unreadable.
pub fn core_ticks() -> Vec<CoreTicks> {
    let Ok(stats) = procfs::KernelStats::current() else {
        return Vec::new();
    };
    stats
        .cpu_time
        .iter()
        .map(|t| CoreTicks {
            busy: t.user + t.nice + t.system + t.irq.unwrap_or(0) + t.softirq.unwrap_or(0),
            steal: t.steal.unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let before = usage(Process::Myself).unwrap();
        // Burn a little CPU so the counter has a chance to move; only monotonicity is checked.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let pid = Process::Pid(std::process::id() as i32);
        assert!(cpu_time(pid).unwrap() >= before.cpu);
        // A test binary holds at least a few MB, in whole pages of the real size.
        let rss = rss_bytes(pid).unwrap();
        assert!(rss > 1 << 20 && rss % procfs::page_size() == 0, "{rss}");
        assert!(CpuMeter::start().percent_of_one_core().is_some());
        assert_eq!(ticks(ticks_per_second()), Duration::from_secs(1));
    }

    #[test]
    fn reads_the_machine_and_limits() {
        assert!(usable_cores() >= 1);
        assert!(memory_bytes().unwrap() > 1 << 20);
        let cores = core_ticks();
        assert!(
            !cores.is_empty() && cores.iter().any(|c| c.busy > 0),
            "{cores:?}"
        );
        let (soft, hard) = nofile().unwrap();
        let raised = raise_nofile().unwrap();
        assert!(raised >= soft && raised <= hard);
        assert_eq!(nofile().unwrap(), (raised, hard));
    }
}
