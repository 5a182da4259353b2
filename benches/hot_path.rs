//! Micro benchmarks of the hot path: one tick (step + encode once + hand-out) of each room
//! kind for a growing number of recipients, and the outbox on its own.
//!
//! The tick benchmarks show the rule "encode once per group": the cost per extra recipient
//! is the hand-out only (a lock, a refcount bump, a queue push). A timed tick is what the
//! room's driver does: run the tick, then hand the outboxes that became ready to their drains
//! (none is attached here, so that is a walk over the list) and clear the output. Ticker and
//! chat ticks queue frames that a writer would take; the benchmarks drain them outside the
//! timed part.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickroom::engine::{Command, Outbox, Room, SessionCommand, Simulation, wake_drains};
use tickroom::feed::{QuoteUpdate, SymbolSpec};
use tickroom::moderation::{BlockLists, WordFilter};
use tickroom::proto::v1::{ChatSend, Subscribe, client_message::Body};
use tickroom::sim::chat::{ChatConfig, ChatRoom};
use tickroom::sim::game::{GameConfig, GameRoom};
use tickroom::sim::ticker::{TickerConfig, TickerEvent, TickerRoom};

#[path = "common/arena.rs"]
mod arena;

/// Runs the tick begun on `room` and does what its driver does with the output.
fn run_tick<S: Simulation>(room: &mut Room<S>) {
    room.run_tick();
    let out = room.output();
    wake_drains(&mut out.ready, &mut Vec::new());
    out.clear();
}

/// A client message from `session`.
fn client<E>(session: u64, body: Body) -> Command<E> {
    Command::Session(SessionCommand::Client { session, body })
}

/// Joins sessions `1..=n` to `room` with the given display name, returning their outboxes.
fn join_all<S: Simulation>(room: &mut Room<S>, n: u64, name: &str) -> Vec<Arc<Outbox>> {
    (1..=n)
        .map(|session| room.join_new(session, name, "", 1 << 16))
        .collect()
}

/// Times `iters` ticks of `room`, each prepared by `before` (untimed); drains every outbox
/// after each tick, untimed, as writers would.
fn timed_ticks<S: Simulation>(
    room: &mut Room<S>,
    outboxes: &[Arc<Outbox>],
    tick: &mut u64,
    iters: u64,
    mut before: impl FnMut(&mut Room<S>, u64),
) -> Duration {
    let mut spent = Duration::ZERO;
    let mut sink = Vec::new();
    for _ in 0..iters {
        *tick += 1;
        room.begin_tick(*tick, *tick as i64 * 50_000);
        before(room, *tick);
        let started = Instant::now();
        run_tick(room);
        spent += started.elapsed();
        for o in outboxes {
            sink.clear();
            o.take(&mut sink);
        }
    }
    spent
}

fn arena(objects: u32, recipients: u64) -> (Room<GameRoom>, Vec<Arc<Outbox>>) {
    let cfg = GameConfig {
        bots: objects,
        max_players: 100_000,
        ..GameConfig::default()
    };
    let mut room = Room::new("bench", cfg.tick_hz, GameRoom::new(cfg));
    room.begin_tick(1, 0);
    let outboxes = join_all(&mut room, recipients, "");
    run_tick(&mut room);
    (room, outboxes)
}

/// Size of one encoded snapshot of exactly `objects` objects (bots plus one avatar).
fn snapshot_size(objects: u32) -> usize {
    let (mut room, outboxes) = arena(objects - 1, 1);
    room.begin_tick(2, 1_700_000_000_000_000);
    run_tick(&mut room);
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
                    run_tick(&mut room);
                })
            },
        );
    }
    g.finish();
}

/// Encoding one snapshot of N objects: the per-group cost a tick pays once.
fn snapshot_encode(c: &mut Criterion) {
    use prost::Message;
    use tickroom::proto::v1::{Entity, Object, ServerMessage, Snapshot, object::State};
    let mut g = c.benchmark_group("snapshot_encode");
    for n in [100u32, 1000] {
        let objects = (1..=n)
            .map(|id| Object {
                id,
                state: Some(State::Entity(Entity {
                    kind: 2,
                    x: id as f32 * 0.37,
                    y: id as f32 * 0.91,
                    last_input_seq: id,
                })),
            })
            .collect();
        let msg = ServerMessage {
            tick: 123_456,
            body: Some(tickroom::proto::v1::server_message::Body::Snapshot(
                Snapshot {
                    view: None,
                    server_time_us: 1_700_000_000_000_000,
                    objects,
                },
            )),
        };
        let mut buf = Vec::with_capacity(msg.encoded_len());
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                buf.clear();
                black_box(&msg).encode(&mut buf).unwrap();
                black_box(&buf);
            })
        });
    }
    g.finish();
}

