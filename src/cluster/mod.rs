//! The cluster: tickroom nodes joined by a NATS bus (docs/operations.md, "Scaling out").
//!
//! A node with `[cluster]` in its config connects to NATS at start and uses it for four things,
//! each in its own module: a ticker room's quotes from a feed published once ([`feed`]), chat
//! rooms whose shards on every node exchange one relay per tick ([`chat`]), game rooms that
//! live on one node under a lease in a JetStream key-value bucket, and the nodes' room
//! listings ([`rooms`]), and block lists every node follows ([`blocks`]). Rooms never see the
//! bus: they get events through their channels and hand what they publish to a queue, so a
//! slow or lost bus costs a room nothing but the cross-node traffic. Without `[cluster]`
//! nothing here runs and a node is exactly a single server.

pub mod blocks;
pub mod chat;
pub mod feed;
pub mod rooms;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::metrics::Metrics;

/// `[cluster]`: absent, the server is a single node and needs no bus.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// e.g. `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// This node's name, unique in the cluster. Empty: `<host name>-<public port>` (the pod's
    /// name on Kubernetes), so two nodes on one host differ.
    pub node: String,
    /// Where clients reach this node's WebSocket, given to clients redirected here. Empty:
    /// `ws://<the bound public address>/ws`, right only when that address is reachable.
    pub public_url: String,
    /// A game room's lease: its owner renews it every third of this; a node that stops
    /// renewing (killed, cut off) loses its rooms after this long. Set by the first node to
    /// create the bucket: every node must use the same value.
    pub lease_ms: u64,
    /// How often a node publishes its room list for `GET /rooms` on the others.
    pub announce_ms: u64,
    /// How long a starting node waits for the bus, and for a bus feed's symbol list.
    pub connect_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_url: "nats://127.0.0.1:4222".into(),
            node: String::new(),
            public_url: String::new(),
            lease_ms: 10_000,
            announce_ms: 2_000,
            connect_timeout_ms: 10_000,
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.nats_url.is_empty() {
            return Err("cluster.nats_url is empty".into());
        }
        if !self.node.is_empty() && !valid_token(&self.node) {
            return Err("cluster.node: use 1-64 of A-Z a-z 0-9 _ -".into());
        }
        if self.lease_ms < 1_000 || self.announce_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(
                "cluster.lease_ms must be >= 1000, announce_ms and connect_timeout_ms > 0".into(),
            );
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// A name usable in a NATS subject token and a key-value key.
pub(crate) fn valid_token(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach the cluster bus at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cluster bus: {0}")]
    Bus(String),
    #[error("bus feed {name:?}: {message}")]
    Feed { name: String, message: String },
}

fn bus_error(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Bus(e.to_string())
}

/// The subject a feed's batches go on.
pub fn feed_subject(feed: &str) -> String {
    format!("tickroom.feed.{feed}")
}

/// The subject a chat room's relays go on.
pub fn chat_subject(room: &str) -> String {
    format!("tickroom.chat.{room}")
}

/// Key-value buckets, created by the first node that needs them.
pub const LEASES_BUCKET: &str = "tickroom_rooms";
pub const NODES_BUCKET: &str = "tickroom_nodes";
pub const BLOCKS_BUCKET: &str = "tickroom_blocks";
pub const FEEDS_BUCKET: &str = "tickroom_feeds";

/// Counters and timings of the bus, in the server's recorder.
#[derive(Debug, Clone)]
pub struct BusMetrics {
    metrics: Arc<Metrics>,
}

impl BusMetrics {
    fn new(metrics: Arc<Metrics>) -> Self {
        for stream in ["feed", "chat"] {
            for direction in ["in", "out"] {
                metrics
                    .counter(
                        "tickroom_bus_messages_total",
                        &[("direction", direction), ("stream", stream)],
                    )
                    .increment(0);
            }
            metrics
                .counter("tickroom_bus_dropped_total", &[("stream", stream)])
                .increment(0);
        }
        for outcome in ["ok", "lost", "error"] {
            metrics
                .counter("tickroom_lease_renewals_total", &[("outcome", outcome)])
                .increment(0);
        }
        metrics
            .counter("tickroom_cluster_redirects_total", &[])
            .increment(0);
        Self { metrics }
    }

