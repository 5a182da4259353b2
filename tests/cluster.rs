//! Nodes joined by a real NATS server (JetStream): a feed published once reaches every node
//! with the same sequence numbers; one chat room across three nodes; cluster-wide blocks; a
//! game room owned by exactly one node, redirects, failover after kill -9; readiness that
//! follows the bus. Every node is a real process of the built binary.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{Nats, Node, Publisher, TempDir, cluster_table, within};
use common::*;
use tickroom::proto::v1::{
    ChatKind, ErrorCode, Subscribe, client_message::Body, object::State,
    server_message::Body as SBody,
};

const ADMIN: &str = "cluster-test-admin";

fn node_config(nats: &Nats, node: &str, rooms: &str) -> String {
    format!(
        "{}\n[admin]\ntoken = \"{ADMIN}\"\n\n[session]\nping_interval_ms = 1000\nidle_timeout_ms = 5000\n\n[game]\nauto_create = true\n\n{rooms}",
        cluster_table(nats, node)
    )
}

const CHAT_ROOM: &str = "[[rooms]]\nname = \"chat\"\nkind = \"chat\"\ntick_hz = 10\nsend_rate_per_sec = 100.0\nsend_burst = 100\nblocked_words = [\"badword\"]\n";

/// (symbol, seq, last) of every quote a client read.
async fn read_quotes(c: &mut Client, until: Instant) -> Vec<(String, u64, f64)> {
    let mut seen = Vec::new();
    while Instant::now() < until {
        let Ok(Ok(msg)) = tokio::time::timeout(Duration::from_millis(200), c.next()).await else {
            continue;
        };
        if let Some(SBody::Snapshot(s)) = msg.body {
            for o in s.objects {
                if let Some(State::Quote(q)) = o.state {
                    seen.push((q.symbol, q.seq, q.last));
                }
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_published_once_reaches_every_node_with_the_same_sequences() {
    let dir = TempDir::new("cluster-feed");
    let nats = Nats::start(&dir.0).await;
    // Four symbols in turn, one row every 100 ms: each symbol changes every 400 ms, slower
    // than the rooms' 50 ms tick, so no node conflates and every client sees every update.
    let csv = dir.0.join("feed.csv");
    let mut rows = String::from("time_us,symbol,last,bid,ask,volume,prev_close\n");
    let names = ["AAA", "BBB", "CCC", "DDD"];
    for i in 0..400u64 {
        let sym = names[(i % 4) as usize];
        let last = 100.0 + (i as f64) * 0.01;
        rows.push_str(&format!(
            "{},{sym},{last:.2},{:.2},{:.2},{},100.00\n",
            1_800_000_000_000_000u64 + i * 100_000,
            last - 0.01,
            last + 0.01,
            100 * (i + 1)
        ));
    }
    std::fs::write(&csv, rows).unwrap();
    let _feed = Publisher::start(
        &nats,
        "prices",
        &["--replay", csv.to_str().unwrap(), "--repeat"],
        &dir.0.join("feed.log"),
    );
    let ticker = "[[rooms]]\nname = \"ticker\"\nkind = \"ticker\"\ntick_hz = 20\n[rooms.feed]\nkind = \"bus\"\nname = \"prices\"\n";
    let a = Node::start(&dir.0, "a", &node_config(&nats, "a", ticker)).await;
    let b = Node::start(&dir.0, "b", &node_config(&nats, "b", ticker)).await;

    let mut clients = Vec::new();
    for node in [&a, &b] {
        let mut c = Client::connect_url(&node.ws_url()).await;
        c.join("ticker").await;
        c.send(Body::Subscribe(Subscribe {
            symbols: names.iter().map(|s| s.to_string()).collect(),
        }))
        .await;
        clients.push(c);
    }
    let until = Instant::now() + Duration::from_secs(4);
    let (mut ca, mut cb) = (clients.remove(0), clients.remove(0));
    let (qa, qb) = tokio::join!(read_quotes(&mut ca, until), read_quotes(&mut cb, until));

    let per_symbol = |quotes: &[(String, u64, f64)]| {
        let mut by: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        for (s, seq, last) in quotes {
            // The value at subscribe time (seq 0 before the first update) is not an update.
            if *seq > 0 {
                by.entry(s.clone()).or_default().push((*seq, *last));
            }
        }
        by
    };
    let (pa, pb) = (per_symbol(&qa), per_symbol(&qb));
    for sym in names {
        let (sa, sb) = (&pa[sym], &pb[sym]);
        let lo = sa[0].0.max(sb[0].0);
        let hi = sa.last().unwrap().0.min(sb.last().unwrap().0);
        let window = |s: &Vec<(u64, f64)>| -> Vec<(u64, f64)> {
            s.iter()
                .copied()
                .filter(|(q, _)| (lo..=hi).contains(q))
                .collect()
        };
        let (wa, wb) = (window(sa), window(sb));
        assert!(
            wa.len() >= 5,
            "{sym}: both nodes saw at least 5 updates in common: {wa:?}"
        );
        assert_eq!(
            wa, wb,
            "{sym}: the same (seq, value) sequence on both nodes"
        );
        assert!(
            wa.windows(2).all(|w| w[1].0 == w[0].0 + 1),
            "{sym}: no update missing: {wa:?}"
        );
    }

    // One bus message per feed batch: a node took in no more messages than quotes, and
    // about one per replayed row (10 rows a second).
    let metrics = http_get(a.server.ops, "/metrics").await.1;
    let feed_in = metric(
        &metrics,
        "tickroom_bus_messages_total{direction=\"in\",stream=\"feed\"}",
    );
    assert!(feed_in >= 20.0, "node a took in feed batches: {feed_in}");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// The (from, client_msg_id) of viewer messages a client reads until `done` holds.
async fn collect_chat(
    c: &mut Client,
    done: impl Fn(&[(String, u64)]) -> bool,
) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !done(&seen) {
        assert!(Instant::now() < deadline, "chat messages in time: {seen:?}");
        if let Some(SBody::ChatBatch(b)) = c.recv().await.body {
            for m in b.messages {
                if !m.from.is_empty() && m.client_msg_id > 0 {
                    seen.push((m.from, m.client_msg_id));
                }
            }
        }
    }
    seen
}

/// Sends probes from `from` until one reaches `to`: relay subscriptions are made as a node
/// starts (or the bus comes back), and a message sent before the other shards listen would
/// be theirs to miss.
async fn until_shards_hear_each_other(from: &mut Client, name: &str, to: &mut Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in 1000.. {
        assert!(Instant::now() < deadline, "a probe crosses between shards");
        from.say("probe", id).await;
        let crossed = tokio::time::timeout(
            Duration::from_millis(500),
            collect_chat(to, |s| s.iter().any(|m| m.0 == name && m.1 == id)),
        )
        .await;
        if crossed.is_ok() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_chat_room_across_three_nodes_in_order_once_and_blocks_everywhere() {
    let dir = TempDir::new("cluster-chat");
    let nats = Nats::start(&dir.0).await;
    let a = Node::start(&dir.0, "a", &node_config(&nats, "a", CHAT_ROOM)).await;
    let b = Node::start(&dir.0, "b", &node_config(&nats, "b", CHAT_ROOM)).await;
    let c = Node::start(&dir.0, "c", &node_config(&nats, "c", CHAT_ROOM)).await;

    let mut alice = Client::connect_url(&a.ws_url()).await;
    alice.join_as("chat", "", "alice").await;
    let mut bob = Client::connect_url(&b.ws_url()).await;
    bob.join_as("chat", "", "bob").await;
    let mut on_b = Client::connect_url(&b.ws_url()).await;
    on_b.join_as("chat", "", "").await;
    let mut on_c = Client::connect_url(&c.ws_url()).await;
    on_c.join_as("chat", "", "").await;
    until_shards_hear_each_other(&mut alice, "alice", &mut on_c).await;
    until_shards_hear_each_other(&mut alice, "alice", &mut on_b).await;
    until_shards_hear_each_other(&mut bob, "bob", &mut on_c).await;
    // Fresh clients for the counted part: no probe in their view.
    let mut on_b2 = Client::connect_url(&b.ws_url()).await;
    on_b2.join_as("chat", "", "").await;
    let mut on_c2 = Client::connect_url(&c.ws_url()).await;
    on_c2.join_as("chat", "", "").await;
    drop((on_b, on_c));

    for i in 1..=20 {
        alice.say(&format!("hello {i}"), i).await;
        if i <= 10 {
            bob.say(&format!("hi {i}"), i).await;
        }
    }
    let complete = |s: &[(String, u64)]| {
        s.iter().any(|m| m.0 == "alice" && m.1 == 20) && s.iter().any(|m| m.0 == "bob" && m.1 == 10)
    };
    let seen_b = collect_chat(&mut on_b2, complete).await;
    let seen_c = collect_chat(&mut on_c2, complete).await;
    for (node, seen) in [("b", &seen_b), ("c", &seen_c)] {
        let of = |who: &str| -> Vec<u64> {
            // Probes (ids from 1000) may still be in flight.
            seen.iter()
                .filter(|m| m.0 == who && m.1 < 1000)
                .map(|m| m.1)
                .collect()
        };
        assert_eq!(
            of("alice"),
            (1..=20).collect::<Vec<_>>(),
            "node {node}: alice's messages (sent on a) once each, in order"
        );
        assert_eq!(
            of("bob"),
            (1..=10).collect::<Vec<_>>(),
            "node {node}: bob's messages (sent on b) once each, in order"
        );
    }

    // A notice injected once, through node b, reaches viewers on a and c once each.
    let (status, _) = http_call(
        b.server.ops,
        "POST",
        "/admin/rooms/chat/notice",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        r#"{"text": "welcome to the show"}"#,
    )
    .await;
    assert_eq!(status, 202);
    for (node, viewer) in [("c", &mut on_c2), ("a", &mut alice)] {
        let mut notices = 0;
        let deadline = Instant::now() + WAIT;
        // Until the notice arrives, then half a second more for any second copy.
        let mut until = None;
        loop {
            let now = Instant::now();
            if until.is_some_and(|u| now >= u) {
                break;
            }
            assert!(now < deadline, "node {node}: the notice arrives");
            let wait = until.map_or(WAIT, |u: Instant| u - now);
            let Ok(msg) = tokio::time::timeout(wait, viewer.recv()).await else {
                continue;
            };
            if let Some(SBody::ChatBatch(batch)) = msg.body {
                for m in batch.messages {
                    if m.kind == ChatKind::Notice as i32 && m.text == "welcome to the show" {
                        notices += 1;
                        until.get_or_insert(Instant::now() + Duration::from_millis(500));
                    }
                }
            }
        }
        assert_eq!(notices, 1, "node {node}: the notice once");
    }

    // A block set through node c's admin API stops alice on node a.
    let t0 = Instant::now();
    let (status, _) = http_call(
        c.server.ops,
        "PUT",
        "/admin/blocks/users/alice",
        &[("authorization", &format!("Bearer {ADMIN}"))],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let mut blocked = false;
    for n in 100..150u64 {
        alice.say("am I blocked?", n).await;
        let answer = alice
            .recv_until(|m| match &m.body {
                Some(SBody::Error(_)) => true,
                Some(SBody::ChatBatch(b)) => b
                    .messages
                    .iter()
                    .any(|x| x.client_msg_id == n && x.from == "alice"),
                _ => false,
            })
            .await;
        if let Some(SBody::Error(e)) = answer.body {
            assert_eq!(e.code, ErrorCode::Blocked as i32, "{}", e.message);
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the block set on c reached a");
    eprintln!("block on c -> refused on a after {:?}", t0.elapsed());

    // Every node lists the others' rooms.
    let rooms = rooms_json(a.server.addr).await;
    let listed: Vec<String> = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}@{}",
                r["name"].as_str().unwrap(),
                r["node"].as_str().unwrap()
            )
        })
        .collect();
    for want in ["chat@a", "chat@b", "chat@c"] {
        assert!(listed.iter().any(|l| l == want), "{want} in {listed:?}");
    }
}

async fn join_answer(url: &str, room: &str) -> (Client, Result<(), (i32, String)>) {
    let mut c = Client::connect_url(url).await;
    c.send(Body::Join(tickroom::proto::v1::Join {
        room: room.into(),
        ..Default::default()
    }))
    .await;
    let m = c
        .recv_until(|m| matches!(m.body, Some(SBody::Welcome(_)) | Some(SBody::Error(_))))
        .await;
    let answer = match m.body {
        Some(SBody::Welcome(_)) => Ok(()),
        Some(SBody::Error(e)) => Err((e.code, e.redirect_url)),
        _ => unreachable!(),
    };
    (c, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_room_has_one_owner_redirects_and_moves_after_its_owner_is_killed() {
    let dir = TempDir::new("cluster-game");
    let nats = Nats::start(&dir.0).await;
    let mut nodes = [
        Node::start(&dir.0, "a", &node_config(&nats, "a", "")).await,
        Node::start(&dir.0, "b", &node_config(&nats, "b", "")).await,
    ];
    // Both nodes asked for the same new room at once.
    let (url_a, url_b) = (nodes[0].ws_url(), nodes[1].ws_url());
    let ((ca, ra), (cb, rb)) =
        tokio::join!(join_answer(&url_a, "duel"), join_answer(&url_b, "duel"));
    let (owner, other, answer): (usize, usize, (i32, String)) = match (&ra, &rb) {
        (Ok(()), Err(e)) => (0, 1, e.clone()),
        (Err(e), Ok(())) => (1, 0, e.clone()),
        _ => panic!("exactly one node owns the room: a {ra:?}, b {rb:?}"),
    };
    drop((ca, cb));
    assert_eq!(
        answer,
        (ErrorCode::Redirect as i32, nodes[owner].ws_url()),
        "the other node redirects to the owner's public URL"
    );
    // A client following the redirect plays there.
    let (mut follower, joined) = join_answer(&answer.1, "duel").await;
    assert_eq!(joined, Ok(()));
    follower.snapshot().await;
    drop(follower);

    // kill -9 the owner: after the lease (2 s) the room can be made on the other node.
    let t0 = Instant::now();
    nodes[owner].kill9();
    let survivor = nodes[other].ws_url();
    let mut moved = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the room moved to the surviving node within 15 s"
        );
        let (c, answer) = join_answer(&survivor, "duel").await;
        match answer {
            Ok(()) => break c,
            Err((code, _)) => assert_eq!(
                code,
                ErrorCode::Redirect as i32,
                "until the lease expires, a redirect"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    moved.snapshot().await;
    eprintln!(
        "kill -9 of the owner -> first snapshot on the new owner after {:?}",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "not before the lease ran out"
    );
    let rooms = rooms_json(nodes[other].server.addr).await;
    assert!(
        rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "duel" && r["node"] == nodes[other].name.as_str()),
        "GET /rooms lists the room on its new node: {rooms}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_the_bus_is_not_ready_and_recovers_without_duplicates() {
    let dir = TempDir::new("cluster-bus-loss");
    let mut nats = Nats::start(&dir.0).await;
    let a = Node::start(&dir.0, "a", &node_config(&nats, "a", CHAT_ROOM)).await;
    let b = Node::start(&dir.0, "b", &node_config(&nats, "b", CHAT_ROOM)).await;
    for n in [&a, &b] {
        assert_eq!(http_get(n.server.ops, "/readyz").await.0, 200);
    }
    nats.stop();
    for n in [&a, &b] {
        let ops = n.server.ops;
        assert!(
            within(
                WAIT,
                || async move { http_get(ops, "/readyz").await.0 == 503 }
            )
            .await,
            "node {} turns not ready without the bus",
            n.name
        );
        let (_, why) = http_get(ops, "/readyz").await;
        assert!(why.contains("cluster bus"), "{why}");
    }
    nats.restart().await;
    for n in [&a, &b] {
        let ops = n.server.ops;
        assert!(
            within(Duration::from_secs(20), || async move {
                http_get(ops, "/readyz").await.0 == 200
            })
            .await,
            "node {} ready again once the bus is back: {}",
            n.name,
            n.log()
        );
    }
    // Chat crosses again, once per message.
    let mut alice = Client::connect_url(&a.ws_url()).await;
    alice.join_as("chat", "", "alice").await;
    let mut viewer = Client::connect_url(&b.ws_url()).await;
    viewer.join_as("chat", "", "").await;
    until_shards_hear_each_other(&mut alice, "alice", &mut viewer).await;
    let mut fresh = Client::connect_url(&b.ws_url()).await;
    fresh.join_as("chat", "", "").await;
    for i in 1..=10 {
        alice.say(&format!("after {i}"), i).await;
    }
    let seen = collect_chat(&mut fresh, |s| s.iter().any(|m| m.1 == 10)).await;
    // Let any duplicate arrive before judging.
    let late = tokio::time::timeout(Duration::from_millis(500), fresh.recv()).await;
    let mut ids: Vec<u64> = seen.iter().map(|m| m.1).filter(|i| *i <= 10).collect();
    if let Ok(m) = late
        && let Some(SBody::ChatBatch(b)) = m.body
    {
        ids.extend(
            b.messages
                .iter()
                .map(|m| m.client_msg_id)
                .filter(|i| *i <= 10),
        );
    }
    assert_eq!(
        ids,
        (1..=10).collect::<Vec<_>>(),
        "each message once, in order"
    );
}
