//! `hostile`: tries the hostile inputs and faults of docs/security.md one after another against
//! a running server (garbage and oversize messages, text frames, messages that never end,
//! floods, idle and half-sent requests, stalled and oversize bodies, the connection caps and
//! connect rate, prepared-session and room-name exhaustion, a client that never reads, Unicode
//! tricks against the word filter, idle connections on the operations port), checks each
//! answer against the documented one, and meanwhile keeps two bystanders measuring: a game
//! client in `arena` and a ticker client in `ticker`. Each row also has the server's RSS and
//! tokio tasks (threads with `--server-pid`) before and after.
//!
//! Attacks write their sockets by hand ([`rawws`](client_sim::toolkit::rawws), raw HTTP over
//! `TcpStream`): a library would refuse to send most of this, or would read and answer in the
//! background. The bystanders run on a thread of their own, so an attack that keeps the tool's
//! runtime busy does not show up as a server stall, and connect from their own loopback
//! address, so the per-address caps the attacks run into are the attackers' alone.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::Args;
use client_sim::toolkit::prom::Metrics;
use client_sim::toolkit::rawws::{RawError, RawWs};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use serde::Serialize;
use serde_json::json;
use tickroom_proto::v1::{
    ChatMessage, ChatSend, ClientMessage, ErrorCode, Join, Ping, ServerMessage, Subscribe,
    client_message::Body, server_message::Body as SBody,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::report::{Outcome, Table};
use crate::target::{self, Target};

/// The bystanders' address: none of the attacks' per-address limits touch it.
const BYSTANDER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The per-address cap attack's address (the default source of a loopback connection).
const CAP_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
/// The connect-rate attack's address.
const RATE_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Symbols the ticker bystander takes: enough that every 20 Hz tick changes one of them
/// (the demo feed updates each symbol about once a tick), so a missing tick is the server's.
const TICKER_SYMBOLS: usize = 10;
/// How often the bystanders send an application ping: they must not look idle.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// The bystanders' figures before the first attack, for comparison.
const BASELINE: Duration = Duration::from_secs(3);
/// After an attack's sockets are gone, before the "after" figures.
const SETTLE: Duration = Duration::from_secs(2);
/// The longest wait for an answer the server should give at once.
const PATIENCE: Duration = Duration::from_secs(5);
/// Any attack but the slow consumer's gives up after this.
const ATTACK_LIMIT: Duration = Duration::from_secs(45);
/// Documented deadlines, plus slack for a loaded one-core server.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const SLACK: Duration = Duration::from_secs(1);
/// How long the idle and half-sent connections are watched.
const IDLE_WATCH: Duration = Duration::from_secs(12);
/// The endless message is fed this long at most (the server should end it at 10 s).
const ENDLESS_FOR: Duration = Duration::from_secs(13);
/// Below the 200/s connect rate of one address, burst included: the per-address cap attack
/// must meet the cap, not the rate.
const CAP_PACE: Duration = Duration::from_micros(2_500);
/// Connections of the connect-rate attack in flight at once (each asks `GET /` and reads the
/// answer, so none stays open and the per-address cap never counts).
const RATE_CONCURRENCY: usize = 100;
/// The slow consumer's metrics poll.
const POLL: Duration = Duration::from_millis(250);
/// The application ping whose Pong says a session is still open.
const PROBE_PING: i64 = 777;

/// `tickroom_connections_closed_total` reasons (the server's `CloseReason::as_str`).
const CLOSE_REASONS: [&str; 15] = [
    "client_closed",
    "peer_gone",
    "timeout",
    "slow_consumer",
    "stalled",
    "rate_abuse",
    "message_too_big",
    "text_frame",
    "message_timeout",
    "protocol_error",
    "resumed_elsewhere",
    "shutdown",
    "room_closed",
    "unknown_session",
    "token_expired",
];
/// `tickroom_connections_refused_total` reasons.
const REFUSALS: [&str; 3] = ["capacity", "per_ip", "rate"];

#[derive(Args, Debug, Clone)]
pub struct HostileArgs {
    /// WebSocket URL of the server; must be an IPv4 loopback address (attackers and
    /// bystanders bind their own 127.x addresses).
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// The server's Prometheus metrics (its operations port, which attack 16 targets too).
    #[arg(long, default_value = "http://127.0.0.1:9090/metrics")]
    pub metrics_url: String,
    /// Attacks to run, by number or name, comma separated (default: all, in order).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Seconds the client that never reads (attack 14) is given: the stall timeout (30 s)
    /// plus up to one heartbeat (25 s) must fit.
    #[arg(long, default_value_t = 65.0)]
    pub stall_secs: f64,
    /// The server's process id, for its thread count (from /proc).
    #[arg(long)]
    pub server_pid: Option<i32>,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Attack {
    n: u8,
    name: &'static str,
    what: &'static str,
    /// The answer docs/security.md gives.
    expected: &'static str,
}

const ATTACKS: [Attack; 17] = [
    Attack {
        n: 1,
        name: "malformed",
        what: "200 malformed protobuf messages",
        expected: "Error MALFORMED each; session goes on",
    },
    Attack {
        n: 2,
        name: "oversize",
        what: "an 8 KiB message",
        expected: "close 1009 message too big",
    },
    Attack {
        n: 3,
        name: "text",
        what: "a text frame of invalid UTF-8",
        expected: "close 1003 text frames are not supported; send binary protobuf",
    },
    Attack {
        n: 4,
        name: "fragments",
        what: "endless empty continuations, 1,000/s, + 50 pings/s",
        expected: "close 1008 message rate limit exceeded, within 5 s (fragments count as messages)",
    },
    Attack {
        n: 5,
        name: "flood",
        what: "5,000 pings at once",
        expected: "Error RATE_LIMITED, then close 1008 message rate limit exceeded",
    },
    Attack {
        n: 6,
        name: "idle-tcp",
        what: "300 connections sending nothing",
        expected: "closed without an answer at 10 s",
    },
    Attack {
        n: 7,
        name: "half-headers",
        what: "100 half-sent request headers",
        expected: "closed (or 408) at 10 s",
    },
    Attack {
        n: 8,
        name: "stalled-body",
        what: "POST, Content-Length 2 MB, 1 KB sent",
        expected: "408 (or closed) within 10 s",
    },
    Attack {
        n: 9,
        name: "big-body",
        what: "POST with a 200 KB body",
        expected: "413",
    },
    Attack {
        n: 10,
        name: "per-ip",
        what: "1,200 idle connections from 127.0.0.1",
        expected: "503 too many connections from your address past 1,000",
    },
    Attack {
        n: 11,
        name: "connect-rate",
        what: "1,500 connections at once from 127.0.0.2",
        expected: "429 connecting too fast past the burst (1,000 + 200/s)",
    },
    Attack {
        n: 12,
        name: "api-sessions",
        what: "150 POST /api/v1/sessions × 500 symbols, one address",
        expected: "201 ×100, then 429",
    },
    Attack {
        n: 13,
        name: "room-names",
        what: "10 new room names from one address",
        expected: "Welcome ×4, then Error LIMIT_EXCEEDED",
    },
    Attack {
        n: 14,
        name: "slow-consumer",
        what: "never reads (200 symbols), pongs every 1 s",
        expected: "close 4000 slow consumer: not reading, 30–55 s in",
    },
    Attack {
        n: 15,
        name: "chat-unicode",
        what: "bad\\u200bword, ｂａｄｗｏｒｄ, 笨\\u200b蛋 in `chat`",
        expected: "masked: *******, *******, **",
    },
    Attack {
        n: 16,
        name: "ops-idle",
        what: "80 idle connections to the operations port",
        expected: "GET /healthz 200 within 1 s",
    },
    Attack {
        n: 17,
        name: "slow-fragments",
        what: "endless empty continuations, 10/s, + 10 pings/s",
        expected: "close 1008 message not completed in time, at 10 s",
    },
];

/// The attacks `--only` names, in their order; all of them when it names none.
fn selected(only: &[String]) -> anyhow::Result<Vec<Attack>> {
    if only.is_empty() {
        return Ok(ATTACKS.to_vec());
    }
    let mut picked = Vec::new();
    for word in only.iter().map(|w| w.trim()).filter(|w| !w.is_empty()) {
        let Some(a) = ATTACKS
            .iter()
            .find(|a| a.name == word || a.n.to_string() == word)
        else {
            let names: Vec<String> = ATTACKS
                .iter()
                .map(|a| format!("{} {}", a.n, a.name))
                .collect();
            bail!("--only: no attack {word:?}; there are {}", names.join(", "));
        };
        picked.push(*a);
    }
    picked.sort_by_key(|a| a.n);
    picked.dedup_by_key(|a| a.n);
    Ok(picked)
}

#[derive(Debug, Serialize)]
pub struct HostileReport {
    pub url: String,
    pub metrics_url: String,
    pub server_pid: Option<i32>,
    pub stall_s: f64,
    /// The bystanders over the seconds before the first attack.
    pub baseline: Bystanders,
    pub attacks: Vec<AttackReport>,
    /// Why a bystander stopped before the end, if one did.
    pub bystanders_ended: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct AttackReport {
    pub n: u8,
    pub name: &'static str,
    pub what: &'static str,
    pub expected: &'static str,
    /// What the server answered, as the attacker saw it.
    pub seen: String,
    /// Whether that is the documented answer.
    pub ok: bool,
    pub duration_s: f64,
    /// The attack's own counts and timings.
    pub details: serde_json::Value,
    /// The bystanders while the attack ran.
    pub bystanders: Bystanders,
    /// Just before the attack, and once its connections were gone plus a settle.
    pub before: ServerFigures,
    pub after: ServerFigures,
    /// Connections the server counted as closed, by reason, and refused at admission, by
    /// reason, from before to after.
    pub server_closed: BTreeMap<&'static str, u64>,
    pub server_refused: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bystanders {
    pub game: StreamStats,
    pub ticker: StreamStats,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStats {
    /// Fewest snapshots in one of the whole seconds from the start (at least one).
    pub min_per_s: u64,
    pub mean_per_s: f64,
    /// Largest step between the ticks of consecutive snapshots (1: none missing).
    pub max_tick_gap: u64,
    /// Longest time between two snapshots arriving, ms.
    pub max_interval_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerFigures {
    pub rss_bytes: Option<f64>,
    pub alive_tasks: Option<f64>,
    pub threads: Option<u64>,
}

impl HostileReport {
    pub fn table(&self) -> String {
        let mut t = Table::default();
        let b = &self.baseline;
        t.line(format!(
            "client-sim hostile: {}, {} attacks; bystanders from {BYSTANDER_IP}: game `arena` \
             (before: {} snapshots/s, gap {}), ticker `ticker` × {TICKER_SYMBOLS} symbols \
             (before: {}/s, gap {})",
            self.url,
            self.attacks.len(),
            b.game.min_per_s,
            b.game.max_tick_gap,
            b.ticker.min_per_s,
            b.ticker.max_tick_gap,
        ));
        t.line("");
        let threads = self.server_pid.is_some();
        t.line(format!(
            "| # | attack | answer seen | expected | ok | game min/s | game gap | ticker min/s \
             | ticker gap | RSS MB | tasks |{}",
            if threads { " threads |" } else { "" }
        ));
        t.line(format!(
            "|---|---|---|---|---|---|---|---|---|---|---|{}",
            if threads { "---|" } else { "" }
        ));
        let mb = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{:.1}", v / 1e6));
        let n = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
        for a in &self.attacks {
            let mut row = format!(
                "| {} | {}: {} | {} | {} | {} | {} | {} | {} | {} | {}→{} | {}→{} |",
                a.n,
                a.name,
                cell(a.what),
                cell(&a.seen),
                cell(a.expected),
                if a.ok { "yes" } else { "**NO**" },
                a.bystanders.game.min_per_s,
                a.bystanders.game.max_tick_gap,
                a.bystanders.ticker.min_per_s,
                a.bystanders.ticker.max_tick_gap,
                mb(a.before.rss_bytes),
                mb(a.after.rss_bytes),
                n(a.before.alive_tasks),
                n(a.after.alive_tasks),
            );
            if threads {
                let th = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
                row += &format!(" {}→{} |", th(a.before.threads), th(a.after.threads));
            }
            t.line(row);
        }
        t.line("");
        let passed = self.attacks.iter().filter(|a| a.ok).count();
        t.line(format!(
            "{passed}/{} answered as docs/security.md says. min/s: fewest snapshots in a whole \
             second of the attack; gap: largest step between consecutive snapshot ticks (1: \
             none missed). After: {} s after the attack's sockets were gone.",
            self.attacks.len(),
            SETTLE.as_secs()
        ));
        if self.attacks.iter().any(|a| a.n == 12) {
            t.line("12: its 100 prepared sessions live on until their 60 s TTL (in RSS after).");
        }
        if self.attacks.iter().any(|a| a.n == 13) {
            t.line("13: its 4 rooms (a thread each) live on until 60 s without members.");
        }
        for e in &self.bystanders_ended {
            t.line(format!("BYSTANDER ENDED: {e}"));
        }
        t.into_string()
    }
}

/// Text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

impl Outcome for HostileReport {
    fn summary(&self) -> (String, u64, &str) {
        (self.table(), 1, &self.url)
    }

    fn failure(&self) -> Option<String> {
        let failed: Vec<String> = self
            .attacks
            .iter()
            .filter(|a| !a.ok)
            .map(|a| format!("{} {}", a.n, a.name))
            .collect();
        let mut why = Vec::new();
        if !failed.is_empty() {
            why.push(format!(
                "answered otherwise than documented: {}",
                failed.join(", ")
            ));
        }
        if !self.bystanders_ended.is_empty() {
            why.push(format!(
                "a bystander ended: {}",
                self.bystanders_ended.join("; ")
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// What one attack found.
struct Answer {
    seen: String,
    ok: bool,
    details: serde_json::Value,
}

impl Answer {
    fn failed(seen: String) -> Self {
        Answer {
            seen,
            ok: false,
            details: serde_json::Value::Null,
        }
    }
}

/// What every attack needs.
struct Ctx {
    target: Target,
    metrics: Target,
    /// The ticker room's symbols, in room order.
    symbols: Vec<String>,
    stall: Duration,
    server_pid: Option<i32>,
    /// Random per run: room names and the addresses of the attacks whose effects outlive
    /// them (prepared sessions, created rooms), so a second run meets none of the first's.
    run: u16,
}

impl Ctx {
    async fn ws(&self) -> anyhow::Result<RawWs> {
        RawWs::connect(self.target.addr, &self.target.path, None)
            .await
            .context("WebSocket connect")
    }

    /// A loopback address of this run's own for attack `n`.
    fn own_address(&self, n: u8) -> Ipv4Addr {
        let [hi, lo] = self.run.to_be_bytes();
        Ipv4Addr::new(127, n, hi, lo.max(1))
    }

    async fn metrics(&self) -> Option<Metrics> {
        let text = self.metrics.http().get_text(&self.metrics.url).await.ok()?;
        Some(Metrics::parse(&text))
    }

    async fn figures(&self) -> (ServerFigures, Option<Metrics>) {
        let m = self.metrics().await;
        let value = |name| m.as_ref().and_then(|m| m.value(name, &[]));
        let figures = ServerFigures {
            rss_bytes: value("process_resident_memory_bytes"),
            alive_tasks: value("tokio_alive_tasks"),
            threads: self.server_pid.and_then(threads),
        };
        (figures, m)
    }
}

/// The `Threads:` line of `/proc/PID/status`.
fn threads(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))?
        .trim()
        .parse()
        .ok()
}

/// How far each labelled series of the counter `name` moved from `before` to `after`.
fn moved(
    name: &str,
    labels: &[&'static str],
    before: &Option<Metrics>,
    after: &Option<Metrics>,
) -> BTreeMap<&'static str, u64> {
    let (Some(b), Some(a)) = (before, after) else {
        return BTreeMap::new();
    };
    labels
        .iter()
        .filter_map(|&l| {
            let d =
                a.value(name, &[("reason", l)])? - b.value(name, &[("reason", l)]).unwrap_or(0.0);
            (d > 0.0).then_some((l, d as u64))
        })
        .collect()
}

pub async fn run(args: HostileArgs) -> anyhow::Result<HostileReport> {
    let attacks = selected(&args.only)?;
    ensure!(args.stall_secs > 0.0, "--stall-secs must be positive");
    let target = target::resolve(&args.url).await?;
    ensure!(
        target.addr.is_ipv4(),
        "{}: hostile needs an IPv4 loopback server (it binds 127.x source addresses)",
        args.url
    );
    let metrics = target::resolve_http(&args.metrics_url).await?;
    let quotes = target
        .http()
        .get_json(&target.http_url("/api/v1/quotes?room=ticker"))
        .await
        .context("the ticker room's symbols")?;
    let symbols: Vec<String> = quotes["quotes"]
        .as_array()
        .context("GET /api/v1/quotes: no quotes")?
        .iter()
        .filter_map(|q| q["symbol"].as_str().map(str::to_owned))
        .collect();
    ensure!(
        symbols.len() >= TICKER_SYMBOLS,
        "the ticker room has {} symbols",
        symbols.len()
    );
    let ctx = Ctx {
        target: target.clone(),
        metrics,
        symbols: symbols.clone(),
        stall: Duration::from_secs_f64(args.stall_secs),
        server_pid: args.server_pid,
        run: rand::random(),
    };

    let watchers = Watchers::start(&target, symbols[..TICKER_SYMBOLS].to_vec())?;
    watchers.ready().await?;
    let from = Instant::now();
    sleep(BASELINE).await;
    let baseline = watchers.stats(from, Instant::now());

    let mut rows = Vec::new();
    for attack in attacks {
        eprintln!("hostile: {} {}: {}", attack.n, attack.name, attack.what);
        let (before, before_m) = ctx.figures().await;
        let start = Instant::now();
        let limit = if attack.n == 14 {
            ctx.stall + Duration::from_secs(30)
        } else {
            ATTACK_LIMIT
        };
        let answer = match timeout(limit, run_attack(attack.n, &ctx)).await {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Answer::failed(format!("probe error: {e:#}")),
            Err(_) => Answer::failed(format!("no end within {} s", limit.as_secs())),
        };
        let end = Instant::now();
        sleep(SETTLE).await;
        let (after, after_m) = ctx.figures().await;
        eprintln!(
            "hostile: {} {}: {}{}",
            attack.n,
            attack.name,
            answer.seen,
            if answer.ok {
                ""
            } else {
                "  <- NOT as documented"
            }
        );
        rows.push(AttackReport {
            n: attack.n,
            name: attack.name,
            what: attack.what,
            expected: attack.expected,
            seen: answer.seen,
            ok: answer.ok,
            duration_s: (end - start).as_secs_f64(),
            details: answer.details,
            bystanders: watchers.stats(start, end),
            before,
            after,
            server_closed: moved(
                "tickroom_connections_closed_total",
                &CLOSE_REASONS,
                &before_m,
                &after_m,
            ),
            server_refused: moved(
                "tickroom_connections_refused_total",
                &REFUSALS,
                &before_m,
                &after_m,
            ),
        });
    }
    let bystanders_ended = watchers.stop().await;
    Ok(HostileReport {
        url: args.url.clone(),
        metrics_url: args.metrics_url.clone(),
        server_pid: args.server_pid,
        stall_s: args.stall_secs,
        baseline,
        attacks: rows,
        bystanders_ended,
    })
}

async fn run_attack(n: u8, ctx: &Ctx) -> anyhow::Result<Answer> {
    match n {
        1 => malformed(ctx).await,
        2 => oversize(ctx).await,
        3 => text_frame(ctx).await,
        4 => endless_message(ctx, Endless::Fast).await,
        5 => flood(ctx).await,
        6 => idle_connections(ctx).await,
        7 => half_headers(ctx).await,
        8 => stalled_body(ctx).await,
        9 => big_body(ctx).await,
        10 => per_ip_cap(ctx).await,
        11 => connect_rate(ctx).await,
        12 => api_sessions(ctx).await,
        13 => room_names(ctx).await,
        14 => slow_consumer(ctx).await,
        15 => chat_unicode(ctx).await,
        16 => ops_idle(ctx).await,
        17 => endless_message(ctx, Endless::Slow).await,
        _ => bail!("no attack {n}"),
    }
}

// ---------------------------------------------------------------------------------------
// Bystanders

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one bystander received.
#[derive(Debug, Default)]
struct Feed {
    /// Arrival and tick of every snapshot.
    snapshots: Mutex<Vec<(Instant, u64)>>,
    ended: Mutex<Option<String>>,
}

impl Feed {
    /// Its snapshots from `from` to `to` (at least one second).
    fn stats(&self, from: Instant, to: Instant) -> StreamStats {
        let to = to.max(from + Duration::from_secs(1));
        let windows = ((to - from).as_secs_f64().floor() as usize).max(1);
        let mut per_s = vec![0u64; windows];
        let mut s = StreamStats::default();
        let mut total = 0u64;
        // The snapshot just before the window counts as the first one's predecessor: a stall
        // that began with the attack shows.
        let mut prev: Option<(Instant, u64)> = None;
        for &(at, tick) in lock(&self.snapshots).iter() {
            if at >= to {
                break;
            }
            if at >= from {
                total += 1;
                if let Some(w) = per_s.get_mut((at - from).as_secs_f64() as usize) {
                    *w += 1;
                }
                if let Some((p_at, p_tick)) = prev {
                    s.max_tick_gap = s.max_tick_gap.max(tick.saturating_sub(p_tick));
                    s.max_interval_ms = s.max_interval_ms.max((at - p_at).as_secs_f64() * 1e3);
                }
            }
            prev = Some((at, tick));
        }
        s.min_per_s = per_s.iter().copied().min().unwrap_or(0);
        s.mean_per_s = total as f64 / (to - from).as_secs_f64();
        s
    }
}

/// The two bystanders, on a thread and runtime of their own.
struct Watchers {
    game: Arc<Feed>,
    ticker: Arc<Feed>,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
}

impl Watchers {
    fn start(target: &Target, symbols: Vec<String>) -> anyhow::Result<Self> {
        let (stop, rx) = watch::channel(false);
        let game = Arc::new(Feed::default());
        let ticker = Arc::new(Feed::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (t, g, k) = (target.clone(), game.clone(), ticker.clone());
        let thread = std::thread::Builder::new()
            .name("bystanders".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::join!(
                        bystander(t.clone(), "arena", Vec::new(), g, rx.clone()),
                        bystander(t, "ticker", symbols, k, rx),
                    );
                });
            })?;
        Ok(Watchers {
            game,
            ticker,
            stop,
            thread,
        })
    }

    /// Waits until both receive snapshots.
    async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for feed in [&self.game, &self.ticker] {
                if let Some(why) = lock(&feed.ended).clone() {
                    bail!("bystander: {why}");
                }
            }
            if !lock(&self.game.snapshots).is_empty() && !lock(&self.ticker.snapshots).is_empty() {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the bystanders got no snapshot within 10 s"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    fn stats(&self, from: Instant, to: Instant) -> Bystanders {
        Bystanders {
            game: self.game.stats(from, to),
            ticker: self.ticker.stats(from, to),
        }
    }

    /// Stops them; why any stopped early.
    async fn stop(self) -> Vec<String> {
        let _ = self.stop.send(true);
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        [&self.game, &self.ticker]
            .iter()
            .filter_map(|f| lock(&f.ended).clone())
            .collect()
    }
}

type Ws = WebSocketStream<TcpStream>;

/// A TCP connection to `addr` from `source` (any port), or from the default source.
async fn tcp_from(addr: SocketAddr, source: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}

/// A WebSocket (tungstenite: it reads and answers pings as a normal client does) from
/// `source`.
async fn ws_from(target: &Target, source: Ipv4Addr) -> anyhow::Result<Ws> {
    let tcp = tcp_from(target.addr, Some(source))
        .await
        .with_context(|| format!("connect from {source}"))?;
    let (ws, _) = tokio_tungstenite::client_async(target.url.as_str(), tcp)
        .await
        .with_context(|| format!("WebSocket handshake from {source}"))?;
    Ok(ws)
}

fn encode(body: Body) -> Vec<u8> {
    ClientMessage { body: Some(body) }.encode_to_vec()
}

fn binary(body: Body) -> WsMessage {
    WsMessage::Binary(encode(body).into())
}

/// A bystander: joins `room` (and subscribes to `symbols`), then records every snapshot
/// until told to stop. Why it stopped before, if it did, goes into its feed.
async fn bystander(
    target: Target,
    room: &'static str,
    symbols: Vec<String>,
    feed: Arc<Feed>,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = watch_room(&target, room, symbols, &feed, &mut stop).await {
        *lock(&feed.ended) = Some(format!("{room}: {e:#}"));
    }
}

async fn watch_room(
    target: &Target,
    room: &str,
    mut symbols: Vec<String>,
    feed: &Feed,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut ws = ws_from(target, BYSTANDER_IP).await?;
    ws.send(binary(Body::Join(Join {
        room: room.to_owned(),
        ..Default::default()
    })))
    .await?;
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                return Ok(());
            }
            _ = keepalive.tick() => {
                ws.send(binary(Body::Ping(Ping { client_time_us: 1 }))).await?;
            }
            msg = ws.next() => {
                let msg = msg.context("the connection ended")??;
                match msg {
                    WsMessage::Binary(b) => {
                        let m = ServerMessage::decode(b)?;
                        match m.body {
                            Some(SBody::Snapshot(_)) => {
                                lock(&feed.snapshots).push((Instant::now(), m.tick));
                            }
                            Some(SBody::Welcome(_)) if !symbols.is_empty() => {
                                let symbols = std::mem::take(&mut symbols);
                                ws.send(binary(Body::Subscribe(Subscribe { symbols }))).await?;
                            }
                            Some(SBody::Error(e)) => {
                                bail!("Error {}: {}", code_name(e.code), e.message)
                            }
                            _ => {}
                        }
                    }
                    WsMessage::Close(frame) => bail!(
                        "closed by the server: {}",
                        frame.map_or("no code".to_owned(), |f| format!("{} {}", u16::from(f.code), f.reason))
                    ),
                    _ => {}
                }
            }
        }
    }
}

fn code_name(code: i32) -> String {
    ErrorCode::try_from(code).map_or(format!("code {code}"), |c| {
        c.as_str_name().trim_start_matches("ERROR_CODE_").to_owned()
    })
}

// ---------------------------------------------------------------------------------------
// Reading what an attacker's WebSocket got

/// How a WebSocket ended, as the client saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum End {
    /// Still open when the client stopped listening.
    #[default]
    Open,
    Close(u16, String),
    /// The connection ended without a close frame.
    Ended,
    Failed(String),
}

impl End {
    fn describe(&self) -> String {
        match self {
            End::Open => "no close".to_owned(),
            End::Close(code, reason) => format!("close {code} {reason}"),
            End::Ended => "connection ended without a close frame".to_owned(),
            End::Failed(e) => format!("connection failed ({e})"),
        }
    }

    fn is(&self, code: u16, reason: &str) -> bool {
        matches!(self, End::Close(c, r) if *c == code && r == reason)
    }
}

/// Server messages received, up to the end.
#[derive(Debug, Default)]
struct Heard {
    /// (code name, message) of each `Error`.
    errors: Vec<(String, String)>,
    pongs: Vec<i64>,
    welcome: bool,
    subscriptions: bool,
    chat: Vec<ChatMessage>,
    undecodable: u64,
    end: End,
}

impl Heard {
    fn take(&mut self, payload: Bytes) {
        let Ok(m) = ServerMessage::decode(payload) else {
            self.undecodable += 1;
            return;
        };
        match m.body {
            Some(SBody::Error(e)) => self.errors.push((code_name(e.code), e.message)),
            Some(SBody::Pong(p)) => self.pongs.push(p.client_time_us),
            Some(SBody::Welcome(_)) => self.welcome = true,
            Some(SBody::Subscriptions(_)) => self.subscriptions = true,
            Some(SBody::ChatBatch(b)) => self.chat.extend(b.messages),
            _ => {}
        }
    }

    fn count(&self, code: &str) -> usize {
        self.errors.iter().filter(|(c, _)| c == code).count()
    }

    /// Errors other than `code`, counted by code.
    fn others(&self, code: &str) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for (c, _) in self.errors.iter().filter(|(c, _)| c != code) {
            *m.entry(c.clone()).or_default() += 1;
        }
        m
    }
}

/// Reads until a close frame, the end of the connection, `done`, or `until`.
async fn listen(ws: &mut RawWs, until: Instant, done: impl Fn(&Heard) -> bool) -> Heard {
    let mut h = Heard::default();
    loop {
        let frame = match timeout_at(until, ws.next()).await {
            Err(_) => break,
            Ok(Err(RawError::Ended)) => {
                h.end = End::Ended;
                break;
            }
            Ok(Err(e)) => {
                h.end = End::Failed(e.to_string());
                break;
            }
            Ok(Ok(f)) => f,
        };
        match frame.opcode {
            0x2 => h.take(frame.payload),
            0x8 => {
                let code = frame.close_code().unwrap_or(1005);
                let reason = frame.payload.get(2..).unwrap_or_default();
                h.end = End::Close(code, String::from_utf8_lossy(reason).into_owned());
                break;
            }
            _ => {}
        }
        if done(&h) {
            break;
        }
    }
    h
}

async fn send(ws: &mut RawWs, body: Body) -> anyhow::Result<()> {
    ws.send(&encode(body)).await.context("send")
}

/// One masked client frame with a payload under 126 bytes, appended to `out`.
fn small_frame(out: &mut Vec<u8>, first: u8, payload: &[u8]) {
    debug_assert!(payload.len() < 126);
    let mask = [0x5a, 0x17, 0xc3, 0x81];
    out.push(first);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// A duration as people read it: ms under a second, else seconds.
fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `a ×n, b ×m` for runs of equal values, in order.
fn runs<T: PartialEq + std::fmt::Display>(values: &[T]) -> (String, Vec<(String, usize)>) {
    let mut out: Vec<(String, usize)> = Vec::new();
    let mut last: Option<&T> = None;
    for v in values {
        match out.last_mut() {
            Some((_, n)) if last == Some(v) => *n += 1,
            _ => out.push((v.to_string(), 1)),
        }
        last = Some(v);
    }
    let text = out
        .iter()
        .map(|(v, n)| format!("{v} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    (text, out)
}

// ---------------------------------------------------------------------------------------
// The WebSocket attacks

/// 1: garbage that is not a `ClientMessage`, of several kinds, then a Ping.
async fn malformed(ctx: &Ctx) -> anyhow::Result<Answer> {
    const GARBAGE: [&[u8]; 5] = [
        &[0x0f],                   // field 1, wire type 7 (there is none)
        &[0x0a, 0x05, 0x01],       // a 5-byte field holding 1 byte
        &[0xff; 11],               // a varint longer than 10 bytes
        &[0x00],                   // field number 0
        &[0x0a, 0x02, 0x0a, 0x80], // a Join whose room length is cut off
    ];
    const COUNT: usize = 200;
    let mut ws = ctx.ws().await?;
    for i in 0..COUNT {
        ws.send(GARBAGE[i % GARBAGE.len()]).await?;
    }
    send(
        &mut ws,
        Body::Ping(Ping {
            client_time_us: PROBE_PING,
        }),
    )
    .await?;
    let h = listen(&mut ws, Instant::now() + PATIENCE, |h| {
        h.pongs.contains(&PROBE_PING)
    })
    .await;
    let malformed = h.count("MALFORMED");
    let others = h.others("MALFORMED");
    let alive = h.pongs.contains(&PROBE_PING) && h.end == End::Open;
    let mut seen = format!("Error MALFORMED ×{malformed}");
    for (code, n) in &others {
        seen += &format!(", Error {code} ×{n}");
    }
    seen += if alive {
        "; then Pong: session open"
    } else {
        "; no Pong after: "
    };
    if !alive {
        seen += &h.end.describe();
    }
    Ok(Answer {
        ok: malformed == COUNT && others.is_empty() && alive,
        details: json!({
            "sent": COUNT,
            "malformed": malformed,
            "other_errors": others,
            "first_message": h.errors.first().map(|e| e.1.clone()),
            "pong_after": alive,
        }),
        seen,
    })
}

/// 2: one message twice the 4 KiB limit.
async fn oversize(ctx: &Ctx) -> anyhow::Result<Answer> {
    let mut ws = ctx.ws().await?;
    ws.send(&vec![0u8; 8 * 1024]).await?;
    let h = listen(&mut ws, Instant::now() + PATIENCE, |_| false).await;
    Ok(Answer {
        seen: h.end.describe(),
        ok: h.end.is(1009, "message too big"),
        details: json!({ "bytes": 8 * 1024 }),
    })
}

/// 3: a text frame that is not even UTF-8.
async fn text_frame(ctx: &Ctx) -> anyhow::Result<Answer> {
    let mut ws = ctx.ws().await?;
    ws.send_frame(0x81, &[0xff, 0xfe, 0xfd]).await?;
    let h = listen(&mut ws, Instant::now() + PATIENCE, |_| false).await;
    Ok(Answer {
        seen: h.end.describe(),
        ok: h
            .end
            .is(1003, "text frames are not supported; send binary protobuf"),
        details: json!({}),
    })
}

/// 4: a message that never completes: empty continuation frames, with pings between them
/// that would pass for signs of life. About 1,000 frames and 50 pings a second: far below
/// the byte and message rates, so only the message deadline can end it.
/// How fast attacks 4 and 17 feed their message that never ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Endless {
    /// 20 continuations and a ping every 20 ms: far past the message rate.
    Fast,
    /// One continuation and a ping every 100 ms: well under it.
    Slow,
}

async fn endless_message(ctx: &Ctx, speed: Endless) -> anyhow::Result<Answer> {
    let (per_batch, every) = match speed {
        Endless::Fast => (20, Duration::from_millis(20)),
        Endless::Slow => (1, Duration::from_millis(100)),
    };
    let mut ws = ctx.ws().await?;
    let started = Instant::now();
    ws.send_frame(0x02, b"").await?;
    let (mut frames, mut pings) = (1u64, 0u64);
    let mut pace = tokio::time::interval(every);
    let mut write_error = None;
    let mut end = End::Open;
    'feed: while started.elapsed() < ENDLESS_FOR {
        pace.tick().await;
        let mut batch = Vec::with_capacity(per_batch * 6 + 11);
        for _ in 0..per_batch {
            small_frame(&mut batch, 0x00, b"");
        }
        small_frame(&mut batch, 0x89, b"alive");
        match timeout(Duration::from_secs(1), ws.send_bytes(&batch)).await {
            Ok(Ok(())) => {
                frames += per_batch as u64;
                pings += 1;
            }
            Ok(Err(e)) => {
                write_error = Some(e.to_string());
                break;
            }
            Err(_) => {
                write_error = Some("a write took over 1 s".to_owned());
                break;
            }
        }
        // Whatever came meanwhile (pongs, or the close).
        while let Ok(r) = timeout(Duration::from_millis(1), ws.next()).await {
            match r {
                Ok(f) if f.opcode == 0x8 => {
                    let reason = f.payload.get(2..).unwrap_or_default();
                    end = End::Close(
                        f.close_code().unwrap_or(1005),
                        String::from_utf8_lossy(reason).into_owned(),
                    );
                    break 'feed;
                }
                Ok(_) => {}
                Err(RawError::Ended) => {
                    end = End::Ended;
                    break 'feed;
                }
                Err(e) => {
                    end = End::Failed(e.to_string());
                    break 'feed;
                }
            }
        }
    }
    let closed_after = started.elapsed();
    if end == End::Open {
        end = listen(&mut ws, Instant::now() + Duration::from_secs(3), |_| false)
            .await
            .end;
    }
    let ok = match speed {
        Endless::Fast => end.is(1008, "message rate limit exceeded") && closed_after <= PATIENCE,
        Endless::Slow => {
            end.is(1008, "message not completed in time") && closed_after <= HEADER_TIMEOUT + SLACK
        }
    };
    Ok(Answer {
        seen: format!(
            "{} after {} ({frames} frames, {pings} pings)",
            end.describe(),
            secs(closed_after)
        ),
        ok,
        details: json!({
            "closed_after_s": closed_after.as_secs_f64(),
            "continuation_frames": frames,
            "pings": pings,
            "write_error": write_error,
        }),
    })
}

/// 5: 5,000 application pings in one write.
async fn flood(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: i64 = 5_000;
    let mut ws = ctx.ws().await?;
    let mut bytes = Vec::new();
    for i in 0..COUNT {
        small_frame(
            &mut bytes,
            0x82,
            &encode(Body::Ping(Ping {
                client_time_us: i + 1,
            })),
        );
    }
    let started = Instant::now();
    ws.send_bytes(&bytes).await?;
    let h = listen(&mut ws, Instant::now() + Duration::from_secs(15), |_| false).await;
    let limited = h.count("RATE_LIMITED");
    let others = h.others("RATE_LIMITED");
    let mut seen = format!("Pong ×{}, Error RATE_LIMITED ×{limited}", h.pongs.len());
    for (code, n) in &others {
        seen += &format!(", Error {code} ×{n}");
    }
    seen += &format!(", then {}", h.end.describe());
    Ok(Answer {
        ok: limited >= 1 && others.is_empty() && h.end.is(1008, "message rate limit exceeded"),
        details: json!({
            "sent": COUNT,
            "bytes": bytes.len(),
            "pongs": h.pongs.len(),
            "rate_limited": limited,
            "closed_after_s": started.elapsed().as_secs_f64(),
        }),
        seen,
    })
}

// ---------------------------------------------------------------------------------------
// The HTTP attacks

/// What the server sent on a raw connection, and how it ended.
#[derive(Debug)]
struct HttpSeen {
    text: String,
    /// From the attack's start to the end of the connection (or of the wait).
    after: Duration,
    closed: bool,
    error: Option<String>,
}

impl HttpSeen {
    fn status(&self) -> Option<u16> {
        self.text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
    }

    fn describe(&self) -> String {
        match (self.status(), self.closed) {
            (Some(s), _) => format!("{s} after {}", secs(self.after)),
            (None, true) if self.text.is_empty() => {
                format!("closed without an answer after {}", secs(self.after))
            }
            (None, true) => format!("closed after {:?}", self.text),
            (None, false) => format!("nothing within {}", secs(self.after)),
        }
    }
}

/// Reads until the server closes the connection, or `until`.
async fn read_answer(
    tcp: &mut (impl AsyncRead + Unpin),
    started: Instant,
    until: Instant,
) -> HttpSeen {
    let mut buf = Vec::new();
    let r = timeout_at(until, tcp.read_to_end(&mut buf)).await;
    let (closed, error) = match r {
        Ok(Ok(_)) => (true, None),
        Ok(Err(e)) => (true, Some(e.to_string())),
        Err(_) => (false, None),
    };
    HttpSeen {
        text: String::from_utf8_lossy(&buf).into_owned(),
        after: started.elapsed(),
        closed,
        error,
    }
}

/// `n` connections that send `prefix` (maybe nothing) and wait for the server to close
/// them, watched for [`IDLE_WATCH`].
async fn held_until_closed(ctx: &Ctx, n: usize, prefix: &'static [u8]) -> (Vec<HttpSeen>, u64) {
    let started = Instant::now();
    let mut set = JoinSet::new();
    let mut failed = 0;
    for _ in 0..n {
        let Ok(mut tcp) = tcp_from(ctx.target.addr, None).await else {
            failed += 1;
            continue;
        };
        set.spawn(async move {
            if !prefix.is_empty() {
                let _ = tcp.write_all(prefix).await;
            }
            read_answer(&mut tcp, started, started + IDLE_WATCH).await
        });
    }
    let mut seen = Vec::new();
    while let Some(r) = set.join_next().await {
        seen.extend(r.ok());
    }
    (seen, failed)
}

/// `closed/n closed after a–b s` and the range.
fn closed_summary(seen: &[HttpSeen], n: usize) -> (usize, String, serde_json::Value) {
    let closed: Vec<&HttpSeen> = seen.iter().filter(|s| s.closed).collect();
    let first = closed.iter().map(|s| s.after).min().unwrap_or_default();
    let last = closed.iter().map(|s| s.after).max().unwrap_or_default();
    let text = format!(
        "{}/{n} closed by the server after {:.1}–{:.1} s",
        closed.len(),
        first.as_secs_f64(),
        last.as_secs_f64()
    );
    let details = json!({
        "closed": closed.len(),
        "first_close_s": first.as_secs_f64(),
        "last_close_s": last.as_secs_f64(),
        "resets": closed.iter().filter(|s| s.error.is_some()).count(),
    });
    (closed.len(), text, details)
}

/// 6: connections that never send a request.
async fn idle_connections(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: usize = 300;
    let (seen, failed) = held_until_closed(ctx, COUNT, b"").await;
    let (closed, mut text, mut details) = closed_summary(&seen, COUNT);
    let answered = seen.iter().filter(|s| !s.text.is_empty()).count();
    text += &if answered == 0 {
        ", none answered".to_owned()
    } else {
        format!(", {answered} answered (first: {:?})", first_line(&seen))
    };
    if failed > 0 {
        text += &format!("; {failed} failed to connect");
    }
    details["answered"] = json!(answered);
    details["connect_failed"] = json!(failed);
    Ok(Answer {
        seen: text,
        ok: closed == COUNT && answered == 0,
        details,
    })
}

fn first_line(seen: &[HttpSeen]) -> String {
    seen.iter()
        .find(|s| !s.text.is_empty())
        .and_then(|s| s.text.lines().next())
        .unwrap_or_default()
        .to_owned()
}

/// 7: request headers that stop halfway.
async fn half_headers(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: usize = 100;
    let (seen, failed) = held_until_closed(
        ctx,
        COUNT,
        b"GET /rooms HTTP/1.1\r\nHost: hostile\r\nX-Slow: ",
    )
    .await;
    let (closed, mut text, mut details) = closed_summary(&seen, COUNT);
    let (timed_out, silent) = (
        seen.iter().filter(|s| s.status() == Some(408)).count(),
        seen.iter()
            .filter(|s| s.closed && s.text.is_empty())
            .count(),
    );
    let other = closed - timed_out - silent;
    text += &format!(": {silent} without an answer, {timed_out} with 408");
    if other > 0 {
        text += &format!(", {other} otherwise (first: {:?})", first_line(&seen));
    }
    if failed > 0 {
        text += &format!("; {failed} failed to connect");
    }
    details["answered_408"] = json!(timed_out);
    details["connect_failed"] = json!(failed);
    Ok(Answer {
        seen: text,
        ok: closed == COUNT && other == 0,
        details,
    })
}

/// A POST's head with `length` announced.
fn post_head(ctx: &Ctx, path: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n",
        ctx.target.authority
    )
}

/// 8: a body announced at 2 MB of which 1 KB comes.
async fn stalled_body(ctx: &Ctx) -> anyhow::Result<Answer> {
    let started = Instant::now();
    let mut tcp = tcp_from(ctx.target.addr, None).await?;
    let mut body = b"{\"symbols\": [".to_vec();
    body.resize(1024, b' ');
    tcp.write_all(post_head(ctx, "/api/v1/sessions", 2 << 20).as_bytes())
        .await?;
    tcp.write_all(&body).await?;
    let seen = read_answer(&mut tcp, started, started + Duration::from_secs(15)).await;
    let ok = seen.closed
        && (seen.status() == Some(408) || seen.text.is_empty())
        && seen.after <= HEADER_TIMEOUT + SLACK;
    Ok(Answer {
        seen: seen.describe(),
        ok,
        details: json!({ "after_s": seen.after.as_secs_f64(), "status": seen.status() }),
    })
}

/// 9: a body three times the 64 KiB limit, written while the answer is read.
async fn big_body(ctx: &Ctx) -> anyhow::Result<Answer> {
    const SIZE: usize = 200 * 1024;
    let started = Instant::now();
    let tcp = tcp_from(ctx.target.addr, None).await?;
    let (mut rd, mut wr) = tcp.into_split();
    let head = post_head(ctx, "/api/v1/sessions", SIZE);
    let mut body = b"{\"symbols\": [".to_vec();
    body.resize(SIZE, b' ');
    // The server may answer (and close) before it has read it all.
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        wr.write_all(&body).await?;
        Ok::<_, std::io::Error>(wr)
    });
    let seen = read_answer(&mut rd, started, started + Duration::from_secs(10)).await;
    writer.abort();
    Ok(Answer {
        seen: seen.describe(),
        ok: seen.status() == Some(413),
        details: json!({ "bytes": SIZE, "after_s": seen.after.as_secs_f64() }),
    })
}

