//! The `ticker` scenario: N trading clients each subscribe to K symbols of a ticker room,
//! either with a Subscribe message after Join (flow `subscribe`) or through a REST session
//! whose WebSocket streams them unasked (flow `rest`), hold for a fixed time and measure
//! feed→client latency, updates/s, sequence gaps and reorders, and whether every subscribed
//! symbol's current value came promptly after the ack. The swarm ([`crate::swarm`]) runs the
//! clients and counts what every scenario counts.

mod report;
mod track;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use bytes::Bytes;
use client_sim::toolkit::http;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tickroom_proto::Message as _;
use tickroom_proto::v1::{
    ClientMessage, RoomKind, Snapshot, Subscribe, client_message, object, server_message,
};
use tokio::time::Instant;

pub use self::report::TickerReport;
use self::report::{InitialValues, Quotes, Subscriptions, TickerConfig, Universe};
use self::track::{FirstValues, Seen, SeqTrack};
use crate::report::{LatencySummary, RateSummary, round2};
use crate::swarm::{
    self, Client, Conn, JoinFail, LiveCount, Plan, Read, Run, Scenario, Shards, SwarmArgs, Ws,
};
use crate::talk::{Step, Talk, talk};
use crate::target::{self, Target};

/// A joined client without a Subscriptions ack this long after asking counts as a failed
/// subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
const SESSIONS_PATH: &str = "/api/v1/sessions";

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// WebSocket, Join, then a Subscribe message.
    Subscribe,
    /// POST /api/v1/sessions with the symbols, then a WebSocket to the returned ws_url.
    Rest,
}

impl Flow {
    fn name(self) -> &'static str {
        match self {
            Flow::Subscribe => "subscribe",
            Flow::Rest => "rest",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct TickerArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Number of simulated trading clients.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Ticker room to join.
    #[arg(long, default_value = "ticker")]
    pub room: String,
    /// Symbols per client, drawn at random from the room's symbols (seeded by --seed).
    #[arg(long, default_value_t = 20)]
    pub symbols: usize,
    /// Every client subscribes to exactly these symbols instead (comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "symbols")]
    pub symbol_list: Option<Vec<String>>,
    /// Seed of the random symbol draws (the same seed gives every client the same symbols).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How clients subscribe.
    #[arg(long, value_enum, default_value_t = Flow::Subscribe)]
    pub flow: Flow,
    /// Every subscribed symbol's current value must arrive within this many ms of the ack.
    #[arg(long, default_value_t = 1000)]
    pub initial_window_ms: u64,
}

/// What every client task reads or updates; everything per client stays in its task.
struct Shared {
    room: String,
    flow: Flow,
    /// Symbols clients draw from: the fixed list, or the room's universe.
    names: Vec<String>,
    /// `Some(seed)`: each client draws `per_client` of `names`; `None`: each takes all.
    seed: Option<u64>,
    per_client: usize,
    initial_window: Duration,
    join: Vec<u8>,
    feed_latency: Shards,
    delivery_latency: Shards,
    subscribe_latency: Shards,
    initial_latency: Shards,
    /// Clients with an ack, and quotes received (for progress).
    subscribed: AtomicU64,
    quotes: LiveCount,
}

impl Shared {
    /// Indices into `names` of the symbols client `id` subscribes to.
    fn symbols_for(&self, id: usize) -> Vec<u32> {
        match self.seed {
            None => (0..self.names.len() as u32).collect(),
            Some(seed) => draw(seed, id, self.names.len(), self.per_client),
        }
    }

    fn symbol_names(&self, wanted: &[u32]) -> Vec<String> {
        wanted
            .iter()
            .map(|&i| self.names[i as usize].clone())
            .collect()
    }
}

/// `k` distinct indices below `n`, the same for the same seed and client.
fn draw(seed: u64, client: usize, n: usize, k: usize) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ client as u64);
    rand::seq::index::sample(&mut rng, n, k.min(n))
        .into_iter()
        .map(|i| i as u32)
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
enum SubscribeFail {
    Rejected { code: String, message: String },
    Timeout,
    Closed,
}

impl SubscribeFail {
    fn kind(&self) -> String {
        match self {
            SubscribeFail::Rejected { code, .. } => code.clone(),
            SubscribeFail::Timeout => "timeout".into(),
            SubscribeFail::Closed => "closed".into(),
        }
    }

