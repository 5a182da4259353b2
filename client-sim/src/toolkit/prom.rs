//! Prometheus text (what the server's `/metrics` serves), read with `prometheus-parse`, behind
//! the few questions the tools ask: one series by its name and label set, a sum over labels,
//! and a histogram's (or summary's) count and sum. Names match whole: `tickroom_tick` is not
//! `tickroom_ticks_total`.
//!
//! The parser takes label values without `,`, `=` or `}` and keeps escapes as written, which
//! is all the server emits (room names and kinds).

use prometheus_parse::{Sample, Scrape, Value};

/// One scrape's series.
#[derive(Debug, Clone)]
pub struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    /// Lines the parser does not understand are skipped, as are values that are not numbers.
    pub fn parse(text: &str) -> Metrics {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        // Lines of a string cannot fail to read, the only error the parser returns.
        let samples = Scrape::parse(lines).map_or_else(|_| Vec::new(), |s| s.samples);
        Metrics { samples }
    }

    /// The value of the series `name` with exactly `labels`; `None` when there is none or its
    /// value is not a finite number.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.metric == name && same_labels(s, labels))
            .find_map(scalar)
    }

    /// The sum of every series `name` whose labels include `labels` (all of them for `&[]`),
    /// values that are not finite numbers skipped; `None` when none has one.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.metric == name && has_labels(s, labels))
            .filter_map(scalar)
            .fold(None, |sum, v| Some(sum.unwrap_or(0.0) + v))
    }

    /// Observations of the histogram or summary `name` with exactly `labels` (its `_count`).
    pub fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.value(&format!("{name}_count"), labels)
    }

    /// Sum of the observations of the histogram or summary `name` with exactly `labels` (its
    /// `_sum`).
    pub fn histogram_sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.value(&format!("{name}_sum"), labels)
    }
}

fn scalar(s: &Sample) -> Option<f64> {
    let v = match s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        Value::Histogram(_) | Value::Summary(_) => return None,
    };
    v.is_finite().then_some(v)
}

fn has_labels(s: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
}

fn same_labels(s: &Sample, labels: &[(&str, &str)]) -> bool {
    s.labels.len() == labels.len() && has_labels(s, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP tickroom_ticks_total Ticks run.
# TYPE tickroom_ticks_total counter
tickroom_ticks_total{room=\"arena\"} 120
tickroom_ticks_total{room=\"chat\"} 30
# TYPE tickroom_sessions_active gauge
tickroom_sessions_active{kind=\"game\",room=\"arena\"} 2
tickroom_sessions_active{kind=\"chat\",room=\"chat\"} 1
tickroom_sessions_active{kind=\"chat\",room=\"lobby\"} NaN
process_resident_memory_bytes 1.2e+07 1700000000000
# TYPE tickroom_tick_duration_seconds histogram
tickroom_tick_duration_seconds_bucket{room=\"arena\",le=\"0.001\"} 100
tickroom_tick_duration_seconds_bucket{room=\"arena\",le=\"+Inf\"} 120
tickroom_tick_duration_seconds_sum{room=\"arena\"} 0.06
tickroom_tick_duration_seconds_count{room=\"arena\"} 120
# TYPE tickroom_flush_duration_seconds summary
tickroom_flush_duration_seconds{quantile=\"0.5\"} 0.00001
tickroom_flush_duration_seconds_sum 0.5
tickroom_flush_duration_seconds_count 9000
not a sample line
";

    #[test]
    fn reads_series_by_name_and_labels() {
        let m = Metrics::parse(TEXT);
        assert_eq!(
            m.value("tickroom_ticks_total", &[("room", "chat")]),
            Some(30.0)
        );
        assert_eq!(
            m.value("tickroom_ticks_total", &[]),
            None,
            "the label set is exact"
        );
        assert_eq!(m.value("process_resident_memory_bytes", &[]), Some(12e6));
        let game = [("room", "arena"), ("kind", "game")];
        assert_eq!(m.value("tickroom_sessions_active", &game), Some(2.0));
        assert_eq!(
            m.sum("tickroom_sessions_active", &[]),
            Some(3.0),
            "NaN skipped"
        );
        let chat = [("kind", "chat")];
        assert_eq!(m.sum("tickroom_sessions_active", &chat), Some(1.0));
        assert_eq!(m.sum("tickroom_sessions_active", &[("kind", "x")]), None);
        assert_eq!(m.sum("absent", &[]), None);
    }

    #[test]
    fn names_match_whole() {
        let m = Metrics::parse(TEXT);
        assert_eq!(m.value("tickroom_tick", &[("room", "arena")]), None);
        assert_eq!(m.sum("tickroom_tick", &[]), None);
        assert_eq!(m.sum("tickroom_ticks", &[]), None);
        assert_eq!(m.sum("tickroom_ticks_total", &[]), Some(150.0));
        assert_eq!(m.sum("tickroom_sessions", &[]), None);
    }

    #[test]
    fn reads_histogram_and_summary_totals() {
        let m = Metrics::parse(TEXT);
        let arena = [("room", "arena")];
        let h = "tickroom_tick_duration_seconds";
        assert_eq!(m.histogram_count(h, &arena), Some(120.0));
        assert_eq!(m.histogram_sum(h, &arena), Some(0.06));
        assert_eq!(m.value(h, &arena), None, "a histogram has no single value");
        let s = "tickroom_flush_duration_seconds";
        assert_eq!(m.histogram_count(s, &[]), Some(9000.0));
        assert_eq!(m.histogram_sum(s, &[]), Some(0.5));
        assert_eq!(m.histogram_count("tickroom_flush_duration", &[]), None);
    }
}
