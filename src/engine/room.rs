//! A room as a plain value: membership, interest groups, encode-once and hand-out.
//!
//! No threads, sockets or clocks: the driver passes the tick number and time in, so tests
//! step a room deterministically. [`RoomCore`] is what a [`Simulation`] sees; it encodes each
//! message once into a shared `Bytes` and hands the same frame to every recipient.

use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use prost::Message;
use tickroom_proto::v1::{
    Error as ErrorMsg, RoomKind, ServerMessage, Snapshot, server_message::Body as ServerBody,
};

// Field numbers of ServerMessage (proto/tickroom.proto).
const TICK_TAG: u32 = 1;
const SNAPSHOT_TAG: u32 = 3;
// Field number of Snapshot.server_time_us.
const SNAPSHOT_TIME_TAG: u32 = 1;

use super::{Command, CommandError, JoinRequest, LeaveReason, SessionId, Simulation};
use crate::outbox::{CloseReason, Closed, GroupId, Outbox, SlotKey};

/// Gives every room a distinct number for its outbox slot keys.
static NEXT_ROOM_UID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

#[derive(Debug)]
struct Member {
    outbox: Arc<Outbox>,
    groups: Vec<GroupId>,
}

/// Members of one interest group and what this tick has for them.
#[derive(Debug, Default)]
struct Group {
    members: IndexMap<SessionId, Arc<Outbox>>,
    reliable: Vec<Bytes>,
    /// This tick's snapshot and the group whose outbox slot it goes in.
    snapshot: Option<(GroupId, Bytes)>,
    dirty: bool,
}

/// Engine state a simulation acts through. See the module docs.
#[derive(Debug)]
pub struct RoomCore {
    name: Arc<str>,
    uid: u32,
    kind: RoomKind,
    tick_rate_hz: u32,
    tick: u64,
    now_us: i64,
    members: HashMap<SessionId, Member>,
    groups: HashMap<GroupId, Group>,
    dirty: Vec<GroupId>,
    // Sessions found closed outside the hand-out; removed at the end of the tick.
    closed: Vec<(SessionId, CloseReason)>,
    // Outboxes that went from empty to non-empty; their writers are woken once the command
    // or tick is done, so everything it queued leaves in one socket write.
    wake: Vec<Arc<Outbox>>,
    /// Flushers to wake after a hand-out (scratch, kept for its allocation).
    flushers: Vec<Arc<tokio::sync::Notify>>,
    buf: BytesMut,
    encodes: u64,
    /// Time spent encoding during the current tick.
    encode_time: Duration,
}

