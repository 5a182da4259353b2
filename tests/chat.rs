//! Chat rooms over real sockets: tick batches in send order, the per-tick cap, the word
//! filter, block lists changed at run time, admin injection and its token, and the limits.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::bystanders::{Bystanders, with_prices};
use common::*;
use tickroom::config::RoomConfig;
use tickroom::moderation::FilterPolicy;
use tickroom::proto::v1::{
    ChatBatch, ChatKind, ErrorCode, RoomKind, client_message::Body, server_message::Body as SBody,
};
use tickroom::sim::chat::ChatConfig;

const TOKEN: &str = "test-admin-token";

/// A server with the test arena and a chat room "live" built from `chat`.
fn chat_config(chat: ChatConfig) -> tickroom::Config {
    let mut c = test_config();
    c.admin.token = TOKEN.into();
    c.rooms.push(RoomConfig::Chat {
        name: "live".into(),
        chat,
    });
    c
}

fn default_chat() -> ChatConfig {
    ChatConfig {
        blocked_words: vec!["darn".into(), "笨蛋".into()],
        ..ChatConfig::default()
    }
}

/// The next chat batch, skipping other messages; panics on an error.
async fn batch(c: &mut Client) -> ChatBatch {
    loop {
        match c.recv().await.body {
            Some(SBody::ChatBatch(b)) => return b,
            Some(SBody::Error(e)) => panic!("unexpected error {e:?}"),
            _ => {}
        }
    }
}

/// Batches until `n` messages arrived: (from, text) in arrival order, and the batch count.
async fn messages(c: &mut Client, n: usize) -> (Vec<(String, String)>, usize) {
    let mut got = Vec::new();
    let mut batches = 0;
    while got.len() < n {
        let b = batch(c).await;
        batches += 1;
        got.extend(b.messages.into_iter().map(|m| (m.from, m.text)));
    }
    (got, batches)
}

