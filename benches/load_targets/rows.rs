//! Each target's rows of the table, from the medians and worst cases of its runs.

use crate::args::Plan;
use crate::figures::{Row, Summary, Verdict, at_least, at_most, zero};
use crate::fmt::{count, fixed, mb, ms, secs_text, us, whole};
use crate::probe::SLEEP_READERS;
use crate::search::Search;
use crate::thresholds::{
    CHAT_FANOUT_FACTOR, CHAT_LATENCY_SLACK_US, GAME_MAX_P99_US, GAME_MAX_TICK_P99_US,
    GAME_MIN_SNAPSHOTS_PER_S, IDLE_MAX_CPU_PCT, IDLE_MAX_RSS_PER_SESSION, MAX_RSS_GROWTH_PCT,
    OVERHEAD_MAX, SETTLE_TIMEOUTS, SPIKE_MAX_P99_US, TICKER_CONFLATION_SLACK_PP, TICKER_MAX_P99_US,
    TICKER_MAX_RSS_BYTES,
};

pub fn game_rows(search: &Search, n: u64, hz: f64, s: &Summary) -> Vec<Row> {
    let goal = s.median("goal_clients");
    let (snapshots, p50, p99) = (
        s.median("snapshots_per_s"),
        s.median("latency_p50_us"),
        s.median("latency_p99_us"),
    );
    let found = match search.found {
        Some(n) => format!("N = {} found", count(n as f64)),
        None => format!(
            "no N passed (figures at the smallest tried, {})",
            count(n as f64)
        ),
    };
    let trials: Vec<String> = search
        .trials
        .iter()
        .map(|t| {
            format!(
                "{} {} ({}/s, p99 {})",
                count(t.clients as f64),
                if t.passed { "pass" } else { "fail" },
                fixed(t.snapshots_per_s, 1),
                ms(t.latency_p99_us)
            )
        })
        .collect();
    let mut notes = vec![format!("search: {}", trials.join(" → "))];
    notes.extend(search.trials.iter().flat_map(|t| {
        t.notes
            .iter()
            .map(move |n| format!("{n} [search N = {}]", t.clients))
    }));
    notes.extend(s.notes());
    notes.push(format!(
        "snapshots/s: the median client's (snapshots.per_client_per_s.median); latency: \
         snapshot_latency_us; goal from the probe at N connections with the run's frame \
         ({} B, server bytes ÷ frames written)",
        whole(s.median("frame_bytes"))
    ));
    let capacity = Row {
        target: format!("1 game: players at {hz:.0} Hz"),
        figure: format!(
            "{found}; goal {} (0.85 × {} probe writes/s ÷ {hz:.0}); at N: {} snapshots/s, \
             latency p50/p99 {}/{}",
            goal.map_or("?".into(), count),
            whole(s.median("probe_writes_per_s")),
            fixed(snapshots, 2),
            ms(p50),
            ms(p99)
        ),
        threshold: format!(
            "largest N with median client ≥ {GAME_MIN_SNAPSHOTS_PER_S:.0} snapshots/s and \
             p99 ≤ {}; N ≥ goal",
            ms(Some(GAME_MAX_P99_US))
        ),
        verdict: Verdict::all(&[
            search.found.map(|n| goal.is_some_and(|g| n as f64 >= g)),
            at_least(snapshots, GAME_MIN_SNAPSHOTS_PER_S),
            at_most(p99, GAME_MAX_P99_US),
            zero(s.max("failed_joins")),
        ]),
        notes,
    };
    let tick = s.median("tick_p99_us");
    let tick_row = Row {
        target: "1 game: room tick p99".into(),
        figure: format!("{} at N = {}", ms(tick), count(n as f64)),
        threshold: format!("≤ {}", ms(Some(GAME_MAX_TICK_P99_US))),
        verdict: Verdict::all(&[at_most(tick, GAME_MAX_TICK_P99_US)]),
        notes: vec![
            "arena's tick_duration_us.p99 from GET /rooms at the end of the hold \
             (server.end_of_hold)"
                .into(),
        ],
    };
    vec![capacity, tick_row]
}

