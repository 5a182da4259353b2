//! The chat ("danmu") room: very many viewers, short messages everyone sees.
//!
//! Sends are commands, checked on arrival (name, block list, length, per-session rate, word
//! filter). Each tick the room batches everything it accepted into ONE reliable `ChatBatch`,
//! encoded once and handed to every viewer, so fan-out costs the same whatever the message
//! count; a tick with nothing to say sends nothing. A per-tick cap drops the oldest viewer
//! messages of a flood (counted, and told to viewers in the batch); notices and gifts from the
//! admin API are not capped and go out in the next batch, marked as such.
//!
//! In a cluster the room is one node's shard: what it accepted in a tick also goes to its
//! relay (published once for the other shards), and the other shards' messages come back as
//! [`ChatEvent::Relayed`], merged into the next batch under the same per-tick cap, so no
//! viewer gets more than the cap per tick however many nodes there are.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use tickroom_proto::v1::{
    ChatBatch, ChatKind, ChatMessage, ChatSend, ErrorCode, RoomKind, Welcome, client_message::Body,
    server_message::Body as ServerBody,
};

use crate::engine::{
    CommandError, GroupId, JoinRequest, LeaveReason, RoomCore, SessionId, Simulation,
};
use crate::moderation::{
    BlockLists, FilterError, FilterPolicy, WordFilter, has_bidi_controls, normalize,
};
use crate::rate_limit::TokenBucket;

/// Every viewer is in the one group.
pub const VIEWERS: GroupId = 0;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChatConfig {
    pub tick_hz: u32,
    /// Viewer messages broadcast per tick; beyond it the oldest of the tick are dropped.
    pub max_messages_per_tick: u32,
    /// Longest message, in characters.
    pub max_message_chars: u32,
    /// Per-session send rate and burst.
    pub send_rate_per_sec: f64,
    pub send_burst: u32,
    pub max_viewers: u32,
    /// What a message with a listed word gets: `mask` or `reject`.
    pub filter_policy: FilterPolicy,
    /// Listed words, in addition to those of `words_file`.
    pub blocked_words: Vec<String>,
    /// A word list file: one word or phrase per line, `#` comments.
    pub words_file: Option<PathBuf>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            tick_hz: 10,
            max_messages_per_tick: 100,
            max_message_chars: 200,
            send_rate_per_sec: 2.0,
            send_burst: 5,
            max_viewers: 100_000,
            filter_policy: FilterPolicy::Mask,
            blocked_words: Vec::new(),
            words_file: None,
        }
    }
}

impl ChatConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.tick_hz) {
            return Err("tick_hz must be 1..=1000".into());
        }
        if self.max_messages_per_tick == 0 || self.max_message_chars == 0 || self.max_viewers == 0 {
            return Err(
                "max_messages_per_tick, max_message_chars and max_viewers must be > 0".into(),
            );
        }
        if !(self.send_rate_per_sec.is_finite() && self.send_rate_per_sec > 0.0)
            || self.send_burst == 0
        {
            return Err("send_rate_per_sec and send_burst must be > 0".into());
        }
        Ok(())
    }

    /// The word filter: `blocked_words` plus the file's words.
    pub fn word_filter(&self) -> Result<WordFilter, FilterError> {
        let mut words = self.blocked_words.clone();
        if let Some(path) = &self.words_file {
            words.extend(WordFilter::read_list(path)?);
        }
        WordFilter::new(words)
    }
}

#[derive(Debug)]
struct Viewer {
    /// `None` for an anonymous, read-only viewer.
    name: Option<Arc<str>>,
    bucket: TokenBucket,
    last_send_us: i64,
}

/// See the module docs.
#[derive(Debug)]
pub struct ChatRoom {
    config: ChatConfig,
    filter: WordFilter,
    blocks: Arc<BlockLists>,
    viewers: HashMap<SessionId, Viewer>,
    /// Accepted this tick, in order, each marked true when this shard accepted it (false:
    /// relayed from another node); ids are given when the batch is built.
    pending: VecDeque<(ChatMessage, bool)>,
    /// Where this shard's own messages go once per tick, in a cluster.
    relay: Option<Box<dyn Relay>>,
    /// Viewer messages in `pending` (notices and gifts are not capped).
    pending_user: usize,
    dropped: u32,
    next_id: u64,
    broadcast_total: u64,
    dropped_total: u64,
    counters: ChatCounters,
}

/// Takes a shard's accepted messages once per tick, for the other nodes (never blocks).
pub trait Relay: Send + 'static {
    fn send(&mut self, messages: Vec<ChatMessage>);
}

