//! `pause`: one client that stops reading for a while and then reads again, to measure what
//! the server's freshness contract gives (docs/protocol.md 3.1). It joins a ticker room
//! (subscribing to its first N symbols) or a game room, reads for a warm-up, stops reading for
//! the pause, then reads until it has the values the server had when it resumed, and reports:
//! how old the first value of each symbol (or the first snapshot) was, how many bytes and
//! messages came before the newest, and how many bytes the server's socket held unsent.
//!
//! It reads with [`rawws`](client_sim::toolkit::rawws), which reads only when asked: a
//! WebSocket library would keep reading (and answering pings) in the background. Not a swarm:
//! one connection, so it has no ramp or hold of its own.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use client_sim::toolkit::prom::Metrics;
use client_sim::toolkit::rawws::RawWs;
use prost::Message as _;
use serde::Serialize;
use tickroom_proto::v1::{
    Ack, ClientMessage, ErrorCode, Join, RoomKind, ServerMessage, Subscribe, client_message::Body,
    object::State, server_message::Body as SBody,
};
use tokio::time::Instant;

use crate::report::{LatencySummary, Outcome, Table};
use crate::target::{self, Target};

/// The longest a phase waits for the server before the run fails.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Args, Debug, Clone)]
pub struct PauseArgs {
    /// WebSocket URL of the server; must resolve to a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// The server's Prometheus metrics (its operations port), for its unsent bytes.
    #[arg(long, default_value = "http://127.0.0.1:9090/metrics")]
    pub metrics_url: String,
    /// Room to join: a ticker room (subscribe to `--symbols` of it) or a game room.
    #[arg(long, default_value = "ticker")]
    pub room: String,
    /// Ticker rooms: how many of its symbols to subscribe to (the first N it lists).
    #[arg(long, default_value_t = 200)]
    pub symbols: usize,
    /// Seconds of reading before the pause.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds without reading.
    #[arg(long, default_value_t = 10.0)]
    pub pause: f64,
    /// Flow control: acknowledge every message read with this window (ticks); 0: none.
    #[arg(long, default_value_t = 0)]
    pub window: u32,
    /// The client socket's SO_RCVBUF in bytes; 0 keeps the system's (autotuned).
    #[arg(long, default_value_t = 0)]
    pub recv_buffer: u32,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct PauseReport {
    pub url: String,
    pub room: String,
    pub kind: &'static str,
    pub symbols: usize,
    pub pause_s: f64,
    pub window: u32,
    pub recv_buffer: u32,
    /// Age at receipt of the first value of each symbol (ticker: now − exchange time) or of
    /// the first snapshot (game: now − server time) read after the pause, µs.
    pub first_value_age_us: LatencySummary,
    /// How far behind the server's value at resume that first value was: seqs (ticker) or
    /// ticks (game).
    pub first_value_behind: LatencySummary,
    /// Age at receipt of the first value of each symbol (or the first snapshot) at least as
    /// new as the server had at resume: what the contract bounds, µs.
    pub newest_value_age_us: LatencySummary,
    /// Bytes and messages read after the pause before the first one holding a value at least
    /// as new as the server had at resume.
    pub bytes_before_newest: u64,
    pub messages_before_newest: u64,
    /// From resuming to holding every symbol's (or the view's) value at resume, µs.
    pub time_to_newest_us: u64,
    /// Most unsent bytes the server's socket held when it stopped writing (all sessions),
    /// and how often it stopped, by reason, during the pause.
    pub server_unsent_bytes_max: Option<f64>,
    pub server_deferred_unsent: Option<f64>,
    pub server_deferred_window: Option<f64>,
}

impl PauseReport {
    pub fn table(&self) -> String {
        let mut t = Table::default();
        t.line(format!(
            "client-sim pause: {} room {:?}, {} s without reading{}{}",
            self.kind,
            self.room,
            self.pause_s,
            if self.window > 0 {
                format!(", Ack window {}", self.window)
            } else {
                String::new()
            },
            if self.recv_buffer > 0 {
                format!(", SO_RCVBUF {}", self.recv_buffer)
            } else {
                String::new()
            }
        ));
        let a = &self.first_value_age_us;
        t.row(
            "first value age",
            format!(
                "p50 {:.1} ms, max {:.1} ms over {} {}",
                a.p50 as f64 / 1e3,
                a.max as f64 / 1e3,
                a.samples,
                if self.kind == "ticker" {
                    "symbols"
                } else {
                    "snapshot"
                }
            ),
        );
        let b = &self.first_value_behind;
        t.row(
            "first value behind",
            format!(
                "p50 {} max {} {}",
                b.p50,
                b.max,
                if self.kind == "ticker" {
                    "seqs"
                } else {
                    "ticks"
                }
            ),
        );
        let f = &self.newest_value_age_us;
        t.row(
            "newest value age",
            format!(
                "p50 {:.1} ms, max {:.1} ms (the first value at least as new as at resume)",
                f.p50 as f64 / 1e3,
                f.max as f64 / 1e3
            ),
        );
        t.row(
            "before the newest",
            format!(
                "{} bytes in {} messages; newest after {:.1} ms",
                self.bytes_before_newest,
                self.messages_before_newest,
                self.time_to_newest_us as f64 / 1e3
            ),
        );
        let n = |v: Option<f64>| v.map_or("?".to_owned(), |v| format!("{v:.0}"));
        t.row(
            "server",
            format!(
                "unsent bytes max {}, writes deferred: unsent {} window {}",
                n(self.server_unsent_bytes_max),
                n(self.server_deferred_unsent),
                n(self.server_deferred_window)
            ),
        );
        t.into_string()
    }
}

impl Outcome for PauseReport {
    fn summary(&self) -> (String, u64, &str) {
        (self.table(), 1, &self.url)
    }
}

async fn send(ws: &mut RawWs, body: Body) -> anyhow::Result<()> {
    ws.send(&ClientMessage { body: Some(body) }.encode_to_vec())
        .await
        .context("send")
}

/// The next server message, its size, and when it was read.
async fn next(ws: &mut RawWs) -> anyhow::Result<(ServerMessage, usize, Instant)> {
    let payload = tokio::time::timeout(PATIENCE, ws.next_binary())
        .await
        .context("no message from the server")?
        .context("reading")?;
    let len = payload.len();
    Ok((ServerMessage::decode(payload)?, len, Instant::now()))
}

/// (symbol, seq, exchange time) of every quote in a message.
fn quotes(m: &ServerMessage) -> Vec<(&str, u64, i64)> {
    match &m.body {
        Some(SBody::Snapshot(s)) => s
            .objects
            .iter()
            .filter_map(|o| match &o.state {
                Some(State::Quote(q)) => Some((q.symbol.as_str(), q.seq, q.exchange_time_us)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The server's deferral and unsent figures.
async fn server_figures(metrics_url: &Target) -> (Option<f64>, Option<f64>, Option<f64>) {
    let Ok(text) = metrics_url.http().get_text(&metrics_url.url).await else {
        return (None, None, None);
    };
    let m = Metrics::parse(&text);
    (
        m.value("tickroom_socket_unsent_bytes_max", &[]),
        m.value("tickroom_writes_deferred_total", &[("reason", "unsent")]),
        m.value("tickroom_writes_deferred_total", &[("reason", "window")]),
    )
}

pub async fn run(args: PauseArgs) -> anyhow::Result<PauseReport> {
    let target = target::resolve(&args.url).await?;
    let metrics = target::resolve_http(&args.metrics_url).await?;
    let rcvbuf = (args.recv_buffer > 0).then_some(args.recv_buffer);
    let mut ws = RawWs::connect(target.addr, &target.path, rcvbuf).await?;
    send(
        &mut ws,
        Body::Join(Join {
            room: args.room.clone(),
            ..Default::default()
        }),
    )
    .await?;
    let welcome = loop {
        match next(&mut ws).await?.0.body {
            Some(SBody::Welcome(w)) => break w,
            // One node's socket and metrics are measured: a cluster's redirect is not
            // followed, but said.
            Some(SBody::Error(e)) if e.code == ErrorCode::Redirect as i32 => bail!(
                "join {:?}: {}: the room is on {}; run against that node (--url, and its \
                 --metrics-url)",
                args.room,
                e.message,
                e.redirect_url
            ),
            Some(SBody::Error(e)) => bail!("join {:?}: {}", args.room, e.message),
            _ => {}
        }
    };
    let ticker = welcome.room_kind == RoomKind::Ticker as i32;
    let mut subscribed: Vec<String> = Vec::new();
    if ticker {
        let all = target
            .http()
            .get_json(&target.http_url(&format!("/api/v1/quotes?room={}", args.room)))
            .await?;
        let symbols: Vec<String> = all["quotes"]
            .as_array()
            .context("GET /api/v1/quotes: no quotes")?
            .iter()
            .filter_map(|q| q["symbol"].as_str().map(str::to_owned))
            .take(args.symbols)
            .collect();
        subscribed.clone_from(&symbols);
        send(&mut ws, Body::Subscribe(Subscribe { symbols })).await?;
    }

    // Warm-up: read (and ack) as a client that keeps up.
    let warm_end = Instant::now() + Duration::from_secs_f64(args.warmup);
    while Instant::now() < warm_end {
        let (m, _, _) = next(&mut ws).await?;
        if args.window > 0 {
            send(
                &mut ws,
                Body::Ack(Ack {
                    tick: m.tick,
                    window: args.window,
                }),
            )
            .await?;
        }
    }
    let (_, unsent_before, window_before) = server_figures(&metrics).await;
    tokio::time::sleep(Duration::from_secs_f64(args.pause)).await;
    let (unsent_max, unsent_after, window_after) = server_figures(&metrics).await;

    // The server's values at the moment of resuming.
    let (at_resume_seq, at_resume_tick) = if ticker {
        let now = target
            .http()
            .get_json(&target.http_url(&format!("/api/v1/quotes?room={}", args.room)))
            .await?;
        let seqs: HashMap<String, u64> = now["quotes"]
            .as_array()
            .context("GET /api/v1/quotes: no quotes")?
            .iter()
            .filter_map(|q| Some((q["symbol"].as_str()?.to_owned(), q["seq"].as_u64()?)))
            .collect();
        (seqs, 0)
    } else {
        let rooms = target.http().get_json(&target.http_url("/rooms")).await?;
        let tick = rooms["rooms"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == args.room.as_str()))
            .and_then(|r| r["tick"].as_u64())
            .context("GET /rooms: the room's tick")?;
        (HashMap::new(), tick)
    };

    let resumed = Instant::now();
    let start_bytes = ws.bytes_read();
    // Up to an hour, in µs (ages) and in seqs or ticks (behind).
    let mut ages = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut behind = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut fresh_ages = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    // Ticker: the subscribed symbols not yet at their value at resume, and those already
    // seen after the pause (their first value is the one measured).
    let mut waiting: HashMap<&str, u64> = subscribed
        .iter()
        .filter_map(|s| Some((s.as_str(), *at_resume_seq.get(s)?)))
        .collect();
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut before_newest: Option<(u64, u64)> = None;
    let mut messages = 0u64;
    let newest_at = loop {
        let bytes = ws.bytes_read() - start_bytes;
        let (m, _, at) = next(&mut ws).await?;
        if args.window > 0 {
            send(
                &mut ws,
                Body::Ack(Ack {
                    tick: m.tick,
                    window: args.window,
                }),
            )
            .await?;
        }
        let received_us = now_us();
        if ticker {
            let mut fresh = false;
            for (symbol, seq, exchange_us) in quotes(&m) {
                let want = at_resume_seq.get(symbol).copied().unwrap_or(0);
                if seen.insert(symbol.to_owned(), ()).is_none() {
                    ages.saturating_record((received_us - exchange_us).max(0) as u64);
                    behind.saturating_record(want.saturating_sub(seq));
                }
                if seq >= want && waiting.remove(symbol).is_some() {
                    fresh = true;
                    fresh_ages.saturating_record((received_us - exchange_us).max(0) as u64);
                }
            }
            if fresh && before_newest.is_none() {
                before_newest = Some((bytes, messages));
            }
            messages += 1;
            if waiting.is_empty() {
                break at;
            }
        } else {
            let Some(SBody::Snapshot(s)) = &m.body else {
                messages += 1;
                continue;
            };
            if ages.is_empty() {
                ages.saturating_record((received_us - s.server_time_us).max(0) as u64);
                behind.saturating_record(at_resume_tick.saturating_sub(m.tick));
            }
            if m.tick >= at_resume_tick {
                fresh_ages.saturating_record((received_us - s.server_time_us).max(0) as u64);
                before_newest = Some((bytes, messages));
                break at;
            }
            messages += 1;
        }
    };
    let (bytes_before_newest, messages_before_newest) = before_newest.unwrap_or_default();
    let diff = |a: Option<f64>, b: Option<f64>| Some(a? - b.unwrap_or(0.0));
    Ok(PauseReport {
        url: args.url.clone(),
        room: args.room.clone(),
        kind: if ticker { "ticker" } else { "game" },
        symbols: subscribed.len(),
        pause_s: args.pause,
        window: args.window,
        recv_buffer: args.recv_buffer,
        first_value_age_us: LatencySummary::of(&ages),
        first_value_behind: LatencySummary::of(&behind),
        newest_value_age_us: LatencySummary::of(&fresh_ages),
        bytes_before_newest,
        messages_before_newest,
        time_to_newest_us: newest_at.duration_since(resumed).as_micros() as u64,
        server_unsent_bytes_max: unsent_max,
        server_deferred_unsent: diff(unsent_after, unsent_before),
        server_deferred_window: diff(window_after, window_before),
    })
}
