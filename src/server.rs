//! The server: binds both ports, joins the cluster when configured, starts the rooms, serves
//! until shutdown, then drains.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::rooms::Owner;
use crate::cluster::{Cluster, ClusterError};
use crate::config::{Config, RoomConfig};
use crate::feed::{Feed, FeedConfig};
use crate::http::{ops_router, public_router};
use crate::metrics::Metrics;
use crate::rooms::{ClusterStart, Registry, RegistryError};
use crate::transport::{AdmissionLimits, PreparedSessions, Refusal, Serving, SessionHub, serve};

/// How long shutdown waits for sessions to say goodbye before stopping the rooms.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// How long releasing this node's leases and listing may take at shutdown.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// The most a SIGTERM takes to end the process: the drain, the cluster release, and the rooms
/// stopping (each within a tick or two). A supervisor's grace period must exceed it
/// (`terminationGracePeriodSeconds` in deploy/, checked by tests/deploy.rs).
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(5);

/// Connections the operations port serves at once (beyond them: 503).
const OPS_MAX_CONNECTIONS: usize = 256;

/// The operations port's header deadline: probes send their request at once.
const OPS_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Rooms(#[from] RegistryError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A bound, not yet serving server. Tests bind port 0 and read the addresses back.
#[derive(Debug)]
pub struct Server {
    config: Config,
    public: TcpListener,
    ops: TcpListener,
    hub: Arc<SessionHub>,
    shutdown: CancellationToken,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

impl Server {
    pub async fn bind(config: Config) -> Result<Self, ServerError> {
        let public = bind(config.server.listen).await?;
        let ops = bind(config.server.ops_listen).await?;
        // Before any room starts: rooms register their metric handles once, at start.
        let metrics = Arc::new(Metrics::new());
        let cluster = match &config.cluster {
            Some(c) => {
                let addr = public.local_addr().map_err(|source| ServerError::Bind {
                    addr: config.server.listen,
                    source,
                })?;
                Some(Cluster::connect(c, addr, metrics.clone()).await?)
            }
            None => None,
        };
        let start = match &cluster {
            Some(cluster) => Some(cluster_start(cluster, &config).await?),
            None => None,
        };
        let registry = Registry::start(&config, metrics.clone(), start)?;
        if let Some(cluster) = &cluster {
            cluster.follow_blocks(registry.blocks().clone());
            cluster.follow_listings();
        }
        let shutdown = CancellationToken::new();
        let hub = Arc::new(
            SessionHub::new(
                registry,
                config.session.clone(),
                shutdown.clone(),
                TaskTracker::new(),
                metrics,
                Arc::new(crate::auth::Verifier::new(&config.auth)?),
                PreparedSessions::new(
                    config.api.session_ttl(),
                    config.api.max_sessions,
                    config.api.max_sessions_per_ip,
                ),
            )
            .with_cluster(cluster),
        );
        Ok(Self {
            config,
            public,
            ops,
            hub,
            shutdown,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .expect("bound socket has an address")
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops.local_addr().expect("bound socket has an address")
    }

    /// Cancel it to shut the server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn hub(&self) -> Arc<SessionHub> {
        self.hub.clone()
    }

    /// Serves until the shutdown token fires, then closes every session with 1001, waits
    /// (bounded) for them to end, and stops the rooms.
    pub async fn run(self) -> Result<(), ServerError> {
        let Server {
            config,
            public,
            ops,
            hub,
            shutdown,
        } = self;
        let tracker = hub.tracker.clone();
        // The operations port outlives the drain so /readyz can say "shutting down".
        let ops_stop = CancellationToken::new();
        let ops_tracker = TaskTracker::new();
        let refused = {
            let metrics = hub.metrics.clone();
            Arc::new(move |r: Refusal| metrics.connection_refused(r.as_str()))
        };
        // The operations port: probes and scrapes from a few hosts, never starved by idle
        // connections (they are cut after OPS_HEADER_TIMEOUT), no per-address caps.
        ops_tracker.spawn(serve(
            ops,
            ops_router(hub.clone(), config.admin.effective_token()),
            ops_stop.clone(),
            ops_tracker.clone(),
            Serving {
                admission: AdmissionLimits {
                    max_connections: OPS_MAX_CONNECTIONS,
                    max_connections_per_ip: 0,
                    connects_per_ip_per_sec: 0.0,
                    connect_burst_per_ip: 0.0,
                },
                send_buffer: 0,
                header_timeout: OPS_HEADER_TIMEOUT,
            },
            refused.clone(),
        ));
        let s = &config.server;
        tracker.spawn(serve(
            public,
            public_router(hub.clone(), s.request_timeout(), s.max_request_body_bytes),
            shutdown.clone(),
            tracker.clone(),
            Serving {
                admission: AdmissionLimits {
                    max_connections: s.max_connections,
                    max_connections_per_ip: s.max_connections_per_ip,
                    connects_per_ip_per_sec: s.connects_per_ip_per_sec,
                    connect_burst_per_ip: s.connect_burst_per_ip,
                },
                send_buffer: config.session.send_buffer_bytes,
                header_timeout: s.header_timeout(),
            },
            refused,
        ));

        // Histograms are summarised lazily; upkeep keeps their memory bounded between scrapes.
        // Expired prepared sessions go too, so unused ones cost nothing after their ttl, and
        // after a large drop in connections freed memory goes back to the system.
        let upkeep = tokio::spawn({
            let hub = hub.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                let mut trimmer = crate::memory::Trimmer::default();
                for second in 0u64.. {
                    every.tick().await;
                    if second % 5 == 0 {
                        hub.metrics.run_upkeep();
                        // Thousands of expired sessions freed at once: give the memory back.
                        if hub.prepared.sweep(std::time::Instant::now()) >= 1_000 {
                            crate::memory::trim();
                        }
                    }
                    hub.registry.reap_idle(std::time::Instant::now());
                    if trimmer.observe(hub.active()) {
                        tracing::debug!(connections = hub.active(), "returned freed memory");
                    }
                }
            }
        });

        let cluster_upkeep = hub.cluster.clone().map(|cluster| {
            let hub = hub.clone();
            tokio::spawn(async move { cluster_upkeep(cluster, hub).await })
        });

        shutdown.cancelled().await;
        upkeep.abort();
        if let Some(task) = cluster_upkeep {
            task.abort();
        }
        tracing::info!(sessions = hub.active(), "shutting down: closing sessions");
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sessions = hub.active(),
                "drain timed out; stopping rooms anyway"
            );
        }
        // Other nodes may take this node's game rooms from now on (their clients are gone).
        if let Some(cluster) = &hub.cluster {
            let _ = tokio::time::timeout(RELEASE_TIMEOUT, async {
                cluster.release_all().await;
                cluster.withdraw().await;
            })
            .await;
        }
        let registry = hub.registry.clone();
        let _ = tokio::task::spawn_blocking(move || registry.shutdown()).await;
        ops_stop.cancel();
        ops_tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), ops_tracker.wait()).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Prepares what the registry needs from the cluster: the bus feeds (each waits for its symbol
/// list), and the configured game rooms another node already holds.
async fn cluster_start(
    cluster: &Arc<Cluster>,
    config: &Config,
) -> Result<ClusterStart, ServerError> {
    let mut feeds: HashMap<String, Box<dyn Feed>> = HashMap::new();
    let mut elsewhere = HashSet::new();
    for room in &config.rooms {
        match room {
            RoomConfig::Ticker { name, ticker } => {
                if let FeedConfig::Bus(bus) = &ticker.feed {
                    feeds.insert(name.clone(), Box::new(cluster.bus_feed(&bus.name).await?));
                }
            }
            RoomConfig::Game { name, .. } => {
                if let Owner::Elsewhere(lease) = cluster.claim(name).await? {
                    tracing::info!(room = %name, owner = %lease.node, "configured game room is held by another node");
                    elsewhere.insert(name.clone());
                }
            }
            RoomConfig::Chat { .. } => {}
        }
    }
    Ok(ClusterStart {
        cluster: cluster.clone(),
        feeds,
        elsewhere,
    })
}

/// Renews this node's leases (stopping rooms whose lease another node took) and publishes its
/// room list, until aborted.
async fn cluster_upkeep(cluster: Arc<Cluster>, hub: Arc<SessionHub>) {
    let renew_every = cluster.config.lease() / 3;
    let announce_every = Duration::from_millis(cluster.config.announce_ms);
    let mut renew = tokio::time::interval(renew_every);
    let mut announce = tokio::time::interval(announce_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = renew.tick() => {
                for room in cluster.renew(&hub.registry.game_rooms()).await {
                    hub.registry.remove(&room);
                }
            }
            _ = announce.tick() => {
                let rows = crate::http::room_rows(&hub, false);
                let ready = crate::http::ready(&hub).is_ok();
                cluster.announce(rows, ready).await;
            }
        }
    }
}