impl std::fmt::Debug for dyn Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay")
    }
}

impl<F: FnMut(Vec<ChatMessage>) + Send + 'static> Relay for F {
    fn send(&mut self, messages: Vec<ChatMessage>) {
        self(messages)
    }
}

/// What a chat room takes from outside its sessions (the admin API, other nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatEvent {
    /// Messages other nodes' shards accepted, in their order; merged into the next batch.
    Relayed(Vec<ChatMessage>),
    /// A system notice, in the next batch.
    Notice { text: String },
    /// A gift announcement, in the next batch.
    Gift {
        from: String,
        gift: String,
        count: u32,
    },
}

/// Where a chat room counts its messages: broadcast, dropped by the per-tick cap, and held
/// back because their sender was blocked after they were accepted. Handles of whichever
/// metrics recorder the server gives (no-ops by default).
#[derive(Debug, Clone)]
pub struct ChatCounters {
    pub broadcast: ::metrics::Counter,
    pub dropped_cap: ::metrics::Counter,
    pub blocked: ::metrics::Counter,
}

impl Default for ChatCounters {
    fn default() -> Self {
        Self {
            broadcast: ::metrics::Counter::noop(),
            dropped_cap: ::metrics::Counter::noop(),
            blocked: ::metrics::Counter::noop(),
        }
    }
}

/// Checks a display name: trimmed, 1–32 characters, no control characters.
fn check_name(name: &str) -> Result<Option<Arc<str>>, CommandError> {
    // Empty: an anonymous viewer.
    if name.is_empty() {
        return Ok(None);
    }
    let refuse = || {
        CommandError::new(
            ErrorCode::InvalidArgument,
            format!(
                "join: name must be 1-{MAX_NAME_CHARS} visible characters, without control or \
                 bidi characters"
            ),
        )
    };
    if name.chars().any(char::is_control) || has_bidi_controls(name) {
        return Err(refuse());
    }
    // Compared and shown as normalized: `troll\u{200b}` is `troll`.
    let normalized = normalize(name);
    let name = normalized.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(refuse());
    }
    Ok(Some(name.into()))
}

impl ChatRoom {
    pub fn new(config: ChatConfig, filter: WordFilter, blocks: Arc<BlockLists>) -> Self {
        Self {
            config,
            filter,
            blocks,
            viewers: HashMap::default(),
            pending: VecDeque::new(),
            relay: None,
            pending_user: 0,
            dropped: 0,
            next_id: 1,
            broadcast_total: 0,
            dropped_total: 0,
            counters: ChatCounters::default(),
        }
    }

    /// Counts messages on these counters from now on.
    pub fn with_counters(mut self, counters: ChatCounters) -> Self {
        self.counters = counters;
        self
    }

    /// Sends this shard's accepted messages to `relay` once per tick, from now on.
    pub fn with_relay(mut self, relay: impl Relay) -> Self {
        self.relay = Some(Box::new(relay));
        self
    }

    /// Messages broadcast and dropped by the cap since the room started.
    pub fn totals(&self) -> (u64, u64) {
        (self.broadcast_total, self.dropped_total)
    }

