//! A price feed published once on the bus and consumed by every node's ticker room.
//!
//! `tickroom feed` runs any [`Feed`] (synthetic, replay) and publishes each batch it produces
//! as ONE `FeedBatch` on `tickroom.feed.<name>`, numbering every symbol's updates itself, so
//! every node shows the same `(symbol, seq, value)`. Before its first batch it stores the
//! symbol list under `<name>` in the `tickroom_feeds` bucket. A node's [`BusFeed`] reads that
//! list at start (a ticker room's symbols are fixed when it starts) and hands the batches to
//! its room like any other feed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use tickroom_proto::bus::v1::{FeedBatch, FeedInfo, FeedQuote, FeedSymbol};
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError, FEEDS_BUCKET, bus_error, feed_subject, valid_token};
use crate::feed::{Feed, FeedHandle, FeedSink, QuoteUpdate, Stopped, SymbolSpec};

/// Batches received but not yet taken by the room's feed thread; beyond it the bus task drops
/// (and counts) rather than stall the subscription.
const QUEUE: usize = 4096;

/// A ticker room's feed that reads a published feed off the bus. See the module docs.
#[derive(Debug)]
pub struct BusFeed {
    name: String,
    symbols: Vec<SymbolSpec>,
    batches: crossbeam_channel::Receiver<Vec<QuoteUpdate>>,
}

impl Feed for BusFeed {
    fn kind(&self) -> &'static str {
        "bus"
    }

    fn symbols(&self) -> &[SymbolSpec] {
        &self.symbols
    }

    fn run(self: Box<Self>, sink: FeedSink) -> Result<(), Stopped> {
        loop {
            if sink.is_stopped() {
                return Err(Stopped);
            }
            match self.batches.recv_timeout(Duration::from_millis(50)) {
                Ok(batch) => sink.send(batch)?,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    tracing::info!(feed = %self.name, "bus feed subscription ended");
                    return Ok(());
                }
            }
        }
    }
}