/// How one connection of the admission attacks ended.
#[derive(Debug)]
enum Admitted {
    /// The server sent this and closed.
    Answered(String),
    /// Closed without an answer.
    Closed,
    /// Still open, nothing sent.
    Held,
}

/// 10: idle connections from one address, paced under its connect rate, held until all are
/// tried: past 1,000 open, each is answered 503.
async fn per_ip_cap(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: u32 = 1_200;
    let (release, released) = watch::channel(false);
    let mut set = JoinSet::new();
    let mut failed = 0u32;
    let started = Instant::now();
    for i in 0..COUNT {
        sleep_until(started + CAP_PACE * i).await;
        let Ok(mut tcp) = tcp_from(ctx.target.addr, Some(CAP_IP)).await else {
            failed += 1;
            continue;
        };
        let mut released = released.clone();
        set.spawn(async move {
            let mut buf = Vec::new();
            let ended = tokio::select! {
                _ = tcp.read_to_end(&mut buf) => true,
                _ = released.changed() => false,
            };
            match (ended, buf.is_empty()) {
                (false, true) => Admitted::Held,
                (true, true) => Admitted::Closed,
                _ => Admitted::Answered(String::from_utf8_lossy(&buf).into_owned()),
            }
        });
    }
    let connecting = started.elapsed();
    // Refusals are answered at once; what has no answer by now was let in.
    sleep(Duration::from_millis(1_500)).await;
    let _ = release.send(true);
    let (mut held, mut per_ip, mut closed, mut other) = (0u32, 0u32, 0u32, Vec::new());
    let mut retry_after_ok = true;
    while let Some(r) = set.join_next().await {
        match r? {
            Admitted::Held => held += 1,
            Admitted::Closed => closed += 1,
            Admitted::Answered(a)
                if a.starts_with("HTTP/1.1 503 ")
                    && a.ends_with("too many connections from your address\n") =>
            {
                per_ip += 1;
                retry_after_ok &= a.contains("Retry-After: 5\r\n");
            }
            Admitted::Answered(a) => other.push(a.lines().next().unwrap_or_default().to_owned()),
        }
    }
    drop(set);
    let (other_text, _) = runs(&other);
    let mut seen =
        format!("{held} held open, then 503 too many connections from your address ×{per_ip}");
    if !other.is_empty() {
        seen += &format!("; other answers: {other_text}");
    }
    if closed > 0 {
        seen += &format!("; {closed} closed without an answer");
    }
    if failed > 0 {
        seen += &format!("; {failed} failed to connect");
    }
    let tried = COUNT - failed;
    Ok(Answer {
        ok: held <= 1_000
            && per_ip >= tried.saturating_sub(1_000)
            && held + per_ip == tried
            && retry_after_ok
            && failed == 0,
        details: json!({
            "connections": COUNT,
            "connect_s": connecting.as_secs_f64(),
            "held": held,
            "refused_per_ip": per_ip,
            "retry_after_5": retry_after_ok,
            "closed_unanswered": closed,
            "other_answers": other,
            "connect_failed": failed,
        }),
        seen,
    })
}