impl RoomCore {
    fn new(name: Arc<str>, kind: RoomKind, tick_rate_hz: u32) -> Self {
        Self {
            name,
            uid: NEXT_ROOM_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            kind,
            tick_rate_hz,
            tick: 0,
            now_us: 0,
            members: HashMap::default(),
            groups: HashMap::default(),
            dirty: Vec::new(),
            closed: Vec::new(),
            wake: Vec::new(),
            flushers: Vec::new(),
            buf: BytesMut::with_capacity(16 * 1024),
            encodes: 0,
            encode_time: Duration::ZERO,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tick(&self) -> u64 {
        self.tick
    }

    pub fn kind(&self) -> RoomKind {
        self.kind
    }

    pub fn tick_rate_hz(&self) -> u32 {
        self.tick_rate_hz
    }

    /// Wall-clock time of the current tick, µs since the Unix epoch.
    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn is_member(&self, session: SessionId) -> bool {
        self.members.contains_key(&session)
    }

    /// Messages encoded since the room started (each is shared by all its recipients).
    pub fn encodes(&self) -> u64 {
        self.encodes
    }

    /// Encodes one server message for the current tick, once.
    pub fn encode(&mut self, body: ServerBody) -> Bytes {
        let started = Instant::now();
        let msg = ServerMessage {
            tick: self.tick,
            body: Some(body),
        };
        self.buf.reserve(msg.encoded_len());
        msg.encode(&mut self.buf)
            .expect("reserved enough capacity for the message");
        self.encodes += 1;
        self.encode_time += started.elapsed();
        self.buf.split().freeze()
    }

    /// Encodes `ServerMessage { tick, snapshot }` from a borrowed snapshot, so a simulation
    /// can keep reusing its object buffer. Same bytes as [`encode`](Self::encode) would give.
    pub fn encode_snapshot(&mut self, snapshot: &Snapshot) -> Bytes {
        use prost::encoding::{message, uint64};
        let started = Instant::now();
        let mut len = message::encoded_len(SNAPSHOT_TAG, snapshot);
        if self.tick != 0 {
            len += uint64::encoded_len(TICK_TAG, &self.tick);
        }
        self.buf.reserve(len);
        if self.tick != 0 {
            uint64::encode(TICK_TAG, &self.tick, &mut self.buf);
        }
        message::encode(SNAPSHOT_TAG, snapshot, &mut self.buf);
        self.encodes += 1;
        self.encode_time += started.elapsed();
        self.buf.split().freeze()
    }

    /// Encodes `ServerMessage { tick, snapshot }` whose objects are already encoded: `parts`
    /// are runs of `Snapshot.objects` fields (tag, length, `Object`), e.g. one per area of
    /// interest cell, so a view of several cells costs a copy, not an encode per object.
    pub fn encode_snapshot_parts(&mut self, server_time_us: i64, parts: &[&[u8]]) -> Bytes {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, int64, uint64};
        let started = Instant::now();
        let mut body = parts.iter().map(|p| p.len()).sum::<usize>();
        if server_time_us != 0 {
            body += int64::encoded_len(SNAPSHOT_TIME_TAG, &server_time_us);
        }
        self.buf
            .reserve(body + encoded_len_varint(body as u64) + 1 + 11);
        if self.tick != 0 {
            uint64::encode(TICK_TAG, &self.tick, &mut self.buf);
        }
        encode_key(
            SNAPSHOT_TAG,
            prost::encoding::WireType::LengthDelimited,
            &mut self.buf,
        );
        encode_varint(body as u64, &mut self.buf);
        if server_time_us != 0 {
            int64::encode(SNAPSHOT_TIME_TAG, &server_time_us, &mut self.buf);
        }
        for part in parts {
            self.buf.extend_from_slice(part);
        }
        self.encodes += 1;
        self.encode_time += started.elapsed();
        self.buf.split().freeze()
    }

    /// Sets the latest snapshot of `group` for this tick, encoded once. Returns the frame,
    /// which a simulation may keep to hand to later subscribers.
    pub fn publish_snapshot(&mut self, group: GroupId, snapshot: &Snapshot) -> Bytes {
        let frame = self.encode_snapshot(snapshot);
        self.set_snapshot(group, group, frame.clone());
        frame
    }

    /// Sets an encoded snapshot as this tick's for the members of `group`, in the outbox slot
    /// of group `slot`. Groups that share a slot replace each other's pending snapshot: a
    /// member that moves from one view to another never gets the old view's after the new.
    pub fn publish_frame(&mut self, group: GroupId, slot: GroupId, frame: Bytes) {
        self.set_snapshot(group, slot, frame);
    }

    /// Gives one member the latest state of `group` now (e.g. the current value when it
    /// subscribes), in the group's snapshot slot: a newer snapshot of the group replaces it
    /// if the client has not taken it yet.
    pub fn send_snapshot_to(&mut self, session: SessionId, group: GroupId, frame: &Bytes) {
        let slot = slot_key(self.uid, group);
        self.queue_to_member(session, &[], Some((slot, frame)));
    }

    /// Queues frames for one member; its writer is woken when the command or tick is done.
    fn queue_to_member(
        &mut self,
        session: SessionId,
        reliable: &[Bytes],
        snapshot: Option<(SlotKey, &Bytes)>,
    ) {
        if let Some(m) = self.members.get(&session) {
            let to = Recipient {
                session,
                outbox: &m.outbox,
            };
            to.queue(reliable, snapshot, false, &mut self.wake, &mut self.closed);
        }
    }

    fn set_snapshot(&mut self, group: GroupId, slot: GroupId, frame: Bytes) {
        let g = self.groups.entry(group).or_default();
        g.snapshot = Some((slot, frame));
        mark_dirty(&mut self.dirty, g, group);
    }

    /// Sends a reliable message to one member now.
    pub fn send_to(&mut self, session: SessionId, body: ServerBody) {
        if !self.members.contains_key(&session) {
            return;
        }
        let frame = self.encode(body);
        self.send_frame(session, frame);
    }

    fn send_frame(&mut self, session: SessionId, frame: Bytes) {
        self.queue_to_member(session, std::slice::from_ref(&frame), None);
    }

    /// Wakes the writers of every outbox that received its first frame since the last call:
    /// every session is queued first and each flusher woken once, after the last.
    fn wake_writers(&mut self) {
        let mut flushers = std::mem::take(&mut self.flushers);
        for outbox in self.wake.drain(..) {
            outbox.wake_later(&mut flushers);
        }
        for flusher in flushers.drain(..) {
            flusher.notify_one();
        }
        self.flushers = flushers;
    }

    /// Sends an `Error` to one member.
    pub fn send_error(&mut self, session: SessionId, err: &CommandError) {
        crate::metrics::message_rejected(err.code);
        self.send_to(session, error_body(err));
    }

    /// Queues a reliable message for every member of `group`, encoded once, delivered at
    /// the end of the tick in call order.
    pub fn broadcast(&mut self, group: GroupId, body: ServerBody) {
        let frame = self.encode(body);
        let g = self.groups.entry(group).or_default();
        g.reliable.push(frame);
        mark_dirty(&mut self.dirty, g, group);
    }

    /// Adds a member to an interest group; it receives the group's frames from this tick on.
    pub fn subscribe(&mut self, session: SessionId, group: GroupId) {
        let Some(m) = self.members.get_mut(&session) else {
            return;
        };
        if m.groups.contains(&group) {
            return;
        }
        m.groups.push(group);
        self.groups
            .entry(group)
            .or_default()
            .members
            .insert(session, m.outbox.clone());
    }

    /// True if `group` has at least one member.
    pub fn has_members(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// The groups a member is in, in the order it joined them.
    pub fn groups_of(&self, session: SessionId) -> &[GroupId] {
        self.members.get(&session).map_or(&[], |m| &m.groups)
    }

    pub fn unsubscribe(&mut self, session: SessionId, group: GroupId) {
        if let Some(m) = self.members.get_mut(&session) {
            m.groups.retain(|g| *g != group);
        }
        if let Some(g) = self.groups.get_mut(&group) {
            g.members.swap_remove(&session);
        }
    }

    /// Ends a member's connection (e.g. its avatar was resumed elsewhere). The simulation
    /// is not told: it asked for this.
    pub fn kick(&mut self, session: SessionId, reason: CloseReason) {
        if let Some(m) = self.remove_member(session) {
            m.outbox.close(reason);
            crate::metrics::session_left(self.kind, LeaveReason::Closed(reason));
        }
    }

    fn add_member(&mut self, session: SessionId, outbox: Arc<Outbox>) {
        self.members.insert(
            session,
            Member {
                outbox,
                groups: Vec::new(),
            },
        );
    }

    fn remove_member(&mut self, session: SessionId) -> Option<Member> {
        let m = self.members.remove(&session)?;
        for group in &m.groups {
            if let Some(g) = self.groups.get_mut(group) {
                g.members.swap_remove(&session);
            }
        }
        Some(m)
    }

    /// Hands every dirty group's frames to its members: one outbox call per member and
    /// group, sharing the encoded frames.
    fn hand_out(&mut self) {
        // With one dirty group each member gets one delivery this tick, so its writer can be
        // woken at once; with several, a member in two of them must not be written to
        // between the two (see `wake_writers`).
        let immediate = self.dirty.len() == 1;
        for group in self.dirty.drain(..) {
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            let snapshot = g.snapshot.take();
            let snapshot = snapshot
                .as_ref()
                .map(|(slot, frame)| (slot_key(self.uid, *slot), frame));
            for (&session, outbox) in &g.members {
                let to = Recipient { session, outbox };
                to.queue(
                    &g.reliable,
                    snapshot,
                    immediate,
                    &mut self.wake,
                    &mut self.closed,
                );
            }
            g.reliable.clear();
            g.dirty = false;
        }
    }

    /// Finds members whose connection ended without a leave reaching the room (e.g. the
    /// channel was full when the session tried): nothing may outlive a session. Returns the
    /// most frames waiting in any member's outbox.
    fn sweep_closed(&mut self) -> usize {
        let mut most = 0;
        for (session, m) in &self.members {
            if m.outbox.is_closed() {
                let reason = m.outbox.close_reason().unwrap_or(CloseReason::PeerGone);
                self.closed.push((*session, reason));
            } else {
                most = most.max(m.outbox.len());
            }
        }
        most
    }
}

impl Drop for RoomCore {
    // A room that stops, even by a panic in its simulation, must not leave sessions
    // connected to nothing.
    fn drop(&mut self) {
        for m in self.members.values() {
            m.outbox.close(CloseReason::RoomClosed);
        }
    }
}

/// A group's snapshot slot in outboxes, qualified by the room so rooms never share one.
fn slot_key(room_uid: u32, group: GroupId) -> SlotKey {
    (u64::from(room_uid) << 32) | u64::from(group)
}

/// One member's outbox, as the room hands it frames.
struct Recipient<'a> {
    session: SessionId,
    outbox: &'a Arc<Outbox>,
}

impl Recipient<'_> {
    /// Queues frames; the writer is woken at once (`wake_now`) or put on `wake` for later,
    /// and a closed outbox is put on `closed` for removal at the end of the tick.
    fn queue(
        &self,
        reliable: &[Bytes],
        snapshot: Option<(SlotKey, &Bytes)>,
        wake_now: bool,
        wake: &mut Vec<Arc<Outbox>>,
        closed: &mut Vec<(SessionId, CloseReason)>,
    ) {
        match self.outbox.enqueue(reliable, snapshot) {
            Ok(true) if wake_now => self.outbox.wake(),
            Ok(true) => wake.push(self.outbox.clone()),
            Ok(false) => {}
            Err(Closed(reason)) => closed.push((self.session, reason)),
        }
    }
}