async fn admin(server: &TestServer, method: &str, path: &str, token: &str, body: &str) -> u16 {
    let auth = format!("Bearer {token}");
    http_call(server.ops, method, path, &[("Authorization", &auth)], body)
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_viewer_gets_tick_batches_in_send_order_per_sender() {
    let server = start(chat_config(default_chat())).await;
    let mut viewer = Client::connect(&server).await;
    let welcome = viewer.join("live").await;
    assert_eq!(welcome.room_kind, RoomKind::Chat as i32);
    let mut alice = Client::connect(&server).await;
    alice.join_as("live", "", "alice").await;
    let mut bob = Client::connect(&server).await;
    bob.join_as("live", "", "bob").await;
    for i in 1..=3 {
        alice.say(&format!("a{i}"), i).await;
        bob.say(&format!("b{i}"), i).await;
    }
    for c in [&mut viewer, &mut alice, &mut bob] {
        let (got, batches) = messages(c, 6).await;
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(batches <= 6, "messages of one tick share a frame");
        for who in ["alice", "bob"] {
            let texts: Vec<&str> = got
                .iter()
                .filter(|(f, _)| f == who)
                .map(|(_, t)| t.as_str())
                .collect();
            let p = &who[..1];
            assert_eq!(texts, [format!("{p}1"), format!("{p}2"), format!("{p}3")]);
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_the_cap_loses_its_oldest_messages_and_says_so() {
    let server = start(chat_config(ChatConfig {
        // One tick a second, so the whole flood lands in one or two ticks.
        tick_hz: 1,
        max_messages_per_tick: 2,
        send_burst: 10,
        ..default_chat()
    }))
    .await;
    let mut flooder = Client::connect(&server).await;
    flooder.join_as("live", "", "flood").await;
    for i in 1..=6 {
        flooder.say(&format!("m{i}"), i).await;
    }
    let mut delivered = Vec::new();
    let mut dropped = 0;
    while delivered.len() + dropped < 6 {
        let b = batch(&mut flooder).await;
        assert!(b.messages.len() <= 2, "the cap holds: {b:?}");
        dropped += b.dropped as usize;
        delivered.extend(b.messages.into_iter().map(|m| m.text));
    }
    assert!(
        dropped >= 2,
        "6 messages in at most 2 ticks of 2: {dropped} dropped"
    );
    assert_eq!(
        delivered.last().map(String::as_str),
        Some("m6"),
        "the newest survive"
    );
    let (_, metrics) = http_get(server.ops, "/metrics").await;
    assert!(
        metrics.contains(&format!(
            "tickroom_chat_messages_total{{outcome=\"dropped_cap\"}} {dropped}"
        )),
        "the drops are counted"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_words_are_masked_or_rejected_in_latin_and_chinese() {
    let server = start(chat_config(default_chat())).await;
    let mut c = Client::connect(&server).await;
    c.join_as("live", "", "amy").await;
    c.say("oh DARN, 你这个笨蛋!", 1).await;
    let (got, _) = messages(&mut c, 1).await;
    assert_eq!(got[0].1, "oh ****, 你这个**!");
    server.stop().await;

    let server = start(chat_config(ChatConfig {
        filter_policy: FilterPolicy::Reject,
        ..default_chat()
    }))
    .await;
    let mut c = Client::connect(&server).await;
    c.join_as("live", "", "amy").await;
    c.say("你这个笨蛋", 1).await;
    expect_error(&mut c, ErrorCode::ContentRejected).await;
    c.say("clean", 2).await;
    let (got, _) = messages(&mut c, 1).await;
    assert_eq!(
        got,
        [("amy".to_string(), "clean".to_string())],
        "the rejected one never went out"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_tricks_pass_neither_the_word_filter_nor_the_block_list() {
    let mut config = chat_config(ChatConfig {
        blocked_words: vec!["badword".into(), "笨蛋".into()],
        ..ChatConfig::default()
    });
    with_prices(&mut config);
    let server = start(config).await;
    let bystanders = Bystanders::start(&server).await;
    let mut viewer = Client::connect(&server).await;
    viewer.join("live").await;
    // Words split by zero-width characters or written in fullwidth letters are caught.
    let mut amy = Client::connect(&server).await;
    amy.join_as("live", "", "amy").await;
    amy.say("bad\u{200b}word", 1).await;
    amy.say("ｂａｄｗｏｒｄ", 2).await;
    amy.say("笨\u{200b}蛋", 3).await;
    let (got, _) = messages(&mut viewer, 3).await;
    let texts: Vec<_> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["*******", "*******", "**"]);
    // A blocked user does not come back with an invisible character or in fullwidth.
    assert_eq!(
        admin(&server, "PUT", "/admin/blocks/users/troll", TOKEN, "").await,
        200
    );
    for name in ["troll\u{200b}", "tr\u{200d}oll", "ｔｒｏｌｌ"] {
        let mut t = Client::connect(&server).await;
        t.join_as("live", "", name).await;
        t.say("hi", 1).await;
        expect_error(&mut t, ErrorCode::Blocked).await;
    }
    // Names with bidi controls, or with nothing visible, are refused.
    for name in ["\u{202e}evil", "\u{200b}\u{200b}", "   "] {
        let mut c = Client::connect(&server).await;
        c.send(Body::Join(tickroom::proto::v1::Join {
            room: "live".into(),
            name: name.into(),
            ..Default::default()
        }))
        .await;
        expect_error(&mut c, ErrorCode::InvalidArgument).await;
    }
    bystanders.kept_every_tick(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_addresses_are_blocked_and_unblocked_at_run_time() {
    let server = start(chat_config(default_chat())).await;
    let mut viewer = Client::connect(&server).await;
    viewer.join("live").await;
    let mut troll = Client::connect(&server).await;
    troll.join_as("live", "", "Troll").await;
    assert_eq!(
        admin(&server, "PUT", "/admin/blocks/users/troll", TOKEN, "").await,
        200
    );
    troll.say("hello?", 1).await;
    expect_error(&mut troll, ErrorCode::Blocked).await;
    let mut fine = Client::connect(&server).await;
    fine.join_as("live", "", "fine").await;
    fine.say("still talking", 1).await;
    let (got, _) = messages(&mut viewer, 1).await;
    assert_eq!(got, [("fine".to_string(), "still talking".to_string())]);
    assert_eq!(
        admin(&server, "DELETE", "/admin/blocks/users/TROLL", TOKEN, "").await,
        200
    );
    troll.say("back", 2).await;
    assert_eq!(messages(&mut viewer, 1).await.0[0].1, "back");

    // Block the address every test client uses: new upgrades are refused with 403,
    // an open connection can no longer send.
    assert_eq!(
        admin(&server, "PUT", "/admin/blocks/ips/127.0.0.1", TOKEN, "").await,
        200
    );
    let err = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .expect_err("a blocked address cannot upgrade");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 403),
        other => panic!("expected an HTTP 403, got {other}"),
    }
    fine.say("me too?", 2).await;
    expect_error(&mut fine, ErrorCode::Blocked).await;
    let (status, body) = http_call(
        server.ops,
        "GET",
        "/admin/blocks",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["ips"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(
        admin(&server, "DELETE", "/admin/blocks/ips/127.0.0.1", TOKEN, "").await,
        200
    );
    Client::connect(&server).await;
    assert_eq!(
        admin(&server, "PUT", "/admin/blocks/ips/not-an-ip", TOKEN, "").await,
        400
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_injection_needs_the_token_and_arrives_marked() {
    let server = start(chat_config(default_chat())).await;
    let mut viewer = Client::connect(&server).await;
    viewer.join("live").await;
    let notice = r#"{"text": "stream starts in 5 minutes"}"#;
    let path = "/admin/rooms/live/notice";
    let (status, _) = http_request(server.ops, "POST", path, notice).await;
    assert_eq!(status, 401, "no token");
    assert_eq!(admin(&server, "POST", path, "wrong", notice).await, 401);
    assert_eq!(admin(&server, "POST", path, TOKEN, notice).await, 202);
    let gift = r#"{"from": "fan", "gift": "rocket", "count": 3}"#;
    assert_eq!(
        admin(&server, "POST", "/admin/rooms/live/gift", TOKEN, gift).await,
        202
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(batch(&mut viewer).await.messages);
    }
    assert_eq!(got[0].kind, ChatKind::Notice as i32);
    assert_eq!(got[0].text, "stream starts in 5 minutes");
    assert_eq!(got[1].kind, ChatKind::Gift as i32);
    assert_eq!(
        (
            got[1].from.as_str(),
            got[1].gift.as_str(),
            got[1].gift_count
        ),
        ("fan", "rocket", 3)
    );
    // Wrong targets and bodies are refused.
    assert_eq!(
        admin(
            &server,
            "POST",
            "/admin/rooms/nowhere/notice",
            TOKEN,
            notice
        )
        .await,
        404
    );
    assert_eq!(
        admin(&server, "POST", "/admin/rooms/arena/notice", TOKEN, notice).await,
        400
    );
    assert_eq!(
        admin(&server, "POST", path, TOKEN, r#"{"text": ""}"#).await,
        400
    );
    server.stop().await;

    // Without a configured token the admin API is off.
    let mut config = chat_config(default_chat());
    config.admin.token = String::new();
    let server = start(config).await;
    assert_eq!(admin(&server, "POST", path, "", notice).await, 403);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_long_and_fast_senders_get_errors() {
    let server = start(chat_config(default_chat())).await;
    let mut anon = Client::connect(&server).await;
    anon.join("live").await;
    anon.say("hi", 1).await;
    expect_error(&mut anon, ErrorCode::NameRequired).await;
    let mut c = Client::connect(&server).await;
    c.join_as("live", "", "talker").await;
    c.say(&"長".repeat(201), 1).await;
    let msg = expect_error(&mut c, ErrorCode::InvalidArgument).await;
    assert!(msg.contains("201 characters"), "{msg}");
    // Burst of 5, then 2 a second: the sixth in a row is refused.
    for i in 0..6 {
        c.say("spam", i).await;
    }
    expect_error(&mut c, ErrorCode::RateLimited).await;
    let mut named = Client::connect(&server).await;
    named
        .send(Body::Join(tickroom::proto::v1::Join {
            room: "live".into(),
            name: "x".repeat(33),
            ..Default::default()
        }))
        .await;
    expect_error(&mut named, ErrorCode::InvalidArgument).await;
    // A name that trims to nothing is not a name (an empty one joins as a viewer).
    named
        .send(Body::Join(tickroom::proto::v1::Join {
            room: "live".into(),
            name: "   ".into(),
            ..Default::default()
        }))
        .await;
    expect_error(&mut named, ErrorCode::InvalidArgument).await;
    // Accepted messages kept their ids in order; the refused ones never got one.
    let mut ids = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while ids.len() < 5 && tokio::time::Instant::now() < deadline {
        for m in batch(&mut c).await.messages {
            ids.insert(m.client_msg_id, m.id);
        }
    }
    assert_eq!(ids.len(), 5, "the burst of 5 went out");
    server.stop().await;
}
