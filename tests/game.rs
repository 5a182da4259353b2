//! The arena game room over real WebSockets: snapshots at the tick rate, inputs, visibility.

mod common;

use common::*;
use tickroom::proto::v1::{
    Ack, EntityKind, ErrorCode, RoomKind, client_message::Body, server_message::Body as SBody,
};
use tickroom_proto::view::{ApplyError, ViewState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_snapshots_with_increasing_ticks_at_the_room_rate() {
    let server = start(test_config()).await;
    let mut c = Client::connect(&server).await;
    let w = c.join("arena").await;
    assert_eq!(w.room, "arena");
    assert_eq!(w.room_kind, RoomKind::Game as i32);
    assert_eq!(w.tick_rate_hz, 60);
    assert_ne!(w.your_object_id, 0);
    assert_eq!(w.resume_token.len(), 32);
    assert!(!w.resumed);

    let (first_tick, snap) = c.snapshot().await;
    assert_eq!(snap.objects.len(), 4, "3 bots and our avatar");
    let me = entity(&snap, w.your_object_id).expect("own avatar in the snapshot");
    assert_eq!(me.kind, EntityKind::Avatar as i32);
    assert!(snap.server_time_us > 1_600_000_000_000_000);

    // The rate is read on the server's clock, not ours: each snapshot carries its tick number
    // and the wall time its tick started. Tick k is due at start + k·period, so however late
    // a busy machine runs a tick, ticks and time keep one ratio.
    let first_time = snap.server_time_us;
    let mut last = first_tick;
    let mut last_time = first_time;
    let mut count = 0;
    while last - first_tick < 120 {
        let (tick, s) = c.snapshot().await;
        assert!(tick > last, "ticks increase: {tick} after {last}");
        assert!(s.server_time_us >= last_time, "server time goes forward");
        last = tick;
        last_time = s.server_time_us;
        count += 1;
    }
    let ticks = (last - first_tick) as f64;
    let expected_us = ticks * 1e6 / 60.0;
    let lateness_us = (last_time - first_time) as f64 - expected_us;
    assert!(
        lateness_us.abs() < 0.25 * expected_us,
        "{ticks} ticks took {:.0} ms on the server's clock, {:.0} ms at 60 Hz",
        (last_time - first_time) as f64 / 1e3,
        expected_us / 1e3
    );
    // Snapshots are latest-only, so a briefly descheduled client may skip a few, not most.
    assert!(
        count as u64 * 2 >= last - first_tick,
        "{count} snapshots for {} ticks",
        last - first_tick
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_move_the_avatar_in_order_and_are_acknowledged() {
    let server = start(test_config()).await;
    let mut c = Client::connect(&server).await;
    let w = c.join("arena").await;
    let (_, snap) = c.snapshot().await;
    let start = entity(&snap, w.your_object_id).unwrap();
    // Move towards the centre so the world edge cannot clamp the path.
    let dir = if start.x > 500.0 { -1.0 } else { 1.0 };
    for seq in 1..=10 {
        c.input(seq, dir, 0.0).await;
    }
    let moved = loop {
        let (_, s) = c.snapshot().await;
        let me = entity(&s, w.your_object_id).unwrap();
        if me.last_input_seq == 10 {
            break me;
        }
        assert!(me.last_input_seq <= 10);
    };
    // One input is one step of speed / tick rate = 200 / 60 world units, on the 1/64 grid
    // (docs/protocol.md 4.1): round(200 * 64 / 60) = 213 sixty-fourths.
    let expected = start.x + dir * 10.0 * 213.0 / 64.0;
    assert!(
        (moved.x - expected).abs() < 1e-3,
        "x {} expected {expected}",
        moved.x
    );
    assert_eq!(moved.y, start.y);

    // A repeated sequence number is refused, and the avatar does not move.
    c.input(10, dir, 0.0).await;
    let err = c
        .recv_until(|m| matches!(m.body, Some(SBody::Error(_))))
        .await;
    let Some(SBody::Error(e)) = err.body else {
        unreachable!()
    };
    assert_eq!(e.code, ErrorCode::InvalidArgument as i32);
    let (_, s) = c.snapshot().await;
    assert_eq!(entity(&s, w.your_object_id).unwrap().x, moved.x);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_players_see_each_other_and_a_leave_is_a_deletion() {
    let server = start(test_config()).await;
    let mut a = Client::connect(&server).await;
    let wa = a.join("arena").await;
    a.snapshot().await;
    let mut b = Client::connect(&server).await;
    let wb = b.join("arena").await;

    let created = a
        .recv_until(|m| matches!(&m.body, Some(SBody::ObjectCreated(c)) if c.objects.iter().any(|o| o.id == wb.your_object_id)))
        .await;
    assert!(created.tick > 0);
    let (_, sb) = b.snapshot().await;
    assert!(entity(&sb, wa.your_object_id).is_some(), "b sees a");
    assert!(entity(&sb, wb.your_object_id).is_some(), "b sees itself");

    b.send(Body::Leave(Default::default())).await;
    let deleted = a
        .recv_until(
            |m| matches!(&m.body, Some(SBody::ObjectDeleted(d)) if d.ids.contains(&wb.your_object_id)),
        )
        .await;
    // Every later snapshot lacks b.
    let (tick, sa) = a.snapshot().await;
    assert!(tick >= deleted.tick);
    assert!(entity(&sa, wb.your_object_id).is_none());
    assert!(entity(&sa, wa.your_object_id).is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_rooms_are_created_on_first_join_when_allowed() {
    let mut config = test_config();
    config.game.auto_create = true;
    let server = start(config).await;
    let mut c = Client::connect(&server).await;
    let w = c.join("lobby-7").await;
    assert_eq!(w.room, "lobby-7");
    c.snapshot().await;
    eventually("lobby-7 listed with one session", || async {
        room_sessions(&server, "lobby-7").await == 1
    })
    .await;
    server.stop().await;
}

/// Area of interest: over a real connection, a client's snapshots hold its own avatar and
/// exactly what stands in its cell and the 8 around it, as it walks across cell boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_hold_only_the_view_around_the_avatar() {
    let mut config = test_config();
    let game = arena(&mut config);
    game.bots = 300;
    game.cell_size = 100.0;
    let server = start(config).await;
    let mut c = Client::connect(&server).await;
    let w = c.join("arena").await;
    // The far edge (x or y = 1000) belongs to the last cell.
    let cell = |x: f32, y: f32| (((x / 100.0) as i32).min(9), ((y / 100.0) as i32).min(9));
    let mut views = std::collections::BTreeSet::new();
    let mut seq = 0;
    let dir = if entity(&c.snapshot().await.1, w.your_object_id).unwrap().x < 500.0 {
        1.0
    } else {
        -1.0
    };
    // 100 units take 30 inputs; 70 snapshots see at least two cells.
    for _ in 0..70 {
        seq += 1;
        c.input(seq, dir, 0.0).await;
        let (_, snap) = c.snapshot().await;
        let me = entity(&snap, w.your_object_id).expect("own avatar always in view");
        let mine = cell(me.x, me.y);
        views.insert(mine);
        assert!(snap.objects.len() < 301, "not the whole world");
        for o in &snap.objects {
            let e = entity(&snap, o.id).unwrap();
            let at = cell(e.x, e.y);
            assert!(
                (at.0 - mine.0).abs() <= 1 && (at.1 - mine.1).abs() <= 1,
                "object {} at cell {at:?} outside the view of {mine:?}",
                o.id
            );
        }
    }
    assert!(views.len() >= 2, "walked through {views:?}");
    server.stop().await;
}

/// What a protocol 2 client did with one snapshot.
#[derive(Debug, PartialEq)]
enum Applied {
    Keyframe(u64),
    Delta(u64),
    MissedBase(u64),
}

/// Reads the next snapshot and applies its view; a checksum or format error fails the test.
async fn next_view(c: &mut Client, state: &mut ViewState) -> Applied {
    let (tick, snap) = c.snapshot().await;
    assert!(
        snap.objects.is_empty(),
        "protocol 2 snapshots carry a view only"
    );
    let view = snap.view.expect("a view");
    match state.apply(tick, &view) {
        Ok(true) => Applied::Keyframe(tick),
        Ok(false) => Applied::Delta(tick),
        Err(ApplyError::MissedBase { .. }) => Applied::MissedBase(tick),
        Err(e) => panic!("tick {tick}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_views_rebuild_the_room_and_agree_with_protocol_1() {
    let server = start(test_config()).await;
    let mut c = Client::connect(&server).await;
    let w = c.join_speaking("arena", "", "", 2).await;
    assert_eq!(w.position_scale, 64);
    let mut old = Client::connect(&server).await;
    old.join("arena").await;
    let mut state = ViewState::default();
    assert!(matches!(
        next_view(&mut c, &mut state).await,
        Applied::Keyframe(_)
    ));
    let me = w.your_object_id;
    let start_x = state.get(me).expect("own avatar in the view").x;
    let dir = if start_x > 32_000 { -1.0 } else { 1.0 };
    for seq in 1..=10 {
        c.input(seq, dir, 0.0).await;
    }
    // Every snapshot applies (a client descheduled on a busy machine may miss a base; the
    // next one repairs it) until the tenth input is acknowledged.
    let (mut deltas, mut missed) = (0, 0);
    loop {
        match next_view(&mut c, &mut state).await {
            Applied::Delta(_) => deltas += 1,
            Applied::MissedBase(_) => missed += 1,
            Applied::Keyframe(_) => {}
        }
        if state.get(me).is_some_and(|r| r.seq == 10) {
            break;
        }
    }
    assert!(deltas > 0);
    assert!(missed < 5, "{missed} missed bases");
    // Ten steps of 213/64 world units, exactly.
    let mine = *state.get(me).unwrap();
    assert_eq!(
        i64::from(mine.x) - i64::from(start_x),
        (dir * 10.0 * 213.0) as i64
    );
    // Every object is where a protocol 1 client sees it, at the same tick.
    let (mut t_old, mut full) = old.snapshot().await;
    let mut t_new = state.at().unwrap().1;
    for _ in 0..5000 {
        if t_old == t_new {
            break;
        }
        if t_old < t_new {
            (t_old, full) = old.snapshot().await;
        } else if let Applied::Delta(t) | Applied::Keyframe(t) = next_view(&mut c, &mut state).await
        {
            t_new = t;
        }
    }
    assert_eq!(t_old, t_new, "both clients saw one tick");
    assert_eq!(full.objects.len(), state.rows().len());
    for o in &full.objects {
        let e = entity(&full, o.id).unwrap();
        let r = state.get(o.id).expect("the same objects");
        assert_eq!(
            (e.x * 64.0, e.y * 64.0),
            (r.x as f32, r.y as f32),
            "object {}",
            o.id
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_2_reader_held_back_gets_a_keyframe_across_every_gap() {
    let mut config = test_config();
    // Periodic keyframes off: the repair must come from the server seeing the drop.
    arena(&mut config).keyframe_interval = 0;
    let server = start(config).await;
    let mut c = Client::connect(&server).await;
    c.join_speaking("arena", "", "", 2).await;
    let mut state = ViewState::default();
    next_view(&mut c, &mut state).await;
    // A flow-control window of 3 ticks that is not acknowledged for a while: the server
    // holds the session, and its snapshots conflate in the outbox (protocol 3.1).
    let at = state.at().unwrap().1;
    c.send(Body::Ack(Ack {
        tick: at,
        window: 3,
    }))
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    c.send(Body::Ack(Ack { tick: 0, window: 0 })).await;
    // Read through what was in transit (consecutive deltas) to the newest values.
    let mut log = Vec::new();
    for _ in 0..60 {
        log.push(next_view(&mut c, &mut state).await);
    }
    let tick = |a: &Applied| match a {
        Applied::Keyframe(t) | Applied::Delta(t) | Applied::MissedBase(t) => *t,
    };
    let gaps: Vec<usize> = (1..log.len())
        .filter(|i| tick(&log[*i]) > tick(&log[i - 1]) + 1)
        .collect();
    assert!(!gaps.is_empty(), "the pause dropped snapshots: {log:?}");
    // Across every gap the client is given a keyframe: at once, or right after the one
    // delta it cannot apply (the writer took it before the room's next tick).
    for i in gaps {
        match &log[i] {
            Applied::Keyframe(_) => {}
            Applied::MissedBase(_) => assert!(
                matches!(log.get(i + 1), Some(Applied::Keyframe(_)) | None),
                "after a missed base: {:?}",
                &log[i..(i + 3).min(log.len())]
            ),
            Applied::Delta(t) => panic!("a delta at tick {t} applied across a gap"),
        }
    }
    server.stop().await;
}