/// 11: connections as fast as they go from one address, each asking `GET /`: past the
/// burst, 429.
async fn connect_rate(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: usize = 1_500;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        ctx.target.authority
    );
    let request: Arc<str> = request.into();
    let slots = Arc::new(Semaphore::new(RATE_CONCURRENCY));
    let addr = ctx.target.addr;
    let mut set = JoinSet::new();
    let started = Instant::now();
    for _ in 0..COUNT {
        let slot = slots.clone().acquire_owned().await?;
        let request = request.clone();
        set.spawn(async move {
            let _slot = slot;
            let mut tcp = tcp_from(addr, Some(RATE_IP)).await.ok()?;
            let _ = tcp.write_all(request.as_bytes()).await;
            Some(read_answer(&mut tcp, started, Instant::now() + PATIENCE).await)
        });
    }
    let mut answers = Vec::new();
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        match r? {
            Some(s) => answers.push(s),
            None => failed += 1,
        }
    }
    let elapsed = started.elapsed();
    let status = |code| answers.iter().filter(|s| s.status() == Some(code)).count();
    let (ok200, limited) = (status(200), status(429));
    let retry_after_ok = answers.iter().filter(|s| s.status() == Some(429)).all(|s| {
        s.text.contains("Retry-After: 1\r\n")
            && s.text.ends_with("connecting too fast; try again shortly\n")
    });
    let other = answers.len() - ok200 - limited;
    let mut seen = format!(
        "200 ×{ok200}, 429 connecting too fast ×{limited} ({COUNT} in {})",
        secs(elapsed)
    );
    if other > 0 {
        let mut codes: Vec<String> = answers
            .iter()
            .filter(|s| !matches!(s.status(), Some(200 | 429)))
            .map(|s| s.status().map_or("no answer".to_owned(), |c| c.to_string()))
            .collect();
        codes.sort();
        seen += &format!("; other: {}", runs(&codes).0);
    }
    if failed > 0 {
        seen += &format!("; {failed} failed to connect");
    }
    // The burst, plus what the rate refilled meanwhile.
    let most = 1_000.0 + 200.0 * elapsed.as_secs_f64() + 1.0;
    Ok(Answer {
        ok: limited > 0
            && ok200 >= 1_000
            && (ok200 as f64) <= most
            && other == 0
            && failed == 0
            && retry_after_ok,
        details: json!({
            "connections": COUNT,
            "elapsed_s": elapsed.as_secs_f64(),
            "ok_200": ok200,
            "rate_429": limited,
            "retry_after_1": retry_after_ok,
            "other": other,
            "connect_failed": failed,
        }),
        seen,
    })
}

