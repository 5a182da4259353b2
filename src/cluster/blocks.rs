//! Block lists every node follows: a block set through any node's admin API is stored in the
//! `tickroom_blocks` bucket, and every node watches the bucket and applies each change to its
//! own [`BlockLists`] within milliseconds (a node that starts later reads them all first).

use std::sync::Arc;

use async_nats::jetstream::kv::Operation;
use bytes::Bytes;

use super::{Cluster, ClusterError, bus_error};
use crate::moderation::{BlockChange, BlockLists, user_key};

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

/// The change an entry under `key` means (present: blocked; deleted: not); `None` for a key
/// this version does not write.
fn change_of(key: &str, blocked: bool) -> Option<BlockChange> {
    let (kind, value) = key.split_once('.')?;
    let value = unhex(value)?;
    match kind {
        "user" => Some(BlockChange::User {
            name: value,
            blocked,
        }),
        "ip" => Some(BlockChange::Ip {
            ip: value.parse().ok()?,
            blocked,
        }),
        _ => None,
    }
}

impl Cluster {
    /// Stores a change for every node (this one applies it through its watch as well).
    pub async fn publish_block(&self, change: &BlockChange) -> Result<(), ClusterError> {
        let key = key(change);
        if !change.blocked() {
            return self.blocks.delete(key).await.map_err(bus_error);
        }
        let value = match change {
            BlockChange::User { name, .. } => serde_json::json!({ "user": name }),
            BlockChange::Ip { ip, .. } => serde_json::json!({ "ip": ip.to_string() }),
        };
        self.blocks
            .put(key, Bytes::from(value.to_string()))
            .await
            .map(drop)
            .map_err(bus_error)
    }

    /// Keeps `lists` in step with the bucket until the process ends: every existing entry
    /// first, then each change as it happens. A watch that ends (the bus went away) is
    /// started again, from the whole bucket.
    pub fn follow_blocks(self: &Arc<Self>, lists: Arc<BlockLists>) {
        super::follow(self.blocks.clone(), "block lists", move |entry| {
            if let Some(change) = change_of(&entry.key, entry.operation == Operation::Put) {
                change.apply(&lists);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn keys_carry_the_compared_form_and_round_trip() {
        let lists = BlockLists::default();
        let k = key(&BlockChange::User {
            name: " Tr\u{200b}oll ".into(),
            blocked: true,
        });
        assert!(k.starts_with("user.") && k[5..].bytes().all(|b| b.is_ascii_hexdigit()));
        change_of(&k, true).unwrap().apply(&lists);
        assert!(lists.user_blocked("troll"));
        change_of(&k, false).unwrap().apply(&lists);
        assert!(!lists.user_blocked("troll"));

        let ip: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let k = key(&BlockChange::Ip { ip, blocked: true });
        change_of(&k, true).unwrap().apply(&lists);
        assert!(lists.ip_blocked("10.0.0.9".parse().unwrap()));
        assert_eq!(change_of("ip.zz", true), None);
        assert_eq!(change_of("nonsense", true), None);
    }
}
