//! A bounded random-frame soak against the real server: clients send seeded random frames
//! (valid and garbage protobuf, text, fragments that never end, stray continuations, control
//! frames, unmasked frames, absurd lengths, raw bytes) while bystanders play in the arena and
//! read a ticker. The server must answer each with an error or a close, stay healthy, be back
//! to the bystanders alone when the fuzzers are gone, and the bystanders keep every tick.

mod common;

use std::time::Duration;

use client_sim::toolkit::rawws::RawWs;
use common::bystanders::{Bystanders, with_prices};
use common::*;
use prost::Message as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tickroom::proto::v1::{
    Ack, ChatSend, ClientMessage, Input, Join, Ping, Subscribe, client_message::Body,
};

const CLIENTS: u64 = 8;
const FRAMES: usize = 300;

fn random_message(rng: &mut StdRng) -> Vec<u8> {
    let body = match rng.random_range(0..7) {
        0 => Body::Join(Join {
            protocol: 0,
            room: ["arena", "", "nope", "x".repeat(80).as_str()][rng.random_range(0..4)].into(),
            resume_token: "z".repeat(rng.random_range(0..200)),
            name: String::new(),
        }),
        1 => Body::Input(Input {
            seq: rng.random(),
            move_x: f32::from_bits(rng.random()),
            move_y: rng.random_range(-3.0..3.0),
        }),
        2 => Body::Ping(Ping {
            client_time_us: rng.random(),
        }),
        3 => Body::Subscribe(Subscribe {
            symbols: vec!["SYM001".into(); rng.random_range(0..3)],
        }),
        4 => Body::ChatSend(ChatSend {
            text: "hi".into(),
            ..Default::default()
        }),
        5 => Body::Ack(Ack {
            tick: rng.random(),
            window: rng.random_range(0..3),
        }),
        _ => Body::Leave(Default::default()),
    };
    ClientMessage { body: Some(body) }.encode_to_vec()
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..max);
    (0..n).map(|_| rng.random()).collect()
}

/// One fuzzing client: connects, sends `FRAMES` random frames (reading what comes back now
/// and then, so the server's answers do not pile up), and ends however the server decides.
async fn fuzz(server: &TestServer, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(mut ws) = RawWs::connect(server.addr, "/ws", None).await else {
        return;
    };
    for i in 0..FRAMES {
        let sent = match rng.random_range(0..12) {
            0..=3 => ws.send(&random_message(&mut rng)).await,
            4 => ws.send(&random_bytes(&mut rng, 64)).await,
            5 => ws.send_frame(0x81, &random_bytes(&mut rng, 16)).await,
            6 => ws.send_frame(0x02, &random_bytes(&mut rng, 16)).await,
            7 => ws.send_frame(0x00, &random_bytes(&mut rng, 16)).await,
            8 => ws.send_frame(0x89, &random_bytes(&mut rng, 125)).await,
            9 => ws.send_frame(0x8a, &random_bytes(&mut rng, 8)).await,
            // Unmasked, or claiming a length of 2^62.
            10 => ws.send_bytes(&[0x82, 0x03, 1, 2, 3]).await,
            _ => {
                ws.send_bytes(&[0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
                    .await
            }
        };
        if sent.is_err() {
            return;
        }
        if i % 16 == 0 {
            // Take what the server said, a little: errors, pongs, or the close.
            while let Ok(Ok(f)) = tokio::time::timeout(Duration::from_millis(2), ws.next()).await {
                if f.opcode == 0x8 {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_never_hurt_the_server_or_a_bystander() {
    let mut config = test_config();
    config.session.message_timeout_ms = 500;
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;

    let fuzzers: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            let server = TestServer {
                addr: server.addr,
                ops: server.ops,
                shutdown: Default::default(),
                task: tokio::spawn(async {}),
            };
            tokio::spawn(async move { fuzz(&server, 0x5eed_0000 + seed).await })
        })
        .collect();
    for f in fuzzers {
        f.await.expect("a fuzzing client panicked");
    }
    assert_eq!(http_get(server.ops, "/healthz").await.0, 200);
    // Every fuzzer's session ends; only the two bystanders are left.
    eventually("the fuzzers' sessions are gone", || async {
        let (_, m) = http_get(server.ops, "/metrics").await;
        client_sim::toolkit::prom::Metrics::parse(&m).value("tickroom_connections_active", &[])
            == Some(2.0)
    })
    .await;
    // Meanwhile the bystanders kept every tick.
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}
