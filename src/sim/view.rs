//! The server's side of protocol 2 views (docs/protocol.md section 4.4): what a view's members
//! hold, the next state from the objects now in the view, and the delta and keyframe that take
//! a client there, each written once per view and tick into a reusable `View`.
//!
//! `tickroom_proto::view` is the client's side; the tests here check that applying what this
//! writes gives back exactly the state it describes.

use tickroom_proto::v1::View;
use tickroom_proto::view::{ADDED_VALUES, HAS_SEQ, HAS_XY, OFFSET, Row, hash_row, zigzag};

/// What the members of one view hold: the state after the view's last snapshot.
#[derive(Debug, Default)]
pub struct Held {
    pub rows: Vec<Row>,
    /// Tick of that snapshot; `None` when nobody holds anything yet (nobody watched).
    pub tick: Option<u64>,
}

/// Turns the objects now in a view into its next state, in place: `now` holds them (by id,
/// with their velocity over the room's last tick); objects the view already held get their
/// velocity since the held state instead, which is what a client's prediction uses. Returns
/// the state's checksum.
pub fn advance(held: &[Row], now: &mut [Row]) -> u32 {
    let mut h = OFFSET;
    let mut b = 0;
    for r in now.iter_mut() {
        while b < held.len() && held[b].id < r.id {
            b += 1;
        }
        if let Some(base) = held.get(b).filter(|base| base.id == r.id) {
            r.vx = r.x.wrapping_sub(base.x) as i32;
            r.vy = r.y.wrapping_sub(base.y) as i32;
            r.vseq = r.seq.wrapping_sub(base.seq) as i32;
        }
        h = hash_row(h, r);
    }
    h
}

fn clear(v: &mut View) {
    v.removed.clear();
    v.moved.clear();
    v.added.clear();
}

/// Appends an entering object to `added`, after the one with id `prev`.
fn add(v: &mut View, prev: &mut Option<u32>, r: &Row) {
    v.added.extend([
        prev.map_or(r.id, |p| r.id - p),
        r.kind as u32,
        r.x,
        r.y,
        r.seq,
        zigzag(r.vx),
        zigzag(r.vy),
        zigzag(r.vseq),
    ]);
    *prev = Some(r.id);
}

/// Writes the keyframe of state `rows` (checksum `sum`) into `v`.
pub fn keyframe(view: u32, rows: &[Row], sum: u32, v: &mut View) {
    clear(v);
    v.view = view;
    v.base_tick = 0;
    v.checksum = sum;
    v.added.reserve(rows.len() * ADDED_VALUES);
    let mut prev = None;
    for r in rows {
        add(v, &mut prev, r);
    }
}