pub fn overhead_rows(s: &Summary) -> Vec<Row> {
    let ratio = s.median("overhead");
    let overhead = Row {
        target: "7 overhead: server CPU per frame ÷ probe".into(),
        figure: format!(
            "{} server CPU per frame written ÷ {} probe CPU per write = {}",
            us(s.median("server_ns_per_frame").map(|ns| ns / 1e3)),
            us(s.median("probe_ns_per_write").map(|ns| ns / 1e3)),
            fixed(ratio, 2)
        ),
        threshold: format!("≤ {OVERHEAD_MAX}"),
        verdict: Verdict::all(&[at_most(ratio, OVERHEAD_MAX)]),
        notes: vec![format!(
            "the game runs at N: server cpu_percent_of_one_core ÷ frames_written_per_s \
             (server.metrics over the hold; process-wide counters, the other rooms have no \
             clients); server CPU {} % of one core",
            whole(s.median("server_cpu_pct"))
        )],
    };
    let sleep = Row {
        target: "7 overhead: server CPU per frame ÷ sleep-mode probe".into(),
        figure: format!(
            "{} ÷ {} probe CPU per write with sleeping readers = {}",
            us(s.median("server_ns_per_frame").map(|ns| ns / 1e3)),
            us(s.median("probe_sleep_ns_per_write").map(|ns| ns / 1e3)),
            fixed(s.median("overhead_sleep"), 2)
        ),
        threshold: "—".into(),
        verdict: Verdict::Reported,
        notes: vec![sleep_probe_note(s)],
    };
    let capacity = Row {
        target: "7 overhead: capacity ÷ probe limit".into(),
        figure: format!(
            "N × tick rate ÷ probe writes/s = {}",
            fixed(s.median("capacity_ratio"), 2)
        ),
        threshold: "—".into(),
        verdict: Verdict::Reported,
        notes: Vec::new(),
    };
    vec![overhead, sleep, capacity]
}

/// How the sleep-mode probe ran, for the rows that divide by it.
fn sleep_probe_note(s: &Summary) -> String {
    format!(
        "sleep-mode probe: {SLEEP_READERS} reader threads blocking in epoll_wait, the writer \
         paced at the run's own frames/s in bursts at the room's tick rate, same connections \
         and frame; its readers slept at {} of its writes (busy-mode probe: one reader \
         draining, unpaced)",
        fixed(s.median("probe_sleep_sleeps_per_write"), 2)
    )
}

