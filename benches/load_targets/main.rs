//! `make bench-load`: the end-to-end performance targets of issue #7, measured with the real
//! release binaries on this machine.
//!
//! This bench owns the procedure, not the measurements: for every run of every target it
//! starts a fresh `tickroom serve --config benches/load.toml` pinned to core 0, drives it with
//! `client-sim` pinned to core 1 over loopback, reads client-sim's JSON report, stops the
//! server (SIGTERM, killed after 5 s), and then runs the write probe (benches/write_probe.rs)
//! with the run's connection count and frame size: the physical limit the run is judged
//! against. It prints the medians of the runs against each target, writes every figure to
//! `<out>/summary.json` (reports, probe results and logs lie next to it) and rewrites the
//! section between `<!-- bench-load:begin -->` and `<!-- bench-load:end -->` in
//! docs/benchmarks.md. A client-side limit (open files, ports, client-sim's CPU, pacing) or a
//! probe that could not write freely is carried into the table's notes, so a figure set by
//! the load tool is never read as the server's.
//!
//! ```sh
//! make bench-load                                      # build, then all targets, 3 runs each
//! make bench-load BENCH_LOAD_ARGS="--quick --runs 1 --no-docs"   # a smoke test
//! cargo bench --bench load_targets -- --only game,chat --runs 5 --out /tmp/bl
//! ```
//!
//! The binaries must be built first, which `make bench-load` does: target/release/tickroom,
//! target/release/client-sim and target/release/deps/write_probe-* (the newest).

mod args;
mod bench;
mod config;
mod figures;
mod fmt;
mod probe;
mod process;
mod report;
mod rows;
mod search;
mod targets;
mod thresholds;

use std::fs;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use crate::args::Args;
use crate::bench::Bench;
use crate::figures::Measured;
use crate::report::{DOCS, rewrite_docs};

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load_targets: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Measures the selected targets and reports them; false when a target could not be measured.
fn run(args: Args) -> Result<bool> {
    let started = Instant::now();
    let bench = Bench::new(args)?;
    let results: Vec<Measured> = bench
        .selected()
        .into_iter()
        .map(|t| bench.measure(t))
        .collect();
    let section = bench.render(&results, started.elapsed());
    println!("\n{section}");
    let summary = bench.args.out.join("summary.json");
    let text = serde_json::to_string_pretty(&bench.summary(&results, started.elapsed()))?;
    fs::write(&summary, text + "\n").with_context(|| format!("writing {}", summary.display()))?;
    println!("load_targets: every figure in {}", summary.display());
    if !bench.args.no_docs {
        let docs = bench.root.join(DOCS);
        rewrite_docs(&docs, &section)?;
        println!(
            "load_targets: rewrote the bench-load section of {}",
            docs.display()
        );
    }
    Ok(results.iter().all(|m| m.error.is_none()))
}