/// A 60 Hz game tick with area of interest in the bench arena (`common/arena.rs`: 100 bots
/// and N players, every player moving every tick); the players speak protocol 1 (full
/// snapshots) or 2 (quantized deltas). `benches/tick_cost.rs` counts the same world's bytes
/// and instructions.
fn game_tick_aoi(c: &mut Criterion) {
    for protocol in [1u32, 2] {
        let mut g = c.benchmark_group(format!("game_tick_aoi_100_bots_protocol_{protocol}"));
        for players in [1000u64, 2000, 3000] {
            let (mut room, outboxes) = arena::arena("bench", players, protocol);
            run_tick(&mut room);
            let mut tick = 1;
            let inputs = |room: &mut Room<GameRoom>, t: u64| arena::inputs(room, players, t);
            // A second of ticks first: joins' keyframes are behind, the rest is steady.
            timed_ticks(&mut room, &outboxes, &mut tick, 60, inputs);
            g.throughput(Throughput::Elements(players));
            g.bench_function(BenchmarkId::from_parameter(players), |b| {
                b.iter_custom(|iters| timed_ticks(&mut room, &outboxes, &mut tick, iters, inputs))
            });
        }
        g.finish();
    }
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

/// A ticker tick: 500 symbols all changed, each session subscribed to 20 of them.
fn ticker_tick(c: &mut Criterion) {
    const SYMBOLS: u32 = 500;
    let specs: Vec<SymbolSpec> = (0..SYMBOLS)
        .map(|i| SymbolSpec {
            name: format!("S{i}"),
            prev_close: 100.0,
        })
        .collect();
    let mut g = c.benchmark_group("ticker_tick_500_symbols_20_each");
    for sessions in [1_000u64, 5_000] {
        let cfg = TickerConfig::default();
        let mut room = Room::new("bench", cfg.tick_hz, TickerRoom::new(&cfg, &specs));
        room.begin_tick(1, 0);
        let outboxes = join_all(&mut room, sessions, "");
        for s in 1..=sessions {
            let symbols = (0..20)
                .map(|k| format!("S{}", (s * 7 + k * 25) % u64::from(SYMBOLS)))
                .collect();
            room.handle(client(s, Body::Subscribe(Subscribe { symbols })));
        }
        let mut tick = 1;
        g.throughput(Throughput::Elements(sessions));
        g.bench_function(BenchmarkId::from_parameter(sessions), |b| {
            b.iter_custom(|iters| {
                timed_ticks(&mut room, &outboxes, &mut tick, iters, |room, t| {
                    let batch = (0..SYMBOLS)
                        .map(|symbol| QuoteUpdate {
                            symbol,
                            last: 100.0 + (t % 100) as f64 / 100.0,
                            bid: 99.99,
                            ask: 100.01,
                            volume: t,
                            exchange_time_us: t as i64,
                            seq: 0,
                        })
                        .collect();
                    room.handle(Command::Event(TickerEvent::Quotes(batch)));
                })
            })
        });
    }
    g.finish();
}

/// A chat tick: 20 messages batched into one frame for every viewer.
fn chat_tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("chat_tick_20_messages");
    for viewers in [1_000u64, 10_000, 50_000] {
        let cfg = ChatConfig {
            send_rate_per_sec: 1e9,
            send_burst: 1_000_000_000,
            ..ChatConfig::default()
        };
        let sim = ChatRoom::new(cfg, WordFilter::empty(), Arc::new(BlockLists::default()));
        let mut room = Room::new("bench", 10, sim);
        room.begin_tick(1, 0);
        let outboxes = join_all(&mut room, viewers, "viewer");
        let mut tick = 1;
        g.throughput(Throughput::Elements(viewers));
        g.bench_function(BenchmarkId::from_parameter(viewers), |b| {
            b.iter_custom(|iters| {
                timed_ticks(&mut room, &outboxes, &mut tick, iters, |room, t| {
                    for k in 0..20 {
                        room.handle(client(
                            1 + k,
                            Body::ChatSend(ChatSend {
                                text: format!("message {k} of tick {t}, a typical short line"),
                                ..Default::default()
                            }),
                        ));
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    snapshot_encode,
    game_tick,
    game_tick_aoi,
    ticker_tick,
    chat_tick,
    outbox
);
criterion_main!(benches);
