//! The `idle` scenario: N sessions join one room (by default the chat room, anonymously: a
//! game room would stream snapshots to them) and do nothing but read, which answers the
//! server's pings (tungstenite replies while reading). After the hold it reports what an idle
//! session costs the server: RSS per session (end of hold − before the ramp, ÷ sessions),
//! alive tasks per session, and the server's CPU over the hold with only the heartbeat to do.
//! The swarm ([`crate::swarm`]) runs the clients.

use anyhow::ensure;
use serde::Serialize;

use crate::limits::NofileLimit;
use crate::report::{Common, Head, Table, Tail, bytes, round2};
use crate::server_metrics::{Sample, ServerMetrics};
use crate::swarm::{self, Client, Conn, Held, Holding, Plan, Scenario, SwarmArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Idle sessions.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions: u32,
    /// Room to join, anonymously (an empty name).
    #[arg(long, default_value = "chat")]
    pub room: String,
}

/// What every client task shares.
struct Shared {
    join: Vec<u8>,
}

impl Scenario for Shared {
    const NAME: &'static str = "idle";

    type Outcome = Held;

    fn client(client: Client<Self>) -> impl Future<Output = (Conn, Held)> + Send {
        run_client(client)
    }

    fn progress(&self, _: f64) -> String {
        String::new()
    }
}

/// One idle session: joins, then only reads until told to stop, and leaves politely.
async fn run_client(client: Client<Shared>) -> (Conn, Held) {
    let how = Holding {
        hello: client.run.scenario.join.clone(),
        join_latency: None,
        first_snapshot: None,
        stay: None,
        reset: false,
    };
    swarm::hold(client, how).await
}

/// Runs the scenario (ramp, hold, shutdown) and builds the report.
pub async fn run(args: IdleArgs) -> anyhow::Result<IdleReport> {
    ensure!(!args.room.is_empty(), "--room must not be empty");
    let shared = Shared {
        join: swarm::join_message(&args.room, ""),
    };
    let sessions = args.sessions as usize;
    let done = swarm::drive(Plan::ramp(&args.swarm, sessions, &args.room), shared).await?;
    let pings = done.outcomes.iter().map(|(_, o)| o.pings).sum();
    let config = IdleConfig {
        url: done.run.swarm.target.url.clone(),
        room: args.room,
        sessions,
        ramp_per_s: args.swarm.ramp,
        duration_s: args.swarm.duration,
    };
    Ok(IdleReport::new(done.common, config, pings))
}

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub scenario: &'static str,
    pub config: IdleConfig,
    #[serde(flatten)]
    pub head: Head,
    pub idle: Idle,
    #[serde(flatten)]
    pub tail: Tail,
    /// The open-file limits the run had (null if unreadable).
    pub open_files: Option<NofileLimit>,
}

#[derive(Debug, Serialize)]
pub struct IdleConfig {
    pub url: String,
    pub room: String,
    pub sessions: usize,
    pub ramp_per_s: f64,
    pub duration_s: f64,
}

/// What idle sessions cost the server, from its metrics before the ramp and at the end of
/// the hold (`null` when a scrape failed or no session joined).
#[derive(Debug, Default, Serialize)]
pub struct Idle {
    /// Sessions that joined: the divisor below.
    pub sessions: u64,
    pub rss_before_bytes: Option<u64>,
    pub rss_end_of_hold_bytes: Option<u64>,
    /// (end of hold − before) ÷ sessions.
    pub rss_per_session_bytes: Option<f64>,
    pub alive_tasks_before: Option<u64>,
    pub alive_tasks_end_of_hold: Option<u64>,
    pub alive_tasks_per_session: Option<f64>,
    /// Server CPU over the hold (100 = one core): the cost of the heartbeat alone.
    pub server_cpu_percent_of_one_core: Option<f64>,
    /// Frames and socket flushes the server made per second over the hold (pings included
    /// in the flushes).
    pub server_frames_per_s: Option<f64>,
    pub server_flushes_per_s: Option<f64>,
    /// Pings the sessions received (and answered) during the hold, and per session per
    /// second of it.
    pub pings: u64,
    pub pings_per_session_per_s: Option<f64>,
}

