//! The game room (`arena`): avatars moved by player inputs, bots that wander, one interest
//! group (the whole world) replicated every tick.
//!
//! Deterministic: bot paths and spawn points come from a seeded generator and every input is
//! one fixed movement step, so a test can predict positions exactly. Only resume tokens use
//! the OS generator, since they must not be guessable.

use std::collections::{HashMap, VecDeque};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use tickroom_proto::v1::{
    Entity, EntityKind, ErrorCode, Object, ObjectCreated, ObjectDeleted, RoomKind, Snapshot,
    Welcome, client_message::Body, object::State, server_message::Body as ServerBody,
};

use crate::engine::{CommandError, JoinRequest, LeaveReason, RoomCore, SessionId, Simulation};
use crate::outbox::{CloseReason, GroupId};

/// The whole world is one interest group.
pub const WORLD: GroupId = 0;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct GameConfig {
    pub tick_hz: u32,
    /// Bots that wander the world so snapshots have content.
    pub bots: u32,
    /// Avatars (connected or waiting to be resumed) the room admits.
    pub max_players: u32,
    pub world_width: f32,
    pub world_height: f32,
    /// Distance per second an input of length 1 moves an avatar.
    pub speed: f32,
    /// How long a disconnected avatar waits for its owner to resume (0: removed at once).
    pub resume_grace_ms: u64,
    /// Seed of bot paths and spawn points.
    pub seed: u64,
    /// Most inputs applied to one avatar in one tick. Each tick adds one step of budget
    /// (capped at this), each input spends one: a client that sends faster than the tick
    /// rate queues inputs, it does not move faster.
    pub max_inputs_per_tick: u32,
    /// Inputs an avatar may have waiting; beyond that they are refused.
    pub input_queue: u32,
}

impl Default for GameConfig {
    fn default() -> Self {
        Self {
            tick_hz: 60,
            bots: 0,
            max_players: 1000,
            world_width: 1000.0,
            world_height: 1000.0,
            speed: 200.0,
            resume_grace_ms: 10_000,
            seed: 1,
            max_inputs_per_tick: 4,
            input_queue: 64,
        }
    }
}

impl GameConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=1000).contains(&self.tick_hz) {
            return Err("tick_hz must be 1..=1000".into());
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.world_width) || !positive(self.world_height) || !positive(self.speed) {
            return Err("world_width, world_height and speed must be positive".into());
        }
        if self.max_inputs_per_tick == 0 || self.input_queue == 0 {
            return Err("max_inputs_per_tick and input_queue must be > 0".into());
        }
        Ok(())
    }

    fn grace_ticks(&self) -> u64 {
        self.resume_grace_ms * u64::from(self.tick_hz) / 1000
    }
}

#[derive(Debug, Clone, Copy)]
struct Ent {
    id: u32,
    kind: EntityKind,
    x: f32,
    y: f32,
    vx: f32,
    vy: f32,
    last_input_seq: u32,
}

