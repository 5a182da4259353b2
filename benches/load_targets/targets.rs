//! The targets: for each, the client-sim runs it makes, the figures it reads from their
//! reports (by JSON pointer) and the rows it gives.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::{Bench, Report};
use crate::figures::{Measured, RunFigures, Summary};
use crate::fmt::{fixed, ms, num, secs, whole};
use crate::probe::{ProbeMode, frame_bytes};
use crate::rows::{
    chat_rows, churn_join_row, game_rows, idle_rows, leak_rows, overhead_rows, spike_join_row,
    ticker_rows,
};
use crate::search::goal_clients;
use crate::thresholds::{CHAT_FANOUT_FACTOR, CHAT_LATENCY_SLACK_US, SETTLE_TIMEOUTS};

/// Clients started per second: fast enough that the ramp is short next to the hold.
pub const RAMP_PER_S: u64 = 1_000;
pub const FAST_RAMP_PER_S: u64 = 2_000;
pub const GAME_INPUT_HZ: u32 = 30;
/// The probe's frame when a run's own cannot be read: a game snapshot of 100 objects
/// (docs/benchmarks.md, "Snapshot size"); ticker writes and chat batches are smaller.
pub const FALLBACK_GAME_FRAME: u64 = 1_800;
pub const FALLBACK_TICKER_WRITE: u64 = 1_200;
pub const FALLBACK_CHAT_FRAME: u64 = 200;
pub const CHAT_RATE_PER_SENDER: u32 = 1;
/// The Prometheus series of the server's sessions, all kinds.
pub const SESSIONS_SERIES: &str = "tickroom_sessions_active";

impl Bench {
    /// Targets 1 (game) and 7 (overhead).
    pub fn game(&self) -> Result<Measured> {
        let hz = self.config.tick_hz("arena")?;
        let estimate = self.probe(
            "game-estimate",
            self.plan.game_estimate_connections,
            FALLBACK_GAME_FRAME,
            ProbeMode::Busy,
        )?;
        let start = goal_clients(estimate.writes_per_s, hz) as u64;
        let search = self.game_search(start.clamp(1, self.plan.game_cap))?;
        // With no N passing, the runs show the figures at the smallest N tried.
        let n = search
            .found
            .or_else(|| search.trials.iter().map(|t| t.clients).min())
            .context("no game trial ran")?;
        let runs = self.each_run("game", |label| self.game_run(label, n, hz))?;
        let s = Summary::of(&runs);
        let mut rows = game_rows(&search, n, hz, &s);
        rows.extend(overhead_rows(&s));
        let extra = json!({
            "estimate_probe": estimate,
            "search_start_clients": start,
            "search": search.trials,
            "found_clients": search.found,
            "runs_at_clients": n,
        });
        Ok(Measured::new("game", rows, &s, extra))
    }

    pub fn game_client_sim(&self, label: &str, clients: u64, hold: f64) -> Result<Report> {
        let args = format!(
            "--clients {clients} --room arena --input-hz {GAME_INPUT_HZ} --ramp {RAMP_PER_S} \
             --duration {hold} --protocol {}",
            self.args.game_protocol
        );
        let expected = secs(clients as f64 / RAMP_PER_S as f64 + hold);
        self.client_sim(label, "game", &args, expected)
    }

