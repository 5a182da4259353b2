//! The game room (`arena`): avatars moved by player inputs, bots that wander, and the world
//! replicated by area of interest.
//!
//! With `cell_size` set, the world is a grid of square cells. A client sees the cell its
//! avatar stands in and the 8 around it: every client in one cell shares one view, an interest
//! group whose snapshot is built once per tick from the cells' objects, each cell encoded once.
//! Without it (0) the whole world is one cell and everyone shares one view.
//!
//! Positions are quantized: whole multiples of 1/[`POSITION_SCALE`] world units, kept as
//! integers, so the room, its snapshots and a client's prediction agree bit for bit.
//! Protocol 2 clients get each view as a delta against the view's previous snapshot, or a
//! keyframe (`super::view`): the delta is encoded once per view, and so is the keyframe, for
//! the members that need one this tick (joined, changed view, or missed a snapshot). Protocol 1
//! clients get full snapshots, encoded once per view too, only while some are watching.
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
use tickroom_proto::view::Row;

use super::view::{self, Held};
use crate::engine::{
    CommandError, GroupId, JoinRequest, LeaveReason, NoEvent, RoomCore, SessionId, Simulation,
    Variant,
};

/// Positions are whole multiples of `1 / POSITION_SCALE` world units (`Welcome.position_scale`).
pub const POSITION_SCALE: u32 = 64;
/// The newest `Join.protocol`: views as keyframes and deltas.
pub const PROTOCOL: u32 = 2;

// Variants of a view's snapshot (see `RoomCore::set_variant`).
/// Protocol 2: the view's delta (a keyframe when the view starts or on its periodic turn).
const DELTA: Variant = 0;
/// Protocol 2 members that need a keyframe this tick.
const KEY: Variant = 1;
/// Protocol 1: the full snapshot.
const FULL: Variant = 2;

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
    /// Protocol 2: every view sends all its members a keyframe once in this many ticks (the
    /// views take turns); 0: only when a member needs one.
    pub keyframe_interval: u32,
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
            keyframe_interval: 60,
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

/// A world size or position in world units, quantized.
fn quantize(v: f32) -> u32 {
    (v * POSITION_SCALE as f32).round().max(0.0) as u32
}

/// Moves a quantized coordinate by `d`, staying in `[0, max]`.
fn step_within(x: u32, d: i32, max: u32) -> u32 {
    (i64::from(x) + i64::from(d)).clamp(0, i64::from(max)) as u32
}

#[derive(Debug, Clone, Copy)]
struct Ent {
    id: u32,
    kind: EntityKind,
    /// Position in units of 1/POSITION_SCALE.
    x: u32,
    y: u32,
    /// Bots: velocity, units per tick.
    vx: i32,
    vy: i32,
    last_input_seq: u32,
    /// Position and seq at the end of the previous tick: a view it enters predicts it from
    /// how it moved then.
    was: (u32, u32, u32),
}

impl Ent {
    fn object(&self) -> Object {
        let scale = POSITION_SCALE as f32;
        Object {
            id: self.id,
            state: Some(State::Entity(Entity {
                kind: self.kind as i32,
                x: self.x as f32 / scale,
                y: self.y as f32 / scale,
                last_input_seq: self.last_input_seq,
            })),
        }
    }

