//! Property tests: every room kind takes any sequence of client messages, from members and
//! strangers, joins and leaves, interleaved with ticks, without panicking, and what it sends
//! each member always decodes as server messages with ticks that never go back.

use proptest::prelude::*;
use tickroom_proto::v1::{
    ChatSend, Input, ServerMessage, Subscribe, Unsubscribe, client_message::Body,
};

use super::chat::{ChatConfig, ChatRoom};
use super::game::{GameConfig, GameRoom};
use super::ticker::{TickerConfig, TickerEvent, TickerRoom};
use crate::engine::testing::{Probe, TestDriver};
use crate::engine::{Command, LeaveReason, SessionCommand, Simulation};
use crate::feed::{QuoteUpdate, SymbolSpec};
use crate::moderation::{BlockLists, WordFilter};

#[derive(Debug, Clone)]
enum Step {
    Join(u8, String),
    Leave(u8),
    Client(u8, Body),
    Quotes(Vec<(u8, f64)>),
    Tick,
}

fn float() -> impl Strategy<Value = f32> {
    prop_oneof![
        -2.0f32..2.0,
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::MAX),
        Just(-0.0)
    ]
}

fn symbol() -> impl Strategy<Value = String> {
    prop_oneof!["S[0-9]", ".{0,6}"]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (any::<u32>(), float(), float()).prop_map(|(seq, move_x, move_y)| Body::Input(Input {
            seq,
            move_x,
            move_y
        })),
        proptest::collection::vec(symbol(), 0..12)
            .prop_map(|symbols| Body::Subscribe(Subscribe { symbols })),
        proptest::collection::vec(symbol(), 0..4)
            .prop_map(|symbols| Body::Unsubscribe(Unsubscribe { symbols })),
        (".{0,40}", any::<u64>()).prop_map(|(text, client_msg_id)| Body::ChatSend(ChatSend {
            text,
            client_msg_id,
            sent_time_us: 0
        })),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..6u8, prop_oneof![Just(String::new()), ".{0,8}"]).prop_map(|(s, n)| Step::Join(s, n)),
        (0..6u8).prop_map(Step::Leave),
        (0..6u8, body()).prop_map(|(s, b)| Step::Client(s, b)),
        proptest::collection::vec((0..10u8, 1.0f64..200.0), 0..10).prop_map(Step::Quotes),
        Just(Step::Tick),
    ]
}

/// Runs `steps` on a room; `quotes` turns a feed batch into the kind's event, if it takes one.
fn run<S: Simulation>(
    mut room: TestDriver<S>,
    steps: Vec<Step>,
    quotes: impl Fn(Vec<QuoteUpdate>) -> Option<S::Event>,
) -> Result<(), TestCaseError> {
    let mut probes: Vec<Option<Probe>> = vec![None; 6];
    let mut last_tick = [0u64; 6];
    let mut tick = 0;
    for step in steps {
        match step {
            Step::Join(s, name) => {
                probes[s as usize] = Some(room.join_new(u64::from(s) + 1, &name, "", 64));
            }
            Step::Leave(s) => {
                room.session(SessionCommand::Leave {
                    session: u64::from(s) + 1,
                    reason: LeaveReason::Disconnected,
                });
            }
            Step::Client(s, body) => {
                room.session(SessionCommand::Client {
                    session: u64::from(s) + 1,
                    body,
                });
            }
            Step::Quotes(batch) => {
                let batch = batch
                    .into_iter()
                    .map(|(symbol, last)| QuoteUpdate {
                        symbol: u32::from(symbol),
                        last,
                        bid: last - 0.01,
                        ask: last + 0.01,
                        volume: 1,
                        exchange_time_us: 1,
                        seq: 0,
                    })
                    .collect();
                if let Some(e) = quotes(batch) {
                    room.handle(Command::Event(e));
                }
            }
            Step::Tick => {
                tick += 1;
                room.begin_tick(tick, tick as i64 * 1000);
                room.run_tick();
            }
        }
        for (i, p) in probes.iter().enumerate() {
            let Some(p) = p else { continue };
            let mut frames = Vec::new();
            p.take(&mut frames);
            for f in frames {
                let m = ServerMessage::decode(f).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(m.body.is_some());
                prop_assert!(m.tick >= last_tick[i], "ticks never go back");
                last_tick[i] = m.tick;
            }
        }
    }
    Ok(())
}

use prost::Message as _;

fn specs() -> Vec<SymbolSpec> {
    (0..10)
        .map(|i| SymbolSpec {
            name: format!("S{i}"),
            prev_close: 100.0,
        })
        .collect()
}

proptest! {
    #[test]
    fn a_game_room_takes_any_input(steps in proptest::collection::vec(step(), 0..120)) {
        let cfg = GameConfig { bots: 3, resume_grace_ms: 100, ..GameConfig::default() };
        run(TestDriver::new("g", 60, GameRoom::new(cfg)), steps, |_| None)?;
    }

    #[test]
    fn a_ticker_room_takes_any_input(steps in proptest::collection::vec(step(), 0..120)) {
        let cfg = TickerConfig { max_symbols_per_session: 5, ..TickerConfig::default() };
        let room = TestDriver::new("t", 20, TickerRoom::new(&cfg, &specs()));
        run(room, steps, |b| Some(TickerEvent::Quotes(b)))?;
    }

    #[test]
    fn a_chat_room_takes_any_input(steps in proptest::collection::vec(step(), 0..120)) {
        let cfg = ChatConfig { max_messages_per_tick: 3, ..ChatConfig::default() };
        let filter = WordFilter::new(["bad", "笨蛋"]).unwrap();
        let sim = ChatRoom::new(cfg, filter, std::sync::Arc::new(BlockLists::default()));
        run(TestDriver::new("c", 10, sim), steps, |_| None)?;
    }
}
