//! Sessions prepared over REST (`POST /api/v1/sessions`) and attached by a WebSocket to
//! `/ws?session=ID`: the two-step flow trading front ends use.
//!
//! A prepared session names a ticker room and its symbols. It stays valid while a WebSocket
//! is attached, and for `ttl` after the last one detaches (or after it was made, if none ever
//! attaches), so a client can reconnect with the same id; then it expires. One WebSocket holds
//! it at a time: a newer one takes it over and the older is closed (4002), as a game resume
//! does. A session is small (its symbols are kept as their numbers in the room), and one
//! client address may hold only so many.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::wire::Wire;
use crate::auth::Identity;

#[derive(Debug)]
struct Entry {
    room: Arc<str>,
    /// The symbols' numbers in the room.
    symbols: Arc<[u32]>,
    creator: IpAddr,
    /// Who prepared it: the WebSocket that attaches is that client.
    identity: Identity,
    attached: u32,
    idle_since: Instant,
    /// The WebSocket that holds it now.
    holder: Weak<Wire>,
}

/// What a WebSocket attaching to a prepared session streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub id: String,
    pub room: Arc<str>,
    /// The symbols' numbers in the room.
    pub symbols: Arc<[u32]>,
    /// Who prepared it.
    pub identity: Identity,
}

/// Why a session could not be prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("too many prepared sessions; try again later")]
    All,
    #[error("your address holds {0} prepared sessions; that is the limit")]
    ForAddress(usize),
}

/// See the module docs.
#[derive(Debug)]
pub struct PreparedSessions {
    ttl: Duration,
    max: usize,
    max_per_ip: usize,
    entries: Mutex<HashMap<String, Entry>>,
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl PreparedSessions {
    pub fn new(ttl: Duration, max: usize, max_per_ip: usize) -> Self {
        Self {
            ttl,
            max,
            max_per_ip,
            entries: Mutex::new(HashMap::new()),
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    fn by_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired entries, keeping the per-address counts true.
    fn drop_expired(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        let mut by_ip = self.by_ip();
        entries.retain(|_, e| {
            let keep = !self.expired(e, now);
            if !keep && let Some(n) = by_ip.get_mut(&e.creator) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&e.creator);
                }
            }
            keep
        });
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        e.attached == 0 && now.duration_since(e.idle_since) >= self.ttl
    }

    /// Prepares a session for a client at `creator` and returns its id (128 random bits,
    /// hex).
    pub fn create(
        &self,
        room: Arc<str>,
        symbols: Vec<u32>,
        creator: IpAddr,
        identity: Identity,
        now: Instant,
    ) -> Result<String, Full> {
        let creator = creator.to_canonical();
        let mut entries = self.lock();
        let theirs = self.by_ip().get(&creator).copied().unwrap_or(0);
        if entries.len() >= self.max || (self.max_per_ip > 0 && theirs >= self.max_per_ip) {
            self.drop_expired(&mut entries, now);
        }
        if entries.len() >= self.max {
            return Err(Full::All);
        }
        let theirs = self.by_ip().get(&creator).copied().unwrap_or(0);
        if self.max_per_ip > 0 && theirs >= self.max_per_ip {
            return Err(Full::ForAddress(theirs));
        }
        let id = format!("{:032x}", rand::random::<u128>());
        entries.insert(
            id.clone(),
            Entry {
                room,
                symbols: symbols.into(),
                creator,
                identity,
                attached: 0,
                idle_since: now,
                holder: Weak::new(),
            },
        );
        *self.by_ip().entry(creator).or_default() += 1;
        Ok(id)
    }

    /// Attaches a WebSocket; `None` if the id is unknown or expired.
    pub fn attach(&self, id: &str, now: Instant) -> Option<Prepared> {
        let mut entries = self.lock();
        let entry = entries.get_mut(id)?;
        if self.expired(entry, now) {
            self.drop_expired(&mut entries, now);
            return None;
        }
        entry.attached += 1;
        Some(Prepared {
            id: id.to_owned(),
            room: entry.room.clone(),
            symbols: entry.symbols.clone(),
            identity: entry.identity.clone(),
        })
    }

    /// Makes `wire` the session's WebSocket; returns the one that held it before, if it is
    /// still open, for the caller to close.
    pub fn hold(&self, id: &str, wire: &Arc<Wire>) -> Option<Arc<Wire>> {
        let mut entries = self.lock();
        let entry = entries.get_mut(id)?;
        let before = std::mem::replace(&mut entry.holder, Arc::downgrade(wire));
        before.upgrade().filter(|w| !Arc::ptr_eq(w, wire))
    }

    /// A WebSocket attached with [`attach`](Self::attach) ended; the ttl starts again.
    pub fn detach(&self, id: &str, now: Instant) {
        if let Some(e) = self.lock().get_mut(id) {
            e.attached = e.attached.saturating_sub(1);
            e.idle_since = now;
        }
    }

    /// Drops expired sessions; returns how many went.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut entries = self.lock();
        let before = entries.len();
        self.drop_expired(&mut entries, now);
        if entries.capacity() > 4 * entries.len().max(64) {
            entries.shrink_to_fit();
        }
        before - entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    fn store(max: usize, max_per_ip: usize) -> PreparedSessions {
        PreparedSessions::new(Duration::from_secs(10), max, max_per_ip)
    }

    #[test]
    fn a_prepared_session_expires_only_while_unattached() {
        let s = store(10, 0);
        let t0 = Instant::now();
        let id = s
            .create("ticker".into(), vec![7], HOME, Identity::anonymous(), t0)
            .unwrap();
        assert_eq!(id.len(), 32);
        let p = s.attach(&id, t0 + Duration::from_secs(9)).unwrap();
        assert_eq!((&*p.room, &p.symbols[..]), ("ticker", &[7][..]));
        // Attached for a long time: still valid for a second connection.
        assert!(s.attach(&id, t0 + Duration::from_secs(60)).is_some());
        s.detach(&id, t0 + Duration::from_secs(61));
        s.detach(&id, t0 + Duration::from_secs(62));
        assert!(
            s.attach(&id, t0 + Duration::from_secs(70)).is_some(),
            "within ttl of detach"
        );
        s.detach(&id, t0 + Duration::from_secs(70));
        assert!(
            s.attach(&id, t0 + Duration::from_secs(80)).is_none(),
            "expired"
        );
        assert!(s.attach("nope", t0).is_none());
    }

    #[test]
    fn the_store_is_bounded_in_all_and_per_address_and_sweeps_expired_sessions() {
        let s = store(3, 2);
        let t0 = Instant::now();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        s.create("r".into(), vec![], HOME, Identity::anonymous(), t0)
            .unwrap();
        s.create("r".into(), vec![], HOME, Identity::anonymous(), t0)
            .unwrap();
        assert_eq!(
            s.create("r".into(), vec![], HOME, Identity::anonymous(), t0),
            Err(Full::ForAddress(2))
        );
        s.create("r".into(), vec![], other, Identity::anonymous(), t0)
            .unwrap();
        assert_eq!(
            s.create("r".into(), vec![], other, Identity::anonymous(), t0),
            Err(Full::All)
        );
        let later = t0 + Duration::from_secs(11);
        assert!(
            s.create("r".into(), vec![], HOME, Identity::anonymous(), later)
                .is_ok(),
            "expired ones make room, and their address's count goes down"
        );
        assert_eq!(s.sweep(later), 0, "create swept the expired ones");
        assert_eq!(s.sweep(later + Duration::from_secs(11)), 1);
        assert!(s.by_ip().is_empty(), "no address holds any");
    }
}