    fn message(&self) -> String {
        match self {
            SubscribeFail::Rejected { code, message } => format!("{code}: {message}"),
            SubscribeFail::Timeout => format!("no Subscriptions within {SUBSCRIBE_TIMEOUT:?}"),
            SubscribeFail::Closed => "connection ended before the Subscriptions ack".into(),
        }
    }
}

/// One client's own results, handed back when its task ends. Latencies went to the shared
/// shards.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Outcome {
    wanted: usize,
    acked: bool,
    subscribe_fail: Option<SubscribeFail>,
    ack_mismatch: bool,
    /// Flow `rest`: the host of a `ws_url` that was not `--url`'s.
    other_host: Option<String>,
    seq: SeqTrack,
    first: FirstValues,
    /// Subscribed symbols without a value in time, once that could be told.
    initial_missing: Option<u64>,
    /// Updates before the end of the hold, and during the hold.
    window_updates: u64,
    hold_updates: u64,
    updates_per_s: Option<f64>,
}

impl Scenario for Shared {
    const NAME: &'static str = "ticker";

    type Outcome = Outcome;

    fn client(client: Client<Self>) -> impl Future<Output = (Conn, Outcome)> + Send {
        run_client(client)
    }

    fn progress(&self, secs: f64) -> String {
        format!(
            "subscribed {}  quotes/s {:.0}  feed latency {}",
            self.subscribed.load(Relaxed),
            self.quotes.rate(secs),
            self.feed_latency.p50_p99()
        )
    }

    fn shards(&self) -> Vec<&Shards> {
        vec![
            &self.feed_latency,
            &self.delivery_latency,
            &self.subscribe_latency,
            &self.initial_latency,
        ]
    }
}

/// POSTs a session for `symbols` and returns the WebSocket URL to stream them from.
async fn create_session(
    target: &Target,
    room: &str,
    symbols: Vec<String>,
    other_host: &mut Option<String>,
) -> Result<String, JoinFail> {
    let body = json!({ "symbols": symbols, "room": room });
    let response = target
        .http()
        .post_json(&target.http_url(SESSIONS_PATH), &body)
        .await
        .map_err(|e| JoinFail::Session(format!("{e:#}")))?;
    let json = response.json().unwrap_or(Value::Null);
    let (url, other) = session_url(target, response.status, &json).map_err(JoinFail::Session)?;
    *other_host = other;
    Ok(url)
}

/// The WebSocket URL of a session from the answer to `POST /api/v1/sessions`, always on the
/// target's host, and the `ws_url`'s own host when it named another one.
fn session_url(
    target: &Target,
    status: u16,
    json: &Value,
) -> Result<(String, Option<String>), String> {
    if !(200..300).contains(&status) {
        let mut message = format!("POST {SESSIONS_PATH}: status {status}");
        if let Some(e) = json["error"].as_str() {
            message += &format!(": {e}");
        }
        if let Some(unknown) = json["unknown"].as_array() {
            message += &format!(" (unknown: {})", Value::Array(unknown.clone()));
        }
        return Err(message);
    }
    let ws_url = json["ws_url"]
        .as_str()
        .ok_or_else(|| format!("POST {SESSIONS_PATH}: no ws_url in {json}"))?;
    let (authority, path) = target::split_ws_url(ws_url)
        .ok_or_else(|| format!("POST {SESSIONS_PATH}: ws_url {ws_url:?} is not a ws:// URL"))?;
    let other = (authority != target.authority).then(|| authority.to_owned());
    Ok((target.ws_url(path), other))
}

/// Whether an ack lists exactly the symbols asked for (order aside).
fn same_symbols(ack: &[String], asked: &[&str]) -> bool {
    let mut a: Vec<&str> = ack.iter().map(String::as_str).collect();
    let mut b = asked.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// Joins (by the chosen flow), checking the room is a ticker room.
async fn join_ticker(
    run: &Run<Shared>,
    conn: &mut Conn,
    id: usize,
    wanted: &[u32],
    other_host: &mut Option<String>,
) -> Result<(Ws, tickroom_proto::v1::Welcome), JoinFail> {
    let (swarm, shared) = (&run.swarm, &run.scenario);
    let (ws, welcome) = match shared.flow {
        Flow::Subscribe => {
            swarm::join(
                swarm,
                conn,
                id,
                &swarm.target.url,
                Some(shared.join.clone()),
            )
            .await?
        }
        Flow::Rest => {
            let names = shared.symbol_names(wanted);
            let url = create_session(&swarm.target, &shared.room, names, other_host).await?;
            swarm::join(swarm, conn, id, &url, None).await?
        }
    };
    swarm::expect_kind(&welcome, RoomKind::Ticker)?;
    Ok((ws, welcome))
}

/// One trading client's talk: subscribes (flow `subscribe`), waits for the ack, reads quotes.
struct Trader<'a> {
    id: usize,
    run: &'a Run<Shared>,
    wanted: Vec<u32>,
    out: Outcome,
    requested_at: Instant,
    ack: Option<Instant>,
}

