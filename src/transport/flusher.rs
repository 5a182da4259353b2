//! Flushers: a few tasks (one per runtime worker) that write every ready session's frames.
//! A room's driver hands each session that got frames to its [`Link`], which queues the
//! session on its shard; the driver wakes each shard's flusher once, after the last, where it
//! would otherwise wake one writer task per session per tick. The flusher then makes one
//! `writev` per session. A session whose socket is full is left to its own writer task, so
//! one slow client never holds up the others.

use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::wire::Wire;
use crate::engine::Drain;
use crate::metrics::Metrics;

/// Sessions written between two yields, so readers on the same worker keep their turn.
const SESSIONS_PER_TURN: usize = 128;

/// Wakes a flusher through a std [`Waker`], which is all a room's driver knows of it.
#[derive(Debug, Default)]
struct Wakeup(Notify);

impl Wake for Wakeup {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}

/// One flusher's queue of sessions with frames waiting.
#[derive(Debug)]
pub struct Shard {
    ready: Mutex<Vec<Arc<Wire>>>,
    wakeup: Arc<Wakeup>,
    waker: Waker,
}

impl Default for Shard {
    fn default() -> Self {
        let wakeup = Arc::new(Wakeup::default());
        Self {
            ready: Mutex::default(),
            waker: Waker::from(wakeup.clone()),
            wakeup,
        }
    }
}

impl Shard {
    /// Queues a session. The first one queued since the flusher's last pass returns the
    /// flusher's waker, for the caller to wake once it has queued everything it has.
    fn push(&self, wire: Arc<Wire>) -> Option<Waker> {
        let mut ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = ready.is_empty();
        ready.push(wire);
        was_empty.then(|| self.waker.clone())
    }
}

/// A session's socket and its flusher: what its outbox's drain is.
#[derive(Debug)]
pub struct Link {
    wire: Arc<Wire>,
    shard: Arc<Shard>,
}

impl Link {
    /// Links `wire` to `shard` and makes the link its outbox's drain. The session keeps the
    /// returned `Arc` for its life; the outbox holds only a weak reference.
    pub fn attach(wire: Arc<Wire>, shard: Arc<Shard>) -> Arc<Self> {
        let link = Arc::new(Self { wire, shard });
        let drain: Arc<dyn Drain> = link.clone();
        link.wire.outbox().attach(Arc::downgrade(&drain));
        link
    }

    /// The session queued frames of its own (a pong, an error) that made its outbox ready:
    /// queue it and wake the flusher now.
    pub fn queue_now(self: &Arc<Self>) {
        if let Some(w) = self.clone().queue() {
            w.wake();
        }
    }

    /// The wire went from Held to Queued (the client's window reopened): put it on the
    /// flusher's queue and wake the flusher now.
    pub fn requeue(&self) {
        if let Some(w) = self.shard.push(self.wire.clone()) {
            w.wake();
        }
    }
}

impl Drain for Link {
    fn queue(self: Arc<Self>) -> Option<Waker> {
        if self.wire.ready() {
            self.shard.push(self.wire.clone())
        } else {
            None
        }
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
    pub fn start(
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        metrics: &Arc<Metrics>,
    ) -> Self {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let shards: Vec<Arc<Shard>> = (0..workers.max(1))
            .map(|_| Arc::new(Shard::default()))
            .collect();
        for shard in &shards {
            tracker.spawn(run(shard.clone(), shutdown.clone(), metrics.clone()));
        }
        Self { shards }
    }

    /// The shard a session's frames go through.
    pub fn shard(&self, session: u64) -> Arc<Shard> {
        self.shards[session as usize % self.shards.len()].clone()
    }
}

async fn run(shard: Arc<Shard>, shutdown: CancellationToken, metrics: Arc<Metrics>) {
    let mut batch: Vec<Arc<Wire>> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = shard.wakeup.0.notified() => {}
        }
        let started = std::time::Instant::now();
        std::mem::swap(
            &mut batch,
            &mut *shard.ready.lock().unwrap_or_else(|e| e.into_inner()),
        );
        for (i, wire) in batch.drain(..).enumerate() {
            wire.flush(&metrics);
            if i % SESSIONS_PER_TURN == SESSIONS_PER_TURN - 1 {
                tokio::task::yield_now().await;
            }
        }
        metrics.flush_duration().record(started.elapsed());
    }
}
