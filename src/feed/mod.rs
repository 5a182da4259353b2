//! Price feeds for ticker rooms: where quotes come from, behind one trait.
//!
//! A feed runs on its own thread and hands batches of [`QuoteUpdate`]s to a [`FeedSink`],
//! whose delivery function (given by whoever starts the feed: the registry sends them to a
//! ticker room, waiting while its channel is full, since a feed must not lose quotes and it
//! is not the hot path) decides where they go. Its symbol universe is fixed when it is
//! built, so the HTTP API can check symbol names without asking the room. A message-bus feed
//! plugs in the same way (`cluster::feed`): its symbols come from the bus, and it is built
//! by the cluster before the registry starts the room.

mod replay;
mod synthetic;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use replay::{Pace, ReplayConfig, ReplayFeed};
pub use synthetic::{SyntheticConfig, SyntheticFeed};

/// One new value of one symbol, as a feed reports it. The room numbers the update (its
/// per-symbol sequence) and derives the day change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuoteUpdate {
    /// Index into the feed's [`Feed::symbols`].
    pub symbol: u32,
    pub last: f64,
    pub bid: f64,
    pub ask: f64,
    /// Shares traded today, cumulative.
    pub volume: u64,
    /// When the exchange produced the value, µs since the Unix epoch.
    pub exchange_time_us: i64,
    /// The symbol's sequence number when the feed gives one (a bus feed carries its
    /// publisher's, so every node shows the same); 0: the room numbers the update itself.
    pub seq: u64,
}

/// A symbol a feed quotes and the price its day change is measured from.
#[derive(Debug, Clone, PartialEq)]
pub struct SymbolSpec {
    pub name: String,
    pub prev_close: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("invalid feed: {0}")]
    Invalid(String),
}

/// The room is gone or the feed was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("feed stopped")]
pub struct Stopped;

/// A source of quotes for one ticker room.
pub trait Feed: Send + 'static {
    /// Short name for logs ("synthetic", "replay").
    fn kind(&self) -> &'static str;

    /// Every symbol this feed will quote, in a fixed order (updates refer to it by index).
    fn symbols(&self) -> &[SymbolSpec];

    /// Produces quotes until the feed ends or `sink` says stop. Runs on its own thread and
    /// may block.
    fn run(self: Box<Self>, sink: FeedSink) -> Result<(), Stopped>;
}

impl std::fmt::Debug for dyn Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Feed({}, {} symbols)", self.kind(), self.symbols().len())
    }
}

/// Feed settings of a ticker room (`[rooms.feed]`, tagged by `kind`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum FeedConfig {
    Synthetic(SyntheticConfig),
    Replay(ReplayConfig),
    /// Quotes published once on the cluster bus by `tickroom feed` (needs `[cluster]`).
    Bus(BusFeedConfig),
}

/// `kind = "bus"`: the feed published under `name` on the cluster bus.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BusFeedConfig {
    pub name: String,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig::Synthetic(SyntheticConfig::default())
    }
}

impl FeedConfig {
    /// Builds the feed; a replay reads and checks its whole file here, so a bad file stops
    /// the server at start rather than later.
    pub fn build(&self) -> Result<Box<dyn Feed>, FeedError> {
        Ok(match self {
            FeedConfig::Synthetic(c) => Box::new(SyntheticFeed::new(c.clone())?),
            FeedConfig::Replay(c) => Box::new(ReplayFeed::open(c.clone())?),
            FeedConfig::Bus(c) => {
                return Err(FeedError::Invalid(format!(
                    "the bus feed {:?} needs [cluster] in the config",
                    c.name
                )));
            }
        })
    }
}

/// Hands a batch on, waiting as long as it must; gives up (returns `Stopped`) once the stop
/// flag it is given is set or the receiver is gone.
pub type Deliver = Box<dyn Fn(Vec<QuoteUpdate>, &AtomicBool) -> Result<(), Stopped> + Send>;

/// Where a feed delivers, plus the stop flag.
pub struct FeedSink {
    deliver: Deliver,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for FeedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedSink")
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

/// The longest a feed sleeps before looking at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

impl FeedSink {
    pub fn new(deliver: Deliver, stop: Arc<AtomicBool>) -> Self {
        Self { deliver, stop }
    }

    /// Hands a batch on, waiting while the receiver is full.
    pub fn send(&self, batch: Vec<QuoteUpdate>) -> Result<(), Stopped> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.is_stopped() {
            return Err(Stopped);
        }
        (self.deliver)(batch, &self.stop)
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Relaxed)
    }

    /// Sleeps until `deadline`, waking early to stop.
    pub fn sleep_until(&self, deadline: Instant) -> Result<(), Stopped> {
        loop {
            if self.is_stopped() {
                return Err(Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            std::thread::sleep((deadline - now).min(STOP_CHECK));
        }
    }
}

/// A running feed thread.
#[derive(Debug)]
pub struct FeedHandle {
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl FeedHandle {
    /// Runs `feed` on a thread named after `room`, handing its batches to `deliver`.
    pub fn spawn(feed: Box<dyn Feed>, room: &str, deliver: Deliver) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sink = FeedSink::new(deliver, stop.clone());
        let name: String = format!("feed-{room}").chars().take(15).collect();
        let room_name = room.to_owned();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let kind = feed.kind();
            match feed.run(sink) {
                Ok(()) => tracing::info!(room = %room_name, feed = kind, "feed ended"),
                Err(Stopped) => tracing::debug!(room = %room_name, feed = kind, "feed stopped"),
            }
        })?;
        Ok(Self {
            stop,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Stops the feed and waits for its thread. Safe to call more than once.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for FeedHandle {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// Rounds a price to the cent, as quotes are shown.
pub(crate) fn cents(price: f64) -> f64 {
    (price * 100.0).round() / 100.0
}
