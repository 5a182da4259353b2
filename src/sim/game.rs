//! The game room (`arena`): avatars moved by player inputs, bots that wander, and the world
//! replicated by area of interest.
//!
//! With `cell_size` set, the world is a grid of square cells. A client sees the cell its
//! avatar stands in and the 8 around it: every client in one cell shares one view, an interest
//! group whose snapshot is built once per tick from the cells' objects, each cell encoded once.
//! Without it (0) the whole world is one cell and everyone shares one view.
//!
//! Deterministic: bot paths and spawn points come from a seeded generator and every input is
//! one fixed movement step, so a test can predict positions exactly. Only resume tokens use
//! the OS generator, since they must not be guessable.

use std::collections::{BTreeMap, VecDeque};

use foldhash::HashMap;

use bytes::BytesMut;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Deserialize;
use tickroom_proto::v1::{
    Entity, EntityKind, ErrorCode, Object, ObjectCreated, ObjectDeleted, RoomKind, Welcome,
    client_message::Body, object::State, server_message::Body as ServerBody,
};

use crate::engine::{
    CommandError, GroupId, JoinRequest, LeaveReason, NoEvent, RoomCore, SessionId, Simulation,
};

/// The outbox slot every view's snapshot goes in: a client holds one view at a time, and
/// the view it moved to replaces the one it left.
const VIEW_SLOT: GroupId = 0;
// Field number of Snapshot.objects (proto/tickroom.proto).
const OBJECTS_TAG: u32 = 2;

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
    /// Side of an area-of-interest cell: a client sees its avatar's cell and the 8 around
    /// it. 0: the whole world is one cell.
    pub cell_size: f32,
    /// Every view gets a snapshot every tick, changed or not: the steady stream game
    /// clients interpolate against. false: only views in which something changed.
    pub steady_snapshots: bool,
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
            cell_size: 0.0,
            steady_snapshots: true,
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
        if !(self.cell_size.is_finite() && self.cell_size >= 0.0) {
            return Err("cell_size must be 0 (no area of interest) or positive".into());
        }
        if self.cell_size > 0.0
            && (self.world_width / self.cell_size).ceil()
                * (self.world_height / self.cell_size).ceil()
                > 1_000_000.0
        {
            return Err("cell_size is too small for the world: more than 1,000,000 cells".into());
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
    /// The view its owner is subscribed to (the avatar's cell when it was last placed).
    view: Option<GroupId>,
}

/// The area-of-interest grid. Cell `c` is also the view group of clients standing in it.
#[derive(Debug)]
struct Grid {
    cols: u32,
    rows: u32,
    size: f32,
    /// This tick's `Snapshot.objects` fields of each cell, encoded once.
    objects: Vec<BytesMut>,
    /// Cells whose contents changed this tick (an object moved, came or went).
    dirty: Vec<bool>,
    any_dirty: bool,
    /// Clients whose view is each cell.
    viewers: Vec<u32>,
}

impl Grid {
    fn new(cfg: &GameConfig) -> Self {
        let (cols, rows) = if cfg.cell_size > 0.0 {
            (
                ((cfg.world_width / cfg.cell_size).ceil() as u32).max(1),
                ((cfg.world_height / cfg.cell_size).ceil() as u32).max(1),
            )
        } else {
            (1, 1)
        };
        let n = (cols * rows) as usize;
        Self {
            cols,
            rows,
            size: cfg.cell_size,
            objects: vec![BytesMut::new(); n],
            // Everything is new on the first tick.
            dirty: vec![true; n],
            any_dirty: true,
            viewers: vec![0; n],
        }
    }

    /// Makes `cell` the view of client `owner`, whose current view is `view`: its group
    /// membership and the view counts follow.
    fn show(
        &mut self,
        ctx: &mut RoomCore,
        owner: SessionId,
        view: &mut Option<GroupId>,
        cell: GroupId,
    ) {
        let old = view.replace(cell);
        if let Some(old) = old {
            ctx.unsubscribe(owner, old);
        }
        self.watch(old, Some(cell));
        ctx.subscribe(owner, cell);
    }

    /// Moves one client's view count from `old` to `new`.
    fn watch(&mut self, old: Option<u32>, new: Option<u32>) {
        if let Some(old) = old {
            self.viewers[old as usize] -= 1;
        }
        if let Some(new) = new {
            self.viewers[new as usize] += 1;
        }
    }