impl Ent {
    fn object(&self) -> Object {
        Object {
            id: self.id,
            state: Some(State::Entity(Entity {
                kind: self.kind as i32,
                x: self.x,
                y: self.y,
                last_input_seq: self.last_input_seq,
            })),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Move {
    seq: u32,
    dx: f32,
    dy: f32,
}

#[derive(Debug)]
struct Avatar {
    owner: Option<SessionId>,
    token: String,
    inputs: VecDeque<Move>,
    last_received_seq: u32,
    detached_at: Option<u64>,
    /// Movement steps this avatar may take now (see `max_inputs_per_tick`).
    budget: u32,
}

/// See the module docs.
#[derive(Debug)]
pub struct GameRoom {
    cfg: GameConfig,
    /// Sorted by id (ids only grow), so snapshots list objects in a stable order.
    entities: Vec<Ent>,
    next_id: u32,
    avatars: HashMap<u32, Avatar>,
    by_session: HashMap<SessionId, u32>,
    by_token: HashMap<String, u32>,
    created: Vec<u32>,
    deleted: Vec<u32>,
    changed: bool,
    rng: StdRng,
    scratch: Vec<Object>,
}

impl GameRoom {
    pub fn new(cfg: GameConfig) -> Self {
        let mut room = Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            entities: Vec::new(),
            next_id: 1,
            avatars: HashMap::new(),
            by_session: HashMap::new(),
            by_token: HashMap::new(),
            created: Vec::new(),
            deleted: Vec::new(),
            changed: true,
            scratch: Vec::new(),
            cfg,
        };
        let bot_speed = room.cfg.speed * 0.5;
        for _ in 0..room.cfg.bots {
            let angle: f32 = room.rng.random_range(0.0..std::f32::consts::TAU);
            let (x, y) = room.spawn_point();
            let id = room.alloc_id();
            room.entities.push(Ent {
                id,
                kind: EntityKind::Bot,
                x,
                y,
                vx: angle.cos() * bot_speed,
                vy: angle.sin() * bot_speed,
                last_input_seq: 0,
            });
        }
        room
    }

    fn alloc_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn spawn_point(&mut self) -> (f32, f32) {
        (
            self.rng.random_range(0.0..self.cfg.world_width),
            self.rng.random_range(0.0..self.cfg.world_height),
        )
    }

    /// Current position of an object (tests and tools).
    pub fn position(&self, id: u32) -> Option<(f32, f32)> {
        let i = self.entities.binary_search_by_key(&id, |e| e.id).ok()?;
        Some((self.entities[i].x, self.entities[i].y))
    }

    pub fn object_count(&self) -> usize {
        self.entities.len()
    }

    fn remove_avatar(&mut self, id: u32) {
        if let Some(a) = self.avatars.remove(&id) {
            self.by_token.remove(&a.token);
            if let Some(owner) = a.owner {
                self.by_session.remove(&owner);
            }
        }
        if let Ok(i) = self.entities.binary_search_by_key(&id, |e| e.id) {
            self.entities.remove(i);
            self.deleted.push(id);
            self.changed = true;
        }
    }

    fn welcome(&self, id: u32, token: &str, resumed: bool) -> Welcome {
        Welcome {
            resume_token: token.to_owned(),
            your_object_id: id,
            resumed,
            world_width: self.cfg.world_width,
            world_height: self.cfg.world_height,
            speed: self.cfg.speed,
            ..Default::default()
        }
    }

    fn step_bots(&mut self, dt: f32) {
        let (w, h) = (self.cfg.world_width, self.cfg.world_height);
        for e in self
            .entities
            .iter_mut()
            .filter(|e| e.kind == EntityKind::Bot)
        {
            e.x += e.vx * dt;
            e.y += e.vy * dt;
            if e.x < 0.0 || e.x > w {
                e.vx = -e.vx;
                e.x = e.x.clamp(0.0, w);
            }
            if e.y < 0.0 || e.y > h {
                e.vy = -e.vy;
                e.y = e.y.clamp(0.0, h);
            }
            self.changed = true;
        }
    }

    fn apply_inputs(&mut self, step: f32) {
        let (w, h) = (self.cfg.world_width, self.cfg.world_height);
        let cap = self.cfg.max_inputs_per_tick;
        for (id, a) in &mut self.avatars {
            a.budget = (a.budget + 1).min(cap);
            if a.inputs.is_empty() {
                continue;
            }
            let n = a.inputs.len().min(a.budget as usize);
            a.budget -= n as u32;
            let Ok(i) = self.entities.binary_search_by_key(id, |e| e.id) else {
                continue;
            };
            let e = &mut self.entities[i];
            for m in a.inputs.drain(..n) {
                e.x = (e.x + m.dx * step).clamp(0.0, w);
                e.y = (e.y + m.dy * step).clamp(0.0, h);
                e.last_input_seq = m.seq;
            }
            self.changed = true;
        }
    }

    fn expire_detached(&mut self, tick: u64) {
        let grace = self.cfg.grace_ticks();
        let expired: Vec<u32> = self
            .avatars
            .iter()
            .filter(|(_, a)| a.detached_at.is_some_and(|t| tick >= t + grace))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove_avatar(id);
        }
    }
}

impl Simulation for GameRoom {
    fn kind(&self) -> RoomKind {
        RoomKind::Game
    }

