//! Small helpers: numbers out of a JSON report, and figures as the table prints them.

use std::time::Duration;

use serde_json::Value;

/// A number in a JSON report (booleans as 1 and 0), `None` when absent or null.
pub fn num(v: &Value, pointer: &str) -> Option<f64> {
    let x = v.pointer(pointer)?;
    x.as_f64().or_else(|| x.as_bool().map(f64::from))
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

pub fn fixed(v: Option<f64>, digits: usize) -> String {
    v.map_or("?".into(), |v| format!("{v:.digits$}"))
}

/// µs as milliseconds.
pub fn ms(us: Option<f64>) -> String {
    us.map_or("?".into(), |us| format!("{:.1} ms", us / 1e3))
}

pub fn us(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.2} µs"))
}

pub fn secs_text(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.1} s"))
}

pub fn mb(bytes: Option<f64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.1} MB", b / 1e6))
}

/// A whole number with thousands separators, or `?`.
pub fn whole(v: Option<f64>) -> String {
    v.map_or("?".into(), count)
}

/// A whole number with thousands separators: 15,000.
pub fn count(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}
