//! Reading a game snapshot without decoding all of it: the tick, the server time and one
//! object's acknowledged input, found by skipping over the rest. A snapshot of 1,000 objects
//! is about 19 KB; decoding every one for every client 60 times a second would make the swarm
//! the bottleneck it is measuring.

use prost::Message as _;
use prost::bytes::Buf;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use tickroom_proto::v1::{Object, object};

// Field numbers in proto/tickroom.proto.
const MESSAGE_TICK: u32 = 1;
const MESSAGE_SNAPSHOT: u32 = 3;
const SNAPSHOT_SERVER_TIME: u32 = 1;
const SNAPSHOT_OBJECTS: u32 = 2;
const SNAPSHOT_VIEW: u32 = 3;
const OBJECT_ID: u32 = 1;

/// What a game client measures in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub tick: u64,
    pub server_time_us: i64,
    /// `last_input_seq` of object `me`, if the snapshot holds it (protocol 1).
    pub acked: Option<u32>,
    /// Protocol 2: where the `View` is in the scanned bytes (start, length).
    pub view: Option<(usize, usize)>,
}

impl Scanned {
    /// The view's bytes in the frame that was scanned.
    pub fn view<'a>(&self, frame: &'a [u8]) -> Option<&'a [u8]> {
        self.view.map(|(at, len)| &frame[at..at + len])
    }
}

/// The bytes do not form the message they claim to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl From<prost::DecodeError> for Malformed {
    fn from(_: prost::DecodeError) -> Self {
        Malformed
    }
}

/// The next length-delimited field's bytes.
fn take_len<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Malformed> {
    let len = usize::try_from(decode_varint(buf)?).map_err(|_| Malformed)?;
    let (field, rest) = buf.split_at_checked(len).ok_or(Malformed)?;
    *buf = rest;
    Ok(field)
}

/// Scans a `ServerMessage`. `Ok(None)` when it is not a snapshot: decode it the usual way.
pub fn snapshot(mut buf: &[u8], me: u32) -> Result<Option<Scanned>, Malformed> {
    let start = buf.as_ptr() as usize;
    let mut tick = 0;
    let mut snapshot = None;
    while buf.has_remaining() {
        let (tag, wire) = decode_key(&mut buf)?;
        match (tag, wire) {
            (MESSAGE_TICK, WireType::Varint) => tick = decode_varint(&mut buf)?,
            (MESSAGE_SNAPSHOT, WireType::LengthDelimited) => snapshot = Some(take_len(&mut buf)?),
            // Any other body: not a snapshot.
            _ => return Ok(None),
        }
    }
    let Some(mut snap) = snapshot else {
        return Ok(None);
    };
    let mut scanned = Scanned {
        tick,
        server_time_us: 0,
        acked: None,
        view: None,
    };
    while snap.has_remaining() {
        let (tag, wire) = decode_key(&mut snap)?;
        match (tag, wire) {
            (SNAPSHOT_SERVER_TIME, WireType::Varint) => {
                scanned.server_time_us = decode_varint(&mut snap)? as i64;
            }
            (SNAPSHOT_OBJECTS, WireType::LengthDelimited) => {
                let obj = take_len(&mut snap)?;
                if object_id(obj)? == me {
                    scanned.acked = match Object::decode(obj)?.state {
                        Some(object::State::Entity(e)) => Some(e.last_input_seq),
                        _ => None,
                    };
                }
            }
            (SNAPSHOT_VIEW, WireType::LengthDelimited) => {
                let view = take_len(&mut snap)?;
                scanned.view = Some((view.as_ptr() as usize - start, view.len()));
            }
            _ => skip_field(wire, tag, &mut snap, DecodeContext::default())?,
        }
    }
    Ok(Some(scanned))
}

/// An object's id: its first field as the server encodes it, else found by skipping.
fn object_id(mut obj: &[u8]) -> Result<u32, Malformed> {
    while obj.has_remaining() {
        let (tag, wire) = decode_key(&mut obj)?;
        if (tag, wire) == (OBJECT_ID, WireType::Varint) {
            return Ok(decode_varint(&mut obj)? as u32);
        }
        skip_field(wire, tag, &mut obj, DecodeContext::default())?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickroom_proto::v1::{Entity, Error, ServerMessage, Snapshot, server_message::Body};

    fn entity(id: u32, seq: u32) -> Object {
        Object {
            id,
            state: Some(object::State::Entity(Entity {
                kind: 1,
                x: id as f32,
                y: 2.5,
                last_input_seq: seq,
            })),
        }
    }

    #[test]
    fn finds_tick_time_and_own_ack_like_a_full_decode() {
        let msg = ServerMessage {
            tick: 1234,
            body: Some(Body::Snapshot(Snapshot {
                view: None,
                server_time_us: 1_795_000_000_123_456,
                objects: (1..=500).map(|id| entity(id, id * 3)).collect(),
            })),
        };
        let bytes = msg.encode_to_vec();
        let got = snapshot(&bytes, 321).unwrap().unwrap();
        assert_eq!(
            got,
            Scanned {
                tick: 1234,
                server_time_us: 1_795_000_000_123_456,
                acked: Some(963),
                view: None,
            }
        );
        assert_eq!(snapshot(&bytes, 9999).unwrap().unwrap().acked, None);
    }

    #[test]
    fn other_messages_and_garbage_are_told_apart() {
        let err = ServerMessage {
            tick: 7,
            body: Some(Body::Error(Error::default())),
        };
        assert_eq!(snapshot(&err.encode_to_vec(), 1), Ok(None));
        let snap = ServerMessage {
            tick: 7,
            body: Some(Body::Snapshot(Snapshot {
                view: None,
                server_time_us: 1,
                objects: vec![entity(1, 1)],
            })),
        };
        let mut bytes = snap.encode_to_vec();
        bytes.truncate(bytes.len() - 3);
        assert_eq!(snapshot(&bytes, 1), Err(Malformed));
    }

    /// The server may send adjacent snapshots as one WebSocket message, their bytes
    /// concatenated (protobuf reads them as one message). The scan ends on those and on every
    /// cut of them, reporting the last part's tick and time as a full decode does.
    #[test]
    fn concatenated_snapshots_and_their_cuts_end() {
        let part = |tick: u64, ids: std::ops::RangeInclusive<u32>| {
            ServerMessage {
                tick,
                body: Some(Body::Snapshot(Snapshot {
                    view: None,
                    server_time_us: 1_000 + tick as i64,
                    objects: ids.map(|id| entity(id, id + 100)).collect(),
                })),
            }
            .encode_to_vec()
        };
        let bytes = [part(7, 1..=3), part(8, 4..=6), part(9, 7..=9)].concat();
        let got = snapshot(&bytes, 8).unwrap().unwrap();
        assert_eq!(
            got,
            Scanned {
                tick: 9,
                server_time_us: 1_009,
                acked: Some(108),
                view: None,
            }
        );
        for end in 0..bytes.len() {
            // Any answer will do; each call returning is the point.
            let _ = snapshot(&bytes[..end], 8);
        }
    }
}
