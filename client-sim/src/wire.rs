//! What crosses a process boundary when a run is split over worker processes
//! ([`crate::workers`]): instants, which mean nothing outside their process, travel as Unix
//! microseconds; latency histograms travel as their recorded buckets, which rebuild the same
//! histogram exactly.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// One instant of this process and the Unix time it stood for, read together once.
static ANCHOR: LazyLock<(Instant, i64)> = LazyLock::new(|| (Instant::now(), unix_now_us()));

fn unix_now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The Unix time in µs that `at` stands for.
pub fn to_unix_us(at: Instant) -> i64 {
    let (anchor, unix) = *ANCHOR;
    match at.checked_duration_since(anchor) {
        Some(after) => unix + after.as_micros() as i64,
        None => unix - anchor.duration_since(at).as_micros() as i64,
    }
}

/// The instant of this process that stands for Unix time `us`.
pub fn from_unix_us(us: i64) -> Instant {
    let (anchor, unix) = *ANCHOR;
    let offset = Duration::from_micros(us.abs_diff(unix));
    if us >= unix {
        anchor + offset
    } else {
        anchor.checked_sub(offset).unwrap_or(anchor)
    }
}

/// `#[serde(with = "wire::opt_instant")]`: an optional [`Instant`] as Unix µs or null.
pub mod opt_instant {
    use serde::{Deserialize, Deserializer, Serializer};
    use tokio::time::Instant;

    pub fn serialize<S: Serializer>(at: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&super::to_unix_us(*at)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        Option::<i64>::deserialize(d).map(|us| us.map(super::from_unix_us))
    }
}

/// `#[serde(with = "wire::instants")]`: instants as a list of Unix µs.
pub mod instants {
    use serde::{Deserialize, Deserializer, Serializer};
    use tokio::time::Instant;

    pub fn serialize<S: Serializer>(all: &[Instant], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(all.iter().map(|at| super::to_unix_us(*at)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Instant>, D::Error> {
        let us = Vec::<i64>::deserialize(d)?;
        Ok(us.into_iter().map(super::from_unix_us).collect())
    }
}

/// A histogram's recorded buckets as `(value, count)`: recording each value `count` times
/// into a histogram of the same bounds fills the same buckets, so counts, quantiles, min,
/// max and mean come out exactly as in the original.
pub fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::latency_histogram;

    #[test]
    fn instants_round_trip_through_unix_time() {
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_millis(1500),
            now - Duration::from_millis(7),
        ] {
            let back = from_unix_us(to_unix_us(at));
            let diff = back.max(at) - back.min(at);
            assert!(diff < Duration::from_micros(2), "{diff:?}");
        }
        let json = serde_json::to_string(&Wrap {
            at: Some(now),
            all: vec![now],
        })
        .unwrap();
        let back: Wrap = serde_json::from_str(&json).unwrap();
        let at = back.at.unwrap();
        assert!(at.max(now) - at.min(now) < Duration::from_micros(2));
        assert_eq!(back.all.len(), 1);
        let none: Wrap = serde_json::from_str(r#"{"at": null, "all": []}"#).unwrap();
        assert!(none.at.is_none());
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Wrap {
        #[serde(with = "opt_instant")]
        at: Option<Instant>,
        #[serde(with = "instants")]
        all: Vec<Instant>,
    }

    #[test]
    fn buckets_rebuild_the_same_histogram() {
        let mut h = latency_histogram();
        for v in [1, 2, 2, 999, 1001, 123_456, 59_999_999] {
            h.record(v).unwrap();
        }
        let mut back = latency_histogram();
        for (v, n) in buckets(&h) {
            back.record_n(v, n).unwrap();
        }
        assert_eq!(back.len(), h.len());
        assert_eq!(
            (back.min(), back.max(), back.mean()),
            (h.min(), h.max(), h.mean())
        );
        for q in [0.5, 0.9, 0.99, 0.999] {
            assert_eq!(back.value_at_quantile(q), h.value_at_quantile(q));
        }
    }
}
