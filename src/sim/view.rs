//! The server's side of protocol 2 views (docs/protocol.md section 4.4): what a view's members
//! hold, the next state from the objects now in the view, and the delta and keyframe that take
//! a client there, each written once per view and tick, straight to bytes, by a [`Writer`].
//!
//! `tickroom_proto::view` is the client's side; the tests here check that applying what this
//! writes gives back exactly the state it describes.

use tickroom_proto::view::{HAS_SEQ, HAS_XY, OFFSET, Row, added_entry, hash_row, zigzag};

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

/// Appends `v` as a protobuf varint. (Ours, not prost's: this runs for every value of every
/// view of every tick.)
#[inline]
fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

// Keys of View's fields (proto/tickroom.proto): field number << 3 | wire type.
const VIEW_KEY: u8 = 1 << 3;
const BASE_TICK_KEY: u8 = 2 << 3;
const CHECKSUM_KEY: u8 = (3 << 3) | 5;
const REMOVED_KEY: u8 = (4 << 3) | 2;
const MOVED_KEY: u8 = (5 << 3) | 2;
const ADDED_KEY: u8 = (6 << 3) | 2;
// Snapshot.view.
const SNAPSHOT_VIEW_KEY: u8 = (3 << 3) | 2;

/// Writes views: one keyframe or delta at a time, as the bytes of a `Snapshot.view` field
/// (key, length, `View`), ready to go after a snapshot's other fields. Its buffers are reused
/// from view to view and tick to tick.
#[derive(Debug, Default)]
pub struct Writer {
    removed: Vec<u8>,
    moved: Vec<u8>,
    added: Vec<u8>,
    view: Vec<u8>,
    field: Vec<u8>,
}

impl Writer {
    fn add(&mut self, prev: &mut Option<u32>, r: &Row) {
        for value in added_entry(prev.unwrap_or(0), r) {
            varint(&mut self.added, u64::from(value));
        }
        *prev = Some(r.id);
    }

    /// The keyframe of state `rows` (checksum `sum`).
    pub fn keyframe(&mut self, view: u32, rows: &[Row], sum: u32) -> &[u8] {
        self.clear();
        let mut prev = None;
        for r in rows {
            self.add(&mut prev, r);
        }
        self.finish(view, 0, sum)
    }

    /// The delta from `held` (the state after the snapshot of `base_tick`) to `next`, and
    /// its checksum. Does what [`advance`] does to `next` in the same pass: one walk of both
    /// states per view and tick, since this runs for every view of every tick. Objects that
    /// moved as predicted cost nothing; the others are named by position, which takes one
    /// byte where an id could take two.
    pub fn delta(
        &mut self,
        view: u32,
        base_tick: u64,
        held: &[Row],
        next: &mut [Row],
    ) -> (u32, &[u8]) {
        self.clear();
        let mut h = OFFSET;
        // Positions: `base` in the held state (removals), `kept` among the objects that stay
        // (residuals); each list counts the objects skipped since its previous entry.
        let (mut base, mut last_removed) = (0u32, 0u32);
        let (mut kept, mut last_moved) = (0u32, 0u32);
        let mut prev_added = None;
        let mut i = 0;
        for n in next.iter_mut() {
            while held.get(i).is_some_and(|b| b.id < n.id) {
                varint(&mut self.removed, u64::from(base - last_removed));
                last_removed = base + 1;
                base += 1;
                i += 1;
            }
            match held.get(i) {
                Some(b) if b.id == n.id => {
                    // The velocity since the base, and how far that is from the prediction
                    // (the base's position plus its velocity).
                    let v = (
                        n.x.wrapping_sub(b.x) as i32,
                        n.y.wrapping_sub(b.y) as i32,
                        n.seq.wrapping_sub(b.seq) as i32,
                    );
                    let (rx, ry, rs) = (
                        v.0.wrapping_sub(b.vx),
                        v.1.wrapping_sub(b.vy),
                        v.2.wrapping_sub(b.vseq),
                    );
                    (n.vx, n.vy, n.vseq) = v;
                    let xy = (rx | ry) != 0;
                    if xy || rs != 0 {
                        let head = ((kept - last_moved) << 2)
                            | if xy { HAS_XY } else { 0 }
                            | if rs != 0 { HAS_SEQ } else { 0 };
                        let m = &mut self.moved;
                        varint(m, u64::from(head));
                        if xy {
                            varint(m, u64::from(zigzag(rx)));
                            varint(m, u64::from(zigzag(ry)));
                        }
                        if rs != 0 {
                            varint(m, u64::from(zigzag(rs)));
                        }
                        last_moved = kept + 1;
                    }
                    kept += 1;
                    base += 1;
                    i += 1;
                }
                _ => self.add(&mut prev_added, n),
            }
            h = hash_row(h, n);
        }
        for _ in i..held.len() {
            varint(&mut self.removed, u64::from(base - last_removed));
            last_removed = base + 1;
            base += 1;
        }
        (h, self.finish(view, base_tick, h))
    }

