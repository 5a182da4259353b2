//! The `failover` scenario: N game clients join one room, client i through the i-th of
//! `--urls` (round-robin, redirects followed as [`swarm::join`] does), and read snapshots.
//! When a client's connection ends (its node was killed: a reset or an end of stream without
//! a close frame; or a close such as 1001 "server shutting down"), it notes the time and
//! tries to get back in: a round every [`RETRY_EVERY`], each trying the URLs in turn from its
//! own (connect, Join, redirects followed; a redirect to the dead node fails fast, connection
//! refused, and the next URL is tried) until one gives Welcome and a first snapshot. The
//! report says how many clients lost their connection, how many got back in, how long it
//! took (loss → first snapshot) and how many tries, and where each client ended.
//!
//! Not a ramp-and-hold swarm ([`crate::drive`]): a few clients over a fixed time, each
//! living through node failures, so it runs its clients itself and shares the join, the
//! per-connection counting and the read loop ([`swarm`], [`talk`]).

mod report;
mod track;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::ensure;
use bytes::Bytes;
use futures_util::StreamExt;
use tickroom_proto::v1::RoomKind;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use self::report::FailoverReport;
use self::report::{ClientEnd, FailoverConfig};
use self::track::{DROPPED, History};
use crate::drive::GRACE;
use crate::scan;
use crate::swarm::{self, Conn, JOIN_TIMEOUT, Read, Swarm, Ws};
use crate::talk::{Step, Talk, talk};
use crate::target::{self, Target};

/// A client that lost its connection starts a round of tries this often.
pub const RETRY_EVERY: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// The nodes' WebSocket URLs, comma-separated; client i joins through the (i mod N)-th,
    /// and a client that lost its connection tries them all. Each must resolve to a loopback
    /// address.
    #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
    pub urls: Vec<String>,
    /// Game room to join.
    #[arg(long, default_value = "arena")]
    pub room: String,
    /// Number of clients.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// Seconds the run lasts, from the first join.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What every client reads or updates.
struct Shared {
    /// Counts what the clients receive; its hold is the run.
    swarm: Swarm,
    nodes: Vec<Target>,
    /// `Join{room}`.
    join: Vec<u8>,
    /// Losses and recoveries so far (for progress).
    losses: AtomicU64,
    recoveries: AtomicU64,
}

/// A client in the room: its socket, its object, where it landed and its first snapshot.
struct Joined {
    ws: Ws,
    me: u32,
    url: String,
    first_snapshot: Instant,
}

/// One try to get into the room through `node`: connect, Join (redirects followed), and read
/// until the first snapshot; each step within [`JOIN_TIMEOUT`].
async fn attempt(
    shared: &Shared,
    conn: &mut Conn,
    id: usize,
    node: &Target,
) -> Result<Joined, String> {
    let hello = Some(shared.join.clone());
    let joining = swarm::join_at(&shared.swarm, conn, id, node.addr, &node.url, hello);
    let (mut ws, welcome, url) = tokio::time::timeout(JOIN_TIMEOUT, joining)
        .await
        .unwrap_or(Err(swarm::JoinFail::Timeout))
        .map_err(|f| f.message())?;
    swarm::expect_kind(&welcome, RoomKind::Game).map_err(|f| f.message())?;
    let me = welcome.your_object_id;
    let first = async {
        loop {
            match conn.skim(&shared.swarm, ws.next().await) {
                Ok(Some((frame, now))) => {
                    if is_snapshot(conn, frame, now, me) {
                        return Ok(now);
                    }
                }
                Ok(None) => {}
                Err(Read::Closed(code)) => {
                    return Err(format!("close code {code} before a snapshot"));
                }
                Err(_) => return Err("connection lost before a snapshot".to_owned()),
            }
        }
    };
    let first_snapshot = tokio::time::timeout(JOIN_TIMEOUT, first)
        .await
        .unwrap_or_else(|_| Err(format!("no snapshot within {JOIN_TIMEOUT:?} of Welcome")))?;
    Ok(Joined {
        ws,
        me,
        url,
        first_snapshot,
    })
}