/// 12: prepared sessions of 500 symbols each from one address, one after another.
async fn api_sessions(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: usize = 150;
    let source = ctx.own_address(12);
    let symbols: Vec<&String> = ctx.symbols.iter().take(500).collect();
    let body = json!({ "symbols": symbols, "room": "ticker" }).to_string();
    let request = post_head(ctx, "/api/v1/sessions", body.len()) + &body;
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..COUNT {
        let started = Instant::now();
        let mut tcp = tcp_from(ctx.target.addr, Some(source)).await?;
        tcp.write_all(request.as_bytes()).await?;
        let seen = read_answer(&mut tcp, started, started + PATIENCE).await;
        let status = seen.status();
        if status != Some(201) && refusal.is_none() {
            refusal = seen.text.split("\r\n\r\n").nth(1).map(str::to_owned);
        }
        statuses.push(status.map_or("none".to_owned(), |s| s.to_string()));
    }
    let (text, r) = runs(&statuses);
    let ok = r == [("201".to_owned(), 100), ("429".to_owned(), 50)];
    Ok(Answer {
        seen: format!("{text} (from {source}, {} symbols each)", symbols.len()),
        ok,
        details: json!({ "source": source.to_string(), "symbols": symbols.len(), "first_refusal": refusal }),
    })
}

