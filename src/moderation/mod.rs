//! Moderation shared by the whole server: user and IP block lists, changed at run time through
//! the admin API and read on every chat send and every upgrade, so a change takes effect at
//! once. The sensitive-word filter is per chat room ([`WordFilter`]).

mod text;
mod word_filter;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::RwLock;

pub use text::{has_bidi_controls, normalize};
pub use word_filter::{FilterError, FilterPolicy, WordFilter};

/// One change of a block list, as the admin API makes it and the cluster carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockChange {
    User { name: String, blocked: bool },
    Ip { ip: IpAddr, blocked: bool },
}

impl BlockChange {
    pub fn blocked(&self) -> bool {
        match self {
            BlockChange::User { blocked, .. } | BlockChange::Ip { blocked, .. } => *blocked,
        }
    }

    /// Applies the change; true if the list changed.
    pub fn apply(&self, lists: &BlockLists) -> bool {
        match self {
            BlockChange::User {
                name,
                blocked: true,
            } => lists.block_user(name),
            BlockChange::User {
                name,
                blocked: false,
            } => lists.unblock_user(name),
            BlockChange::Ip { ip, blocked: true } => lists.block_ip(*ip),
            BlockChange::Ip { ip, blocked: false } => lists.unblock_ip(*ip),
        }
    }
}

/// See the module docs. User names compare case-insensitively ("Bob" blocks "bob"), so a
/// change of case does not get around a block; IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Debug, Default)]
pub struct BlockLists {
    users: RwLock<HashSet<String>>,
    ips: RwLock<HashSet<IpAddr>>,
}

/// The form user names are compared in: normalized (see [`normalize`]), trimmed, lower case.
pub fn user_key(name: &str) -> String {
    normalize(name).trim().to_lowercase()
}

impl BlockLists {
    pub fn new<U, I>(users: U, ips: I) -> Self
    where
        U: IntoIterator<Item = String>,
        I: IntoIterator<Item = IpAddr>,
    {
        let lists = Self::default();
        for u in users {
            lists.block_user(&u);
        }
        for ip in ips {
            lists.block_ip(ip);
        }
        lists
    }

    /// Returns true if the user was not blocked before.
    pub fn block_user(&self, name: &str) -> bool {
        write(&self.users).insert(user_key(name))
    }

    /// Returns true if the user was blocked.
    pub fn unblock_user(&self, name: &str) -> bool {
        write(&self.users).remove(&user_key(name))
    }

    pub fn user_blocked(&self, name: &str) -> bool {
        let users = read(&self.users);
        !users.is_empty() && users.contains(&user_key(name))
    }

    pub fn block_ip(&self, ip: IpAddr) -> bool {
        write(&self.ips).insert(ip.to_canonical())
    }

    pub fn unblock_ip(&self, ip: IpAddr) -> bool {
        write(&self.ips).remove(&ip.to_canonical())
    }

    pub fn ip_blocked(&self, ip: IpAddr) -> bool {
        let ips = read(&self.ips);
        !ips.is_empty() && ips.contains(&ip.to_canonical())
    }

    /// Both lists, sorted, for the admin API.
    pub fn list(&self) -> (Vec<String>, Vec<String>) {
        let mut users: Vec<String> = read(&self.users).iter().cloned().collect();
        let mut ips: Vec<String> = read(&self.ips).iter().map(IpAddr::to_string).collect();
        users.sort();
        ips.sort();
        (users, ips)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_apply_at_once_and_ignore_case_and_address_form() {
        let b = BlockLists::default();
        assert!(!b.user_blocked("Bob"));
        assert!(b.block_user("Bob"));
        assert!(!b.block_user("bob"), "already blocked");
        assert!(b.user_blocked("BOB") && b.user_blocked(" bob "));
        assert!(b.unblock_user("bOb"));
        assert!(!b.user_blocked("bob"));

        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        b.block_ip(mapped);
        assert!(b.ip_blocked(v4));
        assert_eq!(b.list().1, ["10.1.2.3"]);
        assert!(b.unblock_ip(v4));
        assert!(!b.ip_blocked(mapped));
    }
}
