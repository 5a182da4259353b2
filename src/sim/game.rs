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
    /// Inputs applied per avatar per tick; the rest wait for the next tick.
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

    fn entity_mut(&mut self, id: u32) -> Option<&mut Ent> {
        let i = self.entities.binary_search_by_key(&id, |e| e.id).ok()?;
        Some(&mut self.entities[i])
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
        let per_tick = self.cfg.max_inputs_per_tick as usize;
        // Avatars are few next to entities; iterate ids to keep borrows apart.
        let ids: Vec<u32> = self
            .avatars
            .iter()
            .filter(|(_, a)| !a.inputs.is_empty())
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let moves: Vec<Move> = {
                let a = self.avatars.get_mut(&id).expect("listed above");
                let n = a.inputs.len().min(per_tick);
                a.inputs.drain(..n).collect()
            };
            if let Some(e) = self.entity_mut(id) {
                for m in moves {
                    e.x = (e.x + m.dx * step).clamp(0.0, w);
                    e.y = (e.y + m.dy * step).clamp(0.0, h);
                    e.last_input_seq = m.seq;
                }
                self.changed = true;
            }
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
        for id in std::mem::take(&mut self.created) {
            // Created and deleted in the same tick: nobody needs to hear of it.
            if let Ok(i) = self.entities.binary_search_by_key(&id, |e| e.id) {
                let object = self.entities[i].object();
                ctx.broadcast(
                    WORLD,
                    ServerBody::ObjectCreated(ObjectCreated {
                        object: Some(object),
                    }),
                );
            }
        }
        for id in std::mem::take(&mut self.deleted) {
            ctx.broadcast(WORLD, ServerBody::ObjectDeleted(ObjectDeleted { id }));
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
