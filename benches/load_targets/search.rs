//! The game target's capacity search: trials at growing or shrinking N until the largest N
//! that passes is bracketed closely enough.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::bench::Bench;
use crate::figures::{at_least, at_most};
use crate::fmt::{fixed, ms, num};
use crate::thresholds::{GAME_GOAL_SHARE, GAME_MAX_P99_US, GAME_MIN_SNAPSHOTS_PER_S};

/// A game run's pass/fail in the capacity search.
#[derive(Debug, Serialize)]
pub struct Trial {
    pub clients: u64,
    pub snapshots_per_s: Option<f64>,
    pub latency_p99_us: Option<f64>,
    pub failed_joins: Option<f64>,
    pub passed: bool,
    pub report: PathBuf,
    pub notes: Vec<String>,
}

/// The capacity search: the trials made and the largest N that passed.
pub struct Search {
    pub trials: Vec<Trial>,
    pub found: Option<u64>,
}

impl Bench {
    /// Bisects for the largest N that passes, starting from `start`: up by a quarter past
    /// the largest pass, down by 40 % under the smallest failure, then halfway between.
    pub fn game_search(&self, start: u64) -> Result<Search> {
        let (mut pass, mut fail) = (None::<u64>, None::<u64>);
        let mut trials = Vec::new();
        let mut n = Some(start);
        for k in 1..=self.plan.game_trials {
            let Some(clients) = n else { break };
            let trial = self.game_trial(k, clients)?;
            eprintln!(
                "load_targets: game trial {k}: N = {clients}: {} ({} snapshots/s, p99 {})",
                if trial.passed { "pass" } else { "fail" },
                fixed(trial.snapshots_per_s, 1),
                ms(trial.latency_p99_us)
            );
            if trial.passed {
                pass = pass.max(Some(clients));
            } else {
                fail = Some(fail.map_or(clients, |f| f.min(clients)));
            }
            trials.push(trial);
            n = next_trial(pass, fail, self.plan.game_cap);
        }
        Ok(Search {
            trials,
            found: pass,
        })
    }

    pub fn game_trial(&self, k: u32, clients: u64) -> Result<Trial> {
        let label = format!("game-search{k}-n{clients}");
        let report = self.game_client_sim(&label, clients, self.plan.game_trial_hold)?;
        let v = &report.value;
        let snapshots_per_s = num(v, "/snapshots/per_client_per_s/median");
        let latency_p99_us = num(v, "/snapshot_latency_us/p99");
        let failed_joins = num(v, "/clients/failed_joins");
        let passed = at_least(snapshots_per_s, GAME_MIN_SNAPSHOTS_PER_S) == Some(true)
            && at_most(latency_p99_us, GAME_MAX_P99_US) == Some(true)
            && failed_joins == Some(0.0);
        Ok(Trial {
            clients,
            snapshots_per_s,
            latency_p99_us,
            failed_joins,
            passed,
            report: report.path,
            notes: report.notes,
        })
    }
}

/// The N whose frames at `hz` are the goal share of the probe's writes/s.
pub fn goal_clients(probe_writes_per_s: f64, hz: f64) -> f64 {
    GAME_GOAL_SHARE * probe_writes_per_s / hz
}

/// The next N of the game search, or `None` when the bracket is narrow enough (5 %, at least
/// 10 players) or the search ran into the cap or down to one player.
pub fn next_trial(pass: Option<u64>, fail: Option<u64>, cap: u64) -> Option<u64> {
    match (pass, fail) {
        (Some(p), None) => (p < cap).then(|| (p + p.div_ceil(4)).min(cap)),
        (None, Some(f)) => (f > 1).then(|| (f * 3 / 5).max(1)),
        (Some(p), Some(f)) => (f.saturating_sub(p) > (f / 20).max(10)).then(|| (p + f) / 2),
        (None, None) => None,
    }
}