    fn cell_of(&self, x: f32, y: f32) -> u32 {
        if self.size <= 0.0 {
            return 0;
        }
        // Positions are clamped to the world; the far edge belongs to the last cell.
        let cx = ((x / self.size) as u32).min(self.cols - 1);
        let cy = ((y / self.size) as u32).min(self.rows - 1);
        cy * self.cols + cx
    }

    fn touch(&mut self, cell: u32) {
        self.dirty[cell as usize] = true;
        self.any_dirty = true;
    }

    /// The cells a client standing in `cell` sees: it and its neighbours, row by row.
    fn view(&self, cell: u32) -> impl Iterator<Item = u32> + '_ {
        let (cx, cy) = (cell % self.cols, cell / self.cols);
        let xs = cx.saturating_sub(1)..=(cx + 1).min(self.cols - 1);
        (cy.saturating_sub(1)..=(cy + 1).min(self.rows - 1))
            .flat_map(move |y| xs.clone().map(move |x| y * self.cols + x))
    }
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
    /// Objects removed this tick, with the cell they were last in.
    deleted: Vec<(u32, u32)>,
    grid: Grid,
    rng: StdRng,
}

impl GameRoom {
    pub fn new(cfg: GameConfig) -> Self {
        let mut room = Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            entities: Vec::new(),
            next_id: 1,
            avatars: HashMap::default(),
            by_session: HashMap::default(),
            by_token: HashMap::default(),
            created: Vec::new(),
            deleted: Vec::new(),
            grid: Grid::new(&cfg),
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
            self.grid.watch(a.view, None);
            self.by_token.remove(&a.token);
            if let Some(owner) = a.owner {
                self.by_session.remove(&owner);
            }
        }
        if let Ok(i) = self.entities.binary_search_by_key(&id, |e| e.id) {
            let e = self.entities.remove(i);
            let cell = self.grid.cell_of(e.x, e.y);
            self.grid.touch(cell);
            self.deleted.push((cell, id));
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
        let grid = &mut self.grid;
        for e in self
            .entities
            .iter_mut()
            .filter(|e| e.kind == EntityKind::Bot)
        {
            grid.touch(grid.cell_of(e.x, e.y));
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
            grid.touch(grid.cell_of(e.x, e.y));
        }
    }

