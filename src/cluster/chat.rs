//! One chat room across nodes: each node's room is a shard holding its own viewers.
//!
//! Once per tick a shard hands what it accepted (viewer messages after every check, notices
//! and gifts injected on this node) to its [`Relay`], which publishes them as ONE `ChatRelay`
//! on `tickroom.chat.<room>`. Every other shard takes relays in through its room's event
//! channel and merges them into its next batch, so a viewer anywhere sees every message once,
//! in each sender's order. Bus traffic follows ticks and nodes, never viewers.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use tickroom_proto::bus::v1::ChatRelay;
use tickroom_proto::v1::ChatMessage;

use super::{Cluster, chat_subject};

/// Relays waiting to be published; a room never waits for the bus, it drops (and counts).
const QUEUE: usize = 1024;

/// A shard's outlet to the bus: called on the room thread, never blocks.
pub struct Relay {
    tx: tokio::sync::mpsc::Sender<Vec<ChatMessage>>,
    metrics: super::BusMetrics,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// Publishes one tick's messages of this shard.
    pub fn send(&self, messages: Vec<ChatMessage>) {
        if messages.is_empty() {
            return;
        }
        if self.tx.try_send(messages).is_err() {
            self.metrics.dropped("chat");
        }
    }
}

impl Cluster {
    /// Joins chat room `room` to its shards on the other nodes: relays from them go to
    /// `deliver` (the room's event channel; false when it is full or gone), and the returned
    /// [`Relay`] publishes this shard's. Call inside the runtime.
    pub fn chat_relay<F>(self: &Arc<Self>, room: &str, deliver: F) -> Relay
    where
        F: Fn(Vec<ChatMessage>) -> bool + Send + 'static,
    {
        let subject = chat_subject(room);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<ChatMessage>>(QUEUE);
        // Out: one publish per tick with something to say.
        tokio::spawn({
            let cluster = self.clone();
            let subject = subject.clone();
            async move {
                while let Some(messages) = rx.recv().await {
                    let relay = ChatRelay {
                        origin: cluster.node.clone(),
                        published_us: crate::clock::unix_time_us(),
                        messages,
                    };
                    let payload = Bytes::from(relay.encode_to_vec());
                    match cluster.client().publish(subject.clone(), payload).await {
                        Ok(()) => cluster.metrics.message("out", "chat"),
                        Err(_) => cluster.metrics.dropped("chat"),
                    }
                }
            }
        });
        // In: the other shards' relays. The client re-subscribes by itself after a reconnect.
        tokio::spawn({
            let cluster = self.clone();
            let room = room.to_owned();
            async move {
                let mut sub = match cluster.client().subscribe(subject).await {
                    Ok(sub) => sub,
                    Err(e) => {
                        tracing::error!(room = %room, error = %e, "cannot subscribe to the chat relay");
                        return;
                    }
                };
                while let Some(msg) = sub.next().await {
                    let Ok(relay) = ChatRelay::decode(msg.payload) else {
                        tracing::warn!(room = %room, "undecodable chat relay");
                        continue;
                    };
                    // no_echo keeps our own relays away; a second process with our node name
                    // would be a misconfiguration, and its relays are not ours to show twice.
                    if relay.origin == cluster.node {
                        continue;
                    }
                    cluster.metrics.message("in", "chat");
                    cluster.metrics.latency("chat", relay.published_us);
                    if !deliver(relay.messages) {
                        cluster.metrics.dropped("chat");
                    }
                }
            }
        });
        Relay {
            tx,
            metrics: self.metrics.clone(),
        }
    }
}