    /// One run at the found N, and the probe at N connections with the run's frame size.
    pub fn game_run(&self, label: &str, n: u64, hz: f64) -> Result<RunFigures> {
        let report = self.game_client_sim(label, n, self.plan.game_hold)?;
        let mut run = RunFigures::new(label, &report);
        run.set("clients", Some(n as f64));
        run.take_all(&report.value, GAME_FIGURES);
        let (frame, source) =
            frame_bytes(&report.value, "frames_written_per_s", FALLBACK_GAME_FRAME);
        run.frame(frame, &source);
        let probe = self.probe(label, n, frame, ProbeMode::Busy)?;
        let ns_per_frame = match (run.get("server_cpu_pct"), run.get("frames_written_per_s")) {
            (Some(cpu), Some(frames)) if frames > 0.0 => Some(cpu / 100.0 * 1e9 / frames),
            _ => None,
        };
        if let Some(frames) = run.get("frames_written_per_s").filter(|f| *f >= 1.0) {
            let mode = ProbeMode::Sleep {
                rate: frames.round() as u64,
                tick_hz: hz,
            };
            let sleep = self.probe(label, n, frame, mode)?;
            run.set(
                "overhead_sleep",
                ns_per_frame.map(|ns| ns / sleep.cpu_ns_per_write),
            );
            run.probe_sleep(sleep);
        }
        run.set("goal_clients", Some(goal_clients(probe.writes_per_s, hz)));
        run.set("server_ns_per_frame", ns_per_frame);
        run.set(
            "overhead",
            ns_per_frame.map(|ns| ns / probe.cpu_ns_per_write),
        );
        run.set("capacity_ratio", Some(n as f64 * hz / probe.writes_per_s));
        run.probe(probe);
        eprintln!(
            "load_targets: {label}: N = {n}: {} snapshots/s, p99 {}, probe {} writes/s",
            fixed(run.get("snapshots_per_s"), 1),
            ms(run.get("latency_p99_us")),
            whole(run.get("probe_writes_per_s"))
        );
        Ok(run)
    }

    /// Target 2: 5,000 sessions × 20 symbols in the ticker room.
    pub fn ticker(&self) -> Result<Measured> {
        let p = self.plan;
        let lambda = self.config.feed_updates_per_tick("ticker")?;
        let runs = self.each_run("ticker", |label| {
            let args = format!(
                "--clients {} --symbols {} --room ticker --ramp {RAMP_PER_S} --duration {}",
                p.ticker_sessions, p.ticker_symbols, p.ticker_hold
            );
            let ramp = p.ticker_sessions as f64 / RAMP_PER_S as f64;
            let report = self.client_sim(label, "ticker", &args, secs(ramp + p.ticker_hold))?;
            let mut run = RunFigures::new(label, &report);
            run.take_all(&report.value, TICKER_FIGURES);
            // A session gets all of a tick's quotes in one write.
            let (frame, source) =
                frame_bytes(&report.value, "socket_flushes_per_s", FALLBACK_TICKER_WRITE);
            run.frame(frame, &source);
            run.probe(self.probe(label, p.ticker_sessions, frame, ProbeMode::Busy)?);
            Ok(run)
        })?;
        let s = Summary::of(&runs);
        let expected = lambda.map(expected_conflation_pct);
        let extra = json!({
            "updates_per_symbol_per_tick": lambda,
            "expected_conflated_pct": expected,
        });
        Ok(Measured::new(
            "ticker",
            ticker_rows(p, &s, expected),
            &s,
            extra,
        ))
    }

