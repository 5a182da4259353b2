//! Micro benchmarks of the hot path: one game tick (step + encode once + hand-out) for a
//! growing number of recipients, and the outbox on its own.
//!
//! The tick benchmarks show the rule "encode once per group": the cost per extra recipient
//! is the hand-out only (a lock, a refcount bump, a queue push).

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickroom::engine::{Command, JoinRequest, Room};
use tickroom::outbox::Outbox;
use tickroom::sim::game::{GameConfig, GameRoom};

fn arena(objects: u32, recipients: u64) -> (Room<GameRoom>, Vec<Arc<Outbox>>) {
    let cfg = GameConfig {
        bots: objects,
        max_players: 100_000,
        ..GameConfig::default()
    };
    let mut room = Room::new("bench", cfg.tick_hz, GameRoom::new(cfg));
    room.begin_tick(1, 0);
    let outboxes = (1..=recipients)
        .map(|session| {
            let outbox = Arc::new(Outbox::new(1 << 16));
            room.handle(Command::Join(JoinRequest {
                session,
                outbox: outbox.clone(),
                resume_token: String::new(),
                name: String::new(),
                reply: None,
            }));
            outbox
        })
        .collect();
    room.run_tick();
    (room, outboxes)
}

/// Size of one encoded snapshot of exactly `objects` objects (bots plus one avatar).
fn snapshot_size(objects: u32) -> usize {
    let (mut room, outboxes) = arena(objects - 1, 1);
    room.begin_tick(2, 1_700_000_000_000_000);
    room.run_tick();
    let mut frames = Vec::new();
    outboxes[0].take(&mut frames);
    frames.last().map_or(0, Bytes::len)
}

fn game_tick(c: &mut Criterion) {
    for objects in [100u32, 1000] {
        eprintln!(
            "encoded snapshot of {objects} objects: {} bytes",
            snapshot_size(objects)
        );
    }
    let mut g = c.benchmark_group("game_tick_100_bots");
    for recipients in [1u64, 100, 1000, 10_000] {
        let (mut room, _outboxes) = arena(100, recipients);
        let mut tick = 2;
        g.throughput(Throughput::Elements(recipients));
        g.bench_with_input(
            BenchmarkId::from_parameter(recipients),
            &recipients,
            |b, _| {
                b.iter(|| {
                    tick += 1;
                    room.begin_tick(tick, 0);
                    room.run_tick();
                })
            },
        );
    }
    g.finish();
}

fn outbox(c: &mut Criterion) {
    let frame = Bytes::from(vec![7u8; 1200]);
    let o = Outbox::new(256);
    let mut out = Vec::with_capacity(8);
    c.bench_function("outbox_publish_take", |b| {
        b.iter(|| {
            o.publish(1, black_box(&frame)).unwrap();
            out.clear();
            o.take(&mut out);
            black_box(&out);
        })
    });
    c.bench_function("outbox_publish_conflated", |b| {
        b.iter(|| o.publish(1, black_box(&frame)).unwrap())
    });
}

criterion_group!(benches, game_tick, outbox);
criterion_main!(benches);