    fn join(&mut self, ctx: &mut RoomCore, join: &JoinRequest) -> Result<Welcome, CommandError> {
        let resumed = (!join.resume_token.is_empty())
            .then(|| self.by_token.get(&join.resume_token).copied())
            .flatten();
        if let Some(id) = resumed {
            let avatar = self.avatars.get_mut(&id).expect("token maps to an avatar");
            if let Some(old) = avatar.owner.replace(join.session)
                && old != join.session
            {
                // The old connection is still open (its loss not yet noticed): this one wins.
                self.by_session.remove(&old);
                ctx.kick(old, CloseReason::ResumedElsewhere);
            }
            avatar.detached_at = None;
            let token = avatar.token.clone();
            self.by_session.insert(join.session, id);
            ctx.subscribe(join.session, WORLD);
            self.changed = true;
            return Ok(self.welcome(id, &token, true));
        }
        if self.avatars.len() >= self.cfg.max_players as usize {
            return Err(CommandError::new(
                ErrorCode::RoomFull,
                format!(
                    "room {} is full ({} players)",
                    ctx.name(),
                    self.cfg.max_players
                ),
            ));
        }
        let (x, y) = self.spawn_point();
        let id = self.alloc_id();
        let token = format!("{:032x}", rand::rng().random::<u128>());
        self.entities.push(Ent {
            id,
            kind: EntityKind::Avatar,
            x,
            y,
            vx: 0.0,
            vy: 0.0,
            last_input_seq: 0,
        });
        self.avatars.insert(
            id,
            Avatar {
                owner: Some(join.session),
                token: token.clone(),
                inputs: VecDeque::new(),
                last_received_seq: 0,
                detached_at: None,
                budget: 1,
            },
        );
        self.by_token.insert(token.clone(), id);
        self.by_session.insert(join.session, id);
        self.created.push(id);
        self.changed = true;
        ctx.subscribe(join.session, WORLD);
        Ok(self.welcome(id, &token, false))
    }

    fn leave(&mut self, ctx: &mut RoomCore, session: SessionId, reason: LeaveReason) {
        let Some(id) = self.by_session.remove(&session) else {
            return;
        };
        if reason.is_resumable() && self.cfg.grace_ticks() > 0 {
            if let Some(a) = self.avatars.get_mut(&id) {
                a.owner = None;
                a.detached_at = Some(ctx.tick());
            }
        } else {
            self.remove_avatar(id);
        }
    }

