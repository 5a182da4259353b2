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
    /// Columns of different lengths, ids not ascending, or an id that is not (or already)
    /// in the state.
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

/// Turns a gap-coded id column into ids, checking that they ascend.
fn ids(column: &[u32]) -> Result<Vec<u32>, ApplyError> {
    let mut out = Vec::with_capacity(column.len());
    let mut prev: Option<u32> = None;
    for &gap in column {
        let id = match prev {
            None => gap,
            Some(_) if gap == 0 => return Err(ApplyError::Malformed("ids must ascend")),
            Some(p) => p
                .checked_add(gap)
                .ok_or(ApplyError::Malformed("id overflows"))?,
        };
        out.push(id);
        prev = Some(id);
    }
    Ok(out)
}

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

    /// Applies the view of the snapshot of `tick`: removes, then prediction and residuals,
    /// then additions; then checks the checksum. Returns whether it was a keyframe.
    pub fn apply(&mut self, tick: u64, v: &View) -> Result<bool, ApplyError> {
        let keyframe = v.base_tick == 0;
        if !keyframe && self.at != Some((v.view, v.base_tick)) {
            return Err(ApplyError::MissedBase {
                held: self.at,
                base: (v.view, v.base_tick),
            });
        }
        let result = self.apply_columns(keyframe, v);
        let result = result.and_then(|()| {
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

    fn apply_columns(&mut self, keyframe: bool, v: &View) -> Result<(), ApplyError> {
        if keyframe {
            self.rows.clear();
        }
        // 1. Removes.
        let removed = ids(&v.remove_id)?;
        if !removed.is_empty() {
            let before = self.rows.len();
            self.rows.retain(|r| removed.binary_search(&r.id).is_err());
            if self.rows.len() + removed.len() != before {
                return Err(ApplyError::Malformed(
                    "removes an id the view does not hold",
                ));
            }
        }
        // 2. Prediction for every object, then the residuals of those that did not follow it.
        for r in &mut self.rows {
            *r = r.predicted();
        }
        let moved = ids(&v.move_id)?;
        let n = moved.len();
        if v.move_x.len() != n || v.move_y.len() != n || v.move_seq.len() != n {
            return Err(ApplyError::Malformed("move columns differ in length"));
        }
        let mut at = 0;
        for (i, id) in moved.into_iter().enumerate() {
            // Both ascend, so one forward walk finds every row.
            while at < self.rows.len() && self.rows[at].id < id {
                at += 1;
            }
            match self.rows.get_mut(at) {
                Some(r) if r.id == id => r.correct(v.move_x[i], v.move_y[i], v.move_seq[i]),
                _ => return Err(ApplyError::Malformed("moves an id the view does not hold")),
            }
        }
        // 3. Additions.
        let added = ids(&v.add_id)?;
        let n = added.len();
        if [
            v.add_kind.len(),
            v.add_x.len(),
            v.add_y.len(),
            v.add_seq.len(),
            v.add_vx.len(),
            v.add_vy.len(),
            v.add_vseq.len(),
        ]
        .iter()
        .any(|len| *len != n)
        {
            return Err(ApplyError::Malformed("add columns differ in length"));
        }
        if n > 0 {
            self.rows.reserve(n);
            for (i, id) in added.into_iter().enumerate() {
                self.rows.push(Row {
                    id,
                    kind: v.add_kind[i],
                    x: v.add_x[i],
                    y: v.add_y[i],
                    seq: v.add_seq[i],
                    vx: v.add_vx[i],
                    vy: v.add_vy[i],
                    vseq: v.add_vseq[i],
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

    fn keyframe(view: u32, rows: &[Row]) -> View {
        let mut v = View {
            view,
            checksum: checksum(rows),
            ..Default::default()
        };
        let mut prev = 0;
        for (i, r) in rows.iter().enumerate() {
            v.add_id.push(if i == 0 { r.id } else { r.id - prev });
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
        assert_eq!(checksum(&key), EXAMPLE_KEY_CHECKSUM);
    }

    /// docs/protocol.md section 4.4 quotes it.
    const EXAMPLE_KEY_CHECKSUM: u32 = 0xbcdf_0d30;

    #[test]
    fn a_delta_predicts_corrects_removes_and_adds() {
        let mut s = ViewState::default();
        let rows = [bot(1, 1000, 10), bot(3, 500, 0)];
        assert_eq!(s.apply(5, &keyframe(7, &rows)), Ok(true));
        // Tick 6: bot 1 went on as predicted, bot 3 was pushed by 4, bot 9 walked in and
        // bot 1... stays; nothing removed.
        let mut after = [bot(1, 1010, 10), bot(3, 504, 4), bot(9, 7, -1)];
        let delta = View {
            view: 7,
            base_tick: 5,
            checksum: checksum(&after),
            move_id: vec![3],
            move_x: vec![4],
            move_y: vec![0],
            move_seq: vec![0],
            add_id: vec![9],
            add_kind: vec![2],
            add_x: vec![7],
            add_y: vec![100],
            add_seq: vec![0],
            add_vx: vec![-1],
            add_vy: vec![0],
            add_vseq: vec![0],
            ..Default::default()
        };
        assert_eq!(s.apply(6, &delta), Ok(false));
        assert_eq!(s.rows(), &after);
        // Tick 7: bot 3 removed; the others as predicted.
        after[0].x = 1020;
        after[2].x = 6;
        let rest = [after[0], after[2]];
        let delta = View {
            view: 7,
            base_tick: 6,
            checksum: checksum(&rest),
            remove_id: vec![3],
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
    fn a_wrong_checksum_or_bad_columns_clear_the_state() {
        let mut s = ViewState::default();
        let mut k = keyframe(1, &[bot(1, 0, 1)]);
        k.checksum ^= 1;
        assert!(matches!(s.apply(1, &k), Err(ApplyError::Checksum { .. })));
        assert_eq!(s.at(), None);
        let mut k = keyframe(1, &[bot(1, 0, 1), bot(2, 0, 1)]);
        k.add_x.pop();
        assert_eq!(
            s.apply(1, &k),
            Err(ApplyError::Malformed("add columns differ in length"))
        );
        let mut k = keyframe(1, &[bot(1, 0, 1), bot(2, 0, 1)]);
        k.add_id[1] = 0;
        assert_eq!(
            s.apply(1, &k),
            Err(ApplyError::Malformed("ids must ascend"))
        );
        s.apply(1, &keyframe(1, &[bot(1, 0, 1)])).unwrap();
        let d = View {
            view: 1,
            base_tick: 1,
            remove_id: vec![2],
            ..Default::default()
        };
        assert!(matches!(s.apply(2, &d), Err(ApplyError::Malformed(_))));
        assert_eq!(s.at(), None);
    }
}
