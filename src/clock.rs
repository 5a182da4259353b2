//! Wall-clock time as the protocol carries it (snapshots, pongs, quotes).

/// Wall-clock time in microseconds since the Unix epoch.
pub fn unix_time_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
