//! Sessions prepared over REST (`POST /api/v1/sessions`) and attached by a WebSocket to
//! `/ws?session=ID`: the two-step flow trading front ends use.
//!
//! A prepared session names a ticker room and its symbols. It stays valid while a WebSocket
//! is attached, and for `ttl` after the last one detaches (or after it was made, if none ever
//! attaches), so a client can reconnect with the same id; then it expires. One WebSocket holds
//! it at a time: a newer one takes it over and the older is closed (4002), as a game resume
//! does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::wire::Wire;

#[derive(Debug)]
struct Entry {
    room: Arc<str>,
    symbols: Arc<[String]>,
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
    pub symbols: Arc<[String]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many prepared sessions; try again later")]
pub struct Full;

/// See the module docs.
#[derive(Debug)]
pub struct PreparedSessions {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl PreparedSessions {
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
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

    /// Prepares a session and returns its id (128 random bits, hex).
    pub fn create(
        &self,
        room: Arc<str>,
        symbols: Vec<String>,
        now: Instant,
    ) -> Result<String, Full> {
        let mut entries = self.lock();
        if entries.len() >= self.max {
            entries.retain(|_, e| !self.expired(e, now));
            if entries.len() >= self.max {
                return Err(Full);
            }
        }
        let id = format!("{:032x}", rand::random::<u128>());
        entries.insert(
            id.clone(),
            Entry {
                room,
                symbols: symbols.into(),
                attached: 0,
                idle_since: now,
                holder: Weak::new(),
            },
        );
        Ok(id)
    }

    /// Attaches a WebSocket; `None` if the id is unknown or expired.
    pub fn attach(&self, id: &str, now: Instant) -> Option<Prepared> {
        let mut entries = self.lock();
        let entry = entries.get_mut(id)?;
        if self.expired(entry, now) {
            entries.remove(id);
            return None;
        }
        entry.attached += 1;
        Some(Prepared {
            id: id.to_owned(),
            room: entry.room.clone(),
            symbols: entry.symbols.clone(),
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

    /// Drops expired sessions; returns how many are left.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut entries = self.lock();
        entries.retain(|_, e| !self.expired(e, now));
        entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: usize) -> PreparedSessions {
        PreparedSessions::new(Duration::from_secs(10), max)
    }

    #[test]
    fn a_prepared_session_expires_only_while_unattached() {
        let s = store(10);
        let t0 = Instant::now();
        let id = s.create("ticker".into(), vec!["A".into()], t0).unwrap();
        assert_eq!(id.len(), 32);
        let p = s.attach(&id, t0 + Duration::from_secs(9)).unwrap();
        assert_eq!(
            (&*p.room, &p.symbols[..]),
            ("ticker", &["A".to_string()][..])
        );
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
    fn the_store_is_bounded_and_sweeps_expired_sessions() {
        let s = store(2);
        let t0 = Instant::now();
        s.create("r".into(), vec![], t0).unwrap();
        s.create("r".into(), vec![], t0).unwrap();
        assert_eq!(s.create("r".into(), vec![], t0), Err(Full));
        let later = t0 + Duration::from_secs(11);
        assert!(
            s.create("r".into(), vec![], later).is_ok(),
            "expired ones make room"
        );
        assert_eq!(s.sweep(later), 1);
    }
}
