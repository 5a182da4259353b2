//! The chat report: its JSON schema (the field names) and its table. The parts every
//! scenario reports come from [`Common`] and print with the shared [`Table`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::limits::NofileLimit;
use crate::report::{Common, Head, LatencySummary, RateSummary, Table, Tail, counts};

#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub scenario: &'static str,
    pub config: ChatConfig,
    #[serde(flatten)]
    pub head: Head,
    pub sent: Sent,
    /// What the anonymous viewers received.
    pub viewers: Received,
    /// What the senders received (they are viewers too).
    pub senders: Received,
    /// The viewers per URL of `config.urls` (one entry without `--urls`).
    pub viewers_by_url: Vec<UrlViewers>,
    /// Local Unix µs − `ChatMessage.sent_time_us`, per message from a sim sender, at viewers.
    pub viewer_latency_us: LatencySummary,
    /// The same at the viewers on the senders' node (the first URL), and on the other nodes:
    /// their messages crossed the cluster (empty without `--urls`).
    pub viewer_latency_local_us: LatencySummary,
    pub viewer_latency_remote_us: LatencySummary,
    /// The same at the senders (their own messages included).
    pub sender_latency_us: LatencySummary,
    /// Fan-out: per batch and viewer, local Unix µs − the start of the tick that sent the
    /// batch (its newest `ChatMessage.server_time_us`). Its max is the worst batch's tick
    /// start → last viewer; client-sim's own reading delay is included.
    pub batch_fanout_us: LatencySummary,
    #[serde(flatten)]
    pub tail: Tail,
    /// The open-file limits the run had (null if unreadable).
    pub open_files: Option<NofileLimit>,
}

#[derive(Debug, Serialize)]
pub struct ChatConfig {
    /// Where the senders connect, and the node the run samples.
    pub url: String,
    /// Where the viewers connect, round-robin (`--urls`, or `--url` alone).
    pub urls: Vec<String>,
    pub room: String,
    pub viewers: usize,
    pub senders: usize,
    /// Messages per second per sender.
    pub rate_per_sender: f64,
    pub ramp_per_s: f64,
    pub duration_s: f64,
    /// Messages sent in the last this-many ms of the hold are not expected anywhere.
    pub loss_grace_ms: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Sent {
    /// ChatSend messages sent, ramp and hold.
    pub messages: u64,
    /// Sent during the hold; `per_s` divides by `timing.hold_s`.
    pub hold_messages: u64,
    pub per_s: f64,
    /// Sends the room refused (one Error each), by error code name (`rate_limited`, ...).
    pub refused: u64,
    pub refused_by_kind: BTreeMap<String, u64>,
    /// Accepted sends that never came back to their sender: dropped by the per-tick cap.
    pub unechoed: u64,
    /// Per sender, the highest id that counts for loss (sent by the end of the hold minus
    /// the grace window), summed.
    pub counted: u64,
}

/// The viewers that connected to one URL, and what they received.
#[derive(Debug, Default, Serialize)]
pub struct UrlViewers {
    pub url: String,
    /// Viewers sent there (viewer i goes to URL i mod N); `clients` of them joined.
    pub assigned: u64,
    #[serde(flatten)]
    pub received: Received,
}

#[derive(Debug, Default, Serialize)]
pub struct Received {
    /// Clients of this role that joined.
    pub clients: u64,
    /// Those connected through the whole run, whose loss is counted.
    pub checked: u64,
    /// ChatBatch frames and messages in them during the hold, all clients.
    pub hold_batches: u64,
    pub hold_messages: u64,
    /// Per client, over the hold.
    pub batches_per_s: RateSummary,
    pub messages_per_s: RateSummary,
    /// Messages from sim senders the checked clients should have received (sent after their
    /// Welcome, up to the sender's cutoff, not refused), and those they did.
    pub expected: u64,
    pub received: u64,
    /// expected − received.
    pub missing: u64,
    /// Sum of `ChatBatch.dropped` the clients were told of (the room's per-tick cap).
    pub dropped_by_cap: u64,
    /// Missing messages the cap does not explain: per client, missing − dropped told,
    /// at least 0; summed, and the largest.
    pub lost: u64,
    pub lost_max_per_client: u64,
    /// A sender's id seen again or out of order (should be 0).
    pub duplicates: u64,
    /// Messages not from a sim sender (notices, gifts, other users).
    pub other_messages: u64,
}

crate::report::outcome!(ChatReport);

impl ChatReport {
    pub fn new(common: Common, config: ChatConfig) -> Self {
        ChatReport {
            scenario: "chat",
            config,
            head: common.head,
            sent: Sent::default(),
            viewers: Received::default(),
            senders: Received::default(),
            viewers_by_url: Vec::new(),
            viewer_latency_us: LatencySummary::default(),
            viewer_latency_local_us: LatencySummary::default(),
            viewer_latency_remote_us: LatencySummary::default(),
            sender_latency_us: LatencySummary::default(),
            batch_fanout_us: LatencySummary::default(),
            tail: common.tail,
            open_files: common.nofile,
        }
    }

    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let c = &self.config;
        let nodes = self.viewers_by_url.len();
        let to = if nodes > 1 {
            format!("{nodes} nodes (senders on {})", c.url)
        } else {
            c.url.clone()
        };
        let what = format!(
            "{} viewers + {} senders at {} msg/s -> {to} room {:?}",
            c.viewers, c.senders, c.rate_per_sender, c.room,
        );
        let mut t = Table::titled(self.scenario, what, &self.head);
        let s = &self.sent;
        t.row(
            "sent",
            format!(
                "{} ({:.1}/s in the hold), refused {}{}, dropped by the cap {}",
                s.messages,
                s.per_s,
                s.refused,
                counts(&s.refused_by_kind),
                s.unechoed
            ),
        );
        for (role, r) in [("viewers", &self.viewers), ("senders", &self.senders)] {
            t.row(
                &format!("{role} received"),
                format!(
                    "{} batches/s, {} msg/s per client (median; min {:.1} msg/s, {} clients)",
                    r.batches_per_s.median,
                    r.messages_per_s.median,
                    r.messages_per_s.min,
                    r.messages_per_s.clients
                ),
            );
            t.row(
                &format!("{role} loss"),
                format!(
                    "lost {} (max {} per client) of {} expected; missing {}, cap drops told {}, \
                     duplicates {} ({} checked)",
                    r.lost,
                    r.lost_max_per_client,
                    r.expected,
                    r.missing,
                    r.dropped_by_cap,
                    r.duplicates,
                    r.checked
                ),
            );
        }
        if nodes > 1 {
            for v in &self.viewers_by_url {
                let r = &v.received;
                t.row(
                    "viewers on",
                    format!(
                        "{}: {} ({} joined), lost {} of {} expected, duplicates {}",
                        v.url, v.assigned, r.clients, r.lost, r.expected, r.duplicates
                    ),
                );
            }
        }
        t.traffic(&self.tail.traffic);
        t.errors(&self.tail);
        let mut latencies = vec![("send -> viewer", &self.viewer_latency_us)];
        if nodes > 1 {
            latencies.extend([
                ("  senders' node", &self.viewer_latency_local_us),
                ("  other nodes", &self.viewer_latency_remote_us),
            ]);
        }
        latencies.extend([
            ("send -> sender", &self.sender_latency_us),
            ("tick -> viewer", &self.batch_fanout_us),
        ]);
        t.latencies(&latencies);
        t.footer(&self.tail);
        t.into_string()
    }
}
