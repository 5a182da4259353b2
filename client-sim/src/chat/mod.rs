//! The `chat` scenario: N anonymous viewers and M named senders join one chat room; each
//! sender sends `ChatSend` at a fixed rate, everyone reads the room's `ChatBatch`es. It
//! measures send→receive latency (at viewers and, separately, at senders), batches and
//! messages per second, messages lost per viewer (from the senders' own counters), messages
//! the room's per-tick cap dropped, and refused sends by error code. The swarm
//! ([`crate::swarm`]) runs the clients and counts what every scenario counts.
//!
//! With `--urls` the room spans the nodes of a cluster: viewer i connects to the (i mod N)-th
//! URL and every sender to the first, so a viewer on another node measures the cross-node
//! path; latency and loss are also reported per node.

mod report;
mod track;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tickroom_proto::Message as _;
use tickroom_proto::v1::{
    ChatBatch, ChatKind, ChatMessage, ChatSend, ClientMessage, RoomKind, client_message,
    server_message,
};
use tokio::time::{Instant, MissedTickBehavior};

pub use self::report::ChatReport;
use self::report::{ChatConfig, Received, Sent, UrlViewers};
use self::track::{Runs, SenderLog, Tally};
use crate::report::{LatencySummary, RateSummary, per_s};
use crate::swarm::{self, Client, Conn, LiveCount, Plan, Read, Run, Scenario, Shards, SwarmArgs};
use crate::talk::{Pace, Step, Talk, talk};
use crate::target::{self, Target};

/// Senders are named this plus their number; receivers recognise sim messages by it.
const SENDER_PREFIX: &str = "sim-sender-";

#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub swarm: SwarmArgs,
    /// Chat room to join.
    #[arg(long, default_value = "chat")]
    pub room: String,
    /// Anonymous viewers (join without a name, only read).
    #[arg(long, default_value_t = 100)]
    pub viewers: usize,
    /// Named senders (`sim-sender-<k>`); they read too.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// Messages per second per sender (the demo room accepts 2/s, burst 5).
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Messages sent in the last this-many ms of the hold are not counted as lost if missing.
    #[arg(long, default_value_t = 1000)]
    pub loss_grace_ms: u64,
    /// Nodes of a cluster, comma-separated, instead of `--url`: viewer i connects to the
    /// (i mod N)-th, every sender to the first (whose room the run samples). Each must
    /// resolve to a loopback address.
    #[arg(long, value_delimiter = ',', num_args = 1.., conflicts_with = "url")]
    pub urls: Vec<String>,
}

/// What every client task reads or updates; everything per client stays in its task.
struct Shared {
    room: String,
    viewers: usize,
    senders: usize,
    period: Duration,
    /// `Join{room}` of the anonymous viewers.
    join: Vec<u8>,
    /// Where clients connect: `--urls` (or `--url`), resolved; the senders' node first.
    nodes: Vec<Target>,
    /// Viewers on the senders' node (`nodes[0]`), and on the others.
    viewer_latency_local: Shards,
    viewer_latency_remote: Shards,
    sender_latency: Shards,
    /// Per batch at each viewer: receipt − the batch's tick start.
    batch_fanout: Shards,
    /// Messages sent and received so far (for progress).
    sent: LiveCount,
    received: LiveCount,
}

impl Shared {
    /// The sender number of client `id` (senders start after the viewers).
    fn sender_of(&self, id: usize) -> Option<usize> {
        id.checked_sub(self.viewers)
    }

    /// The node (index into `nodes`) client `id` connects to: the first for every sender,
    /// round-robin for the viewers.
    fn node_of(&self, id: usize) -> usize {
        match self.sender_of(id) {
            Some(_) => 0,
            None => id % self.nodes.len(),
        }
    }

    /// Viewer latency on every node.
    fn viewer_latency(&self) -> Histogram<u64> {
        let mut all = self.viewer_latency_local.merged();
        // Same bounds, so adding cannot fail.
        let _ = all.add(self.viewer_latency_remote.merged());
        all
    }

    /// The sim sender who sent `m`, if one did.
    fn sim_sender(&self, m: &ChatMessage) -> Option<usize> {
        if m.kind != ChatKind::User as i32 {
            return None;
        }
        let k: usize = m.from.strip_prefix(SENDER_PREFIX)?.parse().ok()?;
        (k < self.senders).then_some(k)
    }
}

impl Scenario for Shared {
    const NAME: &'static str = "chat";