    /// Target 3: 15,000 viewers and 100 senders at 1 msg/s in the chat room.
    pub fn chat(&self) -> Result<Measured> {
        let p = self.plan;
        let period_us = 1e6 / self.config.tick_hz("chat")?;
        let clients = p.chat_viewers + p.chat_senders;
        let runs = self.each_run("chat", |label| {
            let args = format!(
                "--viewers {} --senders {} --rate {CHAT_RATE_PER_SENDER} --room chat \
                 --ramp {FAST_RAMP_PER_S} --duration {}",
                p.chat_viewers, p.chat_senders, p.chat_hold
            );
            let ramp = clients as f64 / FAST_RAMP_PER_S as f64;
            let report = self.client_sim(label, "chat", &args, secs(ramp + p.chat_hold))?;
            let mut run = RunFigures::new(label, &report);
            run.take_all(&report.value, CHAT_FIGURES);
            chat_derived(&mut run, period_us);
            let (frame, source) =
                frame_bytes(&report.value, "frames_written_per_s", FALLBACK_CHAT_FRAME);
            run.frame(frame, &source);
            let probe = self.probe(label, clients, frame, ProbeMode::Busy)?;
            let frames = num(&report.value, "/server/metrics/frames_written_per_s");
            let ns_per_frame = match (run.get("server_cpu_pct"), frames) {
                (Some(cpu), Some(f)) if f > 0.0 => Some(cpu / 100.0 * 1e9 / f),
                _ => None,
            };
            run.set("server_ns_per_frame", ns_per_frame);
            run.set(
                "overhead",
                ns_per_frame.map(|ns| ns / probe.cpu_ns_per_write),
            );
            if let Some(f) = frames.filter(|f| *f >= 1.0) {
                let mode = ProbeMode::Sleep {
                    rate: f.round() as u64,
                    tick_hz: 1e6 / period_us,
                };
                let sleep = self.probe(label, clients, frame, mode)?;
                run.set(
                    "overhead_sleep",
                    ns_per_frame.map(|ns| ns / sleep.cpu_ns_per_write),
                );
                run.probe_sleep(sleep);
            }
            let bound_us =
                CHAT_FANOUT_FACTOR * p.chat_viewers as f64 * probe.cpu_ns_per_write / 1e3;
            run.set("fanout_bound_us", Some(bound_us));
            run.set(
                "latency_bound_us",
                Some(period_us + bound_us + CHAT_LATENCY_SLACK_US),
            );
            run.probe(probe);
            Ok(run)
        })?;
        let s = Summary::of(&runs);
        let extra = json!({ "tick_period_us": period_us });
        Ok(Measured::new(
            "chat",
            chat_rows(p, period_us, &s),
            &s,
            extra,
        ))
    }

    /// Target 4: 19,000 sessions idle in the chat room.
    pub fn idle(&self) -> Result<Measured> {
        let p = self.plan;
        let runs = self.each_run("idle", |label| {
            let args = format!(
                "--sessions {} --room chat --ramp {FAST_RAMP_PER_S} --duration {} --workers 2",
                p.idle_sessions, p.idle_hold
            );
            let ramp = p.idle_sessions as f64 / FAST_RAMP_PER_S as f64;
            let report = self.client_sim(label, "idle", &args, secs(ramp + p.idle_hold))?;
            let mut run = RunFigures::new(label, &report);
            run.take_all(&report.value, IDLE_FIGURES);
            Ok(run)
        })?;
        let s = Summary::of(&runs);
        Ok(Measured::new("idle", idle_rows(p, &s), &s, json!({})))
    }

    /// Target 5: 0 → 10,000 sessions in 10 s in the lobby, then every socket reset.
    pub fn spike(&self) -> Result<Measured> {
        let p = self.plan;
        let (timeout_s, settle) = self.settle_timeout()?;
        let runs = self.each_run("spike", |label| {
            let args = format!(
                "--clients {} --ramp-secs {} --room lobby --duration {} --settle-timeout {settle}",
                p.spike_sessions, p.spike_ramp_s, p.spike_hold
            );
            let expected = secs(p.spike_ramp_s + p.spike_hold + settle);
            self.leak_run(label, "spike", &args, expected, SPIKE_FIGURES)
        })?;
        let s = Summary::of(&runs);
        let mut rows = vec![spike_join_row(p, &s)];
        rows.extend(leak_rows("5 spike", timeout_s, &s));
        let extra = json!({ "idle_timeout_s": timeout_s });
        Ok(Measured::new("spike", rows, &s, extra))
    }

    /// Target 6: 500 connects and disconnects a second for 60 s in the lobby.
    pub fn churn(&self) -> Result<Measured> {
        let p = self.plan;
        let (timeout_s, settle) = self.settle_timeout()?;
        let runs = self.each_run("churn", |label| {
            let args = format!(
                "--rate {} --duration {} --room lobby --settle-timeout {settle}",
                p.churn_rate, p.churn_secs
            );
            // client-sim gives the last sessions 10 s beyond their stay to end.
            let expected = secs(p.churn_secs + 10.0 + settle);
            self.leak_run(label, "churn", &args, expected, CHURN_FIGURES)
        })?;
        let s = Summary::of(&runs);
        let mut rows = vec![churn_join_row(p, &s)];
        rows.extend(leak_rows("6 churn", timeout_s, &s));
        let extra = json!({ "idle_timeout_s": timeout_s });
        Ok(Measured::new("churn", rows, &s, extra))
    }

