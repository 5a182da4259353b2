//! What the bench writes: the table, summary.json, and the bench-load section of
//! docs/benchmarks.md.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use client_sim::toolkit::host;
use serde_json::{Value, json};

use crate::bench::Bench;
use crate::figures::Measured;

pub const DOCS: &str = "docs/benchmarks.md";
pub const BEGIN: &str = "<!-- bench-load:begin -->";
pub const END: &str = "<!-- bench-load:end -->";
pub const HEADING: &str = "## Targets (make bench-load)";

impl Bench {
    pub fn render(&self, results: &[Measured], wall: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Measured {} on {}. {} run(s) per target, medians shown (counts that must be 0: \
             the worst run); {}; loopback. Command: `{}` (wall time {:.0} min).\n",
            self.started_utc,
            machine(self.cores),
            self.runs(),
            match self.pin {
                Some((s, c)) => format!("server on core {s}, client-sim on core {c}"),
                None => "one core: nothing pinned".into(),
            },
            command_line(),
            wall.as_secs_f64() / 60.0
        );
        if self.args.quick {
            out.push_str(
                "**`--quick`: smoke-test sizes and durations, not the issue's targets.**\n\n",
            );
        }
        out.push_str("| target | figure | target threshold | met | notes |\n");
        out.push_str("|---|---|---|---|---|\n");
        for row in results.iter().flat_map(|m| &m.rows) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                cell(&row.target),
                cell(&row.figure),
                cell(&row.threshold),
                row.verdict.label(),
                cell(&row.notes.join("; "))
            );
        }
        out
    }

    pub fn summary(&self, results: &[Measured], wall: Duration) -> Value {
        let targets: serde_json::Map<String, Value> = results
            .iter()
            .map(|m| {
                let v = json!({
                    "rows": m.rows,
                    "error": m.error,
                    "detail": m.detail,
                });
                (m.name.clone(), v)
            })
            .collect();
        json!({
            "date_utc": self.started_utc,
            "machine": {
                "cpu": host::cpu_model().unwrap_or_else(|| "unknown CPU".into()),
                "cores": self.cores,
                "memory_bytes": host::memory_bytes(),
            },
            "command": command_line(),
            "runs": self.runs(),
            "quick": self.args.quick,
            "config": self.args.config,
            "pinned": self.pin.map(|(s, c)| json!({ "server": s, "client": c })),
            "open_files": self.nofile,
            "wall_s": wall.as_secs_f64(),
            "targets": targets,
        })
    }
}

/// Replaces the marked section of the docs (adding the heading and markers before the first
/// `## ` section when absent); nothing else in the file changes.
pub fn rewrite_docs(path: &Path, section: &str) -> Result<()> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = if text.contains(BEGIN) && text.contains(END) {
        text
    } else {
        let block = format!("{HEADING}\n\n{BEGIN}\n{END}\n\n");
        match text.find("\n## ") {
            Some(at) => format!("{}{block}{}", &text[..=at], &text[at + 1..]),
            None => format!("{text}\n{block}"),
        }
    };
    let (head, rest) = text.split_once(BEGIN).context("no begin marker")?;
    let (_, tail) = rest
        .split_once(END)
        .context("no end marker after the begin marker")?;
    let new = format!("{head}{BEGIN}\n{section}{END}{tail}");
    fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// A table cell: no pipes or newlines.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// How this bench was invoked, as a command to paste.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.is_empty() {
        "cargo bench --bench load_targets".into()
    } else {
        format!("cargo bench --bench load_targets -- {}", args.join(" "))
    }
}

pub fn machine(cores: usize) -> String {
    let memory = host::memory_bytes().map_or("? GiB".into(), |b| {
        format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
    });
    format!(
        "{}, {cores} cores, {memory} memory",
        host::cpu_model().unwrap_or_else(|| "unknown CPU".into())
    )
}

/// Now as `YYYY-MM-DD HH:MM UTC` (days to a civil date by H. Hinnant's algorithm).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60
    )
}
