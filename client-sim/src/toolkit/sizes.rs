//! What a game client's snapshots cost on the wire, and how many of their objects moved: the
//! one measure of issue #17's figures, shared by client-sim's verified clients (real sockets)
//! and `benches/tick_cost.rs` (the room driven in process), so both count alike.

use tickroom_proto::Message as _;
use tickroom_proto::v1::{ServerMessage, View, object::State, server_message::Body};
use tickroom_proto::view::Row;

/// Sums over the snapshots one client (or a swarm) took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sizes {
    pub snapshots: u64,
    /// Whole WebSocket messages.
    pub frame_bytes: u64,
    /// The objects' part: protocol 2, the view's lists (without its view number, base and
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
}

/// Measures one client's snapshots in order: it keeps the positions after the last one to
/// tell moving objects from resting ones.
#[derive(Debug, Default, Clone)]
pub struct SnapshotCost {
    /// (id, x, y) after the last snapshot, by id. Only compared for equality, so protocol 1's
    /// float positions go in as their bits.
    positions: Vec<(u32, u32, u32)>,
    pub sizes: Sizes,
}

impl SnapshotCost {
    /// A protocol 2 view that applied, in a message of `frame_len` bytes; `rows` is the
    /// state after it.
    pub fn view(&mut self, frame_len: usize, view: &View, rows: &[Row]) {
        use prost::encoding::uint32::encoded_len_packed;
        let lists = encoded_len_packed(4, &view.removed)
            + encoded_len_packed(5, &view.moved)
            + encoded_len_packed(6, &view.added);
        let after = rows.iter().map(|r| (r.id, r.x, r.y)).collect();
        self.count(frame_len, lists, after);
    }

    /// A protocol 1 snapshot (`frame`, a whole ServerMessage); other messages are ignored.
    pub fn full(&mut self, frame: &[u8]) {
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
                Some(State::Entity(e)) => Some((o.id, e.x.to_bits(), e.y.to_bits())),
                _ => None,
            })
            .collect();
        after.sort_unstable();
        let objects = snap
            .objects
            .iter()
            .map(|o| prost::encoding::message::encoded_len(2, o))
            .sum();
        self.count(frame.len(), objects, after);
    }

    fn count(&mut self, frame_len: usize, object_bytes: usize, after: Vec<(u32, u32, u32)>) {
        let s = &mut self.sizes;
        s.snapshots += 1;
        s.frame_bytes += frame_len as u64;
        s.object_bytes += object_bytes as u64;
        s.objects += after.len() as u64;
        let before = &self.positions;
        let mut b = 0;
        for a in &after {
            while b < before.len() && before[b].0 < a.0 {
                b += 1;
            }
            if let Some(p) = before.get(b).filter(|p| p.0 == a.0) {
                if (p.1, p.2) == (a.1, a.2) {
                    s.resting += 1;
                } else {
                    s.moving += 1;
                }
            }
        }
        self.positions = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u32, x: u32) -> Row {
        Row {
            id,
            x,
            ..Row::default()
        }
    }

    #[test]
    fn objects_in_both_snapshots_count_as_moving_or_resting() {
        let mut c = SnapshotCost::default();
        let v = View {
            moved: vec![1, 2, 3],
            ..View::default()
        };
        c.view(30, &v, &[row(1, 10), row(2, 20)]);
        c.view(30, &v, &[row(1, 10), row(2, 21), row(5, 0)]);
        let s = c.sizes;
        assert_eq!((s.snapshots, s.frame_bytes, s.objects), (2, 60, 5));
        // Key, length and three one-byte values, twice.
        assert_eq!(s.object_bytes, 10);
        // Object 1 rested, 2 moved, 5 is new: neither.
        assert_eq!((s.moving, s.resting), (1, 1));
    }
}