    fn row(&self) -> Row {
        Row {
            id: self.id,
            kind: self.kind as i32,
            x: self.x,
            y: self.y,
            seq: self.last_input_seq,
            vx: self.x.wrapping_sub(self.was.0) as i32,
            vy: self.y.wrapping_sub(self.was.1) as i32,
            vseq: self.last_input_seq.wrapping_sub(self.was.2) as i32,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Move {
    seq: u32,
    /// The step, in units of 1/POSITION_SCALE.
    dx: i32,
    dy: i32,
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
    /// Its owner's `Join.protocol` (1 for 0).
    protocol: u32,
}

impl Avatar {
    /// The variant of its view's snapshots the owner takes between keyframes.
    fn variant(&self) -> Variant {
        if self.protocol >= PROTOCOL {
            DELTA
        } else {
            FULL
        }
    }
}

/// The area-of-interest grid. Cell `c` is also the view group of clients standing in it.
#[derive(Debug)]
struct Grid {
    cols: u32,
    rows: u32,
    /// Side of a cell in units of 1/POSITION_SCALE; 0: one cell.
    size: u32,
    /// This tick's `Snapshot.objects` fields of each cell, encoded once.
    objects: Vec<BytesMut>,
    /// Cells whose contents changed this tick (an object moved, came or went).
    dirty: Vec<bool>,
    any_dirty: bool,
    /// Clients whose view is each cell: protocol 2, protocol 1.
    viewers: Vec<[u32; 2]>,
    /// The cells' encoded objects are out of date (nobody read them for a while).
    stale: bool,
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
            size: if cfg.cell_size > 0.0 {
                quantize(cfg.cell_size).max(1)
            } else {
                0
            },
            objects: vec![BytesMut::new(); n],
            // Everything is new on the first tick.
            dirty: vec![true; n],
            any_dirty: true,
            viewers: vec![[0; 2]; n],
            stale: true,
        }
    }

    fn cells(&self) -> usize {
        self.dirty.len()
    }

    /// Makes `cell` the view of client `owner`, whose current view is `view`: its group
    /// membership and the view counts follow.
    fn show(&mut self, ctx: &mut RoomCore, owner: SessionId, avatar: &mut Avatar, cell: GroupId) {
        let old = avatar.view.replace(cell);
        if let Some(old) = old {
            ctx.unsubscribe(owner, old);
        }
        self.watch(avatar, old, Some(cell));
        ctx.subscribe(owner, cell);
        ctx.set_variant(owner, cell, avatar.variant());
    }

    /// Moves one client's view count from `old` to `new`.
    fn watch(&mut self, avatar: &Avatar, old: Option<u32>, new: Option<u32>) {
        let p = usize::from(avatar.variant() == FULL);
        if let Some(old) = old {
            self.viewers[old as usize][p] -= 1;
        }
        if let Some(new) = new {
            self.viewers[new as usize][p] += 1;
        }
    }

    fn watched(&self, cell: u32) -> bool {
        self.viewers[cell as usize] != [0, 0]
    }

    fn cell_of(&self, x: u32, y: u32) -> u32 {
        if self.size == 0 {
            return 0;
        }
        // Positions are clamped to the world; the far edge belongs to the last cell.
        let cx = (x / self.size).min(self.cols - 1);
        let cy = (y / self.size).min(self.rows - 1);
        cy * self.cols + cx
    }

    fn touch(&mut self, cell: u32) {
        self.dirty[cell as usize] = true;
        self.any_dirty = true;
    }

    /// The cells a client standing in `cell` sees: it and its neighbours, row by row.
    fn view(&self, cell: u32) -> impl Iterator<Item = u32> + '_ {
        let ([x0, x1], [y0, y1]) = self.around(cell);
        (y0..y1).flat_map(move |y| (x0..x1).map(move |x| y * self.cols + x))
    }

