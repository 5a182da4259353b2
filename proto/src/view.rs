//! A game view's state as a protocol 2 client holds it, and the one way to advance it: apply
//! a [`View`] message (a keyframe or a delta) in the order docs/protocol.md section 4.4 gives,
//! and check the result against the message's checksum.
//!
//! The server's encoder (`tickroom::sim::view`) writes what this reads; client-sim and the
//! tests use it as the Rust reference client. It is plain integer arithmetic, so every client
//! that follows the documented order reaches the same state bit for bit.

use crate::v1::View;

/// One object of a view, in the units of the wire: positions in `1 / position_scale` world
/// units, velocities per snapshot of the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Row {
    pub id: u32,
    /// `EntityKind` as its number.
    pub kind: i32,
    pub x: u32,
    pub y: u32,
    pub seq: u32,
    pub vx: i32,
    pub vy: i32,
    pub vseq: i32,
}

impl Row {
    /// Where prediction puts this object one snapshot later.
    pub fn predicted(&self) -> Row {
        Row {
            x: self.x.wrapping_add_signed(self.vx),
            y: self.y.wrapping_add_signed(self.vy),
            seq: self.seq.wrapping_add_signed(self.vseq),
            ..*self
        }
    }

    /// Adds a residual to the predicted value of each field; the velocity grows by the
    /// same amount (it is the change since the base).
    pub fn correct(&mut self, rx: i32, ry: i32, rseq: i32) {
        self.x = self.x.wrapping_add_signed(rx);
        self.y = self.y.wrapping_add_signed(ry);
        self.seq = self.seq.wrapping_add_signed(rseq);
        self.vx = self.vx.wrapping_add(rx);
        self.vy = self.vy.wrapping_add(ry);
        self.vseq = self.vseq.wrapping_add(rseq);
    }
}

/// FNV-1a, 32 bits, taken a 32-bit word at a time (`h = (h ^ word) * prime`) over each row in
/// id order: id, kind, x, y, seq, vx, vy, vseq (the signed ones in two's complement). Words,
/// not bytes: a 60 Hz room hashes every view every tick.
pub fn checksum<'a>(rows: impl IntoIterator<Item = &'a Row>) -> u32 {
    let mut h = OFFSET;
    for r in rows {
        h = hash_row(h, r);
    }
    h
}

/// FNV-1a's offset basis: the checksum of an empty view.
pub const OFFSET: u32 = 0x811c_9dc5;
const PRIME: u32 = 0x0100_0193;

/// Folds one row into a running [`checksum`].
#[inline]
pub fn hash_row(mut h: u32, r: &Row) -> u32 {
    for word in [
        r.id,
        r.kind as u32,
        r.x,
        r.y,
        r.seq,
        r.vx as u32,
        r.vy as u32,
        r.vseq as u32,
    ] {
        h = (h ^ word).wrapping_mul(PRIME);
    }
    h
}

/// Protobuf's sint32 zig-zag, used for the signed values of the view's columns.
pub fn zigzag(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

/// The inverse of [`zigzag`].
pub fn unzigzag(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

/// In a `moved` head: the entry has residuals of x and y.
pub const HAS_XY: u32 = 1;
/// In a `moved` head: the entry has a residual of seq.
pub const HAS_SEQ: u32 = 2;
/// Values per object in `added`.
pub const ADDED_VALUES: usize = 8;

/// The keyframe of state `rows` (sorted by id) as a [`View`]: what a client needs to start
/// from nothing. The server writes its views straight to bytes; this is the reference for
/// tests and tools.
pub fn keyframe(view: u32, rows: &[Row]) -> View {
    let mut v = View {
        view,
        checksum: checksum(rows),
        ..Default::default()
    };
    v.added.reserve(rows.len() * ADDED_VALUES);
    let mut prev = 0;
    for r in rows {
        v.added.extend(added_entry(prev, r));
        prev = r.id;
    }
    v
}

/// The `added` entry of row `r` after an entry for id `prev` (0 for the list's first): its
/// id gap, then kind, x, y, seq and the zig-zagged velocities. The server's encoder writes
/// the same values as varints.
pub fn added_entry(prev: u32, r: &Row) -> [u32; ADDED_VALUES] {
    [
        r.id - prev,
        r.kind as u32,
        r.x,
        r.y,
        r.seq,
        zigzag(r.vx),
        zigzag(r.vy),
        zigzag(r.vseq),
    ]
}

/// Why a [`View`] was not applied. The state is unchanged after `MissedBase`; after the
/// others it is cleared (the client must wait for a keyframe).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A delta whose base is not the state held (another view, or a snapshot never applied):
    /// ignore it and wait for the next keyframe.
    MissedBase {
        held: Option<(u32, u64)>,
        base: (u32, u64),
    },
    /// A list that ends inside an entry, a position past the state, or ids not ascending.
    Malformed(&'static str),
    /// The state after applying does not hash to the message's checksum.
    Checksum { expected: u32, got: u32 },
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissedBase { held, base } => write!(
                f,
                "delta for view {} at base tick {} but the state held is {held:?}",
                base.0, base.1
            ),
            Self::Malformed(why) => write!(f, "malformed view: {why}"),
            Self::Checksum { expected, got } => {
                write!(f, "checksum {got:#010x}, expected {expected:#010x}")
            }
        }
    }
}

