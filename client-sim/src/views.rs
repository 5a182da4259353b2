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
use tickroom_proto::view::{ApplyError, HAS_SEQ, HAS_XY, Row, ViewState, unzigzag};
use tokio::time::{Duration, Instant};

use crate::scan::Malformed;
use client_sim::toolkit::sizes::SnapshotCost;

// Field numbers of View (proto/tickroom.proto).
const VIEW: u32 = 1;
const BASE_TICK: u32 = 2;
const REMOVED: u32 = 4;
const ADDED: u32 = 6;

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

/// Rebuilds the whole view and checks it, and measures what its snapshots cost.
#[derive(Debug, Default)]
pub struct Verifier {
    state: ViewState,
    /// When the first delta it could not apply arrived, until something applies again.
    missed_at: Option<Instant>,
    pub cost: SnapshotCost,
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
            self.cost.view(frame_len, v, self.state.rows());
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
        self.cost.full(frame);
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
    /// Its position in the state: how many objects of the view have a lower id.
    pos: usize,
    at: Option<(u32, u64)>,
}

/// The varints of a packed list.
struct Packed<'a>(&'a [u8]);

impl Packed<'_> {
    fn next(&mut self) -> Option<Result<u32, Malformed>> {
        self.0
            .has_remaining()
            .then(|| Ok(decode_varint(&mut self.0)? as u32))
    }

    fn take(&mut self) -> Result<u32, Malformed> {
        self.next().unwrap_or(Err(Malformed))
    }
}

impl Own {
    /// The object's row as this client holds it.
    pub fn row(&self) -> Option<&Row> {
        self.row.as_ref()
    }

    /// Applies the view of the snapshot of `tick` to object `me` only.
    pub fn apply(&mut self, me: u32, tick: u64, mut view: &[u8]) -> Result<Seen, Malformed> {
        let (mut number, mut base) = (0u32, 0u64);
        let mut lists: [&[u8]; 3] = [&[]; 3];
        while view.has_remaining() {
            let (tag, wire) = decode_key(&mut view)?;
            match (tag, wire) {
                (VIEW, WireType::Varint) => number = decode_varint(&mut view)? as u32,
                (BASE_TICK, WireType::Varint) => base = decode_varint(&mut view)?,
                (REMOVED..=ADDED, WireType::LengthDelimited) => {
                    let len = usize::try_from(decode_varint(&mut view)?).map_err(|_| Malformed)?;
                    let (list, rest) = view.split_at_checked(len).ok_or(Malformed)?;
                    lists[(tag - REMOVED) as usize] = list;
                    view = rest;
                }
                // The lists are always packed; anything else is not what the server sends.
                (REMOVED..=ADDED, _) => return Err(Malformed),
                _ => skip_field(wire, tag, &mut view, DecodeContext::default())?,
            }
        }
        if base != 0 && self.at != Some((number, base)) {
            return Ok(Seen::MissedBase);
        }
        let [removed, moved, mut added] = lists.map(Packed);
        if base == 0 {
            self.row = None;
        } else if self.row.is_some() {
            self.follow(removed, moved)?;
        }
        // Additions: count those below it, or find it.
        let kept = self.row.is_some();
        let (mut id, mut below) = (0u32, 0);
        while let Some(gap) = added.next() {
            id = id.checked_add(gap?).ok_or(Malformed)?;
            let mut rest = [0u32; 7];
            for v in &mut rest {
                *v = added.take()?;
            }
            if id < me {
                below += 1;
            } else if id == me && !kept {
                if base != 0 {
                    // Entered in a delta: its position among the objects kept is unknown
                    // here. The server never does this to a client's own avatar (its view
                    // changes by keyframe); wait for one.
                    self.row = None;
                    break;
                }
                self.row = Some(Row {
                    id: me,
                    kind: rest[0] as i32,
                    x: rest[1],
                    y: rest[2],
                    seq: rest[3],
                    vx: unzigzag(rest[4]),
                    vy: unzigzag(rest[5]),
                    vseq: unzigzag(rest[6]),
                });
            }
        }
        self.pos = if kept { self.pos + below } else { below };
        self.at = Some((number, tick));
        Ok(if base == 0 {
            Seen::Keyframe
        } else {
            Seen::Delta
        })
    }