    /// A spike or churn run: its own figures, the settle, and the sessions once it ended.
    pub fn leak_run(
        &self,
        label: &str,
        scenario: &str,
        args: &str,
        expected: Duration,
        figures: &[(&'static str, &str)],
    ) -> Result<RunFigures> {
        let report = self.client_sim(label, scenario, args, expected)?;
        let mut run = RunFigures::new(label, &report);
        run.take_all(&report.value, figures);
        run.take_all(&report.value, SETTLE_FIGURES);
        // client-sim's settle poll watches connections and tasks, not sessions, which the
        // room drops a tick later; they are read from the scrape made once client-sim ended
        // (3 s after it saw the server settle).
        let after = report.after.as_ref();
        run.set(
            "sessions_after",
            after.and_then(|m| m.sum(SESSIONS_SERIES, &[])),
        );
        rss_growth(&mut run);
        Ok(run)
    }

    /// The server's idle timeout, and client-sim's settle timeout past the target's limit
    /// (so that a late settle is measured, not cut off), in seconds.
    pub fn settle_timeout(&self) -> Result<(f64, f64)> {
        let timeout_s = self.config.idle_timeout_s()?;
        Ok((timeout_s, SETTLE_TIMEOUTS * timeout_s + 15.0))
    }

    /// `runs` runs of a target, labelled `<target>-run<N>`.
    pub fn each_run(
        &self,
        target: &str,
        run: impl Fn(&str) -> Result<RunFigures>,
    ) -> Result<Vec<RunFigures>> {
        (1..=self.runs())
            .map(|r| run(&format!("{target}-run{r}")))
            .collect()
    }
}

/// The share of feed values (in %) that newest-value-per-tick replaces when a symbol gets a
/// Poisson(λ) number of updates per tick (the synthetic feed's uniformly random updates):
/// 1 − P(at least one) ÷ E[updates] = 1 − (1 − e^−λ) ÷ λ; 36.8 % at λ = 1.
pub fn expected_conflation_pct(lambda: f64) -> f64 {
    100.0 * (1.0 - (1.0 - (-lambda).exp()) / lambda)
}

// The figures each target reads from client-sim's JSON report: (name, JSON pointer).

pub const GAME_FIGURES: &[(&str, &str)] = &[
    ("snapshots_per_s", "/snapshots/per_client_per_s/median"),
    ("latency_p50_us", "/snapshot_latency_us/p50"),
    ("latency_p99_us", "/snapshot_latency_us/p99"),
    ("tick_p99_us", "/server/end_of_hold/tick_duration_us/p99"),
    ("failed_joins", "/clients/failed_joins"),
    ("server_cpu_pct", "/server/metrics/cpu_percent_of_one_core"),
    (
        "frames_written_per_s",
        "/server/metrics/frames_written_per_s",
    ),
    ("client_cpu_pct", "/client_cpu/percent_of_one_core"),
];

pub const TICKER_FIGURES: &[(&str, &str)] = &[
    ("feed_p50_us", "/feed_latency_us/p50"),
    ("feed_p99_us", "/feed_latency_us/p99"),
    ("delivery_p99_us", "/delivery_latency_us/p99"),
    ("updates_per_s_session", "/quotes/per_client_per_s/median"),
    ("conflated_pct", "/quotes/conflated_pct"),
    ("duplicates", "/quotes/duplicates"),
    ("reorders", "/quotes/reorders"),
    ("unexpected_symbols", "/quotes/unexpected_symbols"),
    ("first_values_missing", "/initial_values/missing"),
    ("subscribes_failed", "/subscriptions/failed"),
    ("failed_joins", "/clients/failed_joins"),
    ("ended_early", "/clients/ended_early"),
    ("skipped_ticks", "/server/skipped_ticks_during_run"),
    ("rss_peak_bytes", "/server/metrics/rss_peak_bytes"),
    ("client_cpu_pct", "/client_cpu/percent_of_one_core"),
];

pub const CHAT_FIGURES: &[(&str, &str)] = &[
    ("viewer_p50_us", "/viewer_latency_us/p50"),
    ("viewer_p99_us", "/viewer_latency_us/p99"),
    ("viewer_p999_us", "/viewer_latency_us/p999"),
    ("viewer_max_us", "/viewer_latency_us/max"),
    ("fanout_p50_us", "/batch_fanout_us/p50"),
    ("fanout_p99_us", "/batch_fanout_us/p99"),
    ("fanout_max_us", "/batch_fanout_us/max"),
    ("batches_per_s_viewer", "/viewers/batches_per_s/median"),
    ("lost", "/viewers/lost"),
    ("duplicates", "/viewers/duplicates"),
    ("failed_joins", "/clients/failed_joins"),
    ("server_cpu_pct", "/server/metrics/cpu_percent_of_one_core"),
    ("client_cpu_pct", "/client_cpu/percent_of_one_core"),
];

pub const IDLE_FIGURES: &[(&str, &str)] = &[
    ("rss_per_session_bytes", "/idle/rss_per_session_bytes"),
    ("server_cpu_pct", "/idle/server_cpu_percent_of_one_core"),
    ("sessions", "/idle/sessions"),
    ("rss_before_bytes", "/idle/rss_before_bytes"),
    ("rss_end_bytes", "/idle/rss_end_of_hold_bytes"),
    ("failed_joins", "/clients/failed_joins"),
    ("ended_early", "/clients/ended_early"),
];

pub const SPIKE_FIGURES: &[(&str, &str)] = &[
    ("first_snapshot_p50_us", "/first_snapshot_latency_us/p50"),
    ("first_snapshot_p99_us", "/first_snapshot_latency_us/p99"),
    ("failed_joins", "/clients/failed_joins"),
    ("without_snapshot", "/joined_without_snapshot"),
];

pub const CHURN_FIGURES: &[(&str, &str)] = &[
    ("achieved_rate_per_s", "/churn/achieved_rate_per_s"),
    ("started", "/churn/started"),
    ("first_snapshot_p99_us", "/first_snapshot_latency_us/p99"),
    ("failed_joins", "/clients/failed_joins"),
];

/// Spike and churn: the server before the run and once it settled after the drop.
pub const SETTLE_FIGURES: &[(&str, &str)] = &[
    ("settled", "/settle/settled"),
    ("settle_s", "/settle/settle_s"),
    (
        "sessions_before",
        "/server/metrics/before/tickroom_sessions_active",
    ),
    (
        "connections_before",
        "/server/metrics/before/tickroom_connections_active",
    ),
    (
        "connections_after",
        "/settle/last/tickroom_connections_active",
    ),
    ("tasks_before", "/server/metrics/before/tokio_alive_tasks"),
    ("tasks_after", "/settle/last/tokio_alive_tasks"),
    ("tasks_tolerance", "/settle/alive_tasks_tolerance"),
    ("rss_before_bytes", "/server/metrics/rss_before_bytes"),
    ("rss_peak_bytes", "/settle/rss_peak_bytes"),
    ("rss_after_bytes", "/settle/rss_after_bytes"),
];

/// Chat figures derived from the run's.
pub fn chat_derived(run: &mut RunFigures, period_us: f64) {
    // On its one core the server cannot fan a batch out faster than the CPU it spends on it;
    // this share also holds the heartbeats, the sends and the idle rooms' ticks.
    let cpu_per_batch = run.get("server_cpu_pct").map(|c| c / 100.0 * period_us);
    run.set("server_cpu_per_batch_us", cpu_per_batch);
}

/// RSS after the drop against the RSS before the run, in %.
pub fn rss_growth(run: &mut RunFigures) {
    let growth = match (run.get("rss_before_bytes"), run.get("rss_after_bytes")) {
        (Some(b), Some(a)) if b > 0.0 => Some((a / b - 1.0) * 100.0),
        _ => None,
    };
    run.set("rss_growth_pct", growth);
}
