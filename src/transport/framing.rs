//! Where the client's WebSocket frames begin and end, as the bytes are read: whether a data
//! message is in progress, and since when. tungstenite assembles the messages but does not
//! say whether a fragmented one is pending, and control frames (pings, pongs) may come
//! between its fragments; the message timeout needs exactly that distinction, so that a
//! message that never ends is closed while a client that only answers heartbeats is not.

use std::io::Cursor;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// Follows the frame headers of the incoming byte stream (payloads are skipped by count).
#[derive(Debug, Default)]
pub struct MessageClock {
    /// A header split across reads.
    header: [u8; MAX_HEADER],
    have: usize,
    /// Payload bytes of the current frame not yet read.
    payload_left: u64,
    /// The current frame is the last of a data message.
    ends_message: bool,
    /// Since when a data message has been in progress (its first header was read).
    since: Option<Instant>,
    /// Continuation frames (a message's fragments after its first) read since the last
    /// [`MessageClock::take_continuations`].
    continuations: u32,
    /// A header tungstenite refuses: it ends the session, and there is nothing to follow.
    lost: bool,
}

impl MessageClock {
    /// Follows `data`, the next bytes of the stream, read at `now`.
    pub fn read(&mut self, mut data: &[u8], now: Instant) {
        while !data.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len() as u64) as usize;
                self.payload_left -= n as u64;
                data = &data[n..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
                continue;
            }
            let had = self.have;
            let take = (MAX_HEADER - had).min(data.len());
            self.header[had..had + take].copy_from_slice(&data[..take]);
            self.have += take;
            let mut cursor = Cursor::new(&self.header[..self.have]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, len))) => {
                    // The header needed more than the `had` bytes kept from before.
                    let used = cursor.position() as usize - had;
                    data = &data[used..];
                    self.have = 0;
                    self.frame_started(&header, len, now);
                }
                Ok(None) => data = &data[take..],
                Err(_) => self.lost = true,
            }
        }
    }

    /// Continuation frames begun since the last call.
    pub fn take_continuations(&mut self) -> u32 {
        std::mem::take(&mut self.continuations)
    }

    /// How long a data message has been in progress without ending (zero: none is).
    pub fn partial_for(&self, now: Instant) -> Duration {
        self.since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    fn frame_started(&mut self, header: &FrameHeader, len: u64, now: Instant) {
        // Control frames may come between a message's fragments and change nothing.
        self.ends_message = match header.opcode {
            OpCode::Data(data) => {
                self.since.get_or_insert(now);
                if data == Data::Continue {
                    self.continuations = self.continuations.saturating_add(1);
                }
                header.is_final
            }
            OpCode::Control(_) => false,
        };
        self.payload_left = len;
        if len == 0 {
            self.frame_done();
        }
    }

    fn frame_done(&mut self) {
        if self.ends_message {
            self.since = None;
            self.ends_message = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame: FIN bit, opcode, payload.
    fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [1, 2, 3, 4];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn at(ms: u64, t0: Instant) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn heartbeats_alone_never_start_the_clock() {
        let t0 = Instant::now();
        let mut c = MessageClock::default();
        for i in 0..100 {
            c.read(&frame(true, 0xA, b"pong"), at(i * 1000, t0));
            c.read(&frame(true, 0x9, b""), at(i * 1000 + 1, t0));
        }
        assert_eq!(c.partial_for(at(200_000, t0)), Duration::ZERO);
    }

    #[test]
    fn a_fragmented_message_runs_until_its_last_fragment_even_across_pings() {
        let t0 = Instant::now();
        let mut c = MessageClock::default();
        c.read(&frame(false, 0x2, b"ab"), at(0, t0));
        c.read(&frame(true, 0x9, b"alive"), at(500, t0));
        c.read(&frame(false, 0x0, b""), at(900, t0));
        assert_eq!(c.partial_for(at(1000, t0)), Duration::from_millis(1000));
        c.read(&frame(true, 0x0, b"cd"), at(1100, t0));
        assert_eq!(c.partial_for(at(2000, t0)), Duration::ZERO);
        assert_eq!(c.take_continuations(), 2);
        assert_eq!(c.take_continuations(), 0);
        // The next message starts its own clock.
        c.read(&frame(true, 0x2, b"x"), at(2100, t0));
        assert_eq!(c.partial_for(at(3000, t0)), Duration::ZERO);
    }

    #[test]
    fn a_message_is_in_progress_until_its_payload_is_all_read() {
        let t0 = Instant::now();
        let mut c = MessageClock::default();
        let f = frame(true, 0x2, &[7; 300]);
        c.read(&f[..1], at(0, t0));
        // Half a header starts nothing yet.
        assert_eq!(c.partial_for(at(10, t0)), Duration::ZERO);
        c.read(&f[1..100], at(20, t0));
        assert_eq!(c.partial_for(at(120, t0)), Duration::from_millis(100));
        c.read(&f[100..], at(200, t0));
        assert_eq!(c.partial_for(at(300, t0)), Duration::ZERO);
    }

    #[test]
    fn any_cut_of_a_stream_is_followed_as_the_whole() {
        let t0 = Instant::now();
        let mut stream = Vec::new();
        stream.extend(frame(false, 0x2, &[1; 200]));
        stream.extend(frame(true, 0x9, b"ping"));
        stream.extend(frame(false, 0x0, &[2; 70_000]));
        stream.extend(frame(true, 0xA, b""));
        stream.extend(frame(true, 0x0, &[3; 5]));
        stream.extend(frame(false, 0x2, b"open"));
        for step in [1, 2, 3, 7, 13, 14, 15, 1000] {
            let mut c = MessageClock::default();
            for chunk in stream.chunks(step) {
                c.read(chunk, t0);
            }
            // The last message is open: its clock runs from when its header was read.
            assert_eq!(
                c.partial_for(at(5, t0)),
                Duration::from_millis(5),
                "step {step}"
            );
            let mut c = MessageClock::default();
            let done = stream.len() - frame(false, 0x2, b"open").len();
            for chunk in stream[..done].chunks(step) {
                c.read(chunk, t0);
            }
            assert_eq!(c.partial_for(at(5, t0)), Duration::ZERO, "step {step}");
        }
    }
}