/// 13: ten connections from one address, each creating a new game room and staying in it.
async fn room_names(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: usize = 10;
    let source = ctx.own_address(13);
    let mut held = Vec::new();
    let mut answers = Vec::new();
    let mut first_refusal = None;
    for i in 0..COUNT {
        let mut ws = ws_from(&ctx.target, source).await?;
        ws.send(binary(Body::Join(Join {
            room: format!("hostile-{:04x}-{i}", ctx.run),
            ..Default::default()
        })))
        .await?;
        let answer = timeout(PATIENCE, async {
            while let Some(msg) = ws.next().await {
                match msg? {
                    WsMessage::Binary(b) => match ServerMessage::decode(b)?.body {
                        Some(SBody::Welcome(_)) => return Ok("Welcome".to_owned()),
                        Some(SBody::Error(e)) => {
                            first_refusal.get_or_insert(e.message);
                            return Ok(format!("Error {}", code_name(e.code)));
                        }
                        _ => {}
                    },
                    WsMessage::Close(f) => {
                        return Ok(format!("close {:?}", f.map(|f| u16::from(f.code))));
                    }
                    _ => {}
                }
            }
            Ok::<_, anyhow::Error>("connection ended".to_owned())
        })
        .await
        .unwrap_or_else(|_| Ok("no answer".to_owned()))?;
        answers.push(answer);
        held.push(ws);
    }
    for mut ws in held {
        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    let (text, r) = runs(&answers);
    Ok(Answer {
        seen: format!("{text} (from {source})"),
        ok: r
            == [
                ("Welcome".to_owned(), 4),
                ("Error LIMIT_EXCEEDED".to_owned(), 6),
            ],
        details: json!({ "source": source.to_string(), "answers": answers, "first_refusal": first_refusal }),
    })
}

/// 14: a session that takes nothing (200 symbols' quotes pile up) but answers the heartbeat:
/// a pong every second, as a client whose library keeps the connection alive while its
/// application is stuck.
async fn slow_consumer(ctx: &Ctx) -> anyhow::Result<Answer> {
    let mut ws = ctx.ws().await?;
    send(
        &mut ws,
        Body::Join(Join {
            room: "ticker".into(),
            ..Default::default()
        }),
    )
    .await?;
    let h = listen(&mut ws, Instant::now() + PATIENCE, |h| {
        h.welcome || !h.errors.is_empty()
    })
    .await;
    ensure!(
        h.welcome,
        "join ticker: {:?} {}",
        h.errors,
        h.end.describe()
    );
    let symbols: Vec<String> = ctx.symbols.iter().take(200).cloned().collect();
    let subscribed = symbols.len();
    send(&mut ws, Body::Subscribe(Subscribe { symbols })).await?;
    let h = listen(&mut ws, Instant::now() + PATIENCE, |h| {
        h.subscriptions || !h.errors.is_empty()
    })
    .await;
    ensure!(
        h.subscriptions,
        "subscribe: {:?} {}",
        h.errors,
        h.end.describe()
    );

    // From here on nothing is read until the server gives up.
    let stopped = Instant::now();
    let base = ctx.metrics().await.context("metrics")?;
    let active = |m: &Metrics| m.sum("tickroom_sessions_active", &[("kind", "ticker")]);
    let active_before = active(&base);
    let closed_before = base.sum("tickroom_connections_closed_total", &[]);
    let (mut unsent_max, mut pongs) = (0.0f64, 0u64);
    let mut closed_at = None;
    let mut write_error = None;
    let mut next_pong = stopped;
    while stopped.elapsed() < ctx.stall {
        if Instant::now() >= next_pong {
            next_pong += Duration::from_secs(1);
            match timeout(Duration::from_secs(1), ws.send_frame(0x8a, b"")).await {
                Ok(Ok(())) => pongs += 1,
                Ok(Err(e)) => write_error = Some(e.to_string()),
                Err(_) => write_error = Some("a pong took over 1 s to write".to_owned()),
            }
        }
        sleep(POLL).await;
        // The room hears of the close at once; the close counter only after the server's
        // close linger, by when a further pong could have turned its close into a reset.
        if let Some(m) = ctx.metrics().await {
            unsent_max = unsent_max.max(
                m.value("tickroom_socket_unsent_bytes_max", &[])
                    .unwrap_or(0.0),
            );
            if let (Some(before), Some(now)) = (active_before, active(&m))
                && now < before
            {
                closed_at = Some(stopped.elapsed());
                break;
            }
        }
        if write_error.is_some() {
            closed_at = Some(stopped.elapsed());
            break;
        }
    }
    let backlog_from = ws.bytes_read();
    let read_for = if closed_at.is_some() { 10 } else { 2 };
    let h = listen(
        &mut ws,
        Instant::now() + Duration::from_secs(read_for),
        |_| false,
    )
    .await;
    let backlog = ws.bytes_read() - backlog_from;
    drop(ws);
    // The server's own count of why it closed the connection.
    let mut reasons = BTreeMap::new();
    if closed_at.is_some() {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(m) = ctx.metrics().await
                && m.sum("tickroom_connections_closed_total", &[]) > closed_before
            {
                reasons = moved(
                    "tickroom_connections_closed_total",
                    &CLOSE_REASONS,
                    &Some(base.clone()),
                    &Some(m),
                );
                break;
            }
            sleep(POLL).await;
        }
    }
    let stalled = reasons.contains_key("stalled");
    let at = closed_at.unwrap_or_else(|| stopped.elapsed());
    let wire_ok = h.end.is(4000, "slow consumer: not reading");
    // The docs allow the close frame to be lost behind what the client never read.
    let ok = closed_at.is_some()
        && at >= Duration::from_secs(30)
        && (wire_ok || (stalled && !matches!(h.end, End::Close(..))));
    let seen = match closed_at {
        Some(_) if wire_ok => format!(
            "{} after {} (read {} KB of backlog first); unsent max {:.1} KB",
            h.end.describe(),
            secs(at),
            backlog / 1000,
            unsent_max / 1e3
        ),
        Some(_) => format!(
            "{} after {} (server counted: {reasons:?}; {} KB backlog read); unsent max {:.1} KB",
            h.end.describe(),
            secs(at),
            backlog / 1000,
            unsent_max / 1e3
        ),
        None => format!(
            "still open after {}; unsent max {:.1} KB",
            secs(at),
            unsent_max / 1e3
        ),
    };
    Ok(Answer {
        seen,
        ok,
        details: json!({
            "symbols": subscribed,
            "closed_after_s": closed_at.map(|d| d.as_secs_f64()),
            "pongs_sent": pongs,
            "write_error": write_error,
            "backlog_bytes": backlog,
            "server_unsent_bytes_max": unsent_max,
            "server_closed": reasons,
            "wire_end": h.end.describe(),
        }),
    })
}

