//! A WebSocket client that reads only when asked: the handshake and frames written by hand
//! over a plain `TcpStream`, nothing in the background. A library client keeps reading (and
//! answering pings) whenever it is polled; to see what a client that stops reading gets, the
//! reading must stop for real. Tests of freshness and flow control use it, and so does
//! client-sim's `pause` scenario.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest frame accepted from the server (its snapshots are far smaller).
const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("the server sent a frame of {0} bytes")]
    TooBig(u64),
    #[error("the connection ended")]
    Ended,
}

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// 0x2 binary, 0x8 close, 0x9 ping, 0xA pong (FIN is always set by this server).
    pub opcode: u8,
    pub payload: Bytes,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct RawWs {
    tcp: TcpStream,
    buf: BytesMut,
    /// Bytes read off the socket so far (frames and their headers, after the handshake).
    read: u64,
}

impl RawWs {
    /// Connects to `addr` and opens a WebSocket on `path` (e.g. `/ws`). `recv_buffer` sets
    /// the socket's receive buffer before connecting (how much the client's own kernel may
    /// hold while it does not read); `None` keeps the system's.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        recv_buffer: Option<u32>,
    ) -> Result<Self, RawError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(n) = recv_buffer {
            socket.set_recv_buffer_size(n)?;
        }
        let mut tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if tcp.read_buf(&mut buf).await? == 0 {
                return Err(RawError::Ended);
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 101") {
            return Err(RawError::Refused(
                head.lines().next().unwrap_or("").to_owned(),
            ));
        }
        buf.advance(end);
        Ok(Self { tcp, buf, read: 0 })
    }

    /// Sends one binary message (masked, as a client must).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), RawError> {
        self.send_frame(0x82, payload).await
    }

    /// Sends one frame with this first byte (FIN and opcode: `0x82` a whole binary message,
    /// `0x81` text, `0x02` a first fragment, `0x00` a continuation), masked.
    pub async fn send_frame(&mut self, first: u8, payload: &[u8]) -> Result<(), RawError> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(first);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await?;
        Ok(())
    }

    /// Writes bytes as they are, framing or not (for tests of what the server does with
    /// garbage).
    pub async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        self.tcp.write_all(bytes).await?;
        Ok(())
    }

    /// Reads the next frame, waiting as long as it takes (the caller bounds it).
    pub async fn next(&mut self) -> Result<Frame, RawError> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            let n = self.tcp.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(RawError::Ended);
            }
            self.read += n as u64;
        }
    }

    /// The next binary message's payload, skipping control frames; `Err(Ended)` after a
    /// close frame.
    pub async fn next_binary(&mut self) -> Result<Bytes, RawError> {
        loop {
            let f = self.next().await?;
            match f.opcode {
                0x2 => return Ok(f.payload),
                0x8 => return Err(RawError::Ended),
                _ => {}
            }
        }
    }

    /// Bytes read off the socket since the handshake.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Bytes read off the socket but not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// A whole frame from the buffer, if one is there.
    fn parse(&mut self) -> Result<Option<Frame>, RawError> {
        let b = &self.buf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let (len, head) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                u64::from_be_bytes(b[2..10].try_into().expect("8 bytes")),
                10,
            ),
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        if len > MAX_FRAME as u64 {
            return Err(RawError::TooBig(len));
        }
        let len = len as usize;
        if b.len() < head + len {
            return Ok(None);
        }
        let opcode = b[0] & 0x0f;
        self.buf.advance(head);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { opcode, payload }))
    }
}