impl Idle {
    fn of(m: &ServerMetrics, sessions: u64, pings: u64, hold_s: f64) -> Self {
        let per_session = |f: fn(&Sample) -> Option<u64>| {
            let (before, end) = (f(m.before.as_ref()?)?, f(m.end_of_hold.as_ref()?)?);
            (sessions > 0).then(|| round2((end as f64 - before as f64) / sessions as f64))
        };
        let at = |s: &Option<Sample>| s.as_ref().and_then(|s| s.tokio_alive_tasks);
        Idle {
            sessions,
            rss_before_bytes: m.rss_before_bytes,
            rss_end_of_hold_bytes: m.rss_end_of_hold_bytes,
            rss_per_session_bytes: per_session(|s| s.process_resident_memory_bytes),
            alive_tasks_before: at(&m.before),
            alive_tasks_end_of_hold: at(&m.end_of_hold),
            alive_tasks_per_session: per_session(|s| s.tokio_alive_tasks),
            server_cpu_percent_of_one_core: m.cpu_percent_of_one_core,
            server_frames_per_s: m.frames_written_per_s,
            server_flushes_per_s: m.socket_flushes_per_s,
            pings,
            pings_per_session_per_s: (sessions > 0 && hold_s > 0.0)
                .then(|| round2(pings as f64 / sessions as f64 / hold_s)),
        }
    }
}

crate::report::outcome!(IdleReport);

impl IdleReport {
    pub fn new(common: Common, config: IdleConfig, pings: u64) -> Self {
        let metrics = common.tail.server.metrics.clone().unwrap_or_default();
        let (sessions, hold_s) = (common.head.clients.connected, common.head.timing.hold_s);
        IdleReport {
            scenario: "idle",
            config,
            idle: Idle::of(&metrics, sessions, pings, hold_s),
            head: common.head,
            tail: common.tail,
            open_files: common.nofile,
        }
    }

    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let c = &self.config;
        let what = format!(
            "{} idle sessions -> {} room {:?}",
            c.sessions, c.url, c.room
        );
        let mut t = Table::titled(self.scenario, what, &self.head);
        let i = &self.idle;
        let num = |v: Option<f64>, unit: &str| v.map_or("?".into(), |v| format!("{v:.1}{unit}"));
        let mb = |b: Option<u64>| b.map_or("?".into(), |b| bytes(b as f64));
        t.row(
            "memory per session",
            format!(
                "{} (server RSS {} before, {} end of hold, {} sessions)",
                i.rss_per_session_bytes.map_or("?".into(), bytes),
                mb(i.rss_before_bytes),
                mb(i.rss_end_of_hold_bytes),
                i.sessions
            ),
        );
        t.row(
            "tasks per session",
            format!(
                "{} (alive tasks {} -> {})",
                num(i.alive_tasks_per_session, ""),
                i.alive_tasks_before.map_or("?".into(), |v| v.to_string()),
                i.alive_tasks_end_of_hold
                    .map_or("?".into(), |v| v.to_string()),
            ),
        );
        t.row(
            "idle server cpu",
            format!(
                "{} of one core over the hold; {} frames/s, {} flushes/s",
                num(i.server_cpu_percent_of_one_core, " %"),
                num(i.server_frames_per_s, ""),
                num(i.server_flushes_per_s, ""),
            ),
        );
        t.row(
            "heartbeat",
            format!(
                "{} pings received and answered in the hold ({} per session per second)",
                i.pings,
                i.pings_per_session_per_s
                    .map_or("?".into(), |v| format!("{v:.3}")),
            ),
        );
        t.traffic(&self.tail.traffic);
        t.errors(&self.tail);
        t.line("");
        t.footer(&self.tail);
        t.into_string()
    }
}

#[cfg(test)]
mod tests {
    use tickroom::config::RoomConfig;

    use super::*;
    use crate::testing::{arena, assert_all_joined, real_server, swarm_args};

    /// 50 anonymous sessions idle in a real chat room: all stay, the server's memory per
    /// session is measured, and nothing but pings (and the odd empty batch) arrives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_sessions_cost_memory() {
        let server = real_server(vec![
            RoomConfig::Chat {
                name: "chat".into(),
                chat: tickroom::sim::chat::ChatConfig::default(),
            },
            arena(0),
        ])
        .await;
        let args = IdleArgs {
            swarm: swarm_args(&server, 50, 1.0),
            sessions: 50,
            room: "chat".into(),
        };
        let r = run(args).await.unwrap();
        assert_all_joined(&r.head, 50);
        let i = &r.idle;
        assert_eq!(i.sessions, 50);
        assert!(i.rss_per_session_bytes.unwrap() > 0.0, "{i:?}");
        assert!(i.alive_tasks_per_session.unwrap() >= 1.0, "{i:?}");
        assert!(i.server_cpu_percent_of_one_core.is_some(), "{i:?}");
        let table = r.table();
        assert!(table.contains("memory per session"), "{table}");
        let json = serde_json::to_value(&r).unwrap();
        assert!(json["idle"]["rss_per_session_bytes"].as_f64().unwrap() > 0.0);
    }
}