    fn clear(&mut self) {
        self.removed.clear();
        self.moved.clear();
        self.added.clear();
    }

    /// Wraps the lists into a `View` and that into a `Snapshot.view` field.
    fn finish(&mut self, view: u32, base_tick: u64, sum: u32) -> &[u8] {
        let v = &mut self.view;
        v.clear();
        if view != 0 {
            v.push(VIEW_KEY);
            varint(v, u64::from(view));
        }
        if base_tick != 0 {
            v.push(BASE_TICK_KEY);
            varint(v, base_tick);
        }
        if sum != 0 {
            v.push(CHECKSUM_KEY);
            v.extend_from_slice(&sum.to_le_bytes());
        }
        for (key, list) in [
            (REMOVED_KEY, &self.removed),
            (MOVED_KEY, &self.moved),
            (ADDED_KEY, &self.added),
        ] {
            if !list.is_empty() {
                v.push(key);
                varint(v, list.len() as u64);
                v.extend_from_slice(list);
            }
        }
        self.field.clear();
        self.field.push(SNAPSHOT_VIEW_KEY);
        varint(&mut self.field, v.len() as u64);
        self.field.extend_from_slice(v);
        &self.field
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use prost::Message;
    use tickroom_proto::v1::{Snapshot, View};
    use tickroom_proto::view::{ViewState, checksum};

    use super::*;

    /// The `View` in a `Snapshot.view` field, through prost.
    fn decoded(field: &[u8]) -> View {
        Snapshot::decode(field).unwrap().view.map(|v| *v).unwrap()
    }

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
        let mut w = Writer::default();
        let field = w.keyframe(5, &t100, checksum(&t100));
        assert_eq!(
            hex(&field[2..]),
            "08 05 1d 30 0d df bc 32 17 03 02 80 32 80 64 00 d6 01 00 00 04 01 90 fa 01 80 05 \
             29 00 a9 03 02"
        );
        let mut t101 = [t100[0], t100[1]];
        t101[0].x = 6507;
        t101[1].x = 32030;
        t101[1].y = 430;
        t101[1].seq = 42;
        let (sum, field) = w.delta(5, 100, &t100, &mut t101);
        assert_eq!(sum, 0xc7cb_026f);
        assert_eq!(&field[..2], [0x1a, 14], "Snapshot.view, 14 bytes");
        assert_eq!(
            hex(&field[2..]),
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
        let mut w = Writer::default();
        let field = w.delta(0, 9, &held, &mut next).1.to_vec();
        let v = decoded(&field);
        assert!(v.moved.is_empty() && v.added.is_empty() && v.removed.is_empty());
        // A view with nothing unexpected is its header only: view 0, base, checksum.
        assert_eq!(field.len(), 2 + 2 + 5);
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
            let mut w = Writer::default();
            for (t, objects) in ticks.iter().enumerate() {
                let tick = t as u64 + 1;
                let mut next: Vec<Row> = objects
                    .iter()
                    .map(|&(id, x, y, seq)| Row { id, kind: 1, x, y, seq, vx: 3, vy: -2, vseq: 1 })
                    .collect();
                let mut again = next.clone();
                let (sum, field) = match held_tick {
                    None => {
                        let sum = advance(&held, &mut next);
                        (sum, w.keyframe(4, &next, sum))
                    }
                    Some(base) => w.delta(4, base, &held, &mut next),
                };
                // The delta's pass leaves `next` as advance would.
                prop_assert_eq!(advance(&held, &mut again), sum);
                prop_assert_eq!(&again, &next);
                // Through the wire and back.
                let v2 = decoded(field);
                prop_assert_eq!(client.apply(tick, &v2).map(|_| ()), Ok(()));
                prop_assert_eq!(client.rows(), &next[..]);
                // A keyframe of the same state gives a newcomer the same.
                let v = decoded(w.keyframe(4, &next, sum));
                let mut fresh = ViewState::default();
                prop_assert_eq!(fresh.apply(tick, &v).map(|_| ()), Ok(()));
                prop_assert_eq!(fresh.rows(), &next[..]);
                held = next;
                held_tick = Some(tick);
            }
        }
    }
}
