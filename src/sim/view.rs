//! The server's side of protocol 2 views (docs/protocol.md section 4.4): what a view's members
//! hold, the next state from the objects now in the view, and the delta and keyframe that take
//! a client there, each written once per view and tick into a reusable `View`.
//!
//! `tickroom_proto::view` is the client's side; the tests here check that applying what this
//! writes gives back exactly the state it describes.

use tickroom_proto::v1::View;
use tickroom_proto::view::{OFFSET, Row, hash_row};

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

/// Gap-codes an ascending id column as it is filled.
struct Ids {
    prev: Option<u32>,
}

impl Ids {
    fn new() -> Self {
        Self { prev: None }
    }

    fn push(&mut self, column: &mut Vec<u32>, id: u32) {
        column.push(self.prev.map_or(id, |p| id - p));
        self.prev = Some(id);
    }
}

fn clear(v: &mut View) {
    v.remove_id.clear();
    v.add_id.clear();
    v.add_kind.clear();
    v.add_x.clear();
    v.add_y.clear();
    v.add_seq.clear();
    v.add_vx.clear();
    v.add_vy.clear();
    v.add_vseq.clear();
    v.move_id.clear();
    v.move_x.clear();
    v.move_y.clear();
    v.move_seq.clear();
}

fn add(v: &mut View, ids: &mut Ids, r: &Row) {
    ids.push(&mut v.add_id, r.id);
    v.add_kind.push(r.kind);
    v.add_x.push(r.x);
    v.add_y.push(r.y);
    v.add_seq.push(r.seq);
    v.add_vx.push(r.vx);
    v.add_vy.push(r.vy);
    v.add_vseq.push(r.vseq);
}

/// Writes the keyframe of state `rows` (checksum `sum`) into `v`.
pub fn keyframe(view: u32, rows: &[Row], sum: u32, v: &mut View) {
    clear(v);
    v.view = view;
    v.base_tick = 0;
    v.checksum = sum;
    let mut ids = Ids::new();
    for r in rows {
        add(v, &mut ids, r);
    }
}

/// Writes the delta from `held` (the state after the snapshot of `base_tick`) to `next`
/// (checksum `sum`, built by [`advance`]) into `v`. Objects that moved as predicted cost
/// nothing.
pub fn delta(view: u32, base_tick: u64, held: &[Row], next: &[Row], sum: u32, v: &mut View) {
    clear(v);
    v.view = view;
    v.base_tick = base_tick;
    v.checksum = sum;
    let (mut removed, mut added, mut moved) = (Ids::new(), Ids::new(), Ids::new());
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
                if (rx, ry, rs) != (0, 0, 0) {
                    moved.push(&mut v.move_id, n.id);
                    v.move_x.push(rx);
                    v.move_y.push(ry);
                    v.move_seq.push(rs);
                }
                i += 1;
                j += 1;
            }
            (Some(b), n) if n.is_none_or(|n| b.id < n.id) => {
                removed.push(&mut v.remove_id, b.id);
                i += 1;
            }
            (_, Some(n)) => {
                add(v, &mut added, n);
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
            "08 05 1d 30 0d df bc 2a 02 03 04 32 02 02 01 3a 05 80 32 90 fa 01 42 04 80 64 80 05 \
             4a 02 00 29 52 03 d6 01 00 5a 03 00 a9 03 62 02 00 02"
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
            "08 05 10 64 1d 6f 02 cb c7 6a 01 07 72 01 1c 7a 01 06 82 01 01 00"
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
        assert!(v.move_id.is_empty() && v.add_id.is_empty() && v.remove_id.is_empty());
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