    fn send(
        &mut self,
        now_us: i64,
        session: SessionId,
        send: ChatSend,
    ) -> Result<(), CommandError> {
        let Some(viewer) = self.viewers.get_mut(&session) else {
            // The engine forwards commands of members only; a viewer is made on join.
            return Err(CommandError::new(
                ErrorCode::NotInRoom,
                "join the room first",
            ));
        };
        let Some(name) = viewer.name.clone() else {
            return Err(CommandError::new(
                ErrorCode::NameRequired,
                "join with a name to send; anonymous viewers only read",
            ));
        };
        if self.blocks.user_blocked(&name) {
            return Err(CommandError::new(
                ErrorCode::Blocked,
                "you are blocked from sending in this server",
            ));
        }
        // Checked, filtered and sent as normalized: `bad\u{200b}word` is `badword`.
        let text = normalize(&send.text);
        let chars = text.chars().count();
        if text.trim().is_empty() {
            return Err(CommandError::new(
                ErrorCode::InvalidArgument,
                "chat: text is empty",
            ));
        }
        if chars > self.config.max_message_chars as usize {
            return Err(CommandError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "chat: message is {chars} characters; the limit is {}",
                    self.config.max_message_chars
                ),
            ));
        }
        let elapsed = (now_us - viewer.last_send_us) as f64 / 1e6;
        viewer.last_send_us = now_us;
        if !viewer.bucket.take(elapsed) {
            return Err(CommandError::new(
                ErrorCode::RateLimited,
                format!(
                    "chat: at most {} messages per second",
                    self.config.send_rate_per_sec
                ),
            ));
        }
        let text = match self.config.filter_policy {
            FilterPolicy::Reject if self.filter.matches(&text) => {
                return Err(CommandError::new(
                    ErrorCode::ContentRejected,
                    "chat: the message contains words this room does not allow",
                ));
            }
            FilterPolicy::Reject => text,
            FilterPolicy::Mask => self.filter.mask(&text).unwrap_or(text),
        };
        self.push(
            ChatMessage {
                kind: ChatKind::User as i32,
                from: name.to_string(),
                text,
                server_time_us: now_us,
                client_msg_id: send.client_msg_id,
                sent_time_us: send.sent_time_us,
                ..Default::default()
            },
            true,
        );
        Ok(())
    }

    fn push(&mut self, msg: ChatMessage, local: bool) {
        let user = msg.kind == ChatKind::User as i32;
        self.pending.push_back((msg, local));
        if !user {
            return;
        }
        self.pending_user += 1;
        if self.pending_user > self.config.max_messages_per_tick as usize {
            // A flood must not bury what came last: the oldest viewer message goes.
            if let Some(pos) = self
                .pending
                .iter()
                .position(|(m, _)| m.kind == ChatKind::User as i32)
            {
                self.pending.remove(pos);
                self.pending_user -= 1;
                self.dropped += 1;
            }
        }
    }
}

impl Simulation for ChatRoom {
    type Event = ChatEvent;

    fn kind(&self) -> RoomKind {
        RoomKind::Chat
    }

    fn join(&mut self, ctx: &mut RoomCore, join: &JoinRequest) -> Result<Welcome, CommandError> {
        if self.viewers.len() >= self.config.max_viewers as usize {
            return Err(CommandError::new(
                ErrorCode::RoomFull,
                format!("room is full ({} viewers)", self.config.max_viewers),
            ));
        }
        let name = check_name(&join.name)?;
        self.viewers.insert(
            join.session,
            Viewer {
                name,
                bucket: TokenBucket::new(
                    self.config.send_rate_per_sec,
                    f64::from(self.config.send_burst),
                ),
                last_send_us: ctx.now_us(),
            },
        );
        ctx.subscribe(join.session, VIEWERS);
        Ok(Welcome::default())
    }

    fn leave(&mut self, _: &mut RoomCore, session: SessionId, _: LeaveReason) {
        self.viewers.remove(&session);
    }

    fn command(
        &mut self,
        ctx: &mut RoomCore,
        session: SessionId,
        body: Body,
    ) -> Result<(), CommandError> {
        match body {
            Body::ChatSend(send) => self.send(ctx.now_us(), session, send),
            _ => Err(CommandError::new(
                ErrorCode::UnknownMessage,
                "a chat room takes ChatSend",
            )),
        }
    }

    fn step(&mut self, _: &mut RoomCore) {}

    fn replicate(&mut self, ctx: &mut RoomCore) {
        // A block that arrived after a message was accepted still keeps it off the air.
        let blocks = &self.blocks;
        let before = self.pending.len();
        self.pending
            .retain(|(m, _)| m.kind != ChatKind::User as i32 || !blocks.user_blocked(&m.from));
        let removed = before - self.pending.len();
        if self.pending.is_empty() && self.dropped == 0 {
            return;
        }
        if let Some(relay) = &mut self.relay {
            let own: Vec<ChatMessage> = self
                .pending
                .iter()
                .filter(|(_, local)| *local)
                .map(|(m, _)| m.clone())
                .collect();
            if !own.is_empty() {
                relay.send(own);
            }
        }
        let mut messages: Vec<ChatMessage> = self.pending.drain(..).map(|(m, _)| m).collect();
        for m in &mut messages {
            m.id = self.next_id;
            self.next_id += 1;
        }
        let count = messages.len() as u64;
        let dropped = self.dropped;
        self.broadcast_total += count;
        self.dropped_total += u64::from(dropped);
        self.counters.broadcast.increment(count);
        self.counters.dropped_cap.increment(u64::from(dropped));
        self.counters.blocked.increment(removed as u64);
        ctx.broadcast(
            VIEWERS,
            ServerBody::ChatBatch(ChatBatch { messages, dropped }),
        );
        self.pending_user = 0;
        self.dropped = 0;
    }