/// 15: listed words dressed up as other code points; they must arrive masked.
async fn chat_unicode(ctx: &Ctx) -> anyhow::Result<Answer> {
    const PROBES: [(&str, &str); 3] = [
        ("bad\u{200b}word", "*******"),
        ("ｂａｄｗｏｒｄ", "*******"),
        ("笨\u{200b}蛋", "**"),
    ];
    let mut ws = ctx.ws().await?;
    send(
        &mut ws,
        Body::Join(Join {
            room: "chat".into(),
            name: "hostile-probe".into(),
            ..Default::default()
        }),
    )
    .await?;
    let h = listen(&mut ws, Instant::now() + PATIENCE, |h| {
        h.welcome || !h.errors.is_empty()
    })
    .await;
    ensure!(h.welcome, "join chat: {:?} {}", h.errors, h.end.describe());
    for (i, (text, _)) in PROBES.iter().enumerate() {
        send(
            &mut ws,
            Body::ChatSend(ChatSend {
                text: (*text).to_owned(),
                client_msg_id: i as u64 + 1,
                sent_time_us: 0,
            }),
        )
        .await?;
    }
    let mine = |h: &Heard, id: u64| {
        h.chat
            .iter()
            .find(|m| m.client_msg_id == id && m.from == "hostile-probe")
            .map(|m| m.text.clone())
    };
    let h = listen(&mut ws, Instant::now() + PATIENCE, |h| {
        (1..=PROBES.len() as u64).all(|id| mine(h, id).is_some()) || !h.errors.is_empty()
    })
    .await;
    let got: Vec<Option<String>> = (1..=PROBES.len() as u64).map(|id| mine(&h, id)).collect();
    let mut seen: Vec<String> = got
        .iter()
        .map(|t| {
            t.as_ref()
                .map_or("(not received)".to_owned(), |t| t.clone())
        })
        .collect();
    for (code, message) in &h.errors {
        seen.push(format!("Error {code}: {message}"));
    }
    Ok(Answer {
        ok: got
            .iter()
            .zip(PROBES)
            .all(|(g, (_, want))| g.as_deref() == Some(want))
            && h.errors.is_empty(),
        details: json!({
            "sent": PROBES.iter().map(|p| p.0).collect::<Vec<_>>(),
            "received": got,
        }),
        seen: seen.join(", "),
    })
}

