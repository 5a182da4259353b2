//! The open-file limit as the swarm sees it: raised to the hard limit at start, and how many
//! clients (one socket each) it leaves room for in one process, so a report can tell when the
//! load generator, not the server, was the bottleneck.

use std::sync::OnceLock;

use client_sim::toolkit::host;
use serde::Serialize;

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
    let (soft, _) = host::nofile()?;
    let raised = host::raise_nofile()?;
    if raised > soft {
        let _ = NOFILE_BEFORE.set(soft);
    }
    Ok(raised)
}

/// The open-file limits in force, if they can be read.
pub fn nofile_limit() -> Option<NofileLimit> {
    let (soft, hard) = host::nofile().ok()?;
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
    fn raises_and_reads_the_limits() {
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
    }
}