impl std::error::Error for ApplyError {}

/// The state of one view as a client reconstructs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewState {
    /// Sorted by id.
    rows: Vec<Row>,
    /// The view and tick of the last snapshot applied; `None` before the first keyframe.
    at: Option<(u32, u64)>,
}

impl ViewState {
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    pub fn get(&self, id: u32) -> Option<&Row> {
        self.rows
            .binary_search_by_key(&id, |r| r.id)
            .ok()
            .map(|i| &self.rows[i])
    }

    /// View and tick of the last snapshot applied.
    pub fn at(&self) -> Option<(u32, u64)> {
        self.at
    }

    pub fn checksum(&self) -> u32 {
        checksum(&self.rows)
    }

    /// Forgets everything: the next snapshot must be a keyframe.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.at = None;
    }

    /// Applies the view of the snapshot of `tick`: removals, then prediction and residuals,
    /// then additions; then checks the checksum. Returns whether it was a keyframe.
    pub fn apply(&mut self, tick: u64, v: &View) -> Result<bool, ApplyError> {
        let keyframe = v.base_tick == 0;
        if !keyframe && self.at != Some((v.view, v.base_tick)) {
            return Err(ApplyError::MissedBase {
                held: self.at,
                base: (v.view, v.base_tick),
            });
        }
        let result = self.apply_lists(keyframe, v).and_then(|()| {
            let got = self.checksum();
            if got == v.checksum {
                Ok(keyframe)
            } else {
                Err(ApplyError::Checksum {
                    expected: v.checksum,
                    got,
                })
            }
        });
        match result {
            Ok(_) => self.at = Some((v.view, tick)),
            Err(_) => self.clear(),
        }
        result
    }

    fn apply_lists(&mut self, keyframe: bool, v: &View) -> Result<(), ApplyError> {
        if keyframe {
            self.rows.clear();
        }
        // 1. Removals, by position in the base state.
        if !v.removed.is_empty() {
            let mut gone = vec![false; self.rows.len()];
            let mut at = 0usize;
            for &skip in &v.removed {
                at += skip as usize;
                *gone
                    .get_mut(at)
                    .ok_or(ApplyError::Malformed("removes past the state"))? = true;
                at += 1;
            }
            let mut i = 0;
            self.rows.retain(|_| {
                i += 1;
                !gone[i - 1]
            });
        }
        // 2. Prediction for every object, then the residuals of those that did not follow it.
        for r in &mut self.rows {
            *r = r.predicted();
        }
        let mut it = v.moved.iter().copied();
        let mut at = 0usize;
        while let Some(head) = it.next() {
            at += (head >> 2) as usize;
            let mut next = || {
                it.next()
                    .map(unzigzag)
                    .ok_or(ApplyError::Malformed("moved ends inside an entry"))
            };
            let (rx, ry) = if head & HAS_XY != 0 {
                (next()?, next()?)
            } else {
                (0, 0)
            };
            let rs = if head & HAS_SEQ != 0 { next()? } else { 0 };
            self.rows
                .get_mut(at)
                .ok_or(ApplyError::Malformed("moves past the state"))?
                .correct(rx, ry, rs);
            at += 1;
        }
        // 3. Additions.
        if v.added.len() % ADDED_VALUES != 0 {
            return Err(ApplyError::Malformed("added ends inside an entry"));
        }
        if !v.added.is_empty() {
            let mut prev: Option<u32> = None;
            for e in v.added.chunks_exact(ADDED_VALUES) {
                let id = match prev {
                    None => e[0],
                    Some(_) if e[0] == 0 => return Err(ApplyError::Malformed("ids must ascend")),
                    Some(p) => p
                        .checked_add(e[0])
                        .ok_or(ApplyError::Malformed("id overflows"))?,
                };
                prev = Some(id);
                self.rows.push(Row {
                    id,
                    kind: e[1] as i32,
                    x: e[2],
                    y: e[3],
                    seq: e[4],
                    vx: unzigzag(e[5]),
                    vy: unzigzag(e[6]),
                    vseq: unzigzag(e[7]),
                });
            }
            self.rows.sort_unstable_by_key(|r| r.id);
            if self.rows.windows(2).any(|w| w[0].id == w[1].id) {
                return Err(ApplyError::Malformed("adds an id the view already holds"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot(id: u32, x: u32, vx: i32) -> Row {
        Row {
            id,
            kind: 2,
            x,
            y: 100,
            vx,
            ..Default::default()
        }
    }

    #[test]
    fn the_checksum_of_nothing_is_the_offset_basis_and_words_hash_as_published() {
        assert_eq!(checksum(&[]), 0x811c_9dc5);
        // One row of zeros: eight zero words.
        let mut h: u32 = 0x811c_9dc5;
        for _ in 0..8 {
            h = h.wrapping_mul(0x0100_0193);
        }
        assert_eq!(checksum(&[Row::default()]), h);
        // The worked example of docs/protocol.md section 4.4.
        let key = [
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
        assert_eq!(checksum(&key), 0xbcdf_0d30);
    }

    #[test]
    fn zigzag_is_protobufs() {
        for (n, z) in [(0, 0), (-1, 1), (1, 2), (-2, 3), (107, 214), (-213, 425)] {
            assert_eq!(zigzag(n), z);
            assert_eq!(unzigzag(z), n);
        }
        assert_eq!(unzigzag(zigzag(i32::MIN)), i32::MIN);
    }

    #[test]
    fn a_delta_predicts_corrects_removes_and_adds() {
        let mut s = ViewState::default();
        let rows = [bot(1, 1000, 10), bot(3, 500, 0), bot(5, 70, 2)];
        assert_eq!(s.apply(5, &keyframe(7, &rows)), Ok(true));
        // Tick 6: bot 1 went on as predicted, bot 3 (position 1) was pushed by 4 and its seq
        // went up 1, bot 5 left, bot 9 walked in.
        let after = [
            bot(1, 1010, 10),
            Row {
                seq: 1,
                vseq: 1,
                ..bot(3, 504, 4)
            },
            bot(9, 7, -1),
        ];
        let delta = View {
            view: 7,
            base_tick: 5,
            checksum: checksum(&after),
            removed: vec![2],
            moved: vec![(1 << 2) | HAS_XY | HAS_SEQ, zigzag(4), 0, zigzag(1)],
            added: vec![9, 2, 7, 100, 0, zigzag(-1), 0, 0],
        };
        assert_eq!(s.apply(6, &delta), Ok(false));
        assert_eq!(s.rows(), &after);
        // Tick 7: bot 3 removed (position 1); the others as predicted.
        let rest = [bot(1, 1020, 10), bot(9, 6, -1)];
        let delta = View {
            view: 7,
            base_tick: 6,
            checksum: checksum(&rest),
            removed: vec![1],
            ..Default::default()
        };
        assert_eq!(s.apply(7, &delta), Ok(false));
        assert_eq!(s.rows(), &rest);
        assert_eq!(s.at(), Some((7, 7)));
    }

    #[test]
    fn a_delta_on_another_base_or_view_is_refused_and_changes_nothing() {
        let mut s = ViewState::default();
        s.apply(5, &keyframe(7, &[bot(1, 0, 1)])).unwrap();
        let held = s.clone();
        for (view, base) in [(7, 4), (8, 5)] {
            let d = View {
                view,
                base_tick: base,
                ..Default::default()
            };
            assert!(matches!(s.apply(6, &d), Err(ApplyError::MissedBase { .. })));
            assert_eq!(s, held);
        }
        // Before any keyframe every delta is refused.
        let mut fresh = ViewState::default();
        let d = View {
            view: 7,
            base_tick: 5,
            ..Default::default()
        };
        assert!(fresh.apply(6, &d).is_err());
    }

    #[test]
    fn a_wrong_checksum_or_bad_lists_clear_the_state() {
        let mut s = ViewState::default();
        let mut k = keyframe(1, &[bot(1, 0, 1)]);
        k.checksum ^= 1;
        assert!(matches!(s.apply(1, &k), Err(ApplyError::Checksum { .. })));
        assert_eq!(s.at(), None);
        let mut k = keyframe(1, &[bot(1, 0, 1), bot(2, 0, 1)]);
        k.added.pop();
        assert_eq!(
            s.apply(1, &k),
            Err(ApplyError::Malformed("added ends inside an entry"))
        );
        let mut k = keyframe(1, &[bot(1, 0, 1), bot(2, 0, 1)]);
        k.added[ADDED_VALUES] = 0;
        assert_eq!(
            s.apply(1, &k),
            Err(ApplyError::Malformed("ids must ascend"))
        );
        for bad in [
            View {
                view: 1,
                base_tick: 1,
                removed: vec![1],
                ..Default::default()
            },
            View {
                view: 1,
                base_tick: 1,
                moved: vec![HAS_XY, 2],
                ..Default::default()
            },
            View {
                view: 1,
                base_tick: 1,
                moved: vec![(1 << 2) | HAS_SEQ, 2],
                ..Default::default()
            },
        ] {
            s.apply(1, &keyframe(1, &[bot(1, 0, 1)])).unwrap();
            assert!(
                matches!(s.apply(2, &bad), Err(ApplyError::Malformed(_))),
                "{bad:?}"
            );
            assert_eq!(s.at(), None);
        }
    }
}