/// Writes the delta from `held` (the state after the snapshot of `base_tick`) to `next`
/// (checksum `sum`, built by [`advance`]) into `v`. Objects that moved as predicted cost
/// nothing; the others are addressed by position, which takes one byte where an id could
/// take two.
pub fn delta(view: u32, base_tick: u64, held: &[Row], next: &[Row], sum: u32, v: &mut View) {
    clear(v);
    v.view = view;
    v.base_tick = base_tick;
    v.checksum = sum;
    // Positions: `base` in the held state (removals), `kept` among the objects that stay
    // (residuals); each list counts the objects skipped since its previous entry.
    let (mut base, mut last_removed) = (0u32, 0u32);
    let (mut kept, mut last_moved) = (0u32, 0u32);
    let mut prev_added = None;
    let (mut i, mut j) = (0, 0);
    while i < held.len() || j < next.len() {
        match (held.get(i), next.get(j)) {
            (Some(b), Some(n)) if b.id == n.id => {
                let p = b.predicted();
                let (rx, ry, rs) = (
                    n.x.wrapping_sub(p.x) as i32,
                    n.y.wrapping_sub(p.y) as i32,
                    n.seq.wrapping_sub(p.seq) as i32,
                );
                let xy = (rx, ry) != (0, 0);
                if xy || rs != 0 {
                    let head = ((kept - last_moved) << 2)
                        | if xy { HAS_XY } else { 0 }
                        | if rs != 0 { HAS_SEQ } else { 0 };
                    v.moved.push(head);
                    if xy {
                        v.moved.extend([zigzag(rx), zigzag(ry)]);
                    }
                    if rs != 0 {
                        v.moved.push(zigzag(rs));
                    }
                    last_moved = kept + 1;
                }
                kept += 1;
                base += 1;
                i += 1;
                j += 1;
            }
            (Some(b), n) if n.is_none_or(|n| b.id < n.id) => {
                v.removed.push(base - last_removed);
                last_removed = base + 1;
                base += 1;
                i += 1;
            }
            (_, Some(n)) => {
                add(v, &mut prev_added, n);
                j += 1;
            }
            (_, None) => unreachable!("the loop runs while either side has rows"),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use tickroom_proto::view::{ViewState, checksum};

    use super::*;

    fn row(id: u32, x: u32, vx: i32, seq: u32) -> Row {
        Row {
            id,
            kind: 2,
            x,
            y: 64,
            seq,
            vx,
            ..Default::default()
        }
    }

    #[test]
    fn the_worked_example_of_the_protocol_doc_encodes_to_its_bytes() {
        // docs/protocol.md section 4.4: bot 3 and avatar 7 in view 5, ticks 100 and 101.
        let t100 = [
            Row {
                id: 3,
                kind: 2,
                x: 6400,
                y: 12800,
                seq: 0,
                vx: 107,
                vy: 0,
                vseq: 0,
            },
            Row {
                id: 7,
                kind: 1,
                x: 32016,
                y: 640,
                seq: 41,
                vx: 0,
                vy: -213,
                vseq: 1,
            },
        ];
        let mut v = View::default();
        keyframe(5, &t100, checksum(&t100), &mut v);
        assert_eq!(
            hex(&v.encode_to_vec()),
            "08 05 1d 30 0d df bc 32 17 03 02 80 32 80 64 00 d6 01 00 00 04 01 90 fa 01 80 05 \
             29 00 a9 03 02"
        );
        let mut t101 = [t100[0], t100[1]];
        t101[0].x = 6507;
        t101[1].x = 32030;
        t101[1].y = 430;
        t101[1].seq = 42;
        let sum = advance(&t100, &mut t101);
        assert_eq!(sum, 0xc7cb_026f);
        delta(5, 100, &t100, &t101, sum, &mut v);
        assert_eq!(
            hex(&v.encode_to_vec()),
            "08 05 10 64 1d 6f 02 cb c7 2a 03 05 1c 06"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn objects_that_follow_the_prediction_or_rest_cost_nothing() {
        let held = [row(1, 100, 5, 0), row(2, 300, 0, 7)];
        let mut next = [row(1, 105, 0, 0), row(2, 300, 0, 7)];
        let sum = advance(&held, &mut next);
        let mut v = View::default();
        delta(0, 9, &held, &next, sum, &mut v);
        assert!(v.moved.is_empty() && v.added.is_empty() && v.removed.is_empty());
        // A view with nothing unexpected is its header only: view 0, base, checksum.
        assert_eq!(v.encoded_len(), 2 + 5);
    }

    /// A world of objects moving about, some leaving and entering the view.
    fn world() -> impl Strategy<Value = Vec<Vec<(u32, u32, u32, u32)>>> {
        // Up to 8 ticks of up to 30 objects: (id, x, y, seq).
        proptest::collection::vec(
            proptest::collection::btree_map(1u32..60, (0u32..64_000, 0u32..64_000, 0u32..5), 0..30)
                .prop_map(|m| m.into_iter().map(|(id, (x, y, s))| (id, x, y, s)).collect()),
            1..8,
        )
    }

    proptest! {
        #[test]
        fn a_client_applying_every_delta_holds_exactly_the_servers_state(ticks in world()) {
            let mut held: Vec<Row> = Vec::new();
            let mut held_tick = None;
            let mut client = ViewState::default();
            let mut v = View::default();
            for (t, objects) in ticks.iter().enumerate() {
                let tick = t as u64 + 1;
                let mut next: Vec<Row> = objects
                    .iter()
                    .map(|&(id, x, y, seq)| Row { id, kind: 1, x, y, seq, vx: 3, vy: -2, vseq: 1 })
                    .collect();
                let sum = advance(&held, &mut next);
                match held_tick {
                    None => keyframe(4, &next, sum, &mut v),
                    Some(base) => delta(4, base, &held, &next, sum, &mut v),
                }
                // Through the wire and back.
                let v2 = View::decode(v.encode_to_vec().as_slice()).unwrap();
                prop_assert_eq!(client.apply(tick, &v2).map(|_| ()), Ok(()));
                prop_assert_eq!(client.rows(), &next[..]);
                // A keyframe of the same state gives a newcomer the same.
                keyframe(4, &next, sum, &mut v);
                let mut fresh = ViewState::default();
                prop_assert_eq!(fresh.apply(tick, &v).map(|_| ()), Ok(()));
                prop_assert_eq!(fresh.rows(), &next[..]);
                held = next;
                held_tick = Some(tick);
            }
        }
    }
}
