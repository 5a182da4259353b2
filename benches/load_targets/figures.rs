//! A run's figures, the medians and worst cases over a target's runs, verdicts and rows.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::{Value, json};

use crate::bench::Report;
use crate::fmt::num;
use crate::probe::Probe;

/// One run of a target: its figures by name (absent when the run could not give one), the
/// probe beside it, and the limits and oddities to carry into the table's notes.
#[derive(Debug, Default, Serialize)]
pub struct RunFigures {
    pub label: String,
    pub report: PathBuf,
    pub figures: BTreeMap<&'static str, f64>,
    pub frame_bytes_source: Option<String>,
    pub probe: Option<Probe>,
    /// The sleep-mode probe (readers blocking in epoll_wait) at the run's own write rate.
    pub probe_sleep: Option<Probe>,
    pub notes: Vec<String>,
}

impl RunFigures {
    pub fn new(label: &str, report: &Report) -> Self {
        RunFigures {
            label: label.into(),
            report: report.path.clone(),
            notes: report.notes.clone(),
            ..RunFigures::default()
        }
    }

    pub fn set(&mut self, key: &'static str, value: Option<f64>) {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.figures.insert(key, v);
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.get(key).copied()
    }

    /// Sets every `(name, pointer)` figure from the report.
    pub fn take_all(&mut self, report: &Value, figures: &[(&'static str, &str)]) {
        for &(key, pointer) in figures {
            self.set(key, num(report, pointer));
        }
    }

    pub fn frame(&mut self, bytes: u64, source: &str) {
        self.set("frame_bytes", Some(bytes as f64));
        if source.starts_with("fixed") {
            self.notes
                .push(format!("probe frame size: {source}, not the run's"));
        }
        self.frame_bytes_source = Some(source.into());
    }

    pub fn probe(&mut self, probe: Probe) {
        self.set("probe_writes_per_s", Some(probe.writes_per_s));
        self.set("probe_ns_per_write", Some(probe.cpu_ns_per_write));
        self.notes.extend(probe.notes());
        self.probe = Some(probe);
    }

    pub fn probe_sleep(&mut self, probe: Probe) {
        self.set("probe_sleep_ns_per_write", Some(probe.cpu_ns_per_write));
        self.set(
            "probe_sleep_sleeps_per_write",
            probe.reader_sleeps_per_write,
        );
        self.notes.extend(probe.notes());
        self.probe_sleep = Some(probe);
    }
}

/// Medians (and worst cases) over a target's runs.
pub struct Summary<'a> {
    pub runs: &'a [RunFigures],
}

impl<'a> Summary<'a> {
    pub fn of(runs: &'a [RunFigures]) -> Self {
        Summary { runs }
    }

    pub fn values(&self, key: &str) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r.get(key)).collect()
    }

    pub fn median(&self, key: &str) -> Option<f64> {
        median(self.values(key))
    }

    /// The largest value over the runs: counts that must be 0 must be 0 in every run.
    pub fn max(&self, key: &str) -> Option<f64> {
        self.values(key).into_iter().reduce(f64::max)
    }

    pub fn min(&self, key: &str) -> Option<f64> {
        self.values(key).into_iter().reduce(f64::min)
    }

    pub fn keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<&'static str> = self
            .runs
            .iter()
            .flat_map(|r| r.figures.keys().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    pub fn medians(&self) -> BTreeMap<&'static str, Option<f64>> {
        self.keys()
            .into_iter()
            .map(|k| (k, self.median(k)))
            .collect()
    }

    pub fn maxima(&self) -> BTreeMap<&'static str, Option<f64>> {
        self.keys().into_iter().map(|k| (k, self.max(k))).collect()
    }

    /// Every run's notes, each once, with the runs it came from.
    pub fn notes(&self) -> Vec<String> {
        let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in self.runs {
            for n in &r.notes {
                seen.entry(n).or_default().push(&r.label);
            }
        }
        seen.into_iter()
            .map(|(note, runs)| format!("{note} [{}]", runs.join(", ")))
            .collect()
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Met,
    NotMet,
    /// A figure it needs could not be measured.
    Unmeasured,
    /// A figure reported without a threshold.
    Reported,
}

impl Verdict {
    /// Met when every condition holds, NOT met when one fails, else unmeasured.
    pub fn all(conditions: &[Option<bool>]) -> Verdict {
        if conditions.contains(&Some(false)) {
            Verdict::NotMet
        } else if conditions.contains(&None) {
            Verdict::Unmeasured
        } else {
            Verdict::Met
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**NOT met**",
            Verdict::Unmeasured => "not measured",
            Verdict::Reported => "(reported)",
        }
    }
}

pub fn at_most(v: Option<f64>, limit: f64) -> Option<bool> {
    v.map(|v| v <= limit)
}

pub fn at_least(v: Option<f64>, limit: f64) -> Option<bool> {
    v.map(|v| v >= limit)
}

pub fn zero(v: Option<f64>) -> Option<bool> {
    v.map(|v| v == 0.0)
}

/// One line of the table.
#[derive(Debug, Serialize)]
pub struct Row {
    pub target: String,
    pub figure: String,
    pub threshold: String,
    pub verdict: Verdict,
    pub notes: Vec<String>,
}

/// A measured target: its rows, and every figure for summary.json.
pub struct Measured {
    pub name: String,
    pub rows: Vec<Row>,
    pub detail: Value,
    pub error: Option<String>,
}

impl Measured {
    /// A target's rows; its detail for summary.json is `extra` plus every run and the
    /// medians and maxima.
    pub fn new(name: &str, rows: Vec<Row>, s: &Summary, mut extra: Value) -> Measured {
        extra["runs"] = json!(s.runs);
        extra["median"] = json!(s.medians());
        extra["max"] = json!(s.maxima());
        Measured {
            name: name.into(),
            rows,
            detail: extra,
            error: None,
        }
    }

    pub fn failed(name: String, e: &anyhow::Error) -> Measured {
        Measured {
            rows: vec![Row {
                target: name.clone(),
                figure: "—".into(),
                threshold: "—".into(),
                verdict: Verdict::Unmeasured,
                notes: vec![format!("the run failed: {e:#}")],
            }],
            name,
            detail: Value::Null,
            error: Some(format!("{e:#}")),
        }
    }
}