pub fn ticker_rows(p: &Plan, s: &Summary, expected: Option<f64>) -> Vec<Row> {
    let sizes = format!(
        "{} sessions × {} symbols",
        count(p.ticker_sessions as f64),
        p.ticker_symbols
    );
    let p99 = s.median("feed_p99_us");
    let latency = Row {
        target: "2 ticker: feed → client p99".into(),
        figure: format!(
            "{} (p50 {}), {sizes}; {} updates/s per session; probe {} writes/s at {} B",
            ms(p99),
            ms(s.median("feed_p50_us")),
            fixed(s.median("updates_per_s_session"), 1),
            whole(s.median("probe_writes_per_s")),
            whole(s.median("frame_bytes"))
        ),
        threshold: format!("≤ {}", ms(Some(TICKER_MAX_P99_US))),
        verdict: Verdict::all(&[at_most(p99, TICKER_MAX_P99_US)]),
        notes: s.notes(),
    };
    let must_be_zero = [
        "duplicates",
        "reorders",
        "unexpected_symbols",
        "first_values_missing",
        "subscribes_failed",
        "failed_joins",
        "ended_early",
        "skipped_ticks",
    ];
    let worst: Vec<String> = must_be_zero
        .iter()
        .map(|k| format!("{k} {}", whole(s.max(k))))
        .collect();
    let conflated = s.max("conflated_pct");
    let mut conditions: Vec<Option<bool>> = must_be_zero.iter().map(|k| zero(s.max(k))).collect();
    conditions.push(match expected {
        Some(e) => at_most(conflated, e + TICKER_CONFLATION_SLACK_PP),
        None => None,
    });
    let loss = Row {
        target: "2 ticker: every changed tick delivered".into(),
        figure: format!(
            "worst run: {}; conflated {} % of values vs {} % replaced within a tick",
            worst.join(", "),
            fixed(conflated, 2),
            fixed(expected, 2)
        ),
        threshold: format!("all 0; conflation ≤ expected + {TICKER_CONFLATION_SLACK_PP} pp"),
        verdict: Verdict::all(&conditions),
        notes: vec![
            "client-sim counts a seq jump as conflation (quotes.gaps/skipped/conflated_pct) and \
             cannot tell a missed tick from values replaced within one; the expected share \
             assumes the synthetic feed's uniformly random updates (Poisson per tick), so a \
             session that missed ticks shows as conflation above it"
                .into(),
        ],
    };
    let rss = s.median("rss_peak_bytes");
    let memory = Row {
        target: "2 ticker: server RSS".into(),
        figure: format!(
            "{} (largest of the scrapes; server.metrics.rss_peak_bytes)",
            mb(rss)
        ),
        threshold: format!("≤ {}", mb(Some(TICKER_MAX_RSS_BYTES))),
        verdict: Verdict::all(&[at_most(rss, TICKER_MAX_RSS_BYTES)]),
        notes: Vec::new(),
    };
    vec![latency, loss, memory]
}

pub fn chat_rows(p: &Plan, period_us: f64, s: &Summary) -> Vec<Row> {
    let fanout = s.median("fanout_max_us");
    let bound = s.median("fanout_bound_us");
    let mut notes = vec![
        "client-sim's batch_fanout_us: at every viewer, receipt − the tick start the room \
         stamps on the batch's messages; its max is the worst batch's tick start → last \
         viewer, client-sim's own reading delay included, so an upper bound on the server's \
         tick start → last write"
            .to_string(),
    ];
    if s.max("lost").is_some_and(|l| l > 0.0) || s.max("duplicates").is_some_and(|d| d > 0.0) {
        notes.push(format!(
            "viewers lost {} messages, {} duplicates (worst run)",
            whole(s.max("lost")),
            whole(s.max("duplicates"))
        ));
    }
    notes.extend(s.notes());
    let fanout_row = Row {
        target: "3 chat: fan-out of one batch".into(),
        figure: format!(
            "{} worst batch to {} viewers (+{} senders); over batches × viewers p50 {}, \
             p99 {}; server CPU per batch {}; probe {} per write at {} connections, {} B",
            ms(fanout),
            count(p.chat_viewers as f64),
            p.chat_senders,
            ms(s.median("fanout_p50_us")),
            ms(s.median("fanout_p99_us")),
            ms(s.median("server_cpu_per_batch_us")),
            us(s.median("probe_ns_per_write").map(|ns| ns / 1e3)),
            count((p.chat_viewers + p.chat_senders) as f64),
            whole(s.median("frame_bytes"))
        ),
        threshold: format!(
            "≤ {CHAT_FANOUT_FACTOR} × {} × probe CPU per write = {}",
            count(p.chat_viewers as f64),
            ms(bound)
        ),
        verdict: Verdict::all(&[fanout.zip(bound).map(|(f, b)| f <= b)]),
        notes,
    };
    let p99 = s.median("viewer_p99_us");
    let latency_bound = s.median("latency_bound_us");
    let latency = Row {
        target: "3 chat: send → receive p99".into(),
        figure: format!(
            "{} (p50 {}; viewer_latency_us)",
            ms(p99),
            ms(s.median("viewer_p50_us"))
        ),
        threshold: format!(
            "≤ {} tick + fan-out bound + {} = {}",
            ms(Some(period_us)),
            ms(Some(CHAT_LATENCY_SLACK_US)),
            ms(latency_bound)
        ),
        verdict: Verdict::all(&[p99.zip(latency_bound).map(|(l, b)| l <= b)]),
        notes: Vec::new(),
    };
    let per_write = Row {
        target: "3 chat: server CPU per write ÷ probe".into(),
        figure: format!(
            "{} server CPU per frame written ÷ {} busy-mode probe = {}; ÷ {} sleep-mode probe \
             = {}",
            us(s.median("server_ns_per_frame").map(|ns| ns / 1e3)),
            us(s.median("probe_ns_per_write").map(|ns| ns / 1e3)),
            fixed(s.median("overhead"), 2),
            us(s.median("probe_sleep_ns_per_write").map(|ns| ns / 1e3)),
            fixed(s.median("overhead_sleep"), 2)
        ),
        threshold: "—".into(),
        verdict: Verdict::Reported,
        notes: vec![
            "server cpu_percent_of_one_core ÷ frames_written_per_s over the hold (heartbeats \
             and the idle rooms' ticks included)"
                .into(),
            sleep_probe_note(s),
        ],
    };
    vec![fanout_row, latency, per_write]
}

