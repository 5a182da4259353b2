//! Protocol 2 game views on the client side (docs/protocol.md section 4.4), two ways:
//!
//! - [`Verifier`] decodes every view and rebuilds the whole state with the reference
//!   [`ViewState`], checking each checksum: what a real client does, done by a sample of the
//!   swarm because it costs the most.
//! - [`Own`] follows only the client's own avatar through the packed columns without decoding
//!   them (its `seq` acknowledges inputs), so thousands of clients stay cheap.
//!
//! Both report a delta whose base they do not hold as [`Seen::MissedBase`]; the server sends a
//! keyframe on its next tick, and the verifier measures how long that took.

use prost::bytes::Buf;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use tickroom_proto::Message as _;
use tickroom_proto::v1::View;
use tickroom_proto::view::{ApplyError, Row, ViewState};
use tokio::time::{Duration, Instant};

use crate::scan::Malformed;

// Field numbers of View (proto/tickroom.proto).
const VIEW: u32 = 1;
const BASE_TICK: u32 = 2;
const REMOVE_ID: u32 = 4;
const ADD_ID: u32 = 5;
const MOVE_ID: u32 = 13;
const MOVE_X: u32 = 14;
const LAST: u32 = 16;

/// What applying one view did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Keyframe,
    Delta,
    /// A delta on a base this client does not hold: ignored until the next keyframe.
    MissedBase,
}

/// Counts of what a client's views did; summed over the swarm.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViewCounts {
    pub keyframes: u64,
    pub deltas: u64,
    pub missed_bases: u64,
    /// Verified clients only: views whose checksum or columns did not check out.
    pub mismatches: u64,
}

impl ViewCounts {
    pub fn count(&mut self, seen: Seen) {
        match seen {
            Seen::Keyframe => self.keyframes += 1,
            Seen::Delta => self.deltas += 1,
            Seen::MissedBase => self.missed_bases += 1,
        }
    }

    pub fn add(&mut self, o: &ViewCounts) {
        self.keyframes += o.keyframes;
        self.deltas += o.deltas;
        self.missed_bases += o.missed_bases;
        self.mismatches += o.mismatches;
    }
}

/// What a verified client's snapshots cost, summed over the snapshots it applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sizes {
    pub snapshots: u64,
    /// Whole WebSocket messages.
    pub frame_bytes: u64,
    /// The objects' part: protocol 2, the view's columns (without its view number, base and
    /// checksum); protocol 1, the `objects` fields.
    pub object_bytes: u64,
    /// Objects in the view after each snapshot.
    pub objects: u64,
    /// Of those, present in the previous snapshot too, at another position / the same one.
    pub moving: u64,
    pub resting: u64,
}

impl Sizes {
    pub fn add(&mut self, o: &Sizes) {
        self.snapshots += o.snapshots;
        self.frame_bytes += o.frame_bytes;
        self.object_bytes += o.object_bytes;
        self.objects += o.objects;
        self.moving += o.moving;
        self.resting += o.resting;
    }

    /// Counts moving and resting objects between two id-sorted position lists.
    fn compare(&mut self, before: &[(u32, u32, u32)], after: &[(u32, u32, u32)]) {
        self.snapshots += 1;
        self.objects += after.len() as u64;
        let mut b = 0;
        for a in after {
            while b < before.len() && before[b].0 < a.0 {
                b += 1;
            }
            if let Some(p) = before.get(b).filter(|p| p.0 == a.0) {
                if (p.1, p.2) == (a.1, a.2) {
                    self.resting += 1;
                } else {
                    self.moving += 1;
                }
            }
        }
    }
}

/// Rebuilds the whole view and checks it, and measures what its snapshots cost.
#[derive(Debug, Default)]
pub struct Verifier {
    state: ViewState,
    /// When the first delta it could not apply arrived, until something applies again.
    missed_at: Option<Instant>,
    /// Positions after the last snapshot, by id.
    positions: Vec<(u32, u32, u32)>,
    pub sizes: Sizes,
}

/// What [`Verifier::apply`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// `None` when the view did not check out (a mismatch).
    pub seen: Option<Seen>,
    /// The own avatar's `seq` in the state, when it holds it.
    pub acked: Option<u32>,
    /// Set on the first view applied after a missed base: how long the client waited.
    pub recovered_after: Option<Duration>,
}