fn mark_dirty(dirty: &mut Vec<GroupId>, g: &mut Group, id: GroupId) {
    if !g.dirty {
        g.dirty = true;
        dirty.push(id);
    }
}

pub(crate) fn error_body(err: &CommandError) -> ServerBody {
    ServerBody::Error(ErrorMsg {
        code: err.code as i32,
        message: err.message.to_string(),
    })
}

/// Where the last tick's time went, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickTimings {
    pub encode: Duration,
    pub handout: Duration,
}

/// A room: the engine core plus its simulation. See the module docs.
#[derive(Debug)]
pub struct Room<S> {
    core: RoomCore,
    sim: S,
    timings: TickTimings,
}

impl<S: Simulation> Room<S> {
    pub fn new(name: impl Into<Arc<str>>, tick_rate_hz: u32, sim: S) -> Self {
        let kind = sim.kind();
        Self {
            core: RoomCore::new(name.into(), kind, tick_rate_hz),
            sim,
            timings: TickTimings::default(),
        }
    }

    pub fn core(&self) -> &RoomCore {
        &self.core
    }

    pub fn sim(&self) -> &S {
        &self.sim
    }

    /// Starts tick `tick` at wall time `now_us`; commands handled next belong to it.
    pub fn begin_tick(&mut self, tick: u64, now_us: i64) {
        self.core.tick = tick;
        self.core.now_us = now_us;
        self.core.encode_time = Duration::ZERO;
    }

