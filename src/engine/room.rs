//! A room as a plain value: membership, interest groups, encode-once and hand-out.
//!
//! No threads, sockets or clocks: the driver passes the tick number and time in, so tests
//! step a room deterministically. [`RoomCore`] is what a [`Simulation`] sees; it encodes each
//! message once into a shared `Bytes` and hands the same frame to every recipient's outbox.
//! Everything else a tick produces comes back as a value, [`Output`]: which outboxes have
//! something new for their writers, who joined and left and why, what was refused, and the
//! tick's figures. The driver wakes the writers and records the metrics.

use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use prost::Message;
use tickroom_proto::v1::{
    Error as ErrorMsg, ErrorCode, RoomKind, ServerMessage, Snapshot,
    server_message::Body as ServerBody,
};

// Field numbers of ServerMessage (proto/tickroom.proto).
const TICK_TAG: u32 = 1;
const SNAPSHOT_TAG: u32 = 3;
// Field number of Snapshot.server_time_us.
const SNAPSHOT_TIME_TAG: u32 = 1;

use super::outbox::{Closed, Enqueued, GroupId, Outbox, SlotKey};
use super::{
    Command, CommandError, JoinRequest, LeaveReason, SessionCommand, SessionId, Simulation,
};

#[derive(Debug)]
struct Member {
    outbox: Arc<Outbox>,
    groups: Vec<GroupId>,
}

/// A member's place in a group: its outbox and which variant of the group's snapshot it
/// takes.
#[derive(Debug)]
struct Seat {
    outbox: Arc<Outbox>,
    variant: Variant,
}

/// Which encoding of a group's snapshot a member takes. 0, the default, is the one
/// [`RoomCore::publish_frame`] sets; a simulation numbers the others (e.g. a keyframe beside a
/// delta, or an older protocol's format), each encoded once per tick.
pub type Variant = u8;

/// Members of one interest group and what this tick has for them.
#[derive(Debug, Default)]
struct Group {
    members: IndexMap<SessionId, Seat>,
    reliable: Vec<Bytes>,
    /// This tick's snapshot (variant 0) and the group whose outbox slot it goes in.
    snapshot: Option<(GroupId, Bytes)>,
    /// This tick's other variants; a member whose variant has none here takes variant 0.
    variants: Vec<(Variant, Bytes)>,
    dirty: bool,
}

/// What the room produced since the driver last cleared it, besides the frames it put in
/// members' outboxes. See the module docs.
#[derive(Debug, Default)]
pub struct Output {
    /// Outboxes that went from empty to non-empty, or that the room closed: their writers
    /// must hear of it ([`wake_drains`](super::wake_drains)). An outbox may appear twice.
    pub ready: Vec<Arc<Outbox>>,
    /// Sessions admitted.
    pub joined: u64,
    /// Sessions that left, with why.
    pub left: Vec<LeaveReason>,
    /// Client messages answered with an `Error`, by code.
    pub rejected: Vec<ErrorCode>,
    /// Pending snapshots replaced by a newer one.
    pub conflated: u64,
    /// Messages encoded (each shared by all its recipients).
    pub encodes: u64,
    /// Time spent encoding.
    pub encode_time: Duration,
    /// Time spent handing the tick's frames to the members' outboxes.
    pub handout_time: Duration,
}

impl Output {
    /// Empties it for the next tick, keeping the allocations.
    pub fn clear(&mut self) {
        self.ready.clear();
        self.joined = 0;
        self.left.clear();
        self.rejected.clear();
        self.conflated = 0;
        self.encodes = 0;
        self.encode_time = Duration::ZERO;
        self.handout_time = Duration::ZERO;
    }
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
    // Sessions found closed while handing out; removed at the end of the tick.
    closed: Vec<(SessionId, LeaveReason)>,
    // Members whose pending snapshot the last hand-out replaced (see `missed`).
    missed: Vec<SessionId>,
    out: Output,
    buf: BytesMut,
    encodes: u64,
}