    fn apply_inputs(&mut self, ctx: &mut RoomCore, step: f32) {
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
            self.grid.touch(self.grid.cell_of(e.x, e.y));
            for m in a.inputs.drain(..n) {
                e.x = (e.x + m.dx * step).clamp(0.0, w);
                e.y = (e.y + m.dy * step).clamp(0.0, h);
                e.last_input_seq = m.seq;
            }
            let cell = self.grid.cell_of(e.x, e.y);
            self.grid.touch(cell);
            if let Some(owner) = a.owner
                && a.view != Some(cell)
            {
                // Walked into another cell: from this tick on its owner sees that view.
                self.grid.show(ctx, owner, &mut a.view, cell);
            }
        }
    }

    /// Subscribes an avatar's owner to the view of the cell it stands in, and makes that
    /// view due this tick so the owner gets a snapshot at once.
    fn place_viewer(&mut self, ctx: &mut RoomCore, id: u32) {
        let Some(a) = self.avatars.get_mut(&id) else {
            return;
        };
        let (Some(owner), Ok(i)) = (a.owner, self.entities.binary_search_by_key(&id, |e| e.id))
        else {
            return;
        };
        let cell = self.grid.cell_of(self.entities[i].x, self.entities[i].y);
        self.grid.show(ctx, owner, &mut a.view, cell);
        self.grid.touch(cell);
    }

    /// The tick's creations and deletions, one message of each per view that sees them.
    fn announce(&mut self, ctx: &mut RoomCore) {
        let mut deleted = std::mem::take(&mut self.deleted);
        // Created and deleted within one tick: nobody needs to hear of it.
        let created: Vec<u32> = std::mem::take(&mut self.created)
            .into_iter()
            .filter(|id| match deleted.iter().position(|(_, d)| d == id) {
                Some(pos) => {
                    deleted.remove(pos);
                    false
                }
                None => true,
            })
            .collect();
        if created.is_empty() && deleted.is_empty() {
            return;
        }
        // Ordered by view so every run sends the same messages in the same order.
        let mut per_view: BTreeMap<GroupId, (Vec<Object>, Vec<u32>)> = BTreeMap::new();
        for id in created {
            let Ok(i) = self.entities.binary_search_by_key(&id, |e| e.id) else {
                continue;
            };
            let e = &self.entities[i];
            for v in self.grid.view(self.grid.cell_of(e.x, e.y)) {
                per_view.entry(v).or_default().0.push(e.object());
            }
        }
        for (cell, id) in deleted {
            for v in self.grid.view(cell) {
                per_view.entry(v).or_default().1.push(id);
            }
        }
        for (view, (created, deleted)) in per_view {
            if !ctx.has_members(view) {
                continue;
            }
            if !created.is_empty() {
                ctx.broadcast(
                    view,
                    ServerBody::ObjectCreated(ObjectCreated { objects: created }),
                );
            }
            if !deleted.is_empty() {
                ctx.broadcast(
                    view,
                    ServerBody::ObjectDeleted(ObjectDeleted { ids: deleted }),
                );
            }
        }
    }

    /// Encodes the objects of every changed cell, once.
    fn encode_cells(&mut self) {
        let grid = &mut self.grid;
        for (cell, dirty) in grid.dirty.iter().enumerate() {
            if *dirty {
                grid.objects[cell].clear();
            }
        }
        // Entities are sorted by id, so each cell lists its objects in id order.
        for e in &self.entities {
            let cell = grid.cell_of(e.x, e.y) as usize;
            if grid.dirty[cell] {
                prost::encoding::message::encode(OBJECTS_TAG, &e.object(), &mut grid.objects[cell]);
            }
        }
    }

    /// Builds the snapshot of every watched view that is due (all of them with
    /// `steady_snapshots`, else those that saw a change), once per view.
    fn publish_views(&mut self, ctx: &mut RoomCore) {
        let grid = &self.grid;
        let mut views = Vec::new();
        if self.cfg.steady_snapshots {
            views.extend((0..grid.viewers.len() as u32).filter(|v| grid.viewers[*v as usize] > 0));
        } else {
            let mut due = vec![false; grid.dirty.len()];
            for (cell, _) in grid.dirty.iter().enumerate().filter(|(_, d)| **d) {
                for v in grid.view(cell as u32) {
                    if !due[v as usize] && grid.viewers[v as usize] > 0 {
                        due[v as usize] = true;
                        views.push(v);
                    }
                }
            }
            views.sort_unstable();
        }
        let now = ctx.now_us();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(9);
        for v in views {
            parts.clear();
            parts.extend(grid.view(v).map(|c| &grid.objects[c as usize][..]));
            let frame = ctx.encode_snapshot_parts(now, &parts);
            ctx.publish_frame(v, VIEW_SLOT, frame);
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
    type Event = NoEvent;

    fn kind(&self) -> RoomKind {
        RoomKind::Game
    }

    fn event(&mut self, _: &mut RoomCore, event: NoEvent) {
        match event {}
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
                ctx.kick(old, LeaveReason::Replaced);
            }
            avatar.detached_at = None;
            let token = avatar.token.clone();
            self.by_session.insert(join.session, id);
            self.place_viewer(ctx, id);
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
                view: None,
            },
        );
        self.by_token.insert(token.clone(), id);
        self.by_session.insert(join.session, id);
        self.created.push(id);
        self.place_viewer(ctx, id);
        Ok(self.welcome(id, &token, false))
    }

    fn leave(&mut self, ctx: &mut RoomCore, session: SessionId, reason: LeaveReason) {
        let Some(id) = self.by_session.remove(&session) else {
            return;
        };
        if reason.is_resumable() && self.cfg.grace_ticks() > 0 {
            if let Some(a) = self.avatars.get_mut(&id) {
                a.owner = None;
                self.grid.watch(a.view.take(), None);
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
        self.apply_inputs(ctx, self.cfg.speed * dt);
        self.step_bots(dt);
        self.expire_detached(ctx.tick());
    }

    fn replicate(&mut self, ctx: &mut RoomCore) {
        self.announce(ctx);
        if !self.grid.any_dirty && !self.cfg.steady_snapshots {
            return;
        }
        self.encode_cells();
        self.publish_views(ctx);
        self.grid.dirty.fill(false);
        self.grid.any_dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use prost::Message;
    use tickroom_proto::v1::{ServerMessage, Snapshot};

    use super::*;
    use crate::engine::SessionCommand;
    use crate::engine::testing::{Probe, TestDriver};

    fn room(cfg: GameConfig) -> TestDriver<GameRoom> {
        TestDriver::new("arena", cfg.tick_hz, GameRoom::new(cfg))
    }

    fn join(room: &mut TestDriver<GameRoom>, session: SessionId, token: &str) -> Probe {
        room.join_new(session, "", token, 1024)
    }

    fn drain(o: &Probe) -> Vec<ServerMessage> {
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

    fn input(room: &mut TestDriver<GameRoom>, session: SessionId, seq: u32, x: f32) {
        room.session(SessionCommand::Client {
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
        r.session(SessionCommand::Leave {
            session: 2,
            reason: LeaveReason::Disconnected,
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

    fn snapshot_of(msgs: &[ServerMessage]) -> Option<Snapshot> {
        msgs.iter().rev().find_map(|m| match &m.body {
            Some(ServerBody::Snapshot(s)) => Some(s.clone()),
            _ => None,
        })
    }

    fn cell_xy(p: (f32, f32), size: f32) -> (i32, i32) {
        ((p.0 / size) as i32, (p.1 / size) as i32)
    }

    fn near(a: (i32, i32), b: (i32, i32)) -> bool {
        (a.0 - b.0).abs() <= 1 && (a.1 - b.1).abs() <= 1
    }

    fn aoi(bots: u32, world: f32, cell: f32) -> GameConfig {
        GameConfig {
            bots,
            world_width: world,
            world_height: world,
            cell_size: cell,
            max_players: 10_000,
            ..Default::default()
        }
    }

    #[test]
    fn a_client_sees_exactly_its_cell_and_the_eight_around_it() {
        let mut r = room(aoi(400, 1000.0, 100.0));
        r.begin_tick(1, 1);
        let o = join(&mut r, 1, "");
        r.run_tick();
        let msgs = drain(&o);
        let me = welcome(&msgs).your_object_id;
        let mine = cell_xy(r.sim().position(me).unwrap(), 100.0);
        let seen: std::collections::BTreeSet<u32> = snapshot_of(&msgs)
            .unwrap()
            .objects
            .iter()
            .map(|o| o.id)
            .collect();
        let in_view: std::collections::BTreeSet<u32> = (1..=me)
            .filter(|id| near(cell_xy(r.sim().position(*id).unwrap(), 100.0), mine))
            .collect();
        assert!(seen.contains(&me), "a client always sees its own avatar");
        assert_eq!(seen, in_view);
        assert!(seen.len() < 100, "{} of 401 objects", seen.len());
        assert_eq!(r.core().groups_of(1), [mine.1 as u32 * 10 + mine.0 as u32]);
    }

    #[test]
    fn each_view_is_encoded_once_and_shared_by_its_clients() {
        // 9 cells crowded with bots: every view changes every tick.
        let mut r = room(aoi(500, 300.0, 100.0));
        r.begin_tick(1, 1);
        let outboxes: Vec<_> = (1..=60).map(|s| join(&mut r, s, "")).collect();
        r.run_tick();
        for o in &outboxes {
            drain(o);
        }
        let before = r.core().encodes();
        r.begin_tick(2, 2);
        r.run_tick();
        let mut frames: HashMap<GroupId, Bytes> = HashMap::default();
        for (i, o) in outboxes.iter().enumerate() {
            let mut got = Vec::new();
            o.take(&mut got);
            assert_eq!(got.len(), 1, "one snapshot a tick");
            let view = r.core().groups_of(i as SessionId + 1)[0];
            let first = frames.entry(view).or_insert_with(|| got[0].clone());
            assert_eq!(
                first.as_ptr(),
                got[0].as_ptr(),
                "clients of a view share one frame"
            );
        }
        assert_eq!(r.core().encodes() - before, frames.len() as u64);
    }

    #[test]
    fn walking_into_another_cell_switches_the_view() {
        let mut r = room(aoi(0, 1000.0, 100.0));
        r.begin_tick(1, 1);
        let o = join(&mut r, 1, "");
        r.run_tick();
        let me = welcome(&drain(&o)).your_object_id;
        let start = cell_xy(r.sim().position(me).unwrap(), 100.0);
        let dir = if start.0 < 5 { 1.0 } else { -1.0 };
        // 100 units at 200/s, one step a tick: at most 30 ticks to cross into the next cell.
        for tick in 2..=40 {
            input(&mut r, 1, tick as u32, dir);
            r.begin_tick(tick, tick as i64);
            r.run_tick();
            let now = cell_xy(r.sim().position(me).unwrap(), 100.0);
            let view = (now.1 * 10 + now.0) as GroupId;
            assert_eq!(r.core().groups_of(1), [view], "tick {tick}");
            let snap = snapshot_of(&drain(&o)).expect("the avatar moved: a snapshot");
            assert!(snap.objects.iter().any(|o| o.id == me));
        }
        let end = cell_xy(r.sim().position(me).unwrap(), 100.0);
        assert_ne!(start, end, "crossed a cell boundary");
    }

    #[test]
    fn creations_and_deletions_reach_only_the_views_that_see_them() {
        let mut r = room(aoi(0, 1000.0, 100.0));
        r.begin_tick(1, 1);
        let watchers: Vec<_> = (1..=40).map(|s| join(&mut r, s, "")).collect();
        r.run_tick();
        let ids: Vec<u32> = watchers
            .iter()
            .map(|o| welcome(&drain(o)).your_object_id)
            .collect();
        r.begin_tick(2, 2);
        let o = join(&mut r, 100, "");
        r.run_tick();
        let newcomer = welcome(&drain(&o)).your_object_id;
        let at = cell_xy(r.sim().position(newcomer).unwrap(), 100.0);
        let mut told = 0;
        for (w, id) in watchers.iter().zip(&ids) {
            let sees = near(cell_xy(r.sim().position(*id).unwrap(), 100.0), at);
            let heard = drain(w).iter().any(|m| {
                matches!(&m.body, Some(ServerBody::ObjectCreated(c)) if c.objects.iter().any(|o| o.id == newcomer))
            });
            assert_eq!(heard, sees, "watcher {id}");
            told += usize::from(heard);
        }
        assert!(
            0 < told && told < 40,
            "{told} of 40 watchers see the newcomer"
        );
        r.session(SessionCommand::Leave {
            session: 100,
            reason: LeaveReason::Left,
        });
        r.begin_tick(3, 3);
        r.run_tick();
        let mut heard_deleted = 0;
        for w in &watchers {
            heard_deleted += usize::from(drain(w).iter().any(|m| {
                matches!(&m.body, Some(ServerBody::ObjectDeleted(d)) if d.ids.contains(&newcomer))
            }));
        }
        assert_eq!(heard_deleted, told);
    }

    #[test]
    fn steady_views_get_a_snapshot_every_tick_and_on_change_views_only_when_something_moves() {
        for steady in [true, false] {
            let mut r = room(GameConfig {
                steady_snapshots: steady,
                ..aoi(0, 1000.0, 100.0)
            });
            r.begin_tick(1, 1);
            let o = join(&mut r, 1, "");
            r.run_tick();
            drain(&o);
            let mut snapshots = 0;
            for tick in 2..=11 {
                r.begin_tick(tick, tick as i64);
                r.run_tick();
                snapshots += drain(&o).len();
            }
            assert_eq!(snapshots, if steady { 10 } else { 0 }, "steady {steady}");
        }
    }

    #[test]
    fn views_of_clients_that_left_or_were_resumed_elsewhere_are_not_built() {
        let mut r = room(aoi(0, 1000.0, 100.0));
        r.begin_tick(1, 1);
        let a = join(&mut r, 1, "");
        join(&mut r, 2, "");
        r.run_tick();
        let token = welcome(&drain(&a)).resume_token;
        // Session 1 drops (resumable), comes back as 3; session 2 leaves for good.
        r.session(SessionCommand::Leave {
            session: 1,
            reason: LeaveReason::Disconnected,
        });
        r.session(SessionCommand::Leave {
            session: 2,
            reason: LeaveReason::Left,
        });
        let b = join(&mut r, 3, &token);
        r.begin_tick(2, 2);
        r.run_tick();
        drain(&b);
        let before = r.core().encodes();
        r.begin_tick(3, 3);
        r.run_tick();
        assert_eq!(drain(&b).len(), 1, "the resumed client's view");
        assert_eq!(r.core().encodes() - before, 1, "and no other");
    }
}