pub fn idle_rows(p: &Plan, s: &Summary) -> Vec<Row> {
    let per_session = s.median("rss_per_session_bytes");
    let mut notes = vec![format!(
        "(RSS at the end of the hold − RSS of the empty server before the ramp) ÷ sessions \
         joined (idle.rss_per_session_bytes); RSS {} → {}",
        mb(s.median("rss_before_bytes")),
        mb(s.median("rss_end_bytes"))
    )];
    if s.max("failed_joins").is_some_and(|f| f > 0.0) {
        notes.push(format!(
            "failed joins: {} (worst run)",
            whole(s.max("failed_joins"))
        ));
    }
    notes.extend(s.notes());
    let memory = Row {
        target: "4 idle: RSS per session".into(),
        figure: format!(
            "{} B ({} sessions joined)",
            whole(per_session),
            s.min("sessions").map_or("?".into(), count)
        ),
        threshold: format!("≤ {} B", count(IDLE_MAX_RSS_PER_SESSION)),
        verdict: Verdict::all(&[
            at_most(per_session, IDLE_MAX_RSS_PER_SESSION),
            s.min("sessions").map(|n| n >= p.idle_sessions as f64),
        ]),
        notes,
    };
    let cpu = s.median("server_cpu_pct");
    let cpu_row = Row {
        target: "4 idle: server CPU".into(),
        figure: format!(
            "{} % of one core over the hold (heartbeats only)",
            fixed(cpu, 1)
        ),
        threshold: format!("≤ {IDLE_MAX_CPU_PCT} %"),
        verdict: Verdict::all(&[at_most(cpu, IDLE_MAX_CPU_PCT)]),
        notes: Vec::new(),
    };
    vec![memory, cpu_row]
}

pub fn spike_join_row(p: &Plan, s: &Summary) -> Row {
    let p99 = s.median("first_snapshot_p99_us");
    let mut notes = vec![
        "first_snapshot_latency_us: connect start → first Snapshot; failed joins: every run".into(),
    ];
    notes.extend(s.notes());
    Row {
        target: "5 spike: join → first snapshot".into(),
        figure: format!(
            "p99 {} (p50 {}), {} sessions in {} s; failed joins {}, joined without a \
             snapshot {}",
            ms(p99),
            ms(s.median("first_snapshot_p50_us")),
            count(p.spike_sessions as f64),
            p.spike_ramp_s,
            whole(s.max("failed_joins")),
            whole(s.max("without_snapshot"))
        ),
        threshold: format!("p99 ≤ {}, no failed joins", ms(Some(SPIKE_MAX_P99_US))),
        verdict: Verdict::all(&[at_most(p99, SPIKE_MAX_P99_US), zero(s.max("failed_joins"))]),
        notes,
    }
}