    /// One message published (`out`) or taken in (`in`) on a stream (`feed`, `chat`).
    pub fn message(&self, direction: &'static str, stream: &'static str) {
        self.metrics
            .counter(
                "tickroom_bus_messages_total",
                &[("direction", direction), ("stream", stream)],
            )
            .increment(1);
    }

    /// A message that could not be handed on (a full queue on either side of the bus).
    pub fn dropped(&self, stream: &'static str) {
        self.metrics
            .counter("tickroom_bus_dropped_total", &[("stream", stream)])
            .increment(1);
    }

    /// From the publisher's clock to now, on the same host's clock or a synchronised one.
    pub fn latency(&self, stream: &'static str, published_us: i64) {
        let us = (crate::clock::unix_time_us() - published_us).max(0);
        self.metrics
            .histogram("tickroom_bus_latency_seconds", &[("stream", stream)])
            .record(us as f64 / 1e6);
    }

    pub fn lease_renewal(&self, outcome: &'static str) {
        self.metrics
            .counter("tickroom_lease_renewals_total", &[("outcome", outcome)])
            .increment(1);
    }

    pub fn redirect(&self) {
        self.metrics
            .counter("tickroom_cluster_redirects_total", &[])
            .increment(1);
    }

    fn connected(&self, up: bool) {
        self.metrics
            .gauge("tickroom_bus_connected", &[])
            .set(f64::from(u8::from(up)));
    }
}

/// A node's connection to the cluster. See the module docs.
#[derive(Debug)]
pub struct Cluster {
    pub node: String,
    pub public_url: String,
    pub config: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    leases: kv::Store,
    nodes: kv::Store,
    blocks: kv::Store,
    pub metrics: BusMetrics,
    connected: Arc<AtomicBool>,
    pub(crate) placement: rooms::Placement,
}

impl Cluster {
    /// Connects to the bus (waiting up to `connect_timeout_ms`) and opens the buckets.
    /// `public` is the bound public address, for the default `public_url`.
    pub async fn connect(
        config: &ClusterConfig,
        public: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, ClusterError> {
        // Two nodes on one host (tests, a laptop) must not share a name: the port tells them
        // apart. On Kubernetes the host name is the pod's, unique already.
        let node = if config.node.is_empty() {
            format!("{}-{}", host_name(), public.port())
        } else {
            config.node.clone()
        };
        let public_url = if config.public_url.is_empty() {
            format!("ws://{public}/ws")
        } else {
            config.public_url.clone()
        };
        let bus = BusMetrics::new(metrics);
        let connected = Arc::new(AtomicBool::new(false));
        let client = connect_client(&config.nats_url, &node, &bus, &connected, config).await?;
        connected.store(true, Relaxed);
        bus.connected(true);
        let js = jetstream::new(client.clone());
        // NATS may have just started beside us (a pod, a test): JetStream answers a moment
        // after the port opens.
        let deadline = tokio::time::Instant::now() + config.connect_timeout();
        let (leases, nodes, blocks) = loop {
            let opened = async {
                let leases = bucket(
                    &js,
                    LEASES_BUCKET,
                    config.lease(),
                    "game room -> owning node",
                )
                .await?;
                let nodes = bucket(
                    &js,
                    NODES_BUCKET,
                    Duration::from_millis(config.announce_ms * 5),
                    "node -> its rooms",
                )
                .await?;
                let blocks =
                    bucket(&js, BLOCKS_BUCKET, Duration::ZERO, "blocked users and IPs").await?;
                Ok::<_, ClusterError>((leases, nodes, blocks))
            }
            .await;
            match opened {
                Ok(stores) => break stores,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "JetStream not ready yet");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // A live node with this name elsewhere would take this one's leases for its own.
        if let Ok(Some(entry)) = nodes.entry(&node).await
            && let Ok(listing) = serde_json::from_slice::<rooms::NodeListing>(&entry.value)
            && listing.public_url != public_url
            && listing.is_fresh(config.announce_ms)
        {
            return Err(ClusterError::Bus(format!(
                "node name {node:?} is in use by a live node at {}; give each node its own \
                 cluster.node",
                listing.public_url
            )));
        }
        tracing::info!(node = %node, url = %config.nats_url, public_url = %public_url, "joined the cluster bus");
        Ok(Arc::new(Self {
            node,
            public_url,
            config: config.clone(),
            client,
            js,
            leases,
            nodes,
            blocks,
            metrics: bus,
            connected,
            placement: rooms::Placement::default(),
        }))
    }

    /// True while the connection to the bus is up (readiness).
    pub fn connected(&self) -> bool {
        self.connected.load(Relaxed)
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
}

async fn connect_client(
    url: &str,
    node: &str,
    bus: &BusMetrics,
    connected: &Arc<AtomicBool>,
    config: &ClusterConfig,
) -> Result<async_nats::Client, ClusterError> {
    let events = {
        let connected = connected.clone();
        let bus = bus.clone();
        move |event: async_nats::Event| {
            let connected = connected.clone();
            let bus = bus.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connected.store(true, Relaxed);
                        bus.connected(true);
                        tracing::info!("cluster bus connected");
                    }
                    async_nats::Event::Disconnected => {
                        connected.store(false, Relaxed);
                        bus.connected(false);
                        tracing::warn!("cluster bus disconnected; reconnecting");
                    }
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::warn!(sid, "cluster bus: a subscription fell behind");
                    }
                    other => tracing::debug!(event = %other, "cluster bus event"),
                }
            }
        }
    };
    let options = async_nats::ConnectOptions::new()
        .name(format!("tickroom-{node}"))
        // A node's own relays are not for itself.
        .no_echo()
        .connection_timeout(config.connect_timeout())
        .ping_interval(Duration::from_secs(2))
        // Reconnect for ever, at most a second apart: a node rejoins as soon as the bus is back.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((100 * attempt as u64).min(1_000))
        })
        .subscription_capacity(4096)
        .event_callback(events);
    tokio::time::timeout(config.connect_timeout(), options.connect(url))
        .await
        .map_err(|_| ClusterError::Connect {
            url: url.to_owned(),
            message: format!("no answer within {:?}", config.connect_timeout()),
        })?
        .map_err(|e| ClusterError::Connect {
            url: url.to_owned(),
            message: e.to_string(),
        })
}

