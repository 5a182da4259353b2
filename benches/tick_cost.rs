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
use tickroom::engine::{Command, Outbox, Room, SessionCommand, wake_drains};
use tickroom::proto::v1::{Input, client_message::Body};
use tickroom::sim::game::{GameConfig, GameRoom};

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
    /// Ignored: `cargo bench` passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Queues this tick's input of every player.
fn inputs(room: &mut Room<GameRoom>, players: u64, tick: u64) {
    for session in 1..=players {
        let angle = session as f32 * 2.4 + tick as f32 * 0.05;
        room.handle(Command::Session(SessionCommand::Client {
            session,
            body: Body::Input(Input {
                seq: tick as u32,
                move_x: angle.cos(),
                move_y: angle.sin(),
            }),
        }));
    }
}

/// The ticks callgrind counts (`--toggle-collect`); see [`ticks`].
#[inline(never)]
fn measured(
    room: &mut Room<GameRoom>,
    outboxes: &[Arc<Outbox>],
    players: u64,
    from: u64,
    ticks: u64,
) -> (usize, usize) {
    run_ticks(room, outboxes, players, from, ticks)
}

/// Runs `ticks` ticks as the room's driver does, the writers' draining included; returns the
/// bytes and messages handed out.
#[inline(never)]
fn run_ticks(
    room: &mut Room<GameRoom>,
    outboxes: &[Arc<Outbox>],
    players: u64,
    from: u64,
    ticks: u64,
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
        for o in outboxes {
            sink.clear();
            o.take(&mut sink);
            messages += sink.len();
            bytes += sink.iter().map(Bytes::len).sum::<usize>();
        }
    }
    (bytes, messages)
}

fn main() {
    let args = Args::parse();
    let cfg = GameConfig {
        bots: 100,
        max_players: 100_000,
        world_width: 8000.0,
        world_height: 8000.0,
        cell_size: 250.0,
        ..GameConfig::default()
    };
    let mut room = Room::new("arena", cfg.tick_hz, GameRoom::new(cfg));
    room.begin_tick(1, 0);
    let outboxes: Vec<_> = (1..=args.players)
        .map(|s| room.join_speaking(s, "", "", 1 << 16, args.protocol))
        .collect();
    run_ticks(&mut room, &outboxes, args.players, 1, 60);
    let started = Instant::now();
    let (bytes, messages) = measured(&mut room, &outboxes, args.players, 61, args.ticks);
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
}