    type Outcome = Outcome;

    fn client(client: Client<Self>) -> impl Future<Output = (Conn, Outcome)> + Send {
        run_client(client)
    }

    fn progress(&self, secs: f64) -> String {
        let (sent, received) = (self.sent.rate(secs), self.received.rate(secs));
        let latency = self.viewer_latency();
        format!(
            "sent/s {sent:.0}  received/s {received:.0}  viewer latency p50 {} µs p99 {} µs",
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.99)
        )
    }

    fn shards(&self) -> Vec<&Shards> {
        vec![
            &self.viewer_latency_local,
            &self.viewer_latency_remote,
            &self.sender_latency,
            &self.batch_fanout,
        ]
    }
}

/// One client's own results, handed back when its task ends. Latencies went to the shared
/// shards.
#[derive(Debug, Serialize, Deserialize)]
struct Outcome {
    /// `Some(k)` for sender k.
    sender: Option<usize>,
    /// The node it connected to (index into `--urls`).
    node: usize,
    /// When the Welcome came.
    #[serde(with = "crate::wire::opt_instant")]
    joined_at: Option<Instant>,
    duplicates: u64,
    other_messages: u64,
    dropped_told: u64,
    hold_batches: u64,
    hold_messages: u64,
    /// Senders: their own messages.
    log: SenderLog,
    /// Ids received from each sim sender.
    got: Vec<Runs>,
}

/// One viewer's or sender's talk: reads batches, and a sender sends until the hold ends.
struct Chatter<'a> {
    id: usize,
    run: &'a Run<Shared>,
    out: Outcome,
}

impl Talk for Chatter<'_> {
    fn frame(&mut self, conn: &mut Conn, frame: Bytes, now: Instant) -> Step {
        if let Read::Msg(msg, now) = conn.decode(frame, now) {
            match msg.body {
                Some(server_message::Body::ChatBatch(batch)) => {
                    on_batch(self.run, self.id, &mut self.out, &batch, now);
                }
                // A sender sends nothing but ChatSend, so every Error refuses one.
                Some(server_message::Body::Error(_)) if self.out.sender.is_some() => {
                    self.out.log.refused_one();
                }
                _ => {}
            }
        }
        Step::Stay
    }

    fn sending(&self) -> bool {
        self.out.sender.is_some() && Instant::now() < self.run.swarm.hold_end
    }

    fn outgoing(&mut self) -> Vec<u8> {
        let msg_id = self.out.log.send(Instant::now());
        let send = ClientMessage {
            body: Some(client_message::Body::ChatSend(ChatSend {
                text: format!("sim message {msg_id}"),
                client_msg_id: msg_id,
                sent_time_us: swarm::unix_us(),
            })),
        };
        send.encode_to_vec()
    }

    fn sent(&mut self) {
        self.run.scenario.sent.add(1);
    }
}

/// One simulated viewer or sender: joins, then reads batches (and sends) until told to stop.
async fn run_client(client: Client<Shared>) -> (Conn, Outcome) {
    let Client { id, run, mut stop } = client;
    let (swarm, shared) = (&run.swarm, &run.scenario);
    let sender = shared.sender_of(id);
    let node = shared.node_of(id);
    let mut conn = Conn::default();
    let out = Outcome {
        sender,
        node,
        joined_at: None,
        got: vec![Runs::default(); shared.senders],
        duplicates: 0,
        other_messages: 0,
        dropped_told: 0,
        hold_batches: 0,
        hold_messages: 0,
        log: SenderLog::default(),
    };
    let hello = match sender {
        Some(k) => swarm::join_message(&shared.room, &format!("{SENDER_PREFIX}{k}")),
        None => shared.join.clone(),
    };
    let chat = Some(RoomKind::Chat);
    let at = &shared.nodes[node];
    let Some((mut ws, _)) = swarm::enter_at(swarm, at, &mut conn, id, &mut stop, hello, chat).await
    else {
        return (conn, out);
    };
    let mut chatter = Chatter { id, run: &run, out };
    chatter.out.joined_at = Some(Instant::now());
    let pace = Pace::spread(id, shared.period, MissedTickBehavior::Delay);
    let server_closed = talk(
        swarm,
        &mut conn,
        id,
        &mut ws,
        &mut stop,
        Some(pace),
        &mut chatter,
    )
    .await;
    let mut out = chatter.out;
    out.log.finish();
    swarm::leave(swarm, ws, server_closed).await;
    (conn, out)
}