    fn event(&mut self, ctx: &mut RoomCore, event: ChatEvent) {
        let now_us = ctx.now_us();
        match event {
            ChatEvent::Relayed(messages) => {
                for m in messages {
                    self.push(m, false);
                }
            }
            ChatEvent::Notice { text } => self.push(
                ChatMessage {
                    kind: ChatKind::Notice as i32,
                    text,
                    server_time_us: now_us,
                    ..Default::default()
                },
                true,
            ),
            ChatEvent::Gift { from, gift, count } => self.push(
                ChatMessage {
                    kind: ChatKind::Gift as i32,
                    from,
                    gift,
                    gift_count: count,
                    server_time_us: now_us,
                    ..Default::default()
                },
                true,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{Probe, TestDriver};
    use crate::engine::{Command, SessionCommand};
    use prost::Message;
    use tickroom_proto::v1::ServerMessage;

    fn room_with(config: ChatConfig, words: &[&str]) -> (TestDriver<ChatRoom>, Arc<BlockLists>) {
        let blocks = Arc::new(BlockLists::default());
        let filter = WordFilter::new(words.iter().copied()).unwrap();
        let tick_hz = config.tick_hz;
        let sim = ChatRoom::new(config, filter, blocks.clone());
        (TestDriver::new("chat", tick_hz, sim), blocks)
    }

    fn room() -> (TestDriver<ChatRoom>, Arc<BlockLists>) {
        room_with(ChatConfig::default(), &["darn", "笨蛋"])
    }

    fn join(room: &mut TestDriver<ChatRoom>, session: SessionId, name: &str) -> Probe {
        room.join_new(session, name, "", 256)
    }

    fn say(room: &mut TestDriver<ChatRoom>, session: SessionId, text: &str) {
        room.session(SessionCommand::Client {
            session,
            body: Body::ChatSend(ChatSend {
                text: text.into(),
                ..Default::default()
            }),
        });
    }

    fn tick(room: &mut TestDriver<ChatRoom>, n: u64) {
        room.begin_tick(n, n as i64 * 100_000);
        room.run_tick();
    }

    fn bodies(o: &Probe) -> Vec<ServerBody> {
        o.take_decoded()
    }

    fn batches(o: &Probe) -> Vec<ChatBatch> {
        bodies(o)
            .into_iter()
            .filter_map(|b| match b {
                ServerBody::ChatBatch(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn texts(b: &ChatBatch) -> Vec<(String, String)> {
        b.messages
            .iter()
            .map(|m| (m.from.clone(), m.text.clone()))
            .collect()
    }

    fn error(o: &Probe) -> ErrorCode {
        match bodies(o).pop() {
            Some(ServerBody::Error(e)) => ErrorCode::try_from(e.code).unwrap(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn a_tick_of_messages_is_one_frame_encoded_once_for_every_viewer() {
        let (mut r, _) = room();
        let viewers: Vec<_> = (1..=100)
            .map(|s| join(&mut r, s, &format!("v{s}")))
            .collect();
        tick(&mut r, 1);
        viewers.iter().for_each(|o| drop(bodies(o)));
        let before = r.core().encodes();
        for (s, text) in [(1, "a1"), (2, "b1"), (1, "a2"), (3, "c1")] {
            say(&mut r, s, text);
        }
        tick(&mut r, 2);
        assert_eq!(
            r.core().encodes() - before,
            1,
            "one encode for the whole tick"
        );
        let mut first = None;
        for o in &viewers {
            let mut v = Vec::new();
            o.take(&mut v);
            assert_eq!(v.len(), 1);
            let frame = v.pop().unwrap();
            let ptr = *first.get_or_insert(frame.as_ptr());
            assert_eq!(frame.as_ptr(), ptr, "the same bytes for every viewer");
            let ServerBody::ChatBatch(b) = ServerMessage::decode(frame).unwrap().body.unwrap()
            else {
                panic!("a chat batch");
            };
            let want = [("v1", "a1"), ("v2", "b1"), ("v1", "a2"), ("v3", "c1")];
            let want: Vec<_> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(texts(&b), want);
            assert_eq!(
                b.messages.iter().map(|m| m.id).collect::<Vec<_>>(),
                [1, 2, 3, 4]
            );
        }
        tick(&mut r, 3);
        assert!(
            viewers.iter().all(|o| o.is_empty()),
            "a quiet tick sends nothing"
        );
    }

    #[test]
    fn the_cap_drops_the_oldest_and_counts_them() {
        let config = ChatConfig {
            max_messages_per_tick: 3,
            send_burst: 10,
            ..Default::default()
        };
        let (mut r, _) = room_with(config, &[]);
        let o = join(&mut r, 1, "flooder");
        for i in 1..=5 {
            say(&mut r, 1, &format!("m{i}"));
        }
        r.handle(Command::Event(ChatEvent::Notice {
            text: "welcome".into(),
        }));
        tick(&mut r, 1);
        let b = &batches(&o)[0];
        let got: Vec<_> = b.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(got, ["m3", "m4", "m5", "welcome"]);
        assert_eq!(b.dropped, 2);
        assert_eq!(r.sim().totals(), (4, 2));
    }

    #[test]
    fn words_are_masked_or_rejected_per_policy() {
        let (mut r, _) = room();
        let o = join(&mut r, 1, "amy");
        say(&mut r, 1, "oh DARN, 你这个笨蛋!");
        tick(&mut r, 1);
        assert_eq!(texts(&batches(&o)[0])[0].1, "oh ****, 你这个**!");
        let config = ChatConfig {
            filter_policy: FilterPolicy::Reject,
            ..Default::default()
        };
        let (mut r, _) = room_with(config, &["笨蛋"]);
        let o = join(&mut r, 1, "amy");
        bodies(&o);
        say(&mut r, 1, "你这个笨蛋");
        assert_eq!(error(&o), ErrorCode::ContentRejected);
        tick(&mut r, 1);
        assert!(batches(&o).is_empty());
    }

    #[test]
    fn anonymous_blocked_long_and_fast_senders_get_errors() {
        let (mut r, blocks) = room();
        let anon = join(&mut r, 1, "");
        let bob = join(&mut r, 2, "Bob");
        bodies(&anon);
        bodies(&bob);
        say(&mut r, 1, "hi");
        assert_eq!(error(&anon), ErrorCode::NameRequired);
        say(&mut r, 2, &"x".repeat(201));
        assert_eq!(error(&bob), ErrorCode::InvalidArgument);
        for _ in 0..5 {
            say(&mut r, 2, "spam");
        }
        say(&mut r, 2, "one too many");
        assert_eq!(error(&bob), ErrorCode::RateLimited);
        // Blocked after sending: the messages already accepted do not go out either.
        blocks.block_user("bob");
        say(&mut r, 2, "still here?");
        assert_eq!(error(&bob), ErrorCode::Blocked);
        tick(&mut r, 1);
        assert!(batches(&anon).is_empty());
        let bad = r.join_new(3, "\u{7}bell", "", 8);
        assert_eq!(error(&bad), ErrorCode::InvalidArgument);
    }

    #[test]
    fn gifts_are_marked_and_go_out_in_the_next_batch() {
        let (mut r, _) = room();
        let o = join(&mut r, 1, "");
        r.handle(Command::Event(ChatEvent::Gift {
            from: "fan".into(),
            gift: "rocket".into(),
            count: 3,
        }));
        tick(&mut r, 1);
        let m = &batches(&o)[0].messages[0];
        assert_eq!(m.kind, ChatKind::Gift as i32);
        assert_eq!(
            (m.from.as_str(), m.gift.as_str(), m.gift_count),
            ("fan", "rocket", 3)
        );
    }

    #[test]
    fn invisible_characters_and_compatibility_forms_do_not_get_past_moderation() {
        let (mut r, blocks) = room_with(ChatConfig::default(), &["badword", "笨蛋"]);
        blocks.block_user("troll");
        // Blocked names stay blocked with zero-width characters in them.
        for (session, name) in [(1, "troll\u{200b}"), (2, "tr\u{200d}oll")] {
            let o = join(&mut r, session, name);
            bodies(&o);
            say(&mut r, session, "hello");
            assert_eq!(error(&o), ErrorCode::Blocked, "{name:?}");
        }
        // Names of nothing visible, or with bidi controls, are refused.
        for (session, name) in [(3, "\u{200b}\u{200d}"), (4, "evil\u{202e}txt"), (5, "  ")] {
            let o = join(&mut r, session, name);
            assert_eq!(error(&o), ErrorCode::InvalidArgument, "{name:?}");
        }
        // Listed words hidden by zero-width characters or fullwidth forms are masked.
        let o = join(&mut r, 6, "amy");
        bodies(&o);
        for text in ["bad\u{200b}word", "笨\u{200b}蛋", "ｂａｄｗｏｒｄ"] {
            say(&mut r, 6, text);
        }
        tick(&mut r, 1);
        let got: Vec<String> = batches(&o).iter().flat_map(texts).map(|(_, t)| t).collect();
        assert_eq!(got, ["*******", "**", "*******"]);
    }
}
