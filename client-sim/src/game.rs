//! The `game` scenario: N clients join one game room over a ramp, hold for a fixed time while
//! sending inputs, and measure snapshot rate, snapshot latency, input→ack latency and tick
//! gaps. The swarm ([`crate::swarm`]) runs the clients and counts what every scenario counts.
//!
//! With protocol 2 (the default) the first `--verify-clients` clients rebuild their whole
//! view from keyframes and deltas and check every checksum; the others follow only their own
//! avatar ([`crate::views`]).

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::ensure;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tickroom_proto::Message as _;
use tickroom_proto::v1::{ClientMessage, Input, client_message};
use tokio::time::{Instant, MissedTickBehavior};

use crate::report::{self, LatencySummary, RateSummary, Report};
use crate::scan;
use crate::swarm::{self, Client, Conn, Plan, Scenario, Shards, Swarm, SwarmArgs};
use crate::talk::{Pace, Step, Talk, talk};
use crate::views::{Own, Seen, Verifier, ViewCounts};
use client_sim::toolkit::sizes::Sizes;

/// Inputs awaiting acknowledgement per client. Past this the server is seconds behind and
/// the oldest are dropped unmeasured rather than growing memory per client.
const MAX_PENDING_INPUTS: usize = 256;

#[derive(clap::Args, Debug, Clone)]
pub struct GameArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Number of simulated players.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub clients: u32,
    /// Room to join.
    #[arg(long, default_value = "arena")]
    pub room: String,
    /// Inputs per second per client (0 sends none).
    #[arg(long, default_value_t = 30.0)]
    pub input_hz: f64,
    /// `Join.protocol`: 2 receives quantized keyframes and deltas, 1 full snapshots.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=2))]
    pub protocol: u32,
    /// Protocol 2: how many clients (the first ones) rebuild their whole view and check every
    /// checksum; the rest follow only their own avatar.
    #[arg(long, default_value_t = 32)]
    pub verify_clients: u32,
}

/// What every client task reads or updates; everything per client stays in its task.
struct Shared {
    join: Vec<u8>,
    input_period: Option<Duration>,
    verify_clients: usize,
    snapshot_latency: Shards,
    ack_latency: Shards,
    /// Verified clients: from a delta they could not apply to the next view they could.
    recovery: Shards,
}

impl Scenario for Shared {
    const NAME: &'static str = "game";

    type Outcome = Outcome;

    fn client(client: Client<Self>) -> impl Future<Output = (Conn, Outcome)> + Send {
        run_client(client)
    }

    fn progress(&self, _: f64) -> String {
        format!("snapshot latency {}", self.snapshot_latency.p50_p99())
    }

    fn shards(&self) -> Vec<&Shards> {
        vec![&self.snapshot_latency, &self.ack_latency, &self.recovery]
    }
}

/// One client's own results, handed back when its task ends. Latencies went to the shared
/// shards.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Outcome {
    /// Snapshots in the measurement window, the first included.
    snapshots: u64,
    snapshots_per_s: Option<f64>,
    gaps: u64,
    missing_ticks: u64,
    inputs_sent: u64,
    inputs_acked: u64,
    /// Protocol 2, in the measurement window.
    views: ViewCounts,
    verified: bool,
    /// Verified clients: what their snapshots cost.
    sizes: Sizes,
}

/// One simulated player's talk: reads snapshots, sends inputs.
struct Player<'a> {
    id: usize,
    me: u32,
    swarm: &'a Swarm,
    shared: &'a Shared,
    out: Outcome,
    next_seq: u32,
    pending: VecDeque<(u32, Instant)>,
    first_snapshot: Option<Instant>,
    last_tick: Option<u64>,
    own: Own,
    verifier: Option<Verifier>,
}