    /// Encode and hand-out time of the last tick (commands included).
    pub fn timings(&self) -> TickTimings {
        self.timings
    }

    /// Joins `session` through a new outbox holding up to `reliable_cap` reliable frames and
    /// returns the outbox: how tests and benchmarks that drive a room directly stand in for a
    /// connection.
    pub fn join_new(
        &mut self,
        session: SessionId,
        name: &str,
        resume_token: &str,
        reliable_cap: usize,
    ) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(reliable_cap));
        self.handle(Command::Join(JoinRequest {
            session,
            outbox: outbox.clone(),
            resume_token: resume_token.into(),
            name: name.into(),
            reply: None,
        }));
        outbox
    }

    /// Applies one command. Returns false for `Shutdown`.
    pub fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Join(join) => self.join(join),
            Command::Leave { session, reason } => self.leave(session, reason),
            Command::Client { session, body } => {
                // A non-member (its join failed, or it already left) has been told so.
                if self.core.is_member(session)
                    && let Err(err) = self.sim.command(&mut self.core, session, body)
                {
                    self.core.send_error(session, &err);
                }
            }
            Command::Event(event) => self.sim.event(&mut self.core, event),
            Command::Query(query) => self.sim.query(&self.core, query),
            Command::Shutdown => return false,
        }
        self.core.wake_writers();
        true
    }

    fn join(&mut self, mut join: JoinRequest) {
        let reply = join.reply.take();
        if self.core.is_member(join.session) {
            self.leave(join.session, LeaveReason::Left);
        }
        self.core.add_member(join.session, join.outbox.clone());
        match self.sim.join(&mut self.core, &join) {
            Ok(mut welcome) => {
                welcome.session_id = join.session;
                welcome.room = self.core.name.to_string();
                welcome.room_kind = self.core.kind as i32;
                welcome.tick_rate_hz = self.core.tick_rate_hz;
                self.core
                    .send_to(join.session, ServerBody::Welcome(welcome));
                crate::metrics::session_joined(self.core.kind);
                if let Some(reply) = reply {
                    let _ = reply.send(true);
                }
            }
            Err(err) => {
                crate::metrics::message_rejected(err.code);
                self.core.remove_member(join.session);
                let frame = self.core.encode(error_body(&err));
                // The session is not a member: a closed outbox is its own teardown's business.
                let _ = join.outbox.push_reliable(frame);
                if let Some(reply) = reply {
                    let _ = reply.send(false);
                }
            }
        }
    }

    fn leave(&mut self, session: SessionId, reason: LeaveReason) {
        if self.core.remove_member(session).is_some() {
            crate::metrics::session_left(self.core.kind, reason);
            self.sim.leave(&mut self.core, session, reason);
        }
    }

    /// Runs the tick begun with `begin_tick`: step, replicate, hand out, then drop members
    /// whose connection ended.
    pub fn run_tick(&mut self) {
        self.sim.step(&mut self.core);
        self.sim.replicate(&mut self.core);
        let handout = Instant::now();
        self.core.hand_out();
        self.core.wake_writers();
        self.timings = TickTimings {
            encode: self.core.encode_time,
            handout: handout.elapsed(),
        };
        self.remove_closed();
    }

    /// Checks every member for a closed connection (the driver calls it about once a
    /// second). Returns the most frames waiting in any member's outbox: with latest-only
    /// snapshots it stays bounded however slow a client is.
    pub fn sweep(&mut self) -> usize {
        let most = self.core.sweep_closed();
        self.remove_closed();
        most
    }

    fn remove_closed(&mut self) {
        while let Some((session, reason)) = self.core.closed.pop() {
            self.leave(session, LeaveReason::Closed(reason));
        }
        // What the simulation said to the others about those who left.
        self.core.wake_writers();
    }

    /// Closes every member's outbox with `reason` (server or room shutdown).
    pub fn close_all(&mut self, reason: CloseReason) {
        let sessions: Vec<SessionId> = self.core.members.keys().copied().collect();
        for session in sessions {
            if let Some(m) = self.core.remove_member(session) {
                m.outbox.close(reason);
                crate::metrics::session_left(self.core.kind, LeaveReason::Closed(reason));
                self.sim
                    .leave(&mut self.core, session, LeaveReason::Closed(reason));
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn core_mut(&mut self) -> &mut RoomCore {
        &mut self.core
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickroom_proto::v1::{ErrorCode, Welcome, client_message::Body};

    /// A simulation that publishes one snapshot and one event per tick to group 0.
    #[derive(Debug, Default)]
    struct Echo;

    impl Simulation for Echo {
        fn kind(&self) -> RoomKind {
            RoomKind::Game
        }
        fn join(&mut self, ctx: &mut RoomCore, j: &JoinRequest) -> Result<Welcome, CommandError> {
            ctx.subscribe(j.session, 0);
            Ok(Welcome::default())
        }
        fn leave(&mut self, _: &mut RoomCore, _: SessionId, _: LeaveReason) {}
        fn command(&mut self, _: &mut RoomCore, _: SessionId, _: Body) -> Result<(), CommandError> {
            Err(CommandError::new(ErrorCode::UnknownMessage, "no"))
        }
        fn step(&mut self, _: &mut RoomCore) {}
        fn replicate(&mut self, ctx: &mut RoomCore) {
            ctx.broadcast(0, ServerBody::ObjectDeleted(Default::default()));
            ctx.publish_snapshot(
                0,
                &Snapshot {
                    server_time_us: ctx.now_us(),
                    objects: vec![],
                },
            );
        }
    }

    fn join(room: &mut Room<Echo>, session: SessionId) -> Arc<Outbox> {
        room.join_new(session, "", "", 64)
    }

    fn encodes_per_tick(recipients: u64) -> u64 {
        let mut room = Room::new("r", 60, Echo);
        room.begin_tick(1, 0);
        let outboxes: Vec<_> = (1..=recipients).map(|s| join(&mut room, s)).collect();
        room.run_tick();
        let before = room.core().encodes();
        room.begin_tick(2, 0);
        room.run_tick();
        let per_tick = room.core().encodes() - before;
        // Every recipient got the tick's frames, and they are the same allocation.
        let mut first: Option<Vec<Bytes>> = None;
        for o in &outboxes {
            let mut v = Vec::new();
            o.take(&mut v);
            let v: Vec<Bytes> = v.into_iter().skip(2).collect(); // welcome + tick 1 event (its snapshot was conflated)
            assert_eq!(v.len(), 2);
            match &first {
                None => first = Some(v),
                Some(f) => assert_eq!(f[1].as_ptr(), v[1].as_ptr()),
            }
        }
        per_tick
    }

    #[test]
    fn encode_count_per_tick_does_not_depend_on_recipients() {
        let one = encodes_per_tick(1);
        assert_eq!(one, 2);
        assert_eq!(encodes_per_tick(10), one);
        assert_eq!(encodes_per_tick(1_000), one);
    }

    #[test]
    fn borrowed_snapshot_encoding_matches_the_generated_encoder() {
        use tickroom_proto::v1::{Entity, Object, object::State};
        let mut room = Room::new("r", 60, Echo);
        for tick in [0, 1, 300] {
            room.begin_tick(tick, 5);
            let snap = Snapshot {
                server_time_us: 1_700_000_000_000_000,
                objects: (1..=3)
                    .map(|id| Object {
                        id,
                        state: Some(State::Entity(Entity {
                            kind: 2,
                            x: 1.5,
                            y: -2.0,
                            last_input_seq: id,
                        })),
                    })
                    .collect(),
            };
            let ours = room.core_mut().encode_snapshot(&snap);
            let theirs = room.core_mut().encode(ServerBody::Snapshot(snap));
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn closed_members_are_removed_and_leave_is_idempotent() {
        let mut room = Room::new("r", 60, Echo);
        room.begin_tick(1, 0);
        let a = join(&mut room, 1);
        let _b = join(&mut room, 2);
        assert_eq!(room.core().member_count(), 2);
        a.close(CloseReason::PeerGone);
        room.run_tick();
        assert_eq!(room.core().member_count(), 1);
        // A late leave for the same session, twice, changes nothing.
        for _ in 0..2 {
            room.handle(Command::Leave {
                session: 1,
                reason: LeaveReason::Left,
            });
        }
        assert_eq!(room.core().member_count(), 1);
    }

    #[test]
    fn sweep_finds_closed_members_without_traffic() {
        let mut room = Room::new("r", 60, Echo);
        let a = join(&mut room, 1);
        a.close(CloseReason::HeartbeatTimeout);
        room.sweep();
        assert_eq!(room.core().member_count(), 0);
    }

    #[test]
    fn refused_commands_are_answered_with_an_error() {
        let mut room = Room::new("r", 60, Echo);
        let a = join(&mut room, 1);
        room.handle(Command::Client {
            session: 1,
            body: Body::Leave(Default::default()),
        });
        let mut v = Vec::new();
        a.take(&mut v);
        let last = ServerMessage::decode(v.last().unwrap().clone()).unwrap();
        assert!(
            matches!(last.body, Some(ServerBody::Error(e)) if e.code == ErrorCode::UnknownMessage as i32)
        );
    }

    #[test]
    fn shutdown_closes_every_outbox() {
        let mut room = Room::new("r", 60, Echo);
        let a = join(&mut room, 1);
        let b = join(&mut room, 2);
        room.close_all(CloseReason::ShuttingDown);
        assert_eq!(a.close_reason(), Some(CloseReason::ShuttingDown));
        assert_eq!(b.close_reason(), Some(CloseReason::ShuttingDown));
        assert_eq!(room.core_mut().member_count(), 0);
    }
}