/// Takes one ChatBatch: ids from sim senders are recorded (and a sender's own ones resolve
/// its log), latencies measured up to the end of the hold.
fn on_batch(run: &Run<Shared>, id: usize, out: &mut Outcome, batch: &ChatBatch, now: Instant) {
    let (swarm, shared) = (&run.swarm, &run.scenario);
    out.dropped_told += u64::from(batch.dropped);
    if swarm.in_hold(now) {
        out.hold_batches += 1;
        out.hold_messages += batch.messages.len() as u64;
    }
    shared.received.add(batch.messages.len() as u64);
    let measuring = now < swarm.hold_end;
    let local_us = swarm::unix_us();
    let shards = match (out.sender, out.node) {
        (Some(_), _) => &shared.sender_latency,
        (None, 0) => &shared.viewer_latency_local,
        (None, _) => &shared.viewer_latency_remote,
    };
    let latencies = batch.messages.iter().filter_map(|m| {
        let Some(k) = shared.sim_sender(m) else {
            out.other_messages += 1;
            return None;
        };
        if !out.got[k].add(m.client_msg_id) {
            out.duplicates += 1;
        }
        if out.sender == Some(k) {
            out.log.echoed(m.client_msg_id);
        }
        measuring.then(|| local_us.saturating_sub(m.sent_time_us).max(0) as u64)
    });
    shards.record_all(id, latencies);
    // The room stamps a message with the start of the tick that accepted it, and a batch
    // leaves at the end of that tick: its newest stamp is the tick start (older ones are
    // messages the per-tick cap held back).
    if measuring
        && out.sender.is_none()
        && let Some(tick_start) = batch.messages.iter().map(|m| m.server_time_us).max()
    {
        let fanout = local_us.saturating_sub(tick_start).max(0) as u64;
        shared.batch_fanout.record(id, fanout);
    }
}

/// `--urls` resolved (loopback only), or `--url` alone; with `--urls` the run's `--url`
/// becomes the first, the senders' node, which the run samples.
async fn nodes(args: &mut ChatArgs) -> anyhow::Result<Vec<Target>> {
    if args.urls.is_empty() {
        return Ok(vec![target::resolve(&args.swarm.target.url).await?]);
    }
    let mut nodes = Vec::with_capacity(args.urls.len());
    for url in &args.urls {
        nodes.push(target::resolve(url).await?);
    }
    args.swarm.target.url = args.urls[0].clone();
    Ok(nodes)
}

/// Runs the scenario to completion (ramp, hold, shutdown) and builds the report.
pub async fn run(mut args: ChatArgs) -> anyhow::Result<ChatReport> {
    ensure!(
        args.viewers + args.senders >= 1,
        "--viewers plus --senders must be at least 1"
    );
    // Past the session's own limit (120 messages/s) the server drops sends without an Error,
    // which would read as loss.
    ensure!(
        args.rate.is_finite() && args.rate > 0.0 && args.rate <= 50.0,
        "--rate must be above 0 and at most 50 messages per second"
    );
    ensure!(
        args.loss_grace_ms <= 60_000,
        "--loss-grace-ms must be at most 60000"
    );
    args.swarm.check()?;
    let nodes = nodes(&mut args).await?;
    let shared = Shared {
        room: args.room.clone(),
        viewers: args.viewers,
        senders: args.senders,
        period: Duration::from_secs_f64(1.0 / args.rate),
        join: swarm::join_message(&args.room, ""),
        nodes,
        viewer_latency_local: Shards::new(),
        viewer_latency_remote: Shards::new(),
        sender_latency: Shards::new(),
        batch_fanout: Shards::new(),
        sent: LiveCount::default(),
        received: LiveCount::default(),
    };
    let clients = args.viewers + args.senders;
    let done = swarm::drive(Plan::ramp(&args.swarm, clients, &args.room), shared).await?;
    let (swarm, shared) = (&done.run.swarm, &done.run.scenario);
    let hold_s = done.common.head.timing.hold_s;
    let config = ChatConfig {
        url: swarm.target.url.clone(),
        urls: shared.nodes.iter().map(|n| n.url.clone()).collect(),
        room: args.room,
        viewers: args.viewers,
        senders: args.senders,
        rate_per_sender: args.rate,
        ramp_per_s: args.swarm.ramp,
        duration_s: args.swarm.duration,
        loss_grace_ms: args.loss_grace_ms,
    };
    let mut report = ChatReport::new(done.common, config);
    let grace = Duration::from_millis(args.loss_grace_ms);
    let cutoff_at = swarm
        .hold_end
        .checked_sub(grace)
        .unwrap_or(swarm.hold_start);
    summarize(
        &mut report,
        &done.outcomes,
        shared,
        cutoff_at,
        (swarm.hold_start, hold_s),
    );
    report.viewer_latency_us = LatencySummary::of(&shared.viewer_latency());
    report.viewer_latency_local_us = LatencySummary::of(&shared.viewer_latency_local.merged());
    report.viewer_latency_remote_us = LatencySummary::of(&shared.viewer_latency_remote.merged());
    report.sender_latency_us = LatencySummary::of(&shared.sender_latency.merged());
    report.batch_fanout_us = LatencySummary::of(&shared.batch_fanout.merged());
    Ok(report)
}

