//! The ticker room: a price feed as a stream of replicated objects.
//!
//! Each symbol is an object and its own interest group. Feed updates arrive as commands and
//! only mark symbols changed; each tick encodes every changed symbol once and the engine hands
//! that frame to the symbol's subscribers, whose outboxes keep only the newest frame per
//! symbol. A slow client therefore gets the newest value of each symbol when it can take
//! more, never history, and its memory is bounded by its subscription count. The last frame of
//! each symbol is kept, so a new subscriber gets the current value without a new encode;
//! symbols nobody subscribes to are not encoded at all until someone does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use tickroom_proto::v1::{
    ErrorCode, Object, Quote, RoomKind, Snapshot, Subscriptions, Welcome, client_message::Body,
    object::State, server_message::Body as ServerBody,
};

use crate::engine::{
    CommandError, GroupId, JoinRequest, LeaveReason, RoomCore, SessionId, Simulation,
};
use crate::feed::{FeedConfig, QuoteUpdate, SymbolSpec};

/// Most unknown names an error message lists before it says "and N more".
const NAMES_IN_ERRORS: usize = 10;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct TickerConfig {
    pub tick_hz: u32,
    /// Symbols one session may subscribe to at once.
    pub max_symbols_per_session: u32,
    pub feed: FeedConfig,
}

impl Default for TickerConfig {
    fn default() -> Self {
        Self {
            tick_hz: 20,
            max_symbols_per_session: 500,
            feed: FeedConfig::default(),
        }
    }
}

impl TickerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.tick_hz) {
            return Err("tick_hz must be 1..=1000".into());
        }
        if self.max_symbols_per_session == 0 {
            return Err("max_symbols_per_session must be > 0".into());
        }
        Ok(())
    }
}

/// A ticker room's symbols by name and number, fixed for the room's life. Shared with the
/// HTTP API, which checks names without asking the room thread.
#[derive(Debug)]
pub struct SymbolTable {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl SymbolTable {
    pub fn new(specs: &[SymbolSpec]) -> Self {
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Self { names, index }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, symbol: u32) -> &str {
        &self.names[symbol as usize]
    }

    /// Symbol numbers of `names` (duplicates kept), or every name that is not a symbol here.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<u32>, Vec<String>> {
        let mut unknown = Vec::new();
        let mut ids = Vec::with_capacity(names.len());
        for n in names {
            match self.index.get(n.as_ref()) {
                Some(&i) => ids.push(i),
                None => unknown.push(n.as_ref().to_owned()),
            }
        }
        if unknown.is_empty() {
            Ok(ids)
        } else {
            Err(unknown)
        }
    }
}

/// What a ticker room takes from outside its sessions.
pub enum TickerEvent {
    /// New values from the room's feed, in feed order.
    Quotes(Vec<QuoteUpdate>),
    /// A question about the current values (`GET /api/v1/quotes`), answered on the room
    /// thread so the answer is as consistent as a tick: the listed symbol numbers, or all.
    Query {
        symbols: Option<Vec<u32>>,
        reply: QuotesReply,
    },
}

/// Receives the answer to [`TickerEvent::Query`] on the room's thread.
pub type QuotesReply = Box<dyn FnOnce(Vec<Quote>) + Send>;

impl std::fmt::Debug for TickerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TickerEvent::Quotes(batch) => write!(f, "Quotes({} updates)", batch.len()),
            TickerEvent::Query { symbols, .. } => {
                f.debug_struct("Query").field("symbols", symbols).finish()
            }
        }
    }
}

