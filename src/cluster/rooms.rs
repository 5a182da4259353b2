//! Where game rooms live, and what every node hosts.
//!
//! A game room lives on one node. Its key in the `tickroom_rooms` bucket (the room's name,
//! the owner's node name and public URL as JSON) is its lease: `create` writes only when the
//! key is absent, so of two nodes creating one room exactly one wins, and the other sends its
//! clients to the winner. The owner renews every lease a third of `lease_ms` apart with a
//! compare-and-swap on the revision; the bucket's `max_age` (= `lease_ms`) expires the key of
//! a node that stopped renewing, and then any node may create the room again. A node that
//! finds its lease taken stops its copy of the room.
//!
//! Each node also publishes its room list under its name in `tickroom_nodes` every
//! `announce_ms`, and watches the others', for a cluster-wide `GET /rooms`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError, bus_error};

/// A lease's value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub public_url: String,
}

/// Who has a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node: it holds the lease.
    Here,
    Elsewhere(Lease),
}

/// One node's published room list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeListing {
    pub node: String,
    pub public_url: String,
    pub ready: bool,
    /// When it was published, µs since the Unix epoch.
    pub updated_us: i64,
    /// Rows as `GET /rooms` shows them.
    pub rooms: Vec<serde_json::Value>,
}

impl NodeListing {
    /// Published within three announce periods: its node is alive. A node that died sends no
    /// notice, and the bucket's own expiry (five periods) is slower.
    pub fn is_fresh(&self, announce_ms: u64) -> bool {
        crate::clock::unix_time_us() - self.updated_us < 3 * 1_000 * announce_ms as i64
    }
}

/// The lease an entry of the leases bucket holds; `None` for a deleted key.
fn lease_of(room: &str, entry: &kv::Entry) -> Result<Option<Lease>, ClusterError> {
    if entry.operation != Operation::Put {
        return Ok(None);
    }
    serde_json::from_slice(&entry.value)
        .map(Some)
        .map_err(|e| bus_error(format!("lease of {room:?}: {e}")))
}