    /// The columns and rows (half-open) of [`Grid::view`]: for loops that run per object.
    fn around(&self, cell: u32) -> ([u32; 2], [u32; 2]) {
        let (cx, cy) = (cell % self.cols, cell / self.cols);
        (
            [cx.saturating_sub(1), (cx + 2).min(self.cols)],
            [cy.saturating_sub(1), (cy + 2).min(self.rows)],
        )
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
    /// World size in units of 1/POSITION_SCALE.
    bounds: (u32, u32),
    /// Avatars whose owners need a keyframe of their view this tick.
    need_key: Vec<u32>,
    /// Members set to the keyframe variant last tick, to set back.
    keyed: Vec<(SessionId, GroupId)>,
    /// Per view (cell): what its protocol 2 members hold, and the state being built.
    held: Vec<Held>,
    next: Vec<Vec<Row>>,
    /// Writes every protocol 2 view.
    writer: view::Writer,
}

impl GameRoom {
    pub fn new(cfg: GameConfig) -> Self {
        let grid = Grid::new(&cfg);
        let cells = grid.cells();
        let mut room = Self {
            rng: StdRng::seed_from_u64(cfg.seed),
            entities: Vec::new(),
            next_id: 1,
            avatars: HashMap::default(),
            by_session: HashMap::default(),
            by_token: HashMap::default(),
            created: Vec::new(),
            deleted: Vec::new(),
            grid,
            bounds: (quantize(cfg.world_width), quantize(cfg.world_height)),
            need_key: Vec::new(),
            keyed: Vec::new(),
            held: (0..cells).map(|_| Held::default()).collect(),
            next: vec![Vec::new(); cells],
            writer: view::Writer::default(),
            cfg,
        };
        // Units of 1/POSITION_SCALE per tick.
        let bot_speed = room.cfg.speed * 0.5 * POSITION_SCALE as f32 / room.cfg.tick_hz as f32;
        for _ in 0..room.cfg.bots {
            let angle: f32 = room.rng.random_range(0.0..std::f32::consts::TAU);
            let (x, y) = room.spawn_point();
            let id = room.alloc_id();
            room.entities.push(Ent {
                id,
                kind: EntityKind::Bot,
                x,
                y,
                vx: (angle.cos() * bot_speed).round() as i32,
                vy: (angle.sin() * bot_speed).round() as i32,
                last_input_seq: 0,
                was: (x, y, 0),
            });
        }
        room
    }

    fn alloc_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn spawn_point(&mut self) -> (u32, u32) {
        let (w, h) = self.bounds;
        (
            quantize(self.rng.random_range(0.0..self.cfg.world_width)).min(w),
            quantize(self.rng.random_range(0.0..self.cfg.world_height)).min(h),
        )
    }

    /// Current position of an object in world units (tests and tools).
    pub fn position(&self, id: u32) -> Option<(f32, f32)> {
        let (x, y) = self.quantized_position(id)?;
        let scale = POSITION_SCALE as f32;
        Some((x as f32 / scale, y as f32 / scale))
    }

    /// Current position of an object in units of 1/POSITION_SCALE.
    pub fn quantized_position(&self, id: u32) -> Option<(u32, u32)> {
        let i = self.entities.binary_search_by_key(&id, |e| e.id).ok()?;
        Some((self.entities[i].x, self.entities[i].y))
    }

    pub fn object_count(&self) -> usize {
        self.entities.len()
    }

    fn remove_avatar(&mut self, id: u32) {
        if let Some(a) = self.avatars.remove(&id) {
            self.grid.watch(&a, a.view, None);
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
            position_scale: POSITION_SCALE,
            ..Default::default()
        }
    }

    fn step_bots(&mut self) {
        let (w, h) = self.bounds;
        let grid = &mut self.grid;
        for e in self
            .entities
            .iter_mut()
            .filter(|e| e.kind == EntityKind::Bot)
        {
            grid.touch(grid.cell_of(e.x, e.y));
            // Off an edge: bounce, and stop at it for this tick.
            let x = i64::from(e.x) + i64::from(e.vx);
            if x < 0 || x > i64::from(w) {
                e.vx = -e.vx;
            }
            let y = i64::from(e.y) + i64::from(e.vy);
            if y < 0 || y > i64::from(h) {
                e.vy = -e.vy;
            }
            e.x = x.clamp(0, i64::from(w)) as u32;
            e.y = y.clamp(0, i64::from(h)) as u32;
            grid.touch(grid.cell_of(e.x, e.y));
        }
    }