    fn command(
        &mut self,
        _ctx: &mut RoomCore,
        session: SessionId,
        body: Body,
    ) -> Result<(), CommandError> {
        let Body::Input(input) = body else {
            return Err(CommandError::new(
                ErrorCode::UnknownMessage,
                "game rooms take input, leave and ping",
            ));
        };
        let Some(avatar) = self
            .by_session
            .get(&session)
            .and_then(|id| self.avatars.get_mut(id))
        else {
            return Err(CommandError::new(ErrorCode::NotInRoom, "no avatar"));
        };
        if !input.move_x.is_finite() || !input.move_y.is_finite() {
            return Err(CommandError::new(
                ErrorCode::InvalidArgument,
                "input movement must be finite",
            ));
        }
        if input.seq <= avatar.last_received_seq {
            return Err(CommandError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "input seq {} is not above the last one ({})",
                    input.seq, avatar.last_received_seq
                ),
            ));
        }
        if avatar.inputs.len() >= self.cfg.input_queue as usize {
            return Err(CommandError::new(
                ErrorCode::RateLimited,
                "input queue full: send at most one input per tick",
            ));
        }
        let (mut dx, mut dy) = (input.move_x, input.move_y);
        let len = (dx * dx + dy * dy).sqrt();
        if len > 1.0 {
            dx /= len;
            dy /= len;
        }
        avatar.last_received_seq = input.seq;
        avatar.inputs.push_back(Move {
            seq: input.seq,
            dx,
            dy,
        });
        Ok(())
    }

    fn step(&mut self, ctx: &mut RoomCore) {
        let dt = 1.0 / ctx.tick_rate_hz() as f32;
        self.apply_inputs(self.cfg.speed * dt);
        self.step_bots(dt);
        self.expire_detached(ctx.tick());
    }

    fn replicate(&mut self, ctx: &mut RoomCore) {
        // One message each for the tick's creations and deletions, however many: a burst
        // of joins must not cost every member a reliable frame per join.
        let mut deleted = std::mem::take(&mut self.deleted);
        let mut created = Vec::new();
        for id in std::mem::take(&mut self.created) {
            if let Some(pos) = deleted.iter().position(|d| *d == id) {
                // Created and deleted within one tick: nobody needs to hear of it.
                deleted.remove(pos);
            } else if let Ok(i) = self.entities.binary_search_by_key(&id, |e| e.id) {
                created.push(self.entities[i].object());
            }
        }
        if !created.is_empty() {
            created.sort_unstable_by_key(|o| o.id);
            ctx.broadcast(
                WORLD,
                ServerBody::ObjectCreated(ObjectCreated { objects: created }),
            );
        }
        if !deleted.is_empty() {
            ctx.broadcast(
                WORLD,
                ServerBody::ObjectDeleted(ObjectDeleted { ids: deleted }),
            );
        }
        if !self.changed {
            return;
        }
        self.changed = false;
        let mut objects = std::mem::take(&mut self.scratch);
        objects.clear();
        objects.extend(self.entities.iter().map(Ent::object));
        let snapshot = Snapshot {
            server_time_us: ctx.now_us(),
            objects,
        };
        ctx.publish_snapshot(WORLD, &snapshot);
        self.scratch = snapshot.objects;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use prost::Message;
    use tickroom_proto::v1::ServerMessage;

    use super::*;
    use crate::engine::{Command, Room};
    use crate::outbox::Outbox;

    fn room(cfg: GameConfig) -> Room<GameRoom> {
        Room::new("arena", cfg.tick_hz, GameRoom::new(cfg))
    }

    fn join(room: &mut Room<GameRoom>, session: SessionId, token: &str) -> Arc<Outbox> {
        room.join_new(session, "", token, 1024)
    }

    fn drain(o: &Outbox) -> Vec<ServerMessage> {
        let mut v: Vec<Bytes> = Vec::new();
        o.take(&mut v);
        v.into_iter()
            .map(|b| ServerMessage::decode(b).unwrap())
            .collect()
    }

    fn welcome(msgs: &[ServerMessage]) -> Welcome {
        msgs.iter()
            .find_map(|m| match &m.body {
                Some(ServerBody::Welcome(w)) => Some(w.clone()),
                _ => None,
            })
            .expect("welcome")
    }

    fn input(room: &mut Room<GameRoom>, session: SessionId, seq: u32, x: f32) {
        room.handle(Command::Client {
            session,
            body: Body::Input(tickroom_proto::v1::Input {
                seq,
                move_x: x,
                move_y: 0.0,
            }),
        });
    }

    #[test]
    fn bots_are_deterministic_for_a_seed() {
        let cfg = GameConfig {
            bots: 50,
            ..Default::default()
        };
        let (mut a, mut b) = (room(cfg.clone()), room(cfg));
        for tick in 1..=300 {
            a.begin_tick(tick, 0);
            a.run_tick();
            b.begin_tick(tick, 0);
            b.run_tick();
        }
        for id in 1..=50 {
            let p = a.sim().position(id).unwrap();
            assert_eq!(p, b.sim().position(id).unwrap());
            assert!((0.0..=1000.0).contains(&p.0) && (0.0..=1000.0).contains(&p.1));
        }
    }

    #[test]
    fn sending_faster_than_the_tick_rate_does_not_move_faster() {
        let mut r = room(GameConfig::default());
        r.begin_tick(1, 0);
        let o = join(&mut r, 1, "");
        r.run_tick();
        let id = welcome(&drain(&o)).your_object_id;
        // Park the avatar at the left edge so the path is not clamped.
        for tick in 2..=320 {
            input(&mut r, 1, tick as u32, -1.0);
            r.begin_tick(tick, 0);
            r.run_tick();
        }
        let x0 = r.sim().position(id).unwrap().0;
        assert_eq!(x0, 0.0);
        // 64 queued inputs at once, then 10 ticks: 10 steps, plus at most the budget cap.
        for seq in 401..=464 {
            input(&mut r, 1, seq, 1.0);
        }
        for tick in 321..=330 {
            r.begin_tick(tick, 0);
            r.run_tick();
        }
        let step = 200.0 / 60.0;
        let x = r.sim().position(id).unwrap().0;
        let steps = (x / step).round() as u32;
        assert!(
            (10..=13).contains(&steps),
            "moved {steps} steps in 10 ticks"
        );
    }

    #[test]
    fn a_disconnected_avatar_waits_out_the_grace_period_then_is_deleted() {
        let cfg = GameConfig {
            resume_grace_ms: 1000,
            ..Default::default()
        };
        let mut r = room(cfg);
        r.begin_tick(1, 0);
        let watcher = join(&mut r, 1, "");
        let o = join(&mut r, 2, "");
        r.run_tick();
        let w = welcome(&drain(&o));
        drain(&watcher);
        r.handle(Command::Leave {
            session: 2,
            reason: LeaveReason::Closed(CloseReason::PeerGone),
        });
        for tick in 2..=60 {
            r.begin_tick(tick, 0);
            r.run_tick();
        }
        assert!(
            r.sim().position(w.your_object_id).is_some(),
            "parked, not deleted"
        );
        for tick in 61..=62 {
            r.begin_tick(tick, 0);
            r.run_tick();
        }
        assert!(r.sim().position(w.your_object_id).is_none());
        let deleted = drain(&watcher).into_iter().any(
            |m| matches!(m.body, Some(ServerBody::ObjectDeleted(d)) if d.ids.contains(&w.your_object_id)),
        );
        assert!(deleted, "the watcher hears of the deletion");
    }

    #[test]
    fn a_burst_of_joins_is_one_created_message_per_tick_for_each_member() {
        let mut r = room(GameConfig::default());
        r.begin_tick(1, 0);
        let first = join(&mut r, 1, "");
        r.run_tick();
        drain(&first);
        r.begin_tick(2, 0);
        for s in 2..=21 {
            join(&mut r, s, "");
        }
        r.run_tick();
        let created: Vec<_> = drain(&first)
            .into_iter()
            .filter_map(|m| match m.body {
                Some(ServerBody::ObjectCreated(c)) => Some(c.objects.len()),
                _ => None,
            })
            .collect();
        assert_eq!(created, [20], "20 joins, one message");
    }

    #[test]
    fn a_full_room_refuses_with_room_full() {
        let mut r = room(GameConfig {
            max_players: 1,
            ..Default::default()
        });
        join(&mut r, 1, "");
        let o = join(&mut r, 2, "");
        let msgs = drain(&o);
        assert!(
            matches!(&msgs[0].body, Some(ServerBody::Error(e)) if e.code == ErrorCode::RoomFull as i32)
        );
        assert_eq!(r.core().member_count(), 1);
    }

    #[test]
    fn a_snapshot_of_100_objects_is_small() {
        let mut r = room(GameConfig {
            bots: 99,
            ..Default::default()
        });
        r.begin_tick(1, 1_700_000_000_000_000);
        let o = join(&mut r, 1, "");
        r.run_tick();
        let mut frames = Vec::new();
        o.take(&mut frames);
        let snap = frames.last().unwrap();
        let msg = ServerMessage::decode(snap.clone()).unwrap();
        let Some(ServerBody::Snapshot(s)) = msg.body else {
            panic!("last frame is the snapshot")
        };
        assert_eq!(s.objects.len(), 100);
        // About 19 bytes an object: id, kind, two floats, framing.
        assert!(snap.len() < 2_200, "{} bytes", snap.len());
    }
}