impl Verifier {
    /// Applies a protocol 2 view, from a WebSocket message of `frame_len` bytes.
    pub fn apply(
        &mut self,
        me: u32,
        tick: u64,
        view: &[u8],
        frame_len: usize,
        now: Instant,
    ) -> Verified {
        let decoded = View::decode(view).map_err(|_| ApplyError::Malformed("not a View"));
        let result = decoded
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|v| self.state.apply(tick, v));
        if let (Ok(v), Ok(_)) = (&decoded, &result) {
            use prost::encoding::encoded_len_varint;
            let header = [
                (v.view != 0).then(|| 1 + encoded_len_varint(u64::from(v.view))),
                (v.base_tick != 0).then(|| 1 + encoded_len_varint(v.base_tick)),
                (v.checksum != 0).then_some(5),
            ];
            self.sizes.frame_bytes += frame_len as u64;
            self.sizes.object_bytes += (view.len() - header.iter().flatten().sum::<usize>()) as u64;
            let after: Vec<_> = self.state.rows().iter().map(|r| (r.id, r.x, r.y)).collect();
            self.sizes.compare(&self.positions, &after);
            self.positions = after;
        }
        let seen = match result {
            Ok(true) => Some(Seen::Keyframe),
            Ok(false) => Some(Seen::Delta),
            Err(ApplyError::MissedBase { .. }) => Some(Seen::MissedBase),
            Err(_) => None,
        };
        let recovered_after = match seen {
            Some(Seen::MissedBase) | None => {
                self.missed_at.get_or_insert(now);
                None
            }
            Some(_) => self.missed_at.take().map(|at| now - at),
        };
        Verified {
            seen,
            acked: self.state.get(me).map(|r| r.seq),
            recovered_after,
        }
    }

    /// Measures a protocol 1 snapshot (`frame`, a whole ServerMessage): what it costs and how
    /// many of its objects moved. Nothing to check: it is the whole state.
    pub fn observe_full(&mut self, frame: &[u8]) {
        use tickroom_proto::v1::{ServerMessage, object::State, server_message::Body};
        let Ok(ServerMessage {
            body: Some(Body::Snapshot(snap)),
            ..
        }) = ServerMessage::decode(frame)
        else {
            return;
        };
        let mut after: Vec<_> = snap
            .objects
            .iter()
            .filter_map(|o| match &o.state {
                Some(State::Entity(e)) => Some((o.id, (e.x * 64.0) as u32, (e.y * 64.0) as u32)),
                _ => None,
            })
            .collect();
        after.sort_unstable();
        self.sizes.frame_bytes += frame.len() as u64;
        self.sizes.object_bytes += snap
            .objects
            .iter()
            .map(|o| prost::encoding::message::encoded_len(2, o) as u64)
            .sum::<u64>();
        self.sizes.compare(&self.positions, &after);
        self.positions = after;
    }

    #[cfg(test)]
    pub fn state(&self) -> &ViewState {
        &self.state
    }
}

/// Follows one object (the client's avatar) through the views without decoding them.
#[derive(Debug, Default)]
pub struct Own {
    row: Option<Row>,
    at: Option<(u32, u64)>,
}

impl Own {
    /// The object's row as this client holds it.
    pub fn row(&self) -> Option<&Row> {
        self.row.as_ref()
    }

    /// Applies the view of the snapshot of `tick` to object `me` only.
    pub fn apply(&mut self, me: u32, tick: u64, mut view: &[u8]) -> Result<Seen, Malformed> {
        let (mut number, mut base) = (0u32, 0u64);
        let mut cols: [&[u8]; LAST as usize + 1] = [&[]; LAST as usize + 1];
        while view.has_remaining() {
            let (tag, wire) = decode_key(&mut view)?;
            match (tag, wire) {
                (VIEW, WireType::Varint) => number = decode_varint(&mut view)? as u32,
                (BASE_TICK, WireType::Varint) => base = decode_varint(&mut view)?,
                (REMOVE_ID..=LAST, WireType::LengthDelimited) => {
                    let len = usize::try_from(decode_varint(&mut view)?).map_err(|_| Malformed)?;
                    let (col, rest) = view.split_at_checked(len).ok_or(Malformed)?;
                    cols[tag as usize] = col;
                    view = rest;
                }
                // Columns are always packed; anything else is not what the server sends.
                (REMOVE_ID..=LAST, _) => return Err(Malformed),
                _ => skip_field(wire, tag, &mut view, DecodeContext::default())?,
            }
        }
        if base != 0 && self.at != Some((number, base)) {
            return Ok(Seen::MissedBase);
        }
        let col = |field: u32| cols[field as usize];
        if base == 0 || find(col(REMOVE_ID), me)?.is_some() {
            self.row = None;
        } else if let Some(r) = &mut self.row {
            *r = r.predicted();
            if let Some(i) = find(col(MOVE_ID), me)? {
                let [rx, ry, rs] = [0, 1, 2].map(|k| nth(col(MOVE_X + k), i).map(zigzag));
                r.correct(rx?, ry?, rs?);
            }
        }
        if let Some(i) = find(col(ADD_ID), me)? {
            // add_kind, add_x, add_y, add_seq, then the three signed velocities.
            let v = |k: u32| nth(col(ADD_ID + k), i);
            self.row = Some(Row {
                id: me,
                kind: v(1)? as i32,
                x: v(2)? as u32,
                y: v(3)? as u32,
                seq: v(4)? as u32,
                vx: zigzag(v(5)?),
                vy: zigzag(v(6)?),
                vseq: zigzag(v(7)?),
            });
        }
        self.at = Some((number, tick));
        Ok(if base == 0 {
            Seen::Keyframe
        } else {
            Seen::Delta
        })
    }
}