impl Talk for Player<'_> {
    fn frame(&mut self, conn: &mut Conn, frame: Bytes, now: Instant) -> Step {
        // Snapshots are scanned for what is measured; anything else (errors, events) is
        // decoded and counted as usual.
        let snap = match scan::snapshot(&frame, self.me) {
            Ok(Some(snap)) => snap,
            Ok(None) => {
                conn.decode(frame, now);
                return Step::Stay;
            }
            Err(scan::Malformed) => {
                conn.decode_errors += 1;
                return Step::Stay;
            }
        };
        if now >= self.swarm.hold_end {
            return Step::Stay;
        }
        let out = &mut self.out;
        if let Some(last) = self.last_tick
            && snap.tick > last + 1
        {
            out.gaps += 1;
            out.missing_ticks += snap.tick - last - 1;
        }
        self.last_tick = Some(self.last_tick.map_or(snap.tick, |t| t.max(snap.tick)));
        self.first_snapshot.get_or_insert(now);
        out.snapshots += 1;
        let acked = match snap.view(&frame) {
            None => {
                if let Some(v) = &mut self.verifier {
                    v.observe_full(&frame);
                }
                snap.acked
            }
            Some(view) => match &mut self.verifier {
                Some(v) => {
                    let got = v.apply(self.me, snap.tick, view, frame.len(), now);
                    match got.seen {
                        Some(seen) => out.views.count(seen),
                        None => out.views.mismatches += 1,
                    }
                    if let Some(waited) = got.recovered_after {
                        self.shared
                            .recovery
                            .record(self.id, waited.as_micros() as u64);
                    }
                    got.acked
                }
                None => match self.own.apply(self.me, snap.tick, view) {
                    Ok(seen) => {
                        out.views.count(seen);
                        (seen != Seen::MissedBase)
                            .then(|| self.own.row().map(|r| r.seq))
                            .flatten()
                    }
                    Err(scan::Malformed) => {
                        conn.decode_errors += 1;
                        None
                    }
                },
            },
        };
        let latency = swarm::unix_us().saturating_sub(snap.server_time_us).max(0);
        self.shared.snapshot_latency.record(self.id, latency as u64);
        if let Some(acked) = acked {
            while let Some(&(seq, sent)) = self.pending.front()
                && seq <= acked
            {
                self.pending.pop_front();
                out.inputs_acked += 1;
                let us = (now - sent).as_micros() as u64;
                self.shared.ack_latency.record(self.id, us);
            }
        }
        Step::Stay
    }

    fn sending(&self) -> bool {
        true
    }

    fn outgoing(&mut self) -> Vec<u8> {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Each client walks its own slowly turning direction, so avatars spread out.
        let angle = self.id as f32 * 2.399_963 + seq as f32 * 0.05;
        let input = ClientMessage {
            body: Some(client_message::Body::Input(Input {
                seq,
                move_x: angle.cos(),
                move_y: angle.sin(),
            })),
        };
        input.encode_to_vec()
    }

    fn sent(&mut self) {
        self.out.inputs_sent += 1;
        let now = Instant::now();
        if now < self.swarm.hold_end {
            if self.pending.len() == MAX_PENDING_INPUTS {
                self.pending.pop_front();
            }
            self.pending.push_back((self.next_seq - 1, now));
        }
    }
}

/// One simulated player: joins, then reads snapshots and sends inputs until told to stop.
async fn run_client(client: Client<Shared>) -> (Conn, Outcome) {
    let Client { id, run, mut stop } = client;
    let (swarm, shared, mut conn) = (&run.swarm, &run.scenario, Conn::default());
    let hello = shared.join.clone();
    let Some((mut ws, welcome)) = swarm::enter(swarm, &mut conn, id, &mut stop, hello, None).await
    else {
        return (conn, Outcome::default());
    };
    let mut player = Player {
        id,
        me: welcome.your_object_id,
        swarm,
        shared,
        out: Outcome::default(),
        next_seq: 1,
        pending: VecDeque::new(),
        first_snapshot: None,
        last_tick: None,
        own: Own::default(),
        verifier: (id < shared.verify_clients).then(Verifier::default),
    };
    player.out.verified = player.verifier.is_some();
    let pace = shared
        .input_period
        .map(|period| Pace::spread(id, period, MissedTickBehavior::Skip));
    let server_closed = talk(swarm, &mut conn, id, &mut ws, &mut stop, pace, &mut player).await;
    if let Some(v) = &player.verifier {
        player.out.sizes = v.cost.sizes;
    }
    let mut out = player.out;
    // The first snapshot opens the window, so it is not counted in the rate.
    out.snapshots_per_s = player
        .first_snapshot
        .and_then(|first| swarm.rate_since(first, out.snapshots - 1));
    swarm::leave(swarm, ws, server_closed).await;
    (conn, out)
}