pub fn churn_join_row(p: &Plan, s: &Summary) -> Row {
    let mut notes = vec![format!(
        "client-sim churn defaults: stay 500 ms, half the sessions leave by RST; join → \
         snapshot p99 {}",
        ms(s.median("first_snapshot_p99_us"))
    )];
    notes.extend(s.notes());
    Row {
        target: "6 churn: joins".into(),
        figure: format!(
            "{} sessions started at {}/s (asked {}/s for {} s); failed joins {}",
            whole(s.median("started")),
            fixed(s.median("achieved_rate_per_s"), 1),
            p.churn_rate,
            p.churn_secs,
            whole(s.max("failed_joins"))
        ),
        threshold: "no failed joins".into(),
        verdict: Verdict::all(&[zero(s.max("failed_joins"))]),
        notes,
    }
}

/// Spike and churn: back to the baseline in time, and the memory given back.
pub fn leak_rows(target: &str, timeout_s: f64, s: &Summary) -> Vec<Row> {
    let limit = SETTLE_TIMEOUTS * timeout_s;
    let settle = s.max("settle_s");
    let back = |after: &str, before: &str, slack: f64| {
        s.runs
            .iter()
            .map(|r| r.get(after).zip(r.get(before)).map(|(a, b)| a <= b + slack))
            .collect::<Option<Vec<bool>>>()
            .map(|v| v.iter().all(|&ok| ok))
    };
    let tolerance = s.max("tasks_tolerance").unwrap_or(0.0);
    let settle_row = Row {
        target: format!("{target}: sessions and tasks back"),
        figure: format!(
            "settled after {} (worst run; median {}); sessions {} → {}, alive tasks {} → {}",
            secs_text(settle),
            secs_text(s.median("settle_s")),
            whole(s.median("sessions_before")),
            whole(s.max("sessions_after")),
            whole(s.median("tasks_before")),
            whole(s.max("tasks_after"))
        ),
        threshold: format!(
            "within {SETTLE_TIMEOUTS} × idle timeout = {}",
            secs_text(Some(limit))
        ),
        verdict: Verdict::all(&[
            s.min("settled").map(|v| v == 1.0),
            at_most(settle, limit),
            back("sessions_after", "sessions_before", 0.0),
            back("connections_after", "connections_before", 0.0),
            back("tasks_after", "tasks_before", tolerance),
        ]),
        notes: vec![format!(
            "client-sim's settle poll every 250 ms after the drop (settle.settled, settle_s; \
             connections and alive tasks from settle.last, +{tolerance:.0} tasks tolerated); \
             sessions (tickroom_sessions_active) from a scrape once client-sim had ended, 3 s \
             after that; the idle timeout is the server config's session.idle_timeout_ms"
        )],
    };
    let growth = s.max("rss_growth_pct");
    let rss_row = Row {
        target: format!("{target}: RSS after"),
        figure: format!(
            "{} (worst run): {} before, {} peak, {} after",
            growth.map_or("?".into(), |g| format!("{g:+.1} %")),
            mb(s.median("rss_before_bytes")),
            mb(s.median("rss_peak_bytes")),
            mb(s.median("rss_after_bytes"))
        ),
        threshold: format!("within {MAX_RSS_GROWTH_PCT:.0} % of before"),
        verdict: Verdict::all(&[at_most(growth, MAX_RSS_GROWTH_PCT)]),
        notes: vec![
            "settle.rss_after_bytes (3 s after settling) against server.metrics.rss_before_bytes"
                .into(),
        ],
    };
    vec![settle_row, rss_row]
}
