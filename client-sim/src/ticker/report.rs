//! The ticker report: its JSON schema (the field names) and its table. The parts every
//! scenario reports come from [`Common`] and print with the shared [`Table`].

use std::collections::BTreeMap;

use serde::Serialize;

use crate::limits::NofileLimit;
use crate::report::{Common, Head, LatencySummary, RateSummary, Table, Tail, counts};

#[derive(Debug, Serialize)]
pub struct TickerReport {
    pub scenario: &'static str,
    pub config: TickerConfig,
    #[serde(flatten)]
    pub head: Head,
    pub universe: Universe,
    pub subscriptions: Subscriptions,
    pub initial_values: InitialValues,
    pub quotes: Quotes,
    /// Local Unix µs − `Quote.exchange_time_us`, per update (first values excluded).
    pub feed_latency_us: LatencySummary,
    /// Local Unix µs − `Snapshot.server_time_us`, per frame carrying an update.
    pub delivery_latency_us: LatencySummary,
    /// Subscribe sent (flow `rest`: session POST sent) → Subscriptions ack, one per client.
    pub subscribe_latency_us: LatencySummary,
    /// Ack → the last subscribed symbol's first value, per client that got all in time.
    pub initial_values_latency_us: LatencySummary,
    #[serde(flatten)]
    pub tail: Tail,
    /// The open-file limits the run had (null if unreadable).
    pub open_files: Option<NofileLimit>,
}

#[derive(Debug, Serialize)]
pub struct TickerConfig {
    pub url: String,
    pub room: String,
    /// `subscribe` (Join then Subscribe) or `rest` (POST /api/v1/sessions, then /ws?session=).
    pub flow: &'static str,
    pub clients: usize,
    pub symbols_per_client: usize,
    /// The fixed list every client subscribed to; null when each drew its own at random.
    pub symbol_list: Option<Vec<String>>,
    /// Seed of the random draws (null with a fixed list).
    pub seed: Option<u64>,
    pub ramp_per_s: f64,
    pub duration_s: f64,
    pub initial_window_ms: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Universe {
    /// Symbols the room quotes, from `GET /api/v1/quotes` before the run.
    pub symbols: Option<usize>,
    pub fetch_error: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Subscriptions {
    /// Joined clients, each of which asked for its symbols.
    pub requested: u64,
    /// Clients that got the Subscriptions ack.
    pub acked: u64,
    pub failed: u64,
    /// Error code name (`unknown_symbol`, ...), `timeout` (no ack within 5 s) or `closed`.
    pub failed_reasons: BTreeMap<String, u64>,
    pub first_failure: Option<String>,
    /// Acks whose symbol set differs from the one asked for.
    pub ack_mismatches: u64,
    /// Flow `rest`: sessions whose `ws_url` named another host than `--url` (the client
    /// connects to `--url`'s host anyway), and one such host.
    pub ws_url_other_host: u64,
    pub ws_url_other_host_example: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct InitialValues {
    pub window_ms: u64,
    /// Acked clients whose window had passed (or that had every value) when they ended.
    pub clients_checked: u64,
    /// Subscribed symbols of those clients.
    pub expected: u64,
    /// First values within the window after the ack.
    pub in_time: u64,
    /// First values after the window.
    pub late: u64,
    /// Subscribed symbols without a value within the window (late ones included).
    pub missing: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Quotes {
    /// Updates (quotes after a symbol's first value) within the clients' measurement windows.
    pub received: u64,
    /// First values (the current value after subscribing).
    pub initial: u64,
    /// Updates received during the hold, all clients; `per_s` divides by `timing.hold_s`.
    pub hold_received: u64,
    pub per_s: f64,
    /// Updates/s per client, from its ack to the end of the hold.
    pub per_client_per_s: RateSummary,
    /// Updates whose seq jumped by more than one, and the values skipped in those jumps
    /// (the server conflates: only the newest value per tick is sent).
    pub gaps: u64,
    pub skipped: u64,
    /// skipped / (received updates + skipped), in percent.
    pub conflated_pct: f64,
    /// Quotes with the same seq as the last one seen for the symbol (should be 0).
    pub duplicates: u64,
    /// Quotes with an older seq than one already seen (should be 0).
    pub reorders: u64,
    /// First values of symbols the client had not subscribed to (should be 0).
    pub unexpected_symbols: u64,
}

crate::report::outcome!(TickerReport);

impl TickerReport {
    pub fn new(common: Common, config: TickerConfig) -> Self {
        TickerReport {
            scenario: "ticker",
            config,
            head: common.head,
            universe: Universe::default(),
            subscriptions: Subscriptions::default(),
            initial_values: InitialValues::default(),
            quotes: Quotes::default(),
            feed_latency_us: LatencySummary::default(),
            delivery_latency_us: LatencySummary::default(),
            subscribe_latency_us: LatencySummary::default(),
            initial_values_latency_us: LatencySummary::default(),
            tail: common.tail,
            open_files: common.nofile,
        }
    }

    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let c = &self.config;
        let choice = match (&c.symbol_list, c.seed) {
            (Some(_), _) => "a fixed list".to_owned(),
            (None, seed) => format!(
                "random of {}, seed {}",
                self.universe.symbols.map_or("?".into(), |n| n.to_string()),
                seed.unwrap_or_default()
            ),
        };
        let what = format!(
            "{} clients -> {} room {:?}, flow {}, {} symbols each ({choice})",
            c.clients, c.url, c.room, c.flow, c.symbols_per_client,
        );
        let mut t = Table::titled(self.scenario, what, &self.head);
        let (s, i, q) = (&self.subscriptions, &self.initial_values, &self.quotes);
        t.row(
            "subscriptions",
            format!(
                "acked {}/{}, failed {}{}, ack mismatches {}",
                s.acked,
                s.requested,
                s.failed,
                counts(&s.failed_reasons),
                s.ack_mismatches
            ),
        );
        if let Some(e) = &s.first_failure {
            t.row("first subscribe err", e);
        }
        if let Some(host) = &s.ws_url_other_host_example {
            let n = s.ws_url_other_host;
            t.row(
                "session ws_url",
                format!("{n} named host {host:?}, not --url's"),
            );
        }
        for (label, value) in [
            (
                "initial values",
                format!(
                    "{}/{} within {} ms of the ack, late {}, missing {} ({} clients checked)",
                    i.in_time, i.expected, i.window_ms, i.late, i.missing, i.clients_checked
                ),
            ),
            (
                "updates/s",
                format!(
                    "{:.0} in all; per client {}",
                    q.per_s,
                    q.per_client_per_s.describe(self.head.tick_rate_hz)
                ),
            ),
            (
                "quotes",
                format!(
                    "{} updates + {} first values; {} gaps skipping {} values ({:.2} % conflated)",
                    q.received, q.initial, q.gaps, q.skipped, q.conflated_pct
                ),
            ),
            (
                "quote order",
                format!(
                    "reorders {}, duplicates {}, unexpected symbols {}",
                    q.reorders, q.duplicates, q.unexpected_symbols
                ),
            ),
        ] {
            t.row(label, value);
        }
        t.traffic(&self.tail.traffic);
        t.errors(&self.tail);
        t.latencies(&[
            ("feed -> client", &self.feed_latency_us),
            ("server -> client", &self.delivery_latency_us),
            ("subscribe -> ack", &self.subscribe_latency_us),
            ("ack -> all values", &self.initial_values_latency_us),
        ]);
        t.footer(&self.tail);
        t.into_string()
    }
}