    fn apply_inputs(&mut self, ctx: &mut RoomCore) {
        let (w, h) = self.bounds;
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
                e.x = step_within(e.x, m.dx, w);
                e.y = step_within(e.y, m.dy, h);
                e.last_input_seq = m.seq;
            }
            let cell = self.grid.cell_of(e.x, e.y);
            self.grid.touch(cell);
            if let Some(owner) = a.owner
                && a.view != Some(cell)
            {
                // Walked into another cell: from this tick on its owner sees that view, and
                // starts it from a keyframe.
                self.grid.show(ctx, owner, a, cell);
                self.need_key.push(*id);
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
        self.grid.show(ctx, owner, a, cell);
        self.grid.touch(cell);
        self.need_key.push(id);
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

    /// Encodes the objects of every changed cell once (every cell when they are stale), for
    /// protocol 1 snapshots.
    fn encode_cells(&mut self) {
        let grid = &mut self.grid;
        let all = std::mem::take(&mut grid.stale);
        for (cell, dirty) in grid.dirty.iter().enumerate() {
            if *dirty || all {
                grid.objects[cell].clear();
            }
        }
        // Entities are sorted by id, so each cell lists its objects in id order.
        for e in &self.entities {
            let cell = grid.cell_of(e.x, e.y) as usize;
            if grid.dirty[cell] || all {
                prost::encoding::message::encode(OBJECTS_TAG, &e.object(), &mut grid.objects[cell]);
            }
        }
    }

    /// Protocol 2 members that need a keyframe this tick (they joined, changed view, or the
    /// last hand-out dropped a snapshot they had not taken) take the keyframe variant of
    /// their view. Returns the views that must send one.
    fn assign_keyframes(&mut self, ctx: &mut RoomCore) -> Vec<bool> {
        for &session in ctx.missed() {
            if let Some(id) = self.by_session.get(&session) {
                self.need_key.push(*id);
            }
        }
        let mut wants = vec![false; self.grid.cells()];
        for id in self.need_key.drain(..) {
            let Some(a) = self.avatars.get(&id) else {
                continue;
            };
            if let (Some(owner), Some(view), DELTA) = (a.owner, a.view, a.variant()) {
                ctx.set_variant(owner, view, KEY);
                self.keyed.push((owner, view));
                wants[view as usize] = true;
            }
        }
        wants
    }

    /// The watched views due this tick: all of them with `steady_snapshots`, else those that
    /// saw a change or owe a member a keyframe. In cell order.
    fn due_views(&self, wants_key: &[bool]) -> Vec<bool> {
        let grid = &self.grid;
        let mut due = vec![false; grid.cells()];
        if self.cfg.steady_snapshots {
            for (v, d) in due.iter_mut().enumerate() {
                *d = grid.watched(v as u32);
            }
        } else {
            for (cell, _) in grid.dirty.iter().enumerate().filter(|(_, d)| **d) {
                for v in grid.view(cell as u32) {
                    due[v as usize] |= grid.watched(v);
                }
            }
            for (d, w) in due.iter_mut().zip(wants_key) {
                *d |= *w;
            }
        }
        due
    }

    /// Builds the snapshot of every due view, each variant once per view: for protocol 2
    /// members the delta (a keyframe when the view starts or on its periodic turn) and, if a
    /// member needs one, the keyframe; for protocol 1 members the full snapshot.
    fn publish_views(&mut self, ctx: &mut RoomCore) {
        let wants_key = self.assign_keyframes(ctx);
        let due = self.due_views(&wants_key);
        let (tick, now) = (ctx.tick(), ctx.now_us());
        // What the protocol 2 members of unwatched views held is gone with them.
        for (v, held) in self.held.iter_mut().enumerate() {
            if self.grid.viewers[v][0] == 0 && held.tick.is_some() {
                *held = Held::default();
            }
        }
        // Each object goes into the state of every due view that sees it, in id order.
        let v2: Vec<bool> = (0..due.len())
            .map(|v| due[v] && self.grid.viewers[v][0] > 0)
            .collect();
        for next in &mut self.next {
            next.clear();
        }
        if v2.contains(&true) {
            let (grid, cols) = (&self.grid, self.grid.cols);
            // Plain loops over the 3 × 3 cells: this runs for every object every tick.
            for e in &self.entities {
                let row = e.row();
                let ([x0, x1], [y0, y1]) = grid.around(grid.cell_of(e.x, e.y));
                for y in y0..y1 {
                    let r = (y * cols + x0) as usize..(y * cols + x1) as usize;
                    for (due, next) in v2[r.clone()].iter().zip(&mut self.next[r]) {
                        if *due {
                            next.push(row);
                        }
                    }
                }
            }
        }
        let any_v1 = (0..due.len()).any(|v| due[v] && self.grid.viewers[v][1] > 0);
        if any_v1 {
            self.encode_cells();
        } else {
            self.grid.stale = true;
        }
        let mut parts: Vec<&[u8]> = Vec::with_capacity(9);
        for v in (0..due.len() as u32).filter(|v| due[*v as usize]) {
            let [p2, p1] = self.grid.viewers[v as usize];
            let full = (p1 > 0).then(|| {
                parts.clear();
                parts.extend(
                    self.grid
                        .view(v)
                        .map(|c| &self.grid.objects[c as usize][..]),
                );
                ctx.encode_snapshot_parts(now, &parts)
            });
            if p2 == 0 {
                if let Some(full) = full {
                    ctx.publish_frame(v, VIEW_SLOT, full);
                }
                continue;
            }
            let held = &mut self.held[v as usize];
            let next = &mut self.next[v as usize];
            let k = u64::from(self.cfg.keyframe_interval);
            let periodic = k > 0 && (tick + u64::from(v)) % k == 0;
            let w = &mut self.writer;
            match held.tick {
                Some(base) if !periodic => {
                    let (sum, delta) = w.delta(v, base, &held.rows, next);
                    let frame = ctx.encode_snapshot_parts(now, &[delta]);
                    ctx.publish_frame(v, VIEW_SLOT, frame);
                    if wants_key[v as usize] {
                        let frame = ctx.encode_snapshot_parts(now, &[w.keyframe(v, next, sum)]);
                        ctx.publish_variant(v, KEY, frame);
                    }
                }
                // Nobody holds this view yet, or it is its turn: everyone gets the keyframe.
                _ => {
                    let sum = view::advance(&held.rows, next);
                    let frame = ctx.encode_snapshot_parts(now, &[w.keyframe(v, next, sum)]);
                    ctx.publish_frame(v, VIEW_SLOT, frame);
                }
            }
            if let Some(full) = full {
                ctx.publish_variant(v, FULL, full);
            }
            std::mem::swap(&mut held.rows, next);
            held.tick = Some(tick);
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
        if join.protocol > PROTOCOL {
            return Err(CommandError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "protocol {} is not spoken here (1 to {PROTOCOL})",
                    join.protocol
                ),
            ));
        }
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
            // The new connection may speak another protocol than the one it replaces.
            if let Some(view) = avatar.view.take() {
                self.grid.watch(avatar, Some(view), None);
            }
            avatar.protocol = join.protocol.max(1);
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
            vx: 0,
            vy: 0,
            last_input_seq: 0,
            was: (x, y, 0),
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
                protocol: join.protocol.max(1),
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
                let view = a.view.take();
                self.grid.watch(a, view, None);
                a.detached_at = Some(ctx.tick());
            }
        } else {
            self.remove_avatar(id);
        }
    }

    fn command(
        &mut self,
        ctx: &mut RoomCore,
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
        // docs/protocol.md 4.1: 32-bit floats, rounded half away from zero, so a client
        // predicts the same step.
        let step = self.cfg.speed * POSITION_SCALE as f32 / ctx.tick_rate_hz() as f32;
        avatar.last_received_seq = input.seq;
        avatar.inputs.push_back(Move {
            seq: input.seq,
            dx: (dx * step).round() as i32,
            dy: (dy * step).round() as i32,
        });
        Ok(())
    }

    fn step(&mut self, ctx: &mut RoomCore) {
        for e in &mut self.entities {
            e.was = (e.x, e.y, e.last_input_seq);
        }
        self.apply_inputs(ctx);
        self.step_bots();
        self.expire_detached(ctx.tick());
    }

    fn replicate(&mut self, ctx: &mut RoomCore) {
        self.announce(ctx);
        // Last tick's keyframe takers are back on deltas.
        for (owner, view) in self.keyed.drain(..) {
            ctx.set_variant(owner, view, DELTA);
        }
        if !self.grid.any_dirty
            && !self.cfg.steady_snapshots
            && self.need_key.is_empty()
            && ctx.missed().is_empty()
        {
            return;
        }
        self.publish_views(ctx);
        self.grid.dirty.fill(false);
        self.grid.any_dirty = false;
    }

    fn compact(&mut self) {
        crate::engine::shrink(&mut self.entities);
        crate::engine::shrink(&mut self.avatars);
        crate::engine::shrink(&mut self.by_session);
        crate::engine::shrink(&mut self.by_token);
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
    fn a_crowd_that_left_gives_its_room_back_at_the_next_sweep() {
        let mut r = room(GameConfig {
            resume_grace_ms: 0,
            max_players: 5_000,
            ..Default::default()
        });
        r.begin_tick(1, 0);
        let stay = join(&mut r, 1, "");
        let crowd: Vec<Probe> = (2..=2_000).map(|s| join(&mut r, s, "")).collect();
        r.run_tick();
        let big = r.sim().avatars.capacity();
        assert!(big >= 2_000);
        for s in 2..=2_000 {
            r.session(SessionCommand::Leave {
                session: s,
                reason: LeaveReason::Left,
            });
        }
        r.begin_tick(2, 0);
        r.run_tick();
        drop(crowd);
        r.sweep();
        let g = r.sim();
        assert!(
            g.avatars.capacity() < big / 4,
            "{} of {big}",
            g.avatars.capacity()
        );
        assert!(g.by_session.capacity() < big / 4 && g.entities.capacity() < big / 4);
        // The one who stayed still plays.
        let me = welcome(&drain(&stay)).your_object_id;
        assert!(r.sim().position(me).is_some());
        input(&mut r, 1, 1, 1.0);
        r.begin_tick(3, 0);
        r.run_tick();
        assert!(!drain(&stay).is_empty());
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

    // ---- protocol 2: quantized views

    fn join2(room: &mut TestDriver<GameRoom>, session: SessionId, token: &str) -> Probe {
        room.join_speaking(session, "", token, 1024, PROTOCOL)
    }

    /// A protocol 2 client: applies every view it is sent, as docs/protocol.md 4.4 says.
    #[derive(Default)]
    struct Client {
        state: tickroom_proto::view::ViewState,
        keyframes: u32,
        deltas: u32,
        missed: u32,
        bytes: usize,
        welcome: Option<Welcome>,
    }

    impl Client {
        /// Reads everything waiting; returns the views' ticks it applied.
        fn read(&mut self, o: &Probe) -> Vec<u64> {
            let mut frames = Vec::new();
            o.take(&mut frames);
            let mut applied = Vec::new();
            for f in frames {
                let msg = ServerMessage::decode(f.clone()).unwrap();
                let s = match msg.body {
                    Some(ServerBody::Snapshot(s)) => s,
                    Some(ServerBody::Welcome(w)) => {
                        self.welcome = Some(w);
                        continue;
                    }
                    _ => continue,
                };
                assert!(
                    s.objects.is_empty(),
                    "protocol 2 snapshots carry a view only"
                );
                self.bytes += f.len();
                let v = s.view.expect("a view");
                match self.state.apply(msg.tick, &v) {
                    Ok(true) => self.keyframes += 1,
                    Ok(false) => self.deltas += 1,
                    Err(tickroom_proto::view::ApplyError::MissedBase { .. }) => {
                        self.missed += 1;
                        continue;
                    }
                    Err(e) => panic!("tick {}: {e}", msg.tick),
                }
                applied.push(msg.tick);
            }
            applied
        }

        /// Asserts the client holds exactly the room's objects in the cells around `me`.
        fn agrees(&self, r: &TestDriver<GameRoom>, me: u32, cell: f32) {
            let mine = cell_xy(r.sim().position(me).unwrap(), cell);
            let room: Vec<(u32, (u32, u32))> = (1..=r.sim().next_id)
                .filter_map(|id| Some((id, r.sim().quantized_position(id)?)))
                .filter(|(id, _)| {
                    cell <= 0.0 || near(cell_xy(r.sim().position(*id).unwrap(), cell), mine)
                })
                .collect();
            let held: Vec<(u32, (u32, u32))> = self
                .state
                .rows()
                .iter()
                .map(|row| (row.id, (row.x, row.y)))
                .collect();
            assert_eq!(held, room);
        }
    }

    #[test]
    fn a_protocol_2_client_holds_exactly_its_view_tick_after_tick() {
        let mut r = room(aoi(200, 1000.0, 250.0));
        r.begin_tick(1, 1);
        let o = join2(&mut r, 1, "");
        r.run_tick();
        let mut c = Client::default();
        c.read(&o);
        let w = c.welcome.clone().expect("a welcome");
        assert_eq!(w.position_scale, POSITION_SCALE);
        let me = w.your_object_id;
        for tick in 2..=200u64 {
            // Walk a square so the view changes now and then.
            let dir = if (tick / 50) % 2 == 0 { 1.0 } else { -1.0 };
            input(&mut r, 1, tick as u32, dir);
            r.begin_tick(tick, tick as i64);
            r.run_tick();
            assert_eq!(c.read(&o), [tick], "one view a tick, applied");
            c.agrees(&r, me, 250.0);
        }
        // The first keyframe, one a second (60 ticks), and one per view change.
        assert!(
            c.keyframes > 3,
            "{} keyframes: the first, one a second, one per view change",
            c.keyframes
        );
        assert!(c.deltas > 150, "{} deltas", c.deltas);
        assert_eq!(c.missed, 0);
    }

    #[test]
    fn a_client_that_missed_a_delta_gets_a_keyframe_on_the_next_tick() {
        let mut r = room(GameConfig {
            keyframe_interval: 0,
            ..aoi(100, 1000.0, 0.0)
        });
        r.begin_tick(1, 1);
        let slow = join2(&mut r, 1, "");
        let steady = join2(&mut r, 2, "");
        r.run_tick();
        let (mut s, mut k) = (Client::default(), Client::default());
        s.read(&slow);
        k.read(&steady);
        // The slow client reads nothing for two ticks: its outbox keeps only the newest
        // delta, whose base it never got.
        for tick in 2..=3 {
            r.begin_tick(tick, tick as i64);
            r.run_tick();
            k.read(&steady);
        }
        assert_eq!(s.read(&slow), Vec::<u64>::new(), "a delta on a missed base");
        assert_eq!(s.missed, 1);
        r.begin_tick(4, 4);
        r.run_tick();
        assert_eq!(s.read(&slow), [4], "the next tick repairs it");
        assert_eq!(s.keyframes, 2);
        assert_eq!(s.state, k.state_after(&steady, &mut r));
        // The steady client was never given a keyframe after its first.
        assert_eq!(k.keyframes, 1);
        // And from then on both take the same deltas.
        r.begin_tick(5, 5);
        r.run_tick();
        assert_eq!(s.read(&slow), [5]);
        assert_eq!(s.keyframes, 2);
        // A client that stays away longer finds a keyframe waiting: each tick that drops its
        // pending delta queues one.
        for tick in 6..=9 {
            r.begin_tick(tick, tick as i64);
            r.run_tick();
        }
        assert_eq!(s.read(&slow), [9]);
        assert_eq!((s.keyframes, s.missed), (3, 1));
    }

    impl Client {
        fn state_after(
            &mut self,
            o: &Probe,
            _: &mut TestDriver<GameRoom>,
        ) -> tickroom_proto::view::ViewState {
            self.read(o);
            self.state.clone()
        }
    }

    #[test]
    fn each_variant_is_encoded_once_per_view() {
        let mut r = room(GameConfig {
            keyframe_interval: 0,
            ..aoi(100, 1000.0, 0.0)
        });
        r.begin_tick(1, 1);
        let v2: Vec<_> = (1..=20).map(|s| join2(&mut r, s, "")).collect();
        let v1: Vec<_> = (21..=30).map(|s| join(&mut r, s, "")).collect();
        r.run_tick();
        for o in v2.iter().chain(&v1) {
            drain(o);
        }
        let before = r.core().encodes();
        r.begin_tick(2, 2);
        r.run_tick();
        // One view: its delta and its full snapshot.
        assert_eq!(r.core().encodes() - before, 2);
        let frames = |os: &[Probe]| -> Vec<Bytes> {
            os.iter()
                .map(|o| {
                    let mut f = Vec::new();
                    o.take(&mut f);
                    assert_eq!(f.len(), 1);
                    f.pop().unwrap()
                })
                .collect()
        };
        let (d, f) = (frames(&v2), frames(&v1));
        assert!(d.iter().all(|b| b.as_ptr() == d[0].as_ptr()));
        assert!(f.iter().all(|b| b.as_ptr() == f[0].as_ptr()));
        let full = snapshot_of(&[ServerMessage::decode(f[0].clone()).unwrap()]).unwrap();
        assert_eq!(full.objects.len(), 130);
        assert!(full.view.is_none());
        // A newcomer: its keyframe is one more encode, whoever else is there.
        let before = r.core().encodes();
        r.begin_tick(3, 3);
        let late = join2(&mut r, 99, "");
        r.run_tick();
        // Its Welcome, the ObjectCreated everyone gets, and the three variants of the view.
        assert_eq!(r.core().encodes() - before, 2 + 3);
        let mut c = Client::default();
        assert_eq!(c.read(&late), [3]);
        assert_eq!(c.keyframes, 1);
        assert_eq!(c.state.rows().len(), 131);
    }

    #[test]
    fn a_protocol_above_2_is_refused_and_protocol_1_sees_quantized_floats() {
        let mut r = room(aoi(10, 1000.0, 0.0));
        r.begin_tick(1, 1);
        let o = r.join_speaking(1, "", "", 64, 3);
        let err = drain(&o).into_iter().find_map(|m| match m.body {
            Some(ServerBody::Error(e)) => Some(e),
            _ => None,
        });
        assert_eq!(err.map(|e| e.code), Some(ErrorCode::InvalidArgument as i32));
        let o = join(&mut r, 2, "");
        r.run_tick();
        let snap = snapshot_of(&drain(&o)).unwrap();
        for obj in &snap.objects {
            let Some(State::Entity(e)) = &obj.state else {
                panic!()
            };
            assert_eq!(e.x * 64.0, (e.x * 64.0).round());
        }
    }

    #[test]
    fn bots_walking_straight_cost_nothing_in_a_delta() {
        // Bots far from the edges for 10 ticks (speed 100 units/s: 17 units).
        let mut r = room(GameConfig {
            keyframe_interval: 0,
            world_width: 100_000.0,
            world_height: 100_000.0,
            ..aoi(100, 100_000.0, 0.0)
        });
        r.begin_tick(1, 1);
        let o = join2(&mut r, 1, "");
        r.run_tick();
        let mut c = Client::default();
        c.read(&o);
        let key = c.bytes;
        for tick in 2..=10 {
            r.begin_tick(tick, tick as i64);
            r.run_tick();
            let before = c.bytes;
            c.read(&o);
            // Header only: tick, time, view, base, checksum.
            assert!(c.bytes - before < 24, "{} bytes", c.bytes - before);
        }
        // The keyframe: positions up to 6.4 million take 4 bytes each; about 15 an object.
        assert!(key < 101 * 16, "{key} bytes");
    }
}