/// This node's leases and its view of the others.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    /// Rooms this node holds, with the revision of its lease.
    owned: Mutex<HashMap<String, u64>>,
    /// The other nodes' listings, by node.
    listings: RwLock<HashMap<String, NodeListing>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    fn lease_value(&self) -> Bytes {
        let lease = Lease {
            node: self.node.clone(),
            public_url: self.public_url.clone(),
        };
        Bytes::from(serde_json::to_vec(&lease).expect("a lease serializes"))
    }

    /// Takes `room` for this node if no node has it; otherwise says who does.
    pub async fn claim(&self, room: &str) -> Result<Owner, ClusterError> {
        for _ in 0..3 {
            match self.leases.create(room, self.lease_value()).await {
                Ok(revision) => {
                    lock(&self.placement.owned).insert(room.to_owned(), revision);
                    return Ok(Owner::Here);
                }
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(bus_error(e)),
            }
            // Expired or released between the two calls: try again.
            let Some(entry) = self.leases.entry(room).await.map_err(bus_error)? else {
                continue;
            };
            let Some(lease) = lease_of(room, &entry)? else {
                continue;
            };
            if lease.node == self.node {
                // Ours from before (this node restarted within the lease): keep it.
                lock(&self.placement.owned).insert(room.to_owned(), entry.revision);
                return Ok(Owner::Here);
            }
            return Ok(Owner::Elsewhere(lease));
        }
        Err(bus_error(format!("lease of {room:?} keeps changing")))
    }

    /// Who holds `room`, if anyone.
    pub async fn owner(&self, room: &str) -> Result<Option<Owner>, ClusterError> {
        if lock(&self.placement.owned).contains_key(room) {
            return Ok(Some(Owner::Here));
        }
        let Some(entry) = self.leases.entry(room).await.map_err(bus_error)? else {
            return Ok(None);
        };
        let Some(lease) = lease_of(room, &entry)? else {
            return Ok(None);
        };
        Ok(Some(if lease.node == self.node {
            Owner::Here
        } else {
            Owner::Elsewhere(lease)
        }))
    }

    /// Gives `room` up (its room was removed here).
    pub async fn release(&self, room: &str) {
        let revision = lock(&self.placement.owned).remove(room);
        if let Some(revision) = revision
            && let Err(e) = self
                .leases
                .delete_expect_revision(room, Some(revision))
                .await
        {
            tracing::debug!(room, error = %e, "lease not released (expired or taken)");
        }
    }

    /// Gives every lease up (shutdown), so other nodes can take the rooms at once.
    pub async fn release_all(&self) {
        let rooms: Vec<String> = lock(&self.placement.owned).keys().cloned().collect();
        for room in rooms {
            self.release(&room).await;
        }
    }

    /// Renews the lease of every room in `hosted`, and releases those this node holds but no
    /// longer hosts. Returns the rooms whose lease another node now holds: the caller stops
    /// them. A lease that expired while the bus was away and that no one took is taken again.
    pub async fn renew(&self, hosted: &HashSet<String>) -> Vec<String> {
        let owned: Vec<(String, u64)> = lock(&self.placement.owned)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let mut lost = Vec::new();
        for (room, revision) in owned {
            if !hosted.contains(&room) {
                self.release(&room).await;
                continue;
            }
            match self
                .leases
                .update(&room, self.lease_value(), revision)
                .await
            {
                Ok(rev) => {
                    lock(&self.placement.owned).insert(room, rev);
                    self.metrics.lease_renewal("ok");
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    lock(&self.placement.owned).remove(&room);
                    match self.claim(&room).await {
                        Ok(Owner::Here) => self.metrics.lease_renewal("ok"),
                        Ok(Owner::Elsewhere(lease)) => {
                            tracing::warn!(room = %room, owner = %lease.node, "lease lost to another node; stopping the room here");
                            self.metrics.lease_renewal("lost");
                            lost.push(room);
                        }
                        Err(e) => {
                            // Not known to be lost: keep trying.
                            lock(&self.placement.owned).insert(room.clone(), revision);
                            tracing::warn!(room = %room, error = %e, "lease not renewed");
                            self.metrics.lease_renewal("error");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(room = %room, error = %e, "lease not renewed");
                    self.metrics.lease_renewal("error");
                }
            }
        }
        lost
    }

    /// Publishes this node's room rows for the others' `GET /rooms`.
    pub async fn announce(&self, rooms: Vec<serde_json::Value>, ready: bool) {
        let listing = NodeListing {
            node: self.node.clone(),
            public_url: self.public_url.clone(),
            ready,
            updated_us: crate::clock::unix_time_us(),
            rooms,
        };
        let value = Bytes::from(serde_json::to_vec(&listing).expect("a listing serializes"));
        if let Err(e) = self.nodes.put(&self.node, value).await {
            tracing::debug!(error = %e, "room list not published");
        }
    }

    /// The other nodes' listings, without those that stopped publishing (see
    /// [`NodeListing::is_fresh`]).
    pub fn listings(&self) -> Vec<NodeListing> {
        let mut out: Vec<NodeListing> = self
            .placement
            .listings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|l| l.is_fresh(self.config.announce_ms) && l.node != self.node)
            .cloned()
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Keeps [`Self::listings`] current until the process ends.
    pub fn follow_listings(self: &Arc<Self>) {
        let cluster = self.clone();
        super::follow(self.nodes.clone(), "node listings", move |entry| {
            let mut listings = cluster
                .placement
                .listings
                .write()
                .unwrap_or_else(|e| e.into_inner());
            match serde_json::from_slice::<NodeListing>(&entry.value) {
                Ok(l) if entry.operation == Operation::Put => {
                    listings.insert(entry.key.clone(), l);
                }
                _ => {
                    listings.remove(&entry.key);
                }
            }
        });
    }

    /// Removes this node's listing (shutdown).
    pub async fn withdraw(&self) {
        let _ = self.nodes.delete(&self.node).await;
    }
}