/// Adds up the senders' logs and what every receiver got, in all and per node. `cutoff_at`:
/// messages sent after it are not expected; `hold`: when the hold started and how long it
/// lasted.
fn summarize(
    report: &mut ChatReport,
    outcomes: &[(Conn, Outcome)],
    shared: &Shared,
    cutoff_at: Instant,
    (hold_start, hold_s): (Instant, f64),
) {
    let senders = shared.senders;
    let empty = SenderLog::default();
    let mut logs: Vec<&SenderLog> = vec![&empty; senders];
    let mut refused_by_kind = BTreeMap::new();
    for (conn, out) in outcomes {
        if let Some(k) = out.sender {
            logs[k] = &out.log;
            for (&code, &n) in &conn.errors {
                *refused_by_kind.entry(swarm::error_name(code)).or_insert(0) += n;
            }
        }
    }
    let cutoffs: Vec<u64> = logs.iter().map(|l| l.last_sent_by(cutoff_at)).collect();
    let sum = |f: fn(&SenderLog) -> u64| logs.iter().map(|l| f(l)).sum::<u64>();
    let hold_messages = logs
        .iter()
        .map(|l| l.sent.len() as u64 - l.last_sent_by(hold_start))
        .sum();
    report.sent = Sent {
        messages: sum(|l| l.sent.len() as u64),
        hold_messages,
        per_s: per_s(hold_messages, hold_s),
        refused: sum(|l| l.refused.len() as u64),
        refused_by_kind,
        unechoed: sum(|l| l.unechoed),
        counted: cutoffs.iter().sum(),
    };
    // What the joined clients `which` picks received.
    let received = |which: &dyn Fn(&Outcome) -> bool| {
        let role = outcomes.iter().filter(|(conn, o)| conn.joined && which(o));
        let mut r = Received::default();
        let (mut batch_rates, mut message_rates) = (Vec::new(), Vec::new());
        for (conn, o) in role {
            r.clients += 1;
            r.hold_batches += o.hold_batches;
            r.hold_messages += o.hold_messages;
            r.dropped_by_cap += o.dropped_told;
            r.duplicates += o.duplicates;
            r.other_messages += o.other_messages;
            if hold_s > 0.0 {
                batch_rates.push(o.hold_batches as f64 / hold_s);
                message_rates.push(o.hold_messages as f64 / hold_s);
            }
            let Some(joined_at) = o.joined_at.filter(|_| !conn.ended_early) else {
                continue;
            };
            r.checked += 1;
            let mut missing = 0;
            for (k, log) in logs.iter().enumerate() {
                let t = Tally::of(log, cutoffs[k], joined_at, &o.got[k]);
                r.expected += t.expected;
                r.received += t.received;
                missing += t.missing();
            }
            r.missing += missing;
            let lost = missing.saturating_sub(o.dropped_told);
            r.lost += lost;
            r.lost_max_per_client = r.lost_max_per_client.max(lost);
        }
        r.batches_per_s = RateSummary::of(batch_rates);
        r.messages_per_s = RateSummary::of(message_rates);
        r
    };
    report.viewers = received(&|o| o.sender.is_none());
    report.senders = received(&|o| o.sender.is_some());
    let n = shared.nodes.len();
    report.viewers_by_url = (shared.nodes.iter().enumerate())
        .map(|(k, node)| UrlViewers {
            url: node.url.clone(),
            // Viewer ids k, k + n, k + 2n, ... below the number of viewers.
            assigned: ((shared.viewers + n - 1 - k) / n) as u64,
            received: received(&|o| o.sender.is_none() && o.node == k),
        })
        .collect();
}

#[cfg(test)]
mod tests;
