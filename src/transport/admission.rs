//! Who may connect: a cap on connections in all, a cap per client address and a connect rate
//! per address. A refusal is an answer (HTTP 503 or 429 with `Retry-After`), never a silent
//! wait in the kernel's queue, so a client at capacity learns so and others are not slowed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::rate_limit::TokenBucket;

/// How often the per-address table drops addresses with no connection and a full bucket.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Limits of one listening port; 0 means "no limit" for the per-address ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub connects_per_ip_per_sec: f64,
    pub connect_burst_per_ip: f64,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Capacity,
    /// The address has `max_connections_per_ip` open.
    PerIp,
    /// The address connects faster than its rate.
    Rate,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
            Refusal::PerIp => "per_ip",
            Refusal::Rate => "rate",
        }
    }

    /// The whole HTTP answer, to write on the socket before closing it.
    pub fn response(self) -> Vec<u8> {
        let (status, retry, text) = match self {
            Refusal::Capacity => (
                "503 Service Unavailable",
                5,
                "server at capacity; try again later\n",
            ),
            Refusal::PerIp => (
                "503 Service Unavailable",
                5,
                "too many connections from your address\n",
            ),
            Refusal::Rate => (
                "429 Too Many Requests",
                1,
                "connecting too fast; try again shortly\n",
            ),
        };
        format!(
            "HTTP/1.1 {status}\r\nRetry-After: {retry}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .into_bytes()
    }
}

#[derive(Debug)]
struct PerIp {
    open: usize,
    bucket: TokenBucket,
    last: Instant,
}

#[derive(Debug)]
struct Table {
    by_ip: HashMap<IpAddr, PerIp>,
    pruned: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    permits: Arc<Semaphore>,
    table: Mutex<Table>,
}

/// A connection let in; dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    admission: Arc<Admission>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut t = self.admission.lock();
        if let Some(e) = t.by_ip.get_mut(&self.ip) {
            e.open = e.open.saturating_sub(1);
        }
    }
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            table: Mutex::new(Table {
                by_ip: HashMap::new(),
                pruned: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a connection from `ip` in, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let ip = ip.to_canonical();
        let l = self.limits;
        let mut t = self.lock();
        if now.duration_since(t.pruned) >= PRUNE_EVERY {
            t.pruned = now;
            let burst = l.connect_burst_per_ip;
            // An address with nothing open whose bucket has refilled is like a new one.
            t.by_ip.retain(|_, e| {
                e.open > 0
                    || now.duration_since(e.last).as_secs_f64() * l.connects_per_ip_per_sec < burst
            });
        }
        let e = t.by_ip.entry(ip).or_insert_with(|| PerIp {
            open: 0,
            bucket: TokenBucket::new(l.connects_per_ip_per_sec, l.connect_burst_per_ip),
            last: now,
        });
        let elapsed = now.duration_since(e.last).as_secs_f64();
        e.last = now;
        if l.connects_per_ip_per_sec > 0.0 && !e.bucket.take(elapsed) {
            return Err(Refusal::Rate);
        }
        if l.max_connections_per_ip > 0 && e.open >= l.max_connections_per_ip {
            return Err(Refusal::PerIp);
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Capacity)?;
        e.open += 1;
        drop(t);
        Ok(Admitted {
            _permit: permit,
            ip,
            admission: self.clone(),
        })
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.lock()
            .by_ip
            .get(&ip.to_canonical())
            .map_or(0, |e| e.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
            connects_per_ip_per_sec: 10.0,
            connect_burst_per_ip: 4.0,
        }
    }

    #[test]
    fn caps_per_address_and_in_all_and_places_come_back() {
        let a = Admission::new(limits());
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = Instant::now();
        let x1 = a.admit(x, t).unwrap();
        let _x2 = a.admit(x, t).unwrap();
        assert_eq!(a.admit(x, t).unwrap_err(), Refusal::PerIp);
        let _y1 = a.admit(y, t).unwrap();
        assert_eq!(a.admit(y, t).unwrap_err(), Refusal::Capacity);
        drop(x1);
        assert_eq!(a.open_from(x), 1);
        assert!(a.admit(x, t).is_ok(), "a place came back");
    }

    #[test]
    fn a_fast_connector_is_told_to_slow_down_then_let_in_again() {
        let mut l = limits();
        l.max_connections = 100;
        l.max_connections_per_ip = 100;
        let a = Admission::new(l);
        let ip: IpAddr = "10.0.0.3".parse().unwrap();
        let t = Instant::now();
        let held: Vec<_> = (0..4).map(|_| a.admit(ip, t).unwrap()).collect();
        assert_eq!(a.admit(ip, t).unwrap_err(), Refusal::Rate);
        // A tenth of a second later one token has come back.
        assert!(a.admit(ip, t + Duration::from_millis(100)).is_ok());
        drop(held);
    }

    #[test]
    fn refusals_are_whole_http_answers() {
        for r in [Refusal::Capacity, Refusal::PerIp, Refusal::Rate] {
            let response = r.response();
            let text = std::str::from_utf8(&response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(body.len(), len, "{r:?}");
            assert!(head.contains("Retry-After: "), "{r:?}");
        }
    }
}