/// Opens a bucket, creating it when it is missing. One that exists with other settings (a
/// different lease) is used as it is: the first node's settings win.
///
/// The bucket's stream is created directly, with the settings `create_key_value` would give
/// it: that call first asks for the account's details, and async-nats cannot parse nats-server
/// 2.9's answer (the version Debian ships), while the stream itself is plain 2.9 JetStream.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    max_age: Duration,
    description: &str,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js
        .create_stream(jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some(description.to_owned()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            // A key's duplicate window may not exceed its lifetime.
            duplicate_window: if max_age.is_zero() {
                Duration::from_secs(120)
            } else {
                max_age.min(Duration::from_secs(120))
            },
            storage: jetstream::stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        })
        .await;
    match js.get_key_value(name).await {
        Ok(store) => Ok(store),
        Err(e) => Err(bus_error(format!(
            "cannot open bucket {name}: {e} (creating it: {})",
            created.err().map_or("done".into(), |c| c.to_string())
        ))),
    }
}

/// Calls `on_entry` with every entry of `store`, then with each change, until the process
/// ends. A watch that ends (the bus went away) is started again a second later, from the whole
/// bucket, so a follower never misses the state it came back to.
fn follow<F>(store: kv::Store, what: &'static str, mut on_entry: F)
where
    F: FnMut(kv::Entry) + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match store.watch_with_history(">").await {
                Ok(mut watch) => {
                    while let Some(Ok(entry)) = watch.next().await {
                        on_entry(entry);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the {what}"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// The host name (a pod's name on Kubernetes), cut to a valid node name.
fn host_name() -> String {
    let raw = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        format!("node-{}", std::process::id())
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let mut c = ClusterConfig::default();
        assert!(c.validate().is_ok());
        c.node = "a.b".into();
        assert!(c.validate().is_err(), "a dot would split a subject");
        c.node = "node-1".into();
        c.lease_ms = 10;
        assert!(c.validate().is_err());
    }

    #[test]
    fn host_names_become_valid_node_names() {
        assert!(valid_token(&host_name()));
    }
}