    /// Removals and residuals, for a row it holds.
    fn follow(&mut self, mut removed: Packed, mut moved: Packed) -> Result<(), Malformed> {
        let mut at = 0usize;
        let mut before = 0;
        while let Some(skip) = removed.next() {
            at += skip? as usize;
            match at.cmp(&self.pos) {
                std::cmp::Ordering::Less => before += 1,
                std::cmp::Ordering::Equal => {
                    self.row = None;
                    return Ok(());
                }
                std::cmp::Ordering::Greater => break,
            }
            at += 1;
        }
        self.pos -= before;
        let Some(r) = &mut self.row else {
            return Ok(());
        };
        *r = r.predicted();
        let mut at = 0usize;
        while let Some(head) = moved.next() {
            let head = head?;
            at += (head >> 2) as usize;
            let (rx, ry) = if head & HAS_XY != 0 {
                (unzigzag(moved.take()?), unzigzag(moved.take()?))
            } else {
                (0, 0)
            };
            let rs = if head & HAS_SEQ != 0 {
                unzigzag(moved.take()?)
            } else {
                0
            };
            if at == self.pos {
                r.correct(rx, ry, rs);
                break;
            }
            if at > self.pos {
                break;
            }
            at += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickroom_proto::view::{checksum, zigzag};

    /// Every test view here is view 3.
    fn keyframe(rows: &[Row]) -> View {
        tickroom_proto::view::keyframe(3, rows)
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
            row(5, 7, 0, 0, 0),
            row(9, 5000, -300, 77, 1),
            row(12, 1, 1, 0, 0),
        ];
        let (mut own, mut full) = (Own::default(), Verifier::default());
        let now = Instant::now();
        let k = keyframe(&rows).encode_to_vec();
        assert_eq!(own.apply(9, 10, &k), Ok(Seen::Keyframe));
        let v = full.apply(9, 10, &k, 0, now);
        assert_eq!((v.seen, v.acked), (Some(Seen::Keyframe), Some(77)));
        assert_eq!(own.row(), full.state().get(9));
        // Tick 11: 5 (position 1) left, 2 and 12 as predicted, 9 (now position 1) turned and
        // its seq jumped by 3, 3 walked in below it.
        let mut after = [rows[0], rows[2], rows[3]].map(|r| r.predicted());
        after[1].correct(40, -2, 2);
        let newcomer = row(3, 9, 0, 0, 0);
        let mut state = vec![after[0], newcomer, after[1], after[2]];
        let d = View {
            view: 3,
            base_tick: 10,
            checksum: checksum(&state),
            removed: vec![1],
            moved: vec![
                (1 << 2) | HAS_XY | HAS_SEQ,
                zigzag(40),
                zigzag(-2),
                zigzag(2),
            ],
            added: vec![3, 1, 9, 640, 0, 0, zigzag(-3), 0],
        }
        .encode_to_vec();
        assert_eq!(own.apply(9, 11, &d), Ok(Seen::Delta));
        let v = full.apply(9, 11, &d, 0, now);
        assert_eq!((v.seen, v.acked), (Some(Seen::Delta), Some(80)));
        assert_eq!(own.row(), full.state().get(9));
        // Tick 12: as predicted, but 2 (position 0) went on without its velocity; then 9 is
        // position 2 and untouched.
        for r in &mut state {
            *r = r.predicted();
        }
        state[0].correct(-5, 3, 0);
        let d = View {
            view: 3,
            base_tick: 11,
            checksum: checksum(&state),
            moved: vec![HAS_XY, zigzag(-5), zigzag(3)],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(own.apply(9, 12, &d), Ok(Seen::Delta));
        assert_eq!(full.apply(9, 12, &d, 0, now).acked, Some(83));
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
        // A list cut inside an entry is malformed for the light path too.
        let mut cut = keyframe(&rows);
        cut.added.pop();
        assert_eq!(own.apply(4, 11, &cut.encode_to_vec()), Err(Malformed));
    }
}