impl Talk for Trader<'_> {
    fn opening(&mut self) -> Option<Vec<u8>> {
        let shared = &self.run.scenario;
        if shared.flow != Flow::Subscribe {
            return None;
        }
        let subscribe = ClientMessage {
            body: Some(client_message::Body::Subscribe(Subscribe {
                symbols: shared.symbol_names(&self.wanted),
            })),
        };
        self.requested_at = Instant::now();
        Some(subscribe.encode_to_vec())
    }

    fn frame(&mut self, conn: &mut Conn, frame: Bytes, now: Instant) -> Step {
        let Read::Msg(msg, now) = conn.decode(frame, now) else {
            return Step::Stay;
        };
        let shared = &self.run.scenario;
        match msg.body {
            Some(server_message::Body::Snapshot(snap)) => {
                let (id, wanted, ack) = (self.id, &self.wanted, self.ack);
                on_snapshot(self.run, id, wanted, ack, &mut self.out, &snap, now);
            }
            Some(server_message::Body::Subscriptions(s)) if self.ack.is_none() => {
                self.ack = Some(now);
                self.out.acked = true;
                let asked: Vec<&str> = self
                    .wanted
                    .iter()
                    .map(|&i| shared.names[i as usize].as_str())
                    .collect();
                self.out.ack_mismatch = !same_symbols(&s.symbols, &asked);
                shared.subscribed.fetch_add(1, Relaxed);
                let us = (now - self.requested_at).as_micros() as u64;
                shared.subscribe_latency.record(self.id, us);
            }
            Some(server_message::Body::Error(e)) if self.ack.is_none() => {
                self.out.subscribe_fail = Some(SubscribeFail::Rejected {
                    code: swarm::error_name(e.code),
                    message: e.message,
                });
                return Step::Leave;
            }
            _ => {}
        }
        Step::Stay
    }

    fn ended(&mut self) {
        if self.ack.is_none() {
            self.out.subscribe_fail = Some(SubscribeFail::Closed);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.ack
            .is_none()
            .then(|| self.requested_at + SUBSCRIBE_TIMEOUT)
    }

    fn expired(&mut self) {
        self.out.subscribe_fail = Some(SubscribeFail::Timeout);
    }
}

/// One simulated trading client: joins, subscribes, then reads quotes until told to stop.
async fn run_client(client: Client<Shared>) -> (Conn, Outcome) {
    let Client { id, run, mut stop } = client;
    let (swarm, shared) = (&run.swarm, &run.scenario);
    let wanted = shared.symbols_for(id);
    let mut conn = Conn::default();
    let mut out = Outcome {
        wanted: wanted.len(),
        ..Outcome::default()
    };
    let requested_at = Instant::now();
    let attempt = join_ticker(&run, &mut conn, id, &wanted, &mut out.other_host);
    let joined = swarm::bounded(&mut stop, attempt).await;
    let Some((mut ws, _)) = conn.admitted(swarm, id, joined) else {
        return (conn, out);
    };
    let mut trader = Trader {
        id,
        run: &run,
        wanted,
        out,
        requested_at,
        ack: None,
    };
    let server_closed = talk(swarm, &mut conn, id, &mut ws, &mut stop, None, &mut trader).await;
    let Trader { mut out, ack, .. } = trader;
    if let Some(ack) = ack {
        let window = shared.initial_window;
        out.updates_per_s = swarm.rate_since(ack, out.window_updates);
        out.initial_missing = out.first.missing(Instant::now(), ack, window, out.wanted);
        if let Some(done) = out.first.complete_at {
            let us = done.saturating_duration_since(ack).as_micros() as u64;
            shared.initial_latency.record(id, us);
        }
        shared.subscribed.fetch_sub(1, Relaxed);
    }
    swarm::leave(swarm, ws, server_closed).await;
    (conn, out)
}