/// Whether a frame is a snapshot; anything else is decoded and counted as usual.
fn is_snapshot(conn: &mut Conn, frame: Bytes, now: Instant, me: u32) -> bool {
    match scan::snapshot(&frame, me) {
        Ok(Some(_)) => true,
        Ok(None) => {
            conn.decode(frame, now);
            false
        }
        Err(scan::Malformed) => {
            conn.decode_errors += 1;
            false
        }
    }
}

/// `f`, unless the run stops first (`None`).
async fn until_stopped<T>(
    stop: &mut watch::Receiver<bool>,
    f: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        out = f => Some(out),
        _ = stop.wait_for(|&stopped| stopped) => None,
    }
}

/// A client in the room reads snapshots until the run stops or its connection ends.
struct Reader<'a> {
    me: u32,
    until: Instant,
    history: &'a mut History,
    /// The connection ended (not the client's leaving).
    ended: bool,
}

impl Talk for Reader<'_> {
    fn frame(&mut self, conn: &mut Conn, frame: Bytes, now: Instant) -> Step {
        if is_snapshot(conn, frame, now, self.me) && now < self.until {
            self.history.snapshot(now);
        }
        Step::Stay
    }

    fn ended(&mut self) {
        self.ended = true;
    }
}

/// One client: joins through its own URL, then reads, and after each loss tries to get back
/// in, until the run stops. `first_join` hears when its first join is over.
async fn run_client(
    id: usize,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    first_join: Option<oneshot::Sender<()>>,
) -> ClientEnd {
    let swarm = &shared.swarm;
    let home = id % shared.nodes.len();
    let mut end = ClientEnd {
        id,
        through: shared.nodes[home].url.clone(),
        ..ClientEnd::default()
    };
    let first = until_stopped(
        &mut stop,
        attempt(&shared, &mut end.conn, id, &shared.nodes[home]),
    )
    .await;
    if let Some(tx) = first_join {
        let _ = tx.send(());
    }
    let mut joined = match first {
        Some(Ok(joined)) => joined,
        Some(Err(why)) => {
            end.join_fail = Some(why);
            return end;
        }
        None => return end,
    };
    end.conn.joined = true;
    loop {
        swarm.live.fetch_add(1, Relaxed);
        end.history.snapshot(joined.first_snapshot);
        end.ended_on = Some(joined.url.clone());
        let mut reader = Reader {
            me: joined.me,
            until: swarm.hold_end,
            history: &mut end.history,
            ended: false,
        };
        let server_closed = talk(
            swarm,
            &mut end.conn,
            id,
            &mut joined.ws,
            &mut stop,
            None,
            &mut reader,
        )
        .await;
        if !reader.ended {
            swarm::close(swarm, joined.ws, server_closed, false).await;
            return end;
        }
        let cause = match (server_closed, end.conn.close_code) {
            (true, Some(code)) => format!("close {code}"),
            _ => DROPPED.to_owned(),
        };
        // The node is gone (or going): nothing to close politely.
        swarm.live.fetch_sub(1, Relaxed);
        drop(joined.ws);
        end.history.lost(Instant::now(), cause);
        end.ended_on = None;
        shared.losses.fetch_add(1, Relaxed);
        joined = match recover(&shared, &mut end, home, &mut stop).await {
            Some(joined) => joined,
            None => return end,
        };
        shared.recoveries.fetch_add(1, Relaxed);
    }
}