/// Runs the scenario to completion (ramp, hold, shutdown) and builds the report.
pub async fn run(args: GameArgs) -> anyhow::Result<Report> {
    ensure!(
        args.input_hz.is_finite() && (0.0..=1000.0).contains(&args.input_hz),
        "--input-hz must be between 0 and 1000"
    );
    let join = swarm::join_speaking(&args.room, "", args.protocol);
    let input_period = (args.input_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / args.input_hz));
    let shared = Shared {
        join,
        input_period,
        verify_clients: args.verify_clients as usize,
        snapshot_latency: Shards::new(),
        ack_latency: Shards::new(),
        recovery: Shards::new(),
    };
    let clients = args.clients as usize;
    let done = swarm::drive(Plan::ramp(&args.swarm, clients, &args.room), shared).await?;
    let (shared, outcomes) = (&done.run.scenario, &done.outcomes);
    let outcomes = || outcomes.iter().map(|(_, o)| o);
    let sum = |f: fn(&Outcome) -> u64| outcomes().map(f).sum::<u64>();
    Ok(Report::new(
        done.common,
        report::RunConfig {
            url: done.run.swarm.target.url.clone(),
            room: args.room,
            clients,
            ramp_per_s: args.swarm.ramp,
            duration_s: args.swarm.duration,
            input_hz: args.input_hz,
        },
        report::Snapshots {
            received: sum(|o| o.snapshots),
            per_client_per_s: RateSummary::of(
                outcomes().filter_map(|o| o.snapshots_per_s).collect(),
            ),
            gaps: sum(|o| o.gaps),
            missing_ticks: sum(|o| o.missing_ticks),
        },
        LatencySummary::of(&shared.snapshot_latency.merged()),
        LatencySummary::of(&shared.ack_latency.merged()),
        report::Inputs {
            sent: sum(|o| o.inputs_sent),
            acked: sum(|o| o.inputs_acked),
        },
    )
    .with_sizes({
        let mut sizes = Sizes::default();
        for o in outcomes().filter(|o| o.verified) {
            sizes.add(&o.sizes);
        }
        sizes
    })
    .with_views(args.protocol, {
        let mut all = ViewCounts::default();
        let mut verified = ViewCounts::default();
        for o in outcomes() {
            all.add(&o.views);
            if o.verified {
                verified.add(&o.views);
            }
        }
        report::Views {
            verified_clients: outcomes().filter(|o| o.verified).count(),
            all,
            verified,
            recovery_us: LatencySummary::of(&shared.recovery.merged()),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_all_joined, game_server, swarm_args};

    /// A few players in a real 60 Hz game room: everyone joins, gets about a snapshot per
    /// tick, has its inputs acknowledged, and the server's metrics are read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn players_get_a_snapshot_per_tick() {
        let server = game_server(10).await;
        let args = GameArgs {
            swarm: swarm_args(&server, 5, 1.5),
            clients: 5,
            room: "arena".into(),
            input_hz: 20.0,
            protocol: 2,
            verify_clients: 32,
        };
        let r = run(args).await.unwrap();
        assert_all_joined(&r.head, 5);
        assert_eq!(r.head.tick_rate_hz, Some(60));
        let rate = &r.snapshots.per_client_per_s;
        // Near the tick rate; a loaded machine may delay a few ticks, never add any.
        assert_eq!(rate.clients, 5);
        assert!(rate.median > 40.0 && rate.max < 61.0, "{rate:?}");
        assert!(r.inputs.acked > 0 && r.input_ack_latency_us.samples > 0);
        // Protocol 2: every client rebuilt its view (5 <= 32 verified) and every checksum held.
        let v = r.views.as_ref().expect("protocol 2 views");
        assert_eq!(v.verified_clients, 5);
        assert_eq!(v.verified.mismatches, 0);
        assert!(
            v.verified.keyframes >= 5 && v.verified.deltas > 100,
            "{v:?}"
        );
        assert_eq!(v.all, v.verified);
        let m = r.tail.server.metrics.as_ref().unwrap();
        assert!(m.rss_end_of_hold_bytes.unwrap() > 0, "{m:?}");
        assert!(m.cpu_percent_of_one_core.is_some(), "{m:?}");
        assert!(m.frames_written_per_s.unwrap() > 0.0, "{m:?}");
        assert!(m.socket_flushes_per_s.unwrap() > 0.0, "{m:?}");
        let end = m.end_of_hold.as_ref().unwrap();
        assert_eq!(end.tickroom_connections_active, Some(5), "{m:?}");
        assert!(end.tickroom_sessions_active.unwrap() >= 5, "{m:?}");
        assert!(end.tokio_alive_tasks.unwrap() > 10, "{m:?}");
        assert!(m.tick_p99_us.is_some(), "{m:?}");
        assert!(r.tail.warnings.is_empty(), "{:?}", r.tail.warnings);
    }
}