/// Takes one Snapshot frame: every quote in it is classified by its sequence number, first
/// values are checked against the subscription, and updates before the end of the hold are
/// measured.
fn on_snapshot(
    run: &Run<Shared>,
    id: usize,
    wanted: &[u32],
    ack: Option<Instant>,
    out: &mut Outcome,
    snap: &Snapshot,
    now: Instant,
) {
    let (swarm, shared) = (&run.swarm, &run.scenario);
    let measuring = now < swarm.hold_end;
    let in_hold = swarm.in_hold(now);
    let local_us = swarm::unix_us();
    let mut quotes = 0u64;
    let mut updates = 0u64;
    let latencies = snap.objects.iter().filter_map(|o| {
        let Some(object::State::Quote(q)) = &o.state else {
            return None;
        };
        quotes += 1;
        match out.seq.observe(o.id, q.seq) {
            Seen::First => {
                let subscribed = wanted.iter().any(|&i| shared.names[i as usize] == q.symbol);
                out.first
                    .record(subscribed, now, ack, shared.initial_window, wanted.len());
                None
            }
            Seen::Next { .. } if measuring => {
                updates += 1;
                Some(local_us.saturating_sub(q.exchange_time_us).max(0) as u64)
            }
            _ => None,
        }
    });
    shared.feed_latency.record_all(id, latencies);
    shared.quotes.add(quotes);
    if updates > 0 {
        out.window_updates += updates;
        if in_hold {
            out.hold_updates += updates;
        }
        let delivery = local_us.saturating_sub(snap.server_time_us).max(0);
        shared.delivery_latency.record(id, delivery as u64);
    }
}

/// The room's symbols, from `GET /api/v1/quotes?room=ROOM`.
async fn fetch_universe(target: &Target, room: &str) -> anyhow::Result<Vec<String>> {
    let path = format!("/api/v1/quotes?room={}", http::query_value(room));
    let json = target.http().get_json(&target.http_url(&path)).await?;
    parse_universe(&json).with_context(|| format!("GET {path}"))
}

fn parse_universe(json: &Value) -> anyhow::Result<Vec<String>> {
    let quotes = json["quotes"]
        .as_array()
        .ok_or_else(|| anyhow!("no \"quotes\" array"))?;
    quotes
        .iter()
        .map(|q| {
            q["symbol"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("a quote without \"symbol\": {q}"))
        })
        .collect()
}

/// Runs the scenario to completion (ramp, hold, shutdown) and builds the report.
pub async fn run(args: TickerArgs) -> anyhow::Result<TickerReport> {
    ensure!(
        (1..=60_000).contains(&args.initial_window_ms),
        "--initial-window-ms must be between 1 and 60000"
    );
    let endpoints = args.swarm.endpoints().await?;
    let universe = fetch_universe(&endpoints.ws, &args.room).await;
    let mut warnings = Vec::new();
    let (names, seed) = match &args.symbol_list {
        Some(list) => {
            ensure!(
                !list.is_empty() && list.iter().all(|s| !s.is_empty()),
                "--symbol-list needs at least one non-empty symbol"
            );
            let mut distinct = list.clone();
            distinct.sort_unstable();
            distinct.dedup();
            ensure!(
                distinct.len() == list.len(),
                "--symbol-list names a symbol twice"
            );
            if let Ok(universe) = &universe {
                let unknown: Vec<&str> = list
                    .iter()
                    .filter(|s| !universe.contains(s))
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() {
                    warnings.push(format!(
                        "room {:?} does not quote {}: subscribes are expected to fail",
                        args.room,
                        unknown.join(", ")
                    ));
                }
            }
            (list.clone(), None)
        }
        None => {
            let universe = match &universe {
                Ok(u) => u.clone(),
                Err(e) => bail!("cannot learn the room's symbols: {e:#}"),
            };
            ensure!(
                args.symbols >= 1 && args.symbols <= universe.len(),
                "--symbols must be between 1 and the {} symbols room {:?} quotes",
                universe.len(),
                args.room
            );
            (universe, Some(args.seed))
        }
    };
    let per_client = if seed.is_some() {
        args.symbols
    } else {
        names.len()
    };
    let join = swarm::join_message(&args.room, "");
    let initial_window = Duration::from_millis(args.initial_window_ms);
    let shared = Shared {
        room: args.room.clone(),
        flow: args.flow,
        names,
        seed,
        per_client,
        initial_window,
        join,
        feed_latency: Shards::new(),
        delivery_latency: Shards::new(),
        subscribe_latency: Shards::new(),
        initial_latency: Shards::new(),
        subscribed: AtomicU64::new(0),
        quotes: LiveCount::default(),
    };
    let clients = args.clients as usize;
    let done = swarm::drive(Plan::ramp(&args.swarm, clients, &args.room), shared).await?;
    let shared = &done.run.scenario;
    let hold_s = done.common.head.timing.hold_s;
    let config = TickerConfig {
        url: done.run.swarm.target.url.clone(),
        room: args.room,
        flow: args.flow.name(),
        clients,
        symbols_per_client: per_client,
        symbol_list: args.symbol_list,
        seed,
        ramp_per_s: args.swarm.ramp,
        duration_s: args.swarm.duration,
        initial_window_ms: args.initial_window_ms,
    };
    let mut report = TickerReport::new(done.common, config);
    report.tail.warnings.extend(warnings);
    report.universe = match universe {
        Ok(u) => Universe {
            symbols: Some(u.len()),
            fetch_error: None,
        },
        Err(e) => Universe {
            symbols: None,
            fetch_error: Some(format!("{e:#}")),
        },
    };
    summarize(&mut report, &done.outcomes, hold_s);
    report.feed_latency_us = LatencySummary::of(&shared.feed_latency.merged());
    report.delivery_latency_us = LatencySummary::of(&shared.delivery_latency.merged());
    report.subscribe_latency_us = LatencySummary::of(&shared.subscribe_latency.merged());
    report.initial_values_latency_us = LatencySummary::of(&shared.initial_latency.merged());
    Ok(report)
}