/// After a loss: a round of tries every [`RETRY_EVERY`], each through the URLs in turn from
/// the client's own, until one gets back in; `None` when the run stops first.
async fn recover(
    shared: &Shared,
    end: &mut ClientEnd,
    home: usize,
    stop: &mut watch::Receiver<bool>,
) -> Option<Joined> {
    let n = shared.nodes.len();
    loop {
        let round = Instant::now();
        for k in 0..n {
            let node = &shared.nodes[(home + k) % n];
            end.history.attempt();
            match until_stopped(stop, attempt(shared, &mut end.conn, end.id, node)).await? {
                Ok(joined) => return Some(joined),
                Err(why) => {
                    tracing::debug!(client = end.id, url = node.url, "try failed: {why}");
                    end.last_error = Some(why);
                }
            }
        }
        until_stopped(stop, tokio::time::sleep_until(round + RETRY_EVERY)).await?;
    }
}

/// Prints a progress line a second until aborted.
async fn progress(shared: Arc<Shared>, clients: usize, start: Instant) {
    let mut every =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        let now = every.tick().await;
        eprintln!(
            "[{:>5.1}s] in the room {}/{clients}  losses {}  recoveries {}",
            (now - start).as_secs_f64(),
            shared.swarm.live.load(Relaxed),
            shared.losses.load(Relaxed),
            shared.recoveries.load(Relaxed),
        );
    }
}

/// Runs the scenario for `--duration` and builds the report.
pub async fn run(args: FailoverArgs) -> anyhow::Result<FailoverReport> {
    ensure!(
        args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0,
        "--duration must be between 0 and 86400 seconds"
    );
    ensure!(!args.urls.is_empty(), "--urls needs at least one URL");
    let mut nodes = Vec::with_capacity(args.urls.len());
    for url in &args.urls {
        nodes.push(target::resolve(url).await?);
    }
    let clients = args.clients as usize;
    let duration = Duration::from_secs_f64(args.duration);
    eprintln!(
        "client-sim failover: {clients} clients -> room {:?} through {}, {:.1} s",
        args.room,
        args.urls.join(", "),
        args.duration
    );
    let start = Instant::now();
    let shared = Arc::new(Shared {
        swarm: Swarm {
            target: nodes[0].clone(),
            hold_start: start,
            hold_end: start + duration,
            live: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            tick_rate_hz: AtomicU32::new(0),
            reset_on_drop: false,
            source_ips: 1,
        },
        nodes,
        join: swarm::join_message(&args.room, ""),
        losses: AtomicU64::new(0),
        recoveries: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let shown = tokio::spawn(progress(shared.clone(), clients, start));
    // Client 0 joins alone first, so that a room that does not exist yet is made (in a
    // cluster: owned) by the node of the first URL.
    let (tx, first_joined) = oneshot::channel();
    let mut tasks = vec![tokio::spawn(run_client(
        0,
        shared.clone(),
        stop_rx.clone(),
        Some(tx),
    ))];
    let _ = first_joined.await;
    tasks.extend(
        (1..clients).map(|id| tokio::spawn(run_client(id, shared.clone(), stop_rx.clone(), None))),
    );
    let interrupted = tokio::select! {
        _ = tokio::time::sleep_until(start + duration) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let _ = stop_tx.send(true);
    shown.abort();
    let deadline = Instant::now() + GRACE;
    let (mut ends, mut aborted) = (Vec::with_capacity(clients), 0);
    for mut task in tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(end)) => ends.push(end),
            _ => {
                task.abort();
                aborted += 1;
            }
        }
    }
    let mut warnings = Vec::new();
    if interrupted {
        warnings.push("interrupted before the end of the run".to_owned());
    }
    if aborted > 0 {
        warnings.push(format!(
            "{aborted} client tasks did not finish and were aborted"
        ));
    }
    let config = FailoverConfig {
        urls: args.urls,
        room: args.room,
        clients,
        duration_s: args.duration,
    };
    let wall_s = start.elapsed().as_secs_f64();
    Ok(FailoverReport::new(
        config,
        ends,
        start,
        wall_s,
        interrupted,
        warnings,
    ))
}

#[cfg(test)]
mod tests;