fn round_to(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

/// "A, B, C and 4 more": a readable list of names for an error message.
pub fn name_list(names: &[String]) -> String {
    let shown = names
        .iter()
        .take(NAMES_IN_ERRORS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    match names.len().saturating_sub(NAMES_IN_ERRORS) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

#[derive(Debug)]
struct Symbol {
    quote: Quote,
    prev_close: f64,
    /// The last encoded snapshot of this symbol; `None` until first needed.
    frame: Option<Bytes>,
    changed: bool,
}

/// See the module docs.
#[derive(Debug)]
pub struct TickerRoom {
    table: Arc<SymbolTable>,
    symbols: Vec<Symbol>,
    changed: Vec<u32>,
    max_per_session: usize,
    /// Reused for every symbol's snapshot: one object, its quote swapped in and out.
    scratch: Snapshot,
}

impl TickerRoom {
    /// A room quoting `specs` (the feed's symbols, in the feed's order). Before its first
    /// update a symbol's value is its previous close, with `seq` 0.
    pub fn new(config: &TickerConfig, specs: &[SymbolSpec]) -> Self {
        let table = Arc::new(SymbolTable::new(specs));
        let symbols = specs
            .iter()
            .map(|s| Symbol {
                quote: Quote {
                    symbol: s.name.clone(),
                    last: s.prev_close,
                    bid: s.prev_close,
                    ask: s.prev_close,
                    ..Default::default()
                },
                prev_close: s.prev_close,
                frame: None,
                changed: false,
            })
            .collect();
        Self {
            table,
            symbols,
            changed: Vec::new(),
            max_per_session: config.max_symbols_per_session as usize,
            scratch: Snapshot {
                view: None,
                server_time_us: 0,
                objects: vec![Object::default()],
            },
        }
    }

    pub fn symbol_table(&self) -> Arc<SymbolTable> {
        self.table.clone()
    }

    /// The current quote of `symbol`.
    pub fn quote(&self, symbol: u32) -> &Quote {
        &self.symbols[symbol as usize].quote
    }

    fn apply(&mut self, u: &QuoteUpdate) {
        let Some(s) = self.symbols.get_mut(u.symbol as usize) else {
            tracing::warn!(symbol = u.symbol, "feed update for a symbol out of range");
            return;
        };
        let q = &mut s.quote;
        q.seq = if u.seq > 0 { u.seq } else { q.seq + 1 };
        q.last = u.last;
        q.bid = u.bid;
        q.ask = u.ask;
        q.volume = u.volume;
        q.exchange_time_us = u.exchange_time_us;
        // Rounded so that float noise (0.1 + 0.2) does not show up in the figures.
        q.day_change = round_to(u.last - s.prev_close, 1e4);
        q.day_change_pct = round_to((u.last - s.prev_close) / s.prev_close * 100.0, 1e4);
        if !s.changed {
            s.changed = true;
            self.changed.push(u.symbol);
        }
    }

    /// Encodes `symbol`'s current quote as a one-object snapshot.
    fn encode(&mut self, ctx: &mut RoomCore, symbol: u32, publish: bool) -> Bytes {
        let s = &mut self.symbols[symbol as usize];
        let obj = &mut self.scratch.objects[0];
        obj.id = symbol + 1;
        obj.state = Some(State::Quote(std::mem::take(&mut s.quote)));
        self.scratch.server_time_us = ctx.now_us();
        let frame = if publish {
            ctx.publish_snapshot(symbol as GroupId, &self.scratch)
        } else {
            ctx.encode_snapshot(&self.scratch)
        };
        if let Some(State::Quote(q)) = self.scratch.objects[0].state.take() {
            s.quote = q;
        }
        s.frame = Some(frame.clone());
        frame
    }

    fn subscriptions(&self, ctx: &RoomCore, session: SessionId) -> ServerBody {
        ServerBody::Subscriptions(Subscriptions {
            symbols: ctx
                .groups_of(session)
                .iter()
                .map(|&g| self.table.name(g).to_owned())
                .collect(),
        })
    }

    fn resolve(&self, names: &[String]) -> Result<Vec<u32>, CommandError> {
        self.table.resolve(names).map_err(|unknown| {
            CommandError::new(
                ErrorCode::UnknownSymbol,
                format!("unknown symbols: {}", name_list(&unknown)),
            )
        })
    }

    fn subscribe(
        &mut self,
        ctx: &mut RoomCore,
        session: SessionId,
        names: &[String],
    ) -> Result<(), CommandError> {
        if names.is_empty() {
            return Err(CommandError::new(
                ErrorCode::InvalidArgument,
                "subscribe: list at least one symbol",
            ));
        }
        // New symbols in the order the client listed them, each once.
        let mut seen: HashSet<u32> = ctx.groups_of(session).iter().copied().collect();
        let current = seen.len();
        let ordered: Vec<u32> = self
            .resolve(names)?
            .into_iter()
            .filter(|id| seen.insert(*id))
            .collect();
        if current + ordered.len() > self.max_per_session {
            return Err(CommandError::new(
                ErrorCode::LimitExceeded,
                format!(
                    "subscribe: {} symbols would exceed the limit of {} per session",
                    current + ordered.len(),
                    self.max_per_session
                ),
            ));
        }
        for &id in &ordered {
            ctx.subscribe(session, id as GroupId);
        }
        let ack = self.subscriptions(ctx, session);
        ctx.send_to(session, ack);
        for id in ordered {
            let s = &self.symbols[id as usize];
            // A symbol that changed this tick reaches the new subscriber in this tick's
            // hand-out; sending its value now as well would deliver the same seq twice.
            if s.changed {
                continue;
            }
            let frame = match &s.frame {
                Some(f) => f.clone(),
                None => self.encode(ctx, id, false),
            };
            ctx.send_snapshot_to(session, id as GroupId, &frame);
        }
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        ctx: &mut RoomCore,
        session: SessionId,
        names: &[String],
    ) -> Result<(), CommandError> {
        let ids = if names.is_empty() {
            ctx.groups_of(session).to_vec()
        } else {
            self.resolve(names)?
        };
        for id in ids {
            ctx.unsubscribe(session, id as GroupId);
        }
        let ack = self.subscriptions(ctx, session);
        ctx.send_to(session, ack);
        Ok(())
    }
}

impl Simulation for TickerRoom {
    type Event = TickerEvent;

    fn kind(&self) -> RoomKind {
        RoomKind::Ticker
    }

    fn join(&mut self, _: &mut RoomCore, _: &JoinRequest) -> Result<Welcome, CommandError> {
        Ok(Welcome::default())
    }

    // Subscriptions are interest groups of the engine, which drops them with the member.
    fn leave(&mut self, _: &mut RoomCore, _: SessionId, _: LeaveReason) {}

    fn command(
        &mut self,
        ctx: &mut RoomCore,
        session: SessionId,
        body: Body,
    ) -> Result<(), CommandError> {
        match body {
            Body::Subscribe(s) => self.subscribe(ctx, session, &s.symbols),
            Body::Unsubscribe(u) => self.unsubscribe(ctx, session, &u.symbols),
            _ => Err(CommandError::new(
                ErrorCode::UnknownMessage,
                "a ticker room takes Subscribe and Unsubscribe",
            )),
        }
    }

    fn step(&mut self, _: &mut RoomCore) {}

    fn replicate(&mut self, ctx: &mut RoomCore) {
        let changed = std::mem::take(&mut self.changed);
        for &id in &changed {
            let s = &mut self.symbols[id as usize];
            s.changed = false;
            if ctx.has_members(id as GroupId) {
                self.encode(ctx, id, true);
            } else {
                // Nobody to send it to: a later subscriber gets it encoded then.
                s.frame = None;
            }
        }
        self.changed = changed;
        self.changed.clear();
    }

    fn event(&mut self, _: &mut RoomCore, event: TickerEvent) {
        match event {
            TickerEvent::Quotes(batch) => {
                for u in &batch {
                    self.apply(u);
                }
            }
            TickerEvent::Query { symbols, reply } => {
                let quotes = match symbols {
                    Some(ids) => ids.iter().map(|&i| self.quote(i).clone()).collect(),
                    None => self.symbols.iter().map(|s| s.quote.clone()).collect(),
                };
                reply(quotes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{Probe, TestDriver};
    use crate::engine::{Command, SessionCommand};
    use tickroom_proto::v1::{Subscribe, Unsubscribe};

    fn specs(n: usize) -> Vec<SymbolSpec> {
        (0..n)
            .map(|i| SymbolSpec {
                name: format!("S{i}"),
                prev_close: 100.0 + i as f64,
            })
            .collect()
    }

    fn room(n: usize) -> TestDriver<TickerRoom> {
        let cfg = TickerConfig {
            max_symbols_per_session: 200,
            ..Default::default()
        };
        TestDriver::new("t", 20, TickerRoom::new(&cfg, &specs(n)))
    }

    fn join(room: &mut TestDriver<TickerRoom>, session: SessionId, cap: usize) -> Probe {
        room.join_new(session, "", "", cap)
    }

    fn send(room: &mut TestDriver<TickerRoom>, session: SessionId, body: Body) {
        room.session(SessionCommand::Client { session, body });
    }

    fn subscribe(names: &[&str]) -> Body {
        Body::Subscribe(Subscribe {
            symbols: names.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn update(symbol: u32, last: f64) -> QuoteUpdate {
        QuoteUpdate {
            symbol,
            last,
            bid: last - 0.01,
            ask: last + 0.01,
            volume: 100,
            exchange_time_us: 7,
            seq: 0,
        }
    }

    fn feed(room: &mut TestDriver<TickerRoom>, updates: Vec<QuoteUpdate>) {
        room.handle(Command::Event(TickerEvent::Quotes(updates)));
    }

    fn tick(room: &mut TestDriver<TickerRoom>, n: u64) {
        room.begin_tick(n, n as i64 * 1000);
        room.run_tick();
    }

    fn drain(o: &Probe) -> Vec<ServerBody> {
        o.take_decoded()
    }

    fn quotes(bodies: &[ServerBody]) -> Vec<(String, u64, f64)> {
        bodies
            .iter()
            .filter_map(|b| match b {
                ServerBody::Snapshot(s) => Some(s),
                _ => None,
            })
            .flat_map(|s| &s.objects)
            .map(|o| match &o.state {
                Some(State::Quote(q)) => (q.symbol.clone(), q.seq, q.last),
                other => panic!("not a quote: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn subscribe_gives_current_values_then_changes_only() {
        let mut r = room(5);
        let o = join(&mut r, 1, 64);
        feed(&mut r, vec![update(2, 105.0)]);
        tick(&mut r, 1);
        drain(&o);
        send(&mut r, 1, subscribe(&["S2", "S0"]));
        let got = drain(&o);
        assert!(
            matches!(&got[0], ServerBody::Subscriptions(s) if s.symbols == ["S2", "S0"]),
            "{got:?}"
        );
        assert_eq!(
            quotes(&got[1..]),
            [("S2".into(), 1, 105.0), ("S0".into(), 0, 100.0)]
        );
        // S3 changes but is not subscribed; S0 changes twice in one tick: only the newest.
        feed(
            &mut r,
            vec![update(3, 1.0), update(0, 99.0), update(0, 98.5)],
        );
        tick(&mut r, 2);
        assert_eq!(quotes(&drain(&o)), [("S0".into(), 2, 98.5)]);
        tick(&mut r, 3);
        assert!(drain(&o).is_empty(), "a tick without changes sends nothing");
    }

    #[test]
    fn symbols_without_subscribers_are_not_encoded_until_someone_subscribes() {
        let mut r = room(3);
        let o = join(&mut r, 1, 64);
        drain(&o);
        let before = r.core().encodes();
        for t in 1..=5 {
            feed(&mut r, vec![update(0, 100.0 + t as f64), update(1, 7.0)]);
            tick(&mut r, t);
        }
        assert_eq!(r.core().encodes(), before, "no subscriber, no encode");
        send(&mut r, 1, subscribe(&["S0"]));
        let got = quotes(&drain(&o));
        assert_eq!(
            got,
            [("S0".into(), 5, 105.0)],
            "the current value, encoded on demand"
        );
        feed(&mut r, vec![update(0, 106.0), update(1, 8.0)]);
        tick(&mut r, 6);
        assert_eq!(quotes(&drain(&o)), [("S0".into(), 6, 106.0)]);
    }

    #[test]
    fn a_symbol_changed_in_the_subscribing_tick_arrives_once() {
        let mut r = room(2);
        let o = join(&mut r, 1, 64);
        feed(&mut r, vec![update(0, 101.0)]);
        send(&mut r, 1, subscribe(&["S0", "S1"]));
        tick(&mut r, 1);
        let got = quotes(&drain(&o));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.contains(&("S0".into(), 1, 101.0)));
        assert!(got.contains(&("S1".into(), 0, 101.0)));
    }

    #[test]
    fn a_changed_symbol_is_encoded_once_for_all_subscribers() {
        let mut r = room(3);
        let outboxes: Vec<_> = (1..=50).map(|s| join(&mut r, s, 64)).collect();
        for s in 1..=50 {
            send(&mut r, s, subscribe(&["S1"]));
        }
        tick(&mut r, 1);
        outboxes.iter().for_each(|o| drop(drain(o)));
        let before = r.core().encodes();
        feed(&mut r, vec![update(1, 120.0)]);
        tick(&mut r, 2);
        assert_eq!(r.core().encodes() - before, 1);
        let mut frames = Vec::new();
        for o in &outboxes {
            let mut v = Vec::new();
            o.take(&mut v);
            assert_eq!(v.len(), 1);
            frames.push(v.pop().unwrap());
        }
        assert!(frames.windows(2).all(|w| w[0].as_ptr() == w[1].as_ptr()));
    }

    #[test]
    fn unsubscribe_stops_updates_and_bad_requests_change_nothing() {
        let mut r = room(4);
        let o = join(&mut r, 1, 64);
        send(&mut r, 1, subscribe(&["S0", "S1"]));
        drain(&o);
        send(&mut r, 1, subscribe(&["S2", "NOPE", "ALSO"]));
        let got = drain(&o);
        assert!(
            matches!(&got[..], [ServerBody::Error(e)]
                if e.code == ErrorCode::UnknownSymbol as i32 && e.message.contains("NOPE, ALSO")),
            "{got:?}"
        );
        send(
            &mut r,
            1,
            Body::Unsubscribe(Unsubscribe {
                symbols: vec!["S0".into()],
            }),
        );
        assert!(matches!(&drain(&o)[..], [ServerBody::Subscriptions(s)] if s.symbols == ["S1"]));
        feed(&mut r, vec![update(0, 1.0), update(1, 2.0), update(2, 3.0)]);
        tick(&mut r, 1);
        assert_eq!(quotes(&drain(&o)), [("S1".into(), 1, 2.0)]);
        send(
            &mut r,
            1,
            Body::Unsubscribe(Unsubscribe { symbols: vec![] }),
        );
        assert!(matches!(&drain(&o)[..], [ServerBody::Subscriptions(s)] if s.symbols.is_empty()));
    }

    #[test]
    fn the_symbol_limit_is_all_or_nothing() {
        let mut r = room(300);
        let o = join(&mut r, 1, 64);
        let names: Vec<String> = (0..150).map(|i| format!("S{i}")).collect();
        send(&mut r, 1, Body::Subscribe(Subscribe { symbols: names }));
        drain(&o);
        let more: Vec<String> = (100..251).map(|i| format!("S{i}")).collect();
        send(&mut r, 1, Body::Subscribe(Subscribe { symbols: more }));
        let got = drain(&o);
        assert!(
            matches!(&got[..], [ServerBody::Error(e)] if e.code == ErrorCode::LimitExceeded as i32),
            "{got:?}"
        );
        assert_eq!(r.core().groups_of(1).len(), 150);
    }

    #[test]
    fn a_client_that_never_reads_holds_one_frame_per_symbol_and_the_newest_values() {
        let mut r = room(200);
        let o = join(&mut r, 1, 8);
        let names: Vec<String> = (0..200).map(|i| format!("S{i}")).collect();
        send(&mut r, 1, Body::Subscribe(Subscribe { symbols: names }));
        for t in 1..=250u64 {
            let batch = (0..200).map(|s| update(s, t as f64)).collect();
            feed(&mut r, batch);
            tick(&mut r, t);
            // Welcome and the Subscriptions ack are the only reliable frames.
            assert!(o.len() <= 200 + 2, "tick {t}: {} frames pending", o.len());
        }
        let got = quotes(&drain(&o));
        assert_eq!(got.len(), 200);
        assert!(
            got.iter()
                .all(|(_, seq, last)| *seq == 250 && *last == 250.0)
        );
    }

    #[test]
    fn quotes_are_answered_from_the_room() {
        let mut r = room(3);
        feed(&mut r, vec![update(1, 101.5)]);
        let (tx, rx) = std::sync::mpsc::channel();
        r.handle(Command::Event(TickerEvent::Query {
            symbols: Some(vec![1]),
            reply: Box::new(move |q| tx.send(q).unwrap()),
        }));
        let q = rx.try_recv().expect("answered during the command");
        assert_eq!(q.len(), 1);
        assert_eq!((q[0].seq, q[0].last), (1, 101.5));
        assert_eq!(q[0].day_change, 0.5);
        assert_eq!(
            q[0].day_change_pct, 0.495,
            "0.5 / 101 as a percentage, 4 decimals"
        );
    }

    #[test]
    fn unknown_names_are_listed_briefly() {
        let names: Vec<String> = (0..13).map(|i| format!("X{i}")).collect();
        assert!(name_list(&names).ends_with("X9 and 3 more"));
        assert_eq!(name_list(&names[..2]), "X0, X1");
    }
}