/// Adds up the clients' subscriptions, first values and quote counts.
fn summarize(report: &mut TickerReport, outcomes: &[(Conn, Outcome)], hold_s: f64) {
    let requested = outcomes.iter().filter(|(conn, _)| conn.joined).count() as u64;
    let outcomes: Vec<&Outcome> = outcomes.iter().map(|(_, o)| o).collect();
    let sum = |f: fn(&Outcome) -> u64| outcomes.iter().copied().map(f).sum::<u64>();
    let mut failed_reasons = BTreeMap::new();
    for f in outcomes.iter().filter_map(|o| o.subscribe_fail.as_ref()) {
        *failed_reasons.entry(f.kind()).or_insert(0) += 1;
    }
    report.subscriptions = Subscriptions {
        requested,
        acked: sum(|o| o.acked.into()),
        failed: sum(|o| o.subscribe_fail.is_some().into()),
        failed_reasons,
        first_failure: outcomes
            .iter()
            .find_map(|o| o.subscribe_fail.as_ref().map(SubscribeFail::message)),
        ack_mismatches: sum(|o| o.ack_mismatch.into()),
        ws_url_other_host: sum(|o| o.other_host.is_some().into()),
        ws_url_other_host_example: outcomes.iter().find_map(|o| o.other_host.clone()),
    };
    let checked = || outcomes.iter().filter(|o| o.initial_missing.is_some());
    report.initial_values = InitialValues {
        window_ms: report.config.initial_window_ms,
        clients_checked: checked().count() as u64,
        expected: checked().map(|o| o.wanted as u64).sum(),
        in_time: checked().map(|o| o.first.in_time).sum(),
        late: checked().map(|o| o.first.late).sum(),
        missing: checked().filter_map(|o| o.initial_missing).sum(),
    };
    let received = sum(|o| o.window_updates);
    let skipped = sum(|o| o.seq.skipped);
    let updates = sum(|o| o.seq.updates);
    let hold_received = sum(|o| o.hold_updates);
    report.quotes = Quotes {
        received,
        initial: sum(|o| o.seq.firsts),
        hold_received,
        per_s: crate::report::per_s(hold_received, hold_s),
        per_client_per_s: RateSummary::of(
            outcomes.iter().filter_map(|o| o.updates_per_s).collect(),
        ),
        gaps: sum(|o| o.seq.gaps),
        skipped,
        conflated_pct: if updates + skipped > 0 {
            round2(skipped as f64 * 100.0 / (updates + skipped) as f64)
        } else {
            0.0
        },
        duplicates: sum(|o| o.seq.duplicates),
        reorders: sum(|o| o.seq.reorders),
        unexpected_symbols: sum(|o| o.first.unexpected),
    };
}

#[cfg(test)]
mod tests;
