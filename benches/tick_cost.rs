//! What one game tick costs the room thread, protocol 1 (full snapshots) against protocol 2
//! (quantized deltas), in the world of `make bench-load`'s arena: 100 bots and N players on an
//! 8000 x 8000 world in 250-unit cells, every player sending one input per tick whose direction
//! turns a little each time.
//!
//! Wall time per tick is printed, but on a shared machine it is noise; run it under callgrind,
//! which counts instructions and gives the same figure whatever else the machine does:
//!
//! ```sh
//! cargo bench --bench tick_cost --no-run
//! valgrind --tool=callgrind --toggle-collect='*tick_cost::measured*' --callgrind-out-file=cg.out \
//!     target/release/deps/tick_cost-* --protocol 2 --players 2000 --ticks 60
//! callgrind_annotate cg.out | head   # total Ir / ticks = instructions per tick
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use client_sim::toolkit::sizes::{Sizes, SnapshotCost};
use prost::Message;
use tickroom::engine::{Outbox, Room, wake_drains};
use tickroom::proto::v1::{ServerMessage, server_message};
use tickroom::sim::game::GameRoom;
use tickroom_proto::view::{ApplyError, ViewState};

#[path = "common/arena.rs"]
mod arena;
use arena::{arena, inputs};

#[derive(Parser, Debug)]
struct Args {
    /// `Join.protocol` of every player: 1 or 2.
    #[arg(long, default_value_t = 2)]
    protocol: u32,
    #[arg(long, default_value_t = 2000)]
    players: u64,
    /// Ticks measured, after a second (60) of warm-up.
    #[arg(long, default_value_t = 60)]
    ticks: u64,
    /// Players whose messages are decoded (protocol 2: applied to a view state, checksums
    /// checked) to count moving and resting objects and the bytes they cost.
    #[arg(long, default_value_t = 32)]
    sample: usize,
    /// Writes the sampled players' snapshot messages here, each as a 4-byte little-endian
    /// length and the bytes (to measure what compression would save).
    #[arg(long)]
    dump: Option<std::path::PathBuf>,
    /// Players stand still (send no input): what resting objects cost.
    #[arg(long)]
    idle: bool,
    /// Ignored: `cargo bench` passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the sampled players' snapshots held and cost.
#[derive(Default)]
struct Sample {
    states: Vec<ViewState>,
    costs: Vec<SnapshotCost>,
    keyframes: u64,
    mismatches: u64,
    frames: Vec<Vec<u8>>,
}

impl Sample {
    /// Reads one sampled player's message.
    fn read(&mut self, player: usize, frame: &[u8]) {
        let Ok(ServerMessage {
            tick,
            body: Some(server_message::Body::Snapshot(snap)),
        }) = ServerMessage::decode(frame)
        else {
            return;
        };
        let Some(v) = &snap.view else {
            self.costs[player].full(frame);
            return;
        };
        match self.states[player].apply(tick, v) {
            Ok(key) => self.keyframes += u64::from(key),
            // The sample starts mid-stream: it waits for its first keyframe.
            Err(ApplyError::MissedBase { .. }) => return,
            Err(_) => {
                self.mismatches += 1;
                return;
            }
        }
        self.costs[player].view(frame.len(), v, self.states[player].rows());
    }
}

/// The ticks callgrind counts (`--toggle-collect`); see [`run_ticks`].
#[inline(never)]
fn measured(
    room: &mut Room<GameRoom>,
    outboxes: &[Arc<Outbox>],
    players: u64,
    from: u64,
    ticks: u64,
) -> (usize, usize) {
    run_ticks(room, outboxes, players, from, ticks, None)
}

/// Runs `ticks` ticks as the room's driver does, the writers' draining included; returns the
/// bytes and messages handed out. With a sample, its players' messages are read.
#[inline(never)]
fn run_ticks(
    room: &mut Room<GameRoom>,
    outboxes: &[Arc<Outbox>],
    players: u64,
    from: u64,
    ticks: u64,
    mut sample: Option<&mut Sample>,
) -> (usize, usize) {
    let (mut bytes, mut messages) = (0, 0);
    let mut sink = Vec::new();
    for tick in from..from + ticks {
        room.begin_tick(tick, tick as i64 * 16_667);
        inputs(room, players, tick);
        room.run_tick();
        let out = room.output();
        wake_drains(&mut out.ready, &mut Vec::new());
        out.clear();
        for (i, o) in outboxes.iter().enumerate() {
            sink.clear();
            o.take(&mut sink);
            messages += sink.len();
            bytes += sink.iter().map(Bytes::len).sum::<usize>();
            if let Some(s) = sample.as_deref_mut().filter(|s| i < s.states.len()) {
                for f in &sink {
                    s.read(i, f);
                    if s.frames.len() < 1_000_000 {
                        s.frames.push(f.to_vec());
                    }
                }
            }
        }
    }
    (bytes, messages)
}

fn main() {
    let args = Args::parse();
    let (mut room, outboxes) = arena("arena", args.players, args.protocol);
    // Players that send inputs (`inputs` takes a count).
    let movers = if args.idle { 0 } else { args.players };
    run_ticks(&mut room, &outboxes, movers, 1, 60, None);
    let started = Instant::now();
    let (bytes, messages) = measured(&mut room, &outboxes, movers, 61, args.ticks);
    let spent = started.elapsed();
    println!(
        "protocol {} players {} ticks {}: {:.0} µs per tick (wall, with draining), {:.1} bytes per message, {:.0} bytes per player per second",
        args.protocol,
        args.players,
        args.ticks,
        spent.as_secs_f64() * 1e6 / args.ticks as f64,
        bytes as f64 / messages.max(1) as f64,
        bytes as f64 / args.players as f64 / args.ticks as f64 * 60.0,
    );
    // The same world a little further on, read by the sampled players (from their next
    // keyframe, at most a second away).
    let n = args.sample.min(outboxes.len());
    let mut sample = Sample {
        states: vec![ViewState::default(); n],
        costs: vec![SnapshotCost::default(); n],
        ..Sample::default()
    };
    let from = 61 + args.ticks;
    run_ticks(&mut room, &outboxes, movers, from, 180, Some(&mut sample));
    let mut s = Sizes::default();
    for c in &sample.costs {
        s.add(&c.sizes);
    }
    let per = |x: u64| x as f64 / s.snapshots.max(1) as f64;
    println!(
        "  {} sampled players, {} snapshots: {:.1} bytes each ({:.1} of objects), {:.1} objects, {:.1} moving, {:.1} resting; {:.2} object bytes and {:.2} message bytes per moving object, {:.2} object bytes per object; {} keyframes, {} mismatches",
        n,
        s.snapshots,
        per(s.frame_bytes),
        per(s.object_bytes),
        per(s.objects),
        per(s.moving),
        per(s.resting),
        s.object_bytes as f64 / s.moving.max(1) as f64,
        s.frame_bytes as f64 / s.moving.max(1) as f64,
        s.object_bytes as f64 / s.objects.max(1) as f64,
        sample.keyframes,
        sample.mismatches,
    );
    if let Some(path) = &args.dump {
        let mut out = Vec::new();
        for f in &sample.frames {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        std::fs::write(path, out).expect("writing the dump");
    }
}