impl Cluster {
    /// The feed published as `name`: waits up to `connect_timeout_ms` for its symbol list,
    /// then subscribes to its batches.
    pub async fn bus_feed(self: &Arc<Self>, name: &str) -> Result<BusFeed, ClusterError> {
        let feed_error = |message: String| ClusterError::Feed {
            name: name.to_owned(),
            message,
        };
        if !valid_token(name) {
            return Err(feed_error("use 1-64 of A-Z a-z 0-9 _ -".into()));
        }
        let info = self
            .feed_info(name)
            .await?
            .ok_or_else(|| {
                feed_error(format!(
                    "no symbol list in bucket {FEEDS_BUCKET} after {:?}: is `tickroom feed --name {name}` running?",
                    self.config.connect_timeout()
                ))
            })?;
        let symbols: Vec<SymbolSpec> = info
            .symbols
            .into_iter()
            .map(|s| SymbolSpec {
                name: s.name,
                prev_close: s.prev_close,
            })
            .collect();
        let mut sub = self
            .client()
            .subscribe(feed_subject(name))
            .await
            .map_err(bus_error)?;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let metrics = self.metrics.clone();
        let feed = name.to_owned();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let batch = match FeedBatch::decode(msg.payload) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(feed = %feed, error = %e, "undecodable feed batch");
                        continue;
                    }
                };
                metrics.message("in", "feed");
                metrics.latency("feed", batch.published_us);
                let updates = batch.quotes.into_iter().map(quote_update).collect();
                match tx.try_send(updates) {
                    Ok(()) => {}
                    Err(crossbeam_channel::TrySendError::Full(_)) => metrics.dropped("feed"),
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => break,
                }
            }
        });
        Ok(BusFeed {
            name: name.to_owned(),
            symbols,
            batches: rx,
        })
    }

    async fn feed_info(&self, name: &str) -> Result<Option<FeedInfo>, ClusterError> {
        let store = feeds_bucket(self.jetstream()).await?;
        let deadline = Instant::now() + self.config.connect_timeout();
        loop {
            if let Some(value) = store.get(name).await.map_err(bus_error)? {
                let info = FeedInfo::decode(value).map_err(|e| ClusterError::Feed {
                    name: name.to_owned(),
                    message: format!("undecodable symbol list: {e}"),
                })?;
                return Ok(Some(info));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn quote_update(q: FeedQuote) -> QuoteUpdate {
    QuoteUpdate {
        symbol: q.symbol,
        last: q.last,
        bid: q.bid,
        ask: q.ask,
        volume: q.volume,
        exchange_time_us: q.exchange_time_us,
        seq: q.seq,
    }
}

async fn feeds_bucket(js: &jetstream::Context) -> Result<kv::Store, ClusterError> {
    super::bucket(js, FEEDS_BUCKET, Duration::ZERO, "feed -> its symbols").await
}

/// What `tickroom feed` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    pub batches: u64,
    pub quotes: u64,
}

/// Runs `feed` and publishes it as `name` on the bus at `nats_url` until `stop` fires or the
/// feed ends (`tickroom feed`).
pub async fn publish(
    nats_url: &str,
    name: &str,
    feed: Box<dyn Feed>,
    stop: CancellationToken,
) -> Result<Published, ClusterError> {
    let feed_error = |message: String| ClusterError::Feed {
        name: name.to_owned(),
        message,
    };
    if !valid_token(name) {
        return Err(feed_error("use 1-64 of A-Z a-z 0-9 _ -".into()));
    }
    let client = async_nats::ConnectOptions::new()
        .name(format!("tickroom-feed-{name}"))
        .max_reconnects(None)
        .connect(nats_url)
        .await
        .map_err(|e| ClusterError::Connect {
            url: nats_url.to_owned(),
            message: e.to_string(),
        })?;
    let epoch = crate::clock::unix_time_us() as u64;
    let symbols = feed.symbols().to_vec();
    let info = FeedInfo {
        symbols: symbols
            .iter()
            .map(|s| FeedSymbol {
                name: s.name.clone(),
                prev_close: s.prev_close,
            })
            .collect(),
        epoch,
    };
    let store = feeds_bucket(&jetstream::new(client.clone())).await?;
    store
        .put(name, Bytes::from(info.encode_to_vec()))
        .await
        .map_err(bus_error)?;
    tracing::info!(
        feed = name,
        kind = feed.kind(),
        symbols = symbols.len(),
        "publishing"
    );

    // The feed thread blocks; its batches cross to this task through a channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<QuoteUpdate>>(1024);
    let deliver = Box::new(move |batch, stop: &std::sync::atomic::AtomicBool| {
        let mut batch = Some(batch);
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Stopped);
            }
            match tx.try_send(batch.take().expect("batch kept until sent")) {
                Ok(()) => return Ok(()),
                Err(tokio::sync::mpsc::error::TrySendError::Full(b)) => {
                    batch = Some(b);
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return Err(Stopped),
            }
        }
    });
    let handle = FeedHandle::spawn(feed, name, deliver).map_err(|e| feed_error(e.to_string()))?;
    let subject = feed_subject(name);
    let mut seqs = vec![0u64; symbols.len()];
    let mut done = Published::default();
    let mut last_log = Instant::now();
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => break,
            batch = rx.recv() => match batch {
                Some(b) => b,
                None => break,
            },
        };
        let quotes: Vec<FeedQuote> = batch
            .into_iter()
            .filter_map(|u| {
                let seq = seqs.get_mut(u.symbol as usize)?;
                *seq += 1;
                Some(FeedQuote {
                    symbol: u.symbol,
                    seq: *seq,
                    last: u.last,
                    bid: u.bid,
                    ask: u.ask,
                    volume: u.volume,
                    exchange_time_us: u.exchange_time_us,
                })
            })
            .collect();
        done.batches += 1;
        done.quotes += quotes.len() as u64;
        let msg = FeedBatch {
            epoch,
            published_us: crate::clock::unix_time_us(),
            quotes,
        };
        // Core NATS: at most once. A batch lost while the bus is down is not replayed; the
        // next update of each symbol carries its newest value (and a seq that shows the gap).
        // While the bus is away the client's queue fills and publish waits: a stop must not.
        let published = tokio::select! {
            _ = stop.cancelled() => break,
            r = client.publish(subject.clone(), Bytes::from(msg.encode_to_vec())) => r,
        };
        if let Err(e) = published {
            tracing::warn!(feed = name, error = %e, "publish failed");
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(
                feed = name,
                batches = done.batches,
                quotes = done.quotes,
                "published"
            );
        }
    }
    handle.stop();
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    Ok(done)
}
