//! Flushers: a few tasks (one per runtime worker) that write every ready session's frames.
//! A room's hand-out queues the sessions it gave frames to on their shard and wakes the
//! shard's flusher once, where it would otherwise wake one writer task per session per tick;
//! the flusher then makes one `writev` per session. A session whose socket is full is left to
//! its own writer task, so one slow client never holds up the others.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::Wire;
use crate::outbox::CloseReason;

/// Sessions written between two yields, so readers on the same worker keep their turn.
const SESSIONS_PER_TURN: usize = 128;

/// One flusher's queue of sessions with frames waiting.
#[derive(Debug, Default)]
pub struct Shard {
    ready: Mutex<Vec<Arc<Wire>>>,
    notify: Arc<Notify>,
}

impl Shard {
    /// Queues a session. The first one queued since the flusher's last pass returns the
    /// flusher's wake-up, for the caller to notify (see [`Outbox::wake_later`]).
    ///
    /// [`Outbox::wake_later`]: crate::outbox::Outbox::wake_later
    pub fn push(&self, wire: Arc<Wire>) -> Option<Arc<Notify>> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = ready.is_empty();
        ready.push(wire);
        was_empty.then(|| self.notify.clone())
    }
}

/// The flushers of one server.
#[derive(Debug)]
pub struct Flushers {
    shards: Vec<Arc<Shard>>,
}

impl Flushers {
    /// Starts one flusher per worker of the current runtime; they end with `shutdown`, after
    /// which each session's writer task writes its last frames itself.
    pub fn start(tracker: &TaskTracker, shutdown: &CancellationToken) -> Self {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let shards: Vec<Arc<Shard>> = (0..workers.max(1))
            .map(|_| Arc::new(Shard::default()))
            .collect();
        for shard in &shards {
            tracker.spawn(run(shard.clone(), shutdown.clone()));
        }
        Self { shards }
    }

    /// The shard a session's frames go through.
    pub fn shard(&self, session: u64) -> Arc<Shard> {
        self.shards[session as usize % self.shards.len()].clone()
    }
}

async fn run(shard: Arc<Shard>, shutdown: CancellationToken) {
    let mut batch: Vec<Arc<Wire>> = Vec::new();
    let duration = crate::metrics::flush_duration();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = shard.notify.notified() => {}
        }
        let started = std::time::Instant::now();
        std::mem::swap(
            &mut batch,
            &mut *shard.ready.lock().unwrap_or_else(|e| e.into_inner()),
        );
        for (i, wire) in batch.drain(..).enumerate() {
            if wire.flush_outbox(false).is_err() {
                // A failed write ends the session; its writer and reader follow the outbox.
                wire.outbox().close(CloseReason::PeerGone);
            }
            if i % SESSIONS_PER_TURN == SESSIONS_PER_TURN - 1 {
                tokio::task::yield_now().await;
            }
        }
        duration.record(started.elapsed());
    }
}
