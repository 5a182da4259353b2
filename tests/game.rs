//! The arena game room over real WebSockets: snapshots at the tick rate, inputs, visibility.

mod common;

use common::*;
use tickroom::proto::v1::{
    EntityKind, ErrorCode, RoomKind, client_message::Body, server_message::Body as SBody,
};

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
    // One input is one step of speed / tick rate = 200 / 60 world units.
    let expected = start.x + dir * 10.0 * 200.0 / 60.0;
    assert!(
        (moved.x - expected).abs() < 0.01,
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