/// 16: idle connections on the operations port must not keep a probe out.
async fn ops_idle(ctx: &Ctx) -> anyhow::Result<Answer> {
    const COUNT: usize = 80;
    let mut idle = Vec::new();
    for _ in 0..COUNT {
        idle.push(TcpStream::connect(ctx.metrics.addr).await?);
    }
    let started = Instant::now();
    let r = ctx
        .metrics
        .http()
        .timeout(Duration::from_secs(2))
        .get(&ctx.metrics.http_url("/healthz"))
        .await;
    let after = started.elapsed();
    drop(idle);
    let (seen, ok) = match r {
        Ok(r) => (
            format!("{} after {:.1} ms", r.status, after.as_secs_f64() * 1e3),
            r.status == 200 && after < Duration::from_secs(1),
        ),
        Err(e) => (e.to_string(), false),
    };
    Ok(Answer {
        seen,
        ok,
        details: json!({ "idle_connections": COUNT, "after_ms": after.as_secs_f64() * 1e3 }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_attacks_by_number_or_name() {
        let all = selected(&[]).unwrap();
        assert_eq!(all.len(), 17);
        assert!(all.iter().enumerate().all(|(i, a)| a.n as usize == i + 1));
        let some = selected(&["flood".into(), "2".into(), " 5".into()]).unwrap();
        assert_eq!(some.iter().map(|a| a.n).collect::<Vec<_>>(), [2, 5]);
        assert!(selected(&["nope".into()]).is_err());
    }

    #[test]
    fn counts_runs_in_order() {
        let (text, r) = runs(&[201, 201, 429, 201]);
        assert_eq!(text, "201 ×2, 429 ×1, 201 ×1");
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn bystander_windows_find_the_slowest_second_and_the_largest_gap() {
        let feed = Feed::default();
        let t0 = Instant::now();
        {
            let mut s = lock(&feed.snapshots);
            s.push((t0 - Duration::from_millis(10), 9));
            // 10 a second for 2 s, ticks 10..30 but for a hole from 15 to 18.
            for i in 0..20u64 {
                if (5..8).contains(&i) {
                    continue;
                }
                s.push((t0 + Duration::from_millis(i * 100), 10 + i));
            }
        }
        let st = feed.stats(t0, t0 + Duration::from_secs(2));
        assert_eq!(st.min_per_s, 7);
        assert_eq!(st.max_tick_gap, 4);
        assert!((st.max_interval_ms - 400.0).abs() < 1.0, "{st:?}");
    }
}
