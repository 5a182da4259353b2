//! Block lists every node follows: a block set through any node's admin API is stored in the
//! `tickroom_blocks` bucket, and every node watches the bucket and applies each change to its
//! own [`BlockLists`] within milliseconds (a node that starts later reads them all first).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Cluster, ClusterError, bus_error};
use crate::moderation::{BlockLists, user_key};

/// One change of a block list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockChange {
    User { name: String, blocked: bool },
    Ip { ip: IpAddr, blocked: bool },
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The bucket key of a change: names are any Unicode, keys are not, so the key carries the
/// compared form in hex.
fn key(change: &BlockChange) -> String {
    match change {
        BlockChange::User { name, .. } => format!("user.{}", hex(&user_key(name))),
        BlockChange::Ip { ip, .. } => format!("ip.{}", hex(&ip.to_canonical().to_string())),
    }
}

/// Applies the entry under `key` (present: blocked; deleted: not) to `lists`.
fn apply(lists: &BlockLists, key: &str, blocked: bool) {
    let Some((kind, value)) = key.split_once('.') else {
        return;
    };
    let Some(value) = unhex(value) else {
        return;
    };
    match (kind, blocked) {
        ("user", true) => {
            lists.block_user(&value);
        }
        ("user", false) => {
            lists.unblock_user(&value);
        }
        ("ip", _) => {
            if let Ok(ip) = value.parse::<IpAddr>() {
                if blocked {
                    lists.block_ip(ip);
                } else {
                    lists.unblock_ip(ip);
                }
            }
        }
        _ => {}
    }
}

impl Cluster {
    /// Stores a change for every node (this one applies it through its watch as well).
    pub async fn publish_block(&self, change: &BlockChange) -> Result<(), ClusterError> {
        let key = key(change);
        let blocked = match change {
            BlockChange::User { blocked, .. } | BlockChange::Ip { blocked, .. } => *blocked,
        };
        if blocked {
            let value = match change {
                BlockChange::User { name, .. } => serde_json::json!({ "user": name }),
                BlockChange::Ip { ip, .. } => serde_json::json!({ "ip": ip.to_string() }),
            };
            self.blocks
                .put(key, Bytes::from(value.to_string()))
                .await
                .map(drop)
                .map_err(bus_error)
        } else {
            self.blocks.delete(key).await.map_err(bus_error)
        }
    }

    /// Keeps `lists` in step with the bucket until the process ends: every existing entry
    /// first, then each change as it happens. A watch that ends (the bus went away) is
    /// started again, from the whole bucket.
    pub fn follow_blocks(self: &Arc<Self>, lists: Arc<BlockLists>) {
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                match cluster.blocks.watch_with_history(">").await {
                    Ok(mut watch) => {
                        while let Some(entry) = watch.next().await {
                            let Ok(entry) = entry else { break };
                            let blocked = entry.operation == Operation::Put;
                            apply(&lists, &entry.key, blocked);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot watch the block lists"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_compared_form_and_round_trip() {
        let lists = BlockLists::default();
        let k = key(&BlockChange::User {
            name: " Tr\u{200b}oll ".into(),
            blocked: true,
        });
        assert!(k.starts_with("user.") && k[5..].bytes().all(|b| b.is_ascii_hexdigit()));
        apply(&lists, &k, true);
        assert!(lists.user_blocked("troll"));
        apply(&lists, &k, false);
        assert!(!lists.user_blocked("troll"));

        let ip: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let k = key(&BlockChange::Ip { ip, blocked: true });
        apply(&lists, &k, true);
        assert!(lists.ip_blocked("10.0.0.9".parse().unwrap()));
        apply(&lists, "ip.zz", true);
        apply(&lists, "nonsense", true);
    }
}