impl RoomCore {
    fn new(uid: u32, name: Arc<str>, kind: RoomKind, tick_rate_hz: u32) -> Self {
        Self {
            name,
            uid,
            kind,
            tick_rate_hz,
            tick: 0,
            now_us: 0,
            members: HashMap::default(),
            groups: HashMap::default(),
            dirty: Vec::new(),
            closed: Vec::new(),
            missed: Vec::new(),
            out: Output::default(),
            buf: BytesMut::with_capacity(16 * 1024),
            encodes: 0,
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

    fn count_encode(&mut self, started: Instant) {
        self.encodes += 1;
        self.out.encodes += 1;
        self.out.encode_time += started.elapsed();
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
        self.count_encode(started);
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
        self.count_encode(started);
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
        self.count_encode(started);
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

    /// Sets another variant of this tick's snapshot of `group`, for the members set to it
    /// ([`set_variant`](Self::set_variant)). Goes with a [`publish_frame`](Self::publish_frame)
    /// of the same tick, whose slot it shares.
    pub fn publish_variant(&mut self, group: GroupId, variant: Variant, frame: Bytes) {
        if variant == 0 {
            if let Some(g) = self.groups.get_mut(&group)
                && let Some((_, f)) = &mut g.snapshot
            {
                *f = frame;
            }
            return;
        }
        let g = self.groups.entry(group).or_default();
        match g.variants.iter_mut().find(|(v, _)| *v == variant) {
            Some((_, f)) => *f = frame,
            None => g.variants.push((variant, frame)),
        }
    }

    /// Chooses which variant of `group`'s snapshots a member takes from now on (0 after it
    /// subscribes).
    pub fn set_variant(&mut self, session: SessionId, group: GroupId, variant: Variant) {
        if let Some(seat) = self
            .groups
            .get_mut(&group)
            .and_then(|g| g.members.get_mut(&session))
        {
            seat.variant = variant;
        }
    }

    /// Members whose pending snapshot the last hand-out replaced with a newer one before
    /// their writer took it: they never receive the replaced one. A simulation whose
    /// snapshots build on each other (deltas) gives them something that does not.
    pub fn missed(&self) -> &[SessionId] {
        &self.missed
    }

    /// Gives one member the latest state of `group` now (e.g. the current value when it
    /// subscribes), in the group's snapshot slot: a newer snapshot of the group replaces it
    /// if the client has not taken it yet.
    pub fn send_snapshot_to(&mut self, session: SessionId, group: GroupId, frame: &Bytes) {
        let slot = slot_key(self.uid, group);
        self.queue_to_member(session, &[], Some((slot, frame)));
    }

    /// Queues frames for one member.
    fn queue_to_member(
        &mut self,
        session: SessionId,
        reliable: &[Bytes],
        snapshot: Option<(SlotKey, &Bytes)>,
    ) {
        if let Some(m) = self.members.get(&session) {
            deliver(
                session,
                &m.outbox,
                reliable,
                snapshot,
                &mut self.out,
                &mut self.closed,
            );
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
        self.queue_to_member(session, std::slice::from_ref(&frame), None);
    }

    /// Sends an `Error` to one member.
    pub fn send_error(&mut self, session: SessionId, err: &CommandError) {
        self.out.rejected.push(err.code);
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
        self.groups.entry(group).or_default().members.insert(
            session,
            Seat {
                outbox: m.outbox.clone(),
                variant: 0,
            },
        );
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
    pub fn kick(&mut self, session: SessionId, reason: LeaveReason) {
        if let Some(m) = self.remove_member(session) {
            m.outbox.close(reason);
            self.out.left.push(reason);
            self.out.ready.push(m.outbox);
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
    /// group, sharing the encoded frames. Nobody is woken here: the driver hands the outboxes
    /// that became ready to their drains once the tick is done, so a member of several
    /// groups gets all of them in one write.
    fn hand_out(&mut self) {
        self.missed.clear();
        for group in self.dirty.drain(..) {
            let Some(g) = self.groups.get_mut(&group) else {
                continue;
            };
            let snapshot = g.snapshot.take();
            let slot = snapshot.as_ref().map(|(slot, _)| slot_key(self.uid, *slot));
            for (&session, seat) in &g.members {
                let frame = match &snapshot {
                    Some((_, frame)) if seat.variant == 0 => Some(frame),
                    Some((_, frame)) => Some(
                        g.variants
                            .iter()
                            .find(|(v, _)| *v == seat.variant)
                            .map_or(frame, |(_, f)| f),
                    ),
                    None => None,
                };
                let conflated = deliver(
                    session,
                    &seat.outbox,
                    &g.reliable,
                    slot.zip(frame),
                    &mut self.out,
                    &mut self.closed,
                );
                if conflated {
                    self.missed.push(session);
                }
            }
            g.reliable.clear();
            g.variants.clear();
            g.dirty = false;
        }
    }

    /// Finds members whose connection ended without a leave reaching the room (e.g. the
    /// channel was full when the session tried): nothing may outlive a session. Returns the
    /// most frames waiting in any member's outbox.
    /// Shrinks the member and seat maps once most of their sessions are gone.
    fn compact(&mut self) {
        super::shrink(&mut self.members);
        for g in self.groups.values_mut() {
            super::shrink(&mut g.members);
        }
    }

    fn sweep_closed(&mut self) -> usize {
        let mut most = 0;
        for (session, m) in &self.members {
            if m.outbox.is_closed() {
                let reason = m.outbox.close_reason().unwrap_or(LeaveReason::Disconnected);
                self.closed.push((*session, reason));
            } else {
                most = most.max(m.outbox.len());
            }
        }
        most
    }

    /// Closes every member's outbox without asking the simulation (it failed), and reports
    /// them ready so their sessions end.
    fn close_members(&mut self, reason: LeaveReason) {
        for (_, m) in self.members.drain() {
            if m.outbox.close(reason) {
                self.out.left.push(reason);
            }
            self.out.ready.push(m.outbox);
        }
        self.groups.clear();
    }
}

impl Drop for RoomCore {
    // A room that is dropped with members (its driver did not close them) must not leave
    // sessions connected to nothing; their sweeps and reads find the closed outbox.
    fn drop(&mut self) {
        for m in self.members.values() {
            m.outbox.close(LeaveReason::Shutdown);
        }
    }
}

/// A group's snapshot slot in outboxes, qualified by the room so rooms never share one.
fn slot_key(room_uid: u32, group: GroupId) -> SlotKey {
    (u64::from(room_uid) << 32) | u64::from(group)
}

/// Queues frames for one member and notes what the driver must know: an outbox that became
/// ready (or closed on overflow) and conflation; a closed one is put on `closed` for removal
/// at the end of the tick. Returns whether a pending snapshot was replaced.
fn deliver(
    session: SessionId,
    outbox: &Arc<Outbox>,
    reliable: &[Bytes],
    snapshot: Option<(SlotKey, &Bytes)>,
    out: &mut Output,
    closed: &mut Vec<(SessionId, LeaveReason)>,
) -> bool {
    match outbox.enqueue(reliable, snapshot) {
        Ok(Enqueued { ready, conflated }) => {
            if ready {
                out.ready.push(outbox.clone());
            }
            out.conflated += u64::from(conflated);
            conflated
        }
        Err(Closed(reason)) => {
            // Its writer must hear of an overflow the room caused; a session that closed
            // itself is already ending, and hearing twice is harmless.
            out.ready.push(outbox.clone());
            closed.push((session, reason));
            false
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
        ..Default::default()
    })
}

/// A room: the engine core plus its simulation. See the module docs.
#[derive(Debug)]
pub struct Room<S> {
    core: RoomCore,
    sim: S,
}

impl<S: Simulation> Room<S> {
    /// A room numbered 0; see [`numbered`](Self::numbered).
    pub fn new(name: impl Into<Arc<str>>, tick_rate_hz: u32, sim: S) -> Self {
        Self::numbered(0, name, tick_rate_hz, sim)
    }

    /// A room with a number unique among its server's rooms (it qualifies the room's
    /// snapshot slots in outboxes, which sessions carry from room to room).
    pub fn numbered(uid: u32, name: impl Into<Arc<str>>, tick_rate_hz: u32, sim: S) -> Self {
        let kind = sim.kind();
        Self {
            core: RoomCore::new(uid, name.into(), kind, tick_rate_hz),
            sim,
        }
    }

    pub fn core(&self) -> &RoomCore {
        &self.core
    }

    pub fn sim(&self) -> &S {
        &self.sim
    }

    /// What the room produced since the driver last cleared it.
    pub fn output(&mut self) -> &mut Output {
        &mut self.core.out
    }

    /// Starts tick `tick` at wall time `now_us`; commands handled next belong to it.
    pub fn begin_tick(&mut self, tick: u64, now_us: i64) {
        self.core.tick = tick;
        self.core.now_us = now_us;
    }

    /// Joins `session` through a new outbox holding up to `reliable_cap` reliable frames and
    /// returns the outbox: how benchmarks and tests that drive a room directly stand in for
    /// a connection.
    pub fn join_new(
        &mut self,
        session: SessionId,
        name: &str,
        resume_token: &str,
        reliable_cap: usize,
    ) -> Arc<Outbox> {
        self.join_speaking(session, name, resume_token, reliable_cap, 0)
    }

    /// [`join_new`](Self::join_new) for a client that speaks `protocol` (`Join.protocol`).
    pub fn join_speaking(
        &mut self,
        session: SessionId,
        name: &str,
        resume_token: &str,
        reliable_cap: usize,
        protocol: u32,
    ) -> Arc<Outbox> {
        let outbox = Arc::new(Outbox::new(reliable_cap));
        self.join_through(session, outbox.clone(), name, resume_token, protocol);
        outbox
    }

    /// Joins `session` through the given outbox, as a session's join command would.
    pub fn join_through(
        &mut self,
        session: SessionId,
        outbox: Arc<Outbox>,
        name: &str,
        resume_token: &str,
        protocol: u32,
    ) {
        self.handle(Command::Session(SessionCommand::Join(JoinRequest {
            session,
            outbox,
            resume_token: resume_token.into(),
            name: name.into(),
            protocol,
            reply: None,
        })));
    }

    /// Applies one command. Returns false for `Shutdown`, after closing every member.
    pub fn handle(&mut self, cmd: Command<S::Event>) -> bool {
        match cmd {
            Command::Session(SessionCommand::Join(join)) => self.join(join),
            Command::Session(SessionCommand::Leave { session, reason }) => {
                self.leave(session, reason)
            }
            Command::Session(SessionCommand::Client { session, body }) => {
                // A non-member (its join failed, or it already left) has been told so.
                if self.core.is_member(session)
                    && let Err(err) = self.sim.command(&mut self.core, session, body)
                {
                    self.core.send_error(session, &err);
                }
            }
            Command::Event(event) => self.sim.event(&mut self.core, event),
            Command::Shutdown => {
                self.close_all(LeaveReason::Shutdown);
                return false;
            }
        }
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
                self.core.out.joined += 1;
                if let Some(reply) = reply {
                    reply(true);
                }
            }
            Err(err) => {
                self.core.out.rejected.push(err.code);
                self.core.remove_member(join.session);
                let frame = self.core.encode(error_body(&err));
                // The session is not a member: a closed outbox is its own teardown's business.
                if let Ok(true) = join.outbox.push_reliable(frame) {
                    self.core.out.ready.push(join.outbox);
                }
                if let Some(reply) = reply {
                    reply(false);
                }
            }
        }
    }

    fn leave(&mut self, session: SessionId, reason: LeaveReason) {
        if self.core.remove_member(session).is_some() {
            self.core.out.left.push(reason);
            self.sim.leave(&mut self.core, session, reason);
        }
    }

    /// Runs the tick begun with `begin_tick`: step, replicate, hand out, then drop members
    /// whose connection ended.
    // Never inlined: profiles and flamegraphs show a room's tick under this name.
    #[inline(never)]
    pub fn run_tick(&mut self) {
        self.sim.step(&mut self.core);
        self.sim.replicate(&mut self.core);
        let handout = Instant::now();
        self.core.hand_out();
        self.core.out.handout_time += handout.elapsed();
        self.remove_closed();
    }

    /// Checks every member for a closed connection (the driver calls it about once a
    /// second). Returns the most frames waiting in any member's outbox: with latest-only
    /// snapshots it stays bounded however slow a client is.
    pub fn sweep(&mut self) -> usize {
        let most = self.core.sweep_closed();
        self.remove_closed();
        self.core.compact();
        self.sim.compact();
        most
    }

    fn remove_closed(&mut self) {
        while let Some((session, reason)) = self.core.closed.pop() {
            self.leave(session, reason);
        }
    }

    /// Closes every member's outbox with `reason` (server or room shutdown); the simulation
    /// hears of each.
    pub fn close_all(&mut self, reason: LeaveReason) {
        let sessions: Vec<SessionId> = self.core.members.keys().copied().collect();
        for session in sessions {
            if let Some(m) = self.core.remove_member(session) {
                m.outbox.close(reason);
                self.core.out.ready.push(m.outbox);
                self.core.out.left.push(reason);
                self.sim.leave(&mut self.core, session, reason);
            }
        }
    }

    /// Ends every member's session without the simulation, after it failed (a panic): the
    /// outboxes close with `reason` and are reported ready.
    pub fn abort(&mut self, reason: LeaveReason) {
        self.core.close_members(reason);
    }

    #[cfg(test)]
    pub(crate) fn core_mut(&mut self) -> &mut RoomCore {
        &mut self.core
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NoEvent;
    use crate::engine::testing::{Probe, TestDriver};
    use tickroom_proto::v1::{Welcome, client_message::Body};

    /// A simulation that publishes one snapshot and one event per tick to group 0.
    #[derive(Debug, Default)]
    struct Echo;

    impl Simulation for Echo {
        type Event = NoEvent;
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
        fn event(&mut self, _: &mut RoomCore, e: NoEvent) {
            match e {}
        }
        fn step(&mut self, _: &mut RoomCore) {}
        fn replicate(&mut self, ctx: &mut RoomCore) {
            ctx.broadcast(0, ServerBody::ObjectDeleted(Default::default()));
            ctx.publish_snapshot(
                0,
                &Snapshot {
                    view: None,
                    server_time_us: ctx.now_us(),
                    objects: vec![],
                },
            );
        }
    }

    fn room() -> TestDriver<Echo> {
        TestDriver::new("r", 60, Echo)
    }

    fn join(room: &mut TestDriver<Echo>, session: SessionId) -> Probe {
        room.join_new(session, "", "", 64)
    }

    fn encodes_per_tick(recipients: u64) -> u64 {
        let mut room = room();
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
            assert!(o.was_told());
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
        let mut room = room();
        for tick in [0, 1, 300] {
            room.begin_tick(tick, 5);
            let snap = Snapshot {
                view: None,
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
    fn the_output_counts_joins_leaves_refusals_and_conflation() {
        let mut room = Room::new("r", 60, Echo);
        room.begin_tick(1, 0);
        let a = room.join_new(1, "", "", 64);
        room.run_tick();
        room.begin_tick(2, 0);
        room.run_tick();
        room.handle(Command::Session(SessionCommand::Client {
            session: 1,
            body: Body::Leave(Default::default()),
        }));
        room.handle(Command::Session(SessionCommand::Leave {
            session: 1,
            reason: LeaveReason::TimedOut,
        }));
        let out = room.output();
        assert_eq!(out.joined, 1);
        assert_eq!(out.left, [LeaveReason::TimedOut]);
        assert_eq!(out.rejected, [ErrorCode::UnknownMessage]);
        // Tick 2's snapshot replaced tick 1's, which nobody took.
        assert_eq!(out.conflated, 1);
        assert_eq!(out.encodes, 6, "welcome, 2 × (event + snapshot), error");
        // The outbox became ready once (at the welcome) and was never taken since.
        assert_eq!(out.ready.len(), 1);
        assert!(Arc::ptr_eq(&out.ready[0], &a));
        out.clear();
        assert!(out.ready.is_empty() && out.left.is_empty() && out.encodes == 0);
    }

    #[test]
    fn closed_members_are_removed_and_leave_is_idempotent() {
        let mut room = room();
        room.begin_tick(1, 0);
        let a = join(&mut room, 1);
        let _b = join(&mut room, 2);
        assert_eq!(room.core().member_count(), 2);
        a.close(LeaveReason::Disconnected);
        room.run_tick();
        assert_eq!(room.core().member_count(), 1);
        // A late leave for the same session, twice, changes nothing.
        for _ in 0..2 {
            room.session(SessionCommand::Leave {
                session: 1,
                reason: LeaveReason::Left,
            });
        }
        assert_eq!(room.core().member_count(), 1);
    }

    #[test]
    fn sweep_finds_closed_members_without_traffic() {
        let mut room = room();
        let a = join(&mut room, 1);
        a.close(LeaveReason::TimedOut);
        room.sweep();
        assert_eq!(room.core().member_count(), 0);
    }

    #[test]
    fn refused_commands_are_answered_with_an_error() {
        let mut room = room();
        let a = join(&mut room, 1);
        room.session(SessionCommand::Client {
            session: 1,
            body: Body::Leave(Default::default()),
        });
        let last = a.take_decoded().pop().unwrap();
        assert!(matches!(last, ServerBody::Error(e) if e.code == ErrorCode::UnknownMessage as i32));
    }

    #[test]
    fn a_reliable_overflow_closes_the_member_and_reports_it_ready() {
        let mut room = room();
        room.begin_tick(1, 0);
        let a = room.join_new(1, "", "", 3);
        // Welcome + 2 events fit; the third tick's event overflows.
        for tick in 1..=3 {
            room.begin_tick(tick, 0);
            room.run_tick();
        }
        assert_eq!(a.close_reason(), Some(LeaveReason::SlowConsumer));
        assert!(a.was_told(), "the writer hears of the overflow");
        assert_eq!(room.core().member_count(), 0);
    }

    #[test]
    fn shutdown_closes_every_outbox_and_tells_the_writers() {
        let mut room = room();
        let a = join(&mut room, 1);
        let b = join(&mut room, 2);
        a.take_decoded();
        b.take_decoded();
        assert!(!room.handle(Command::Shutdown));
        for o in [&a, &b] {
            assert_eq!(o.close_reason(), Some(LeaveReason::Shutdown));
            assert!(o.was_told());
        }
        assert_eq!(room.core().member_count(), 0);
    }

    #[test]
    fn abort_ends_every_session_without_the_simulation() {
        let mut room = Room::new("r", 60, Echo);
        let a = room.join_new(1, "", "", 8);
        room.output().clear();
        room.abort(LeaveReason::Shutdown);
        assert!(a.is_closed());
        assert_eq!(room.output().ready.len(), 1);
        assert_eq!(room.core().member_count(), 0);
    }
}
