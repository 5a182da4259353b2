//! The arena of `make bench-load` (`benches/load.toml`) driven in process: 100 bots and N
//! players on an 8000 x 8000 world in 250-unit cells, every player moving every tick with its
//! direction turning a little each time. `hot_path` times its tick and `tick_cost` counts its
//! instructions and bytes; both build it here so they measure one world.

use std::sync::Arc;

use tickroom::engine::{Command, Outbox, Room, SessionCommand};
use tickroom::proto::v1::{Input, client_message::Body};
use tickroom::sim::game::{GameConfig, GameRoom};

/// The arena at tick 1 with players 1..=`players` joined, speaking `protocol`
/// (`Join.protocol`), and their outboxes.
pub fn arena(name: &str, players: u64, protocol: u32) -> (Room<GameRoom>, Vec<Arc<Outbox>>) {
    let cfg = GameConfig {
        bots: 100,
        max_players: 100_000,
        world_width: 8000.0,
        world_height: 8000.0,
        cell_size: 250.0,
        ..GameConfig::default()
    };
    let mut room = Room::new(name, cfg.tick_hz, GameRoom::new(cfg));
    room.begin_tick(1, 0);
    let outboxes = (1..=players)
        .map(|session| room.join_speaking(session, "", "", 1 << 16, protocol))
        .collect();
    (room, outboxes)
}

/// Queues tick `tick`'s input of players 1..=`players` (none when `players` is 0: everyone
/// stands still).
pub fn inputs(room: &mut Room<GameRoom>, players: u64, tick: u64) {
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