/// Where `id` is in a gap-coded id column.
fn find(mut col: &[u8], id: u32) -> Result<Option<usize>, Malformed> {
    let mut at = 0u64;
    let mut i = 0;
    while col.has_remaining() {
        let gap = decode_varint(&mut col)?;
        at = at.checked_add(gap).ok_or(Malformed)?;
        if at == u64::from(id) {
            return Ok(Some(i));
        }
        if at > u64::from(id) {
            break;
        }
        i += 1;
    }
    Ok(None)
}

/// The `i`-th varint of a packed column.
fn nth(mut col: &[u8], i: usize) -> Result<u64, Malformed> {
    for _ in 0..i {
        decode_varint(&mut col)?;
    }
    Ok(decode_varint(&mut col)?)
}

fn zigzag(v: u64) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickroom_proto::view::checksum;

    fn keyframe(rows: &[Row]) -> View {
        let mut v = View {
            view: 3,
            checksum: checksum(rows),
            ..Default::default()
        };
        let mut prev = 0;
        for r in rows {
            v.add_id.push(r.id - prev);
            prev = r.id;
            v.add_kind.push(r.kind);
            v.add_x.push(r.x);
            v.add_y.push(r.y);
            v.add_seq.push(r.seq);
            v.add_vx.push(r.vx);
            v.add_vy.push(r.vy);
            v.add_vseq.push(r.vseq);
        }
        v
    }

    fn row(id: u32, x: u32, vx: i32, seq: u32, vseq: i32) -> Row {
        Row {
            id,
            kind: 1,
            x,
            y: 640,
            seq,
            vx,
            vy: -3,
            vseq,
        }
    }

    #[test]
    fn the_light_path_follows_its_own_row_like_the_full_state() {
        let rows = [
            row(2, 100, 5, 0, 0),
            row(9, 5000, -300, 77, 1),
            row(12, 1, 1, 0, 0),
        ];
        let k = keyframe(&rows);
        let (mut own, mut full) = (Own::default(), Verifier::default());
        let now = Instant::now();
        assert_eq!(own.apply(9, 10, &k.encode_to_vec()), Ok(Seen::Keyframe));
        let v = full.apply(9, 10, &k.encode_to_vec(), 0, now);
        assert_eq!((v.seen, v.acked), (Some(Seen::Keyframe), Some(77)));
        assert_eq!(own.row(), full.state().get(9));
        // Tick 11: 2 and 12 as predicted, 9 turned and its seq jumped by 3; then tick 12 as
        // predicted for everyone.
        let mut after = rows.map(|r| r.predicted());
        after[1].correct(40, -2, 2);
        let d = View {
            view: 3,
            base_tick: 10,
            checksum: checksum(&after),
            move_id: vec![9],
            move_x: vec![40],
            move_y: vec![-2],
            move_seq: vec![2],
            ..Default::default()
        };
        assert_eq!(own.apply(9, 11, &d.encode_to_vec()), Ok(Seen::Delta));
        let v = full.apply(9, 11, &d.encode_to_vec(), 0, now);
        assert_eq!((v.seen, v.acked), (Some(Seen::Delta), Some(80)));
        assert_eq!(own.row(), full.state().get(9));
        let next = after.map(|r| r.predicted());
        let d = View {
            view: 3,
            base_tick: 11,
            checksum: checksum(&next),
            ..Default::default()
        };
        assert_eq!(own.apply(9, 12, &d.encode_to_vec()), Ok(Seen::Delta));
        assert_eq!(
            full.apply(9, 12, &d.encode_to_vec(), 0, now).acked,
            Some(83)
        );
        assert_eq!(own.row(), full.state().get(9));
        assert_eq!(own.row().unwrap().seq, 83);
    }

    #[test]
    fn a_missed_base_is_reported_and_the_verifier_times_the_repair() {
        let rows = [row(4, 10, 1, 0, 0)];
        let (mut own, mut full) = (Own::default(), Verifier::default());
        let t0 = Instant::now();
        let k = keyframe(&rows).encode_to_vec();
        own.apply(4, 1, &k).unwrap();
        full.apply(4, 1, &k, 0, t0);
        let orphan = View {
            view: 3,
            base_tick: 7,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(own.apply(4, 8, &orphan), Ok(Seen::MissedBase));
        let v = full.apply(4, 8, &orphan, 0, t0);
        assert_eq!((v.seen, v.recovered_after), (Some(Seen::MissedBase), None));
        let later = t0 + Duration::from_millis(17);
        let v = full.apply(4, 9, &k, 0, later);
        assert_eq!(v.seen, Some(Seen::Keyframe));
        assert_eq!(v.recovered_after, Some(Duration::from_millis(17)));
        // A wrong checksum is a mismatch, not a view.
        let mut bad = keyframe(&rows);
        bad.checksum ^= 4;
        assert_eq!(full.apply(4, 10, &bad.encode_to_vec(), 0, later).seen, None);
    }
}
