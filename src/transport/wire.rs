//! A session's socket. Reading goes through tokio-tungstenite ([`WireIo`]); writing does not:
//! a server's binary frame is a 2–10 byte header before the payload, so a tick's frames leave
//! with one `writev` of headers and the rooms' shared `Bytes`, with no copy and no task of its
//! own. Whoever writes (the flusher in steady state, the session's writer task for
//! backpressure, pings and the close frame, tungstenite for its control replies) does so under
//! one lock, so frames never interleave and leave in the order they were taken.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::flusher::Shard;
use crate::metrics::HOT;
use crate::outbox::{Drain, Outbox};

/// Frames per `writev`; a session's take is normally one to three.
const FRAMES_PER_WRITE: usize = 32;

/// Bytes of its own control replies (pongs) tungstenite may leave unsent before the peer
/// counts as not reading: a client that pings without reading would otherwise grow them.
const CONTROL_BACKLOG_CAP: usize = 64 * 1024;

/// A server-to-client ping with no payload.
pub const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// What a flush left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything taken was written.
    Done,
    /// The socket took part of it; the rest waits in the session's pending bytes until the
    /// writer task sees the socket writable again.
    Blocked,
    /// The close frame went out: nothing more is written.
    Closed,
}

#[derive(Debug, Default)]
struct Out {
    /// Bytes accepted but not yet taken by the socket. While non-empty the writer task owns
    /// the socket: the flusher leaves the session alone, and newer snapshots wait (and
    /// conflate) in the outbox instead of piling up here.
    pending: BytesMut,
    /// The close frame is written (or the socket failed): later writes are dropped.
    closed: bool,
    batch: Vec<Bytes>,
}

/// See the module docs. Shared by the session's reader (through [`WireIo`]), its writer task
/// and, while it is queued, a flusher.
#[derive(Debug)]
pub struct Wire {
    tcp: TcpStream,
    out: Mutex<Out>,
    outbox: Arc<Outbox>,
    shard: Arc<Shard>,
}

impl Wire {
    /// Wraps the socket and makes the flusher of `shard` the one the outbox wakes.
    pub fn new(tcp: TcpStream, outbox: Arc<Outbox>, shard: Arc<Shard>) -> Arc<Self> {
        let wire = Arc::new(Self {
            tcp,
            out: Mutex::new(Out::default()),
            outbox,
            shard,
        });
        let drain: Arc<dyn Drain> = wire.clone();
        wire.outbox.attach(Arc::downgrade(&drain));
        wire
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The read half tungstenite sees; what it writes (pongs, its close reply) comes here.
    pub fn io(self: &Arc<Self>) -> WireIo {
        WireIo(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        // Poisoning would only mean a panic mid-write; the session is lost either way.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes what the outbox holds, one `writev` for all of it. The flusher calls this with
    /// `by_writer` false and leaves a session whose earlier bytes are still pending to its
    /// writer task; the writer first pushes those out.
    pub fn flush_outbox(&self, by_writer: bool) -> io::Result<Flushed> {
        let mut out = self.lock();
        if out.closed {
            return Ok(Flushed::Closed);
        }
        if !out.pending.is_empty() {
            if !by_writer {
                return Ok(Flushed::Blocked);
            }
            write_pending(&self.tcp, &mut out)?;
            if !out.pending.is_empty() {
                return Ok(Flushed::Blocked);
            }
        }
        let mut batch = std::mem::take(&mut out.batch);
        self.outbox.take(&mut batch);
        let written = write_frames(&self.tcp, &mut out, &batch);
        batch.clear();
        out.batch = batch;
        written?;
        if out.pending.is_empty() {
            return Ok(Flushed::Done);
        }
        if !by_writer {
            self.outbox.wake_writer();
        }
        Ok(Flushed::Blocked)
    }

    /// Writes one control frame (a ping, tungstenite's pong) after whatever is pending.
    pub fn send_control(&self, frame: &[u8]) -> io::Result<Flushed> {
        let mut out = self.lock();
        if out.closed {
            return Ok(Flushed::Closed);
        }
        if out.pending.is_empty() {
            let n = try_write(&self.tcp, frame)?;
            out.pending.extend_from_slice(&frame[n..]);
        } else {
            out.pending.extend_from_slice(frame);
        }
        if out.pending.is_empty() {
            Ok(Flushed::Done)
        } else {
            Ok(Flushed::Blocked)
        }
    }

    /// Writes the last frames the outbox holds and then `close` (a close frame), waiting for
    /// the socket as long as it takes: the caller bounds it. Nothing is written after it.
    pub async fn finish(&self, close: Option<&[u8]>) -> io::Result<()> {
        if self.drain().await? == Flushed::Closed {
            return Ok(());
        }
        {
            let mut out = self.lock();
            if let Some(frame) = close {
                out.pending.extend_from_slice(frame);
            }
            out.closed = true;
        }
        loop {
            {
                let mut out = self.lock();
                write_pending(&self.tcp, &mut out)?;
                if out.pending.is_empty() {
                    return Ok(());
                }
            }
            self.tcp.writable().await?;
        }
    }

    /// Ends all writing (the peer is gone): pending bytes are dropped.
    pub fn shut(&self) {
        let mut out = self.lock();
        out.closed = true;
        out.pending = BytesMut::new();
        out.batch = Vec::new();
    }

    /// Writes until everything the outbox holds is on the socket, waiting for it when full
    /// (the writer task's side of [`flush_outbox`](Self::flush_outbox)). Returns `Done`, or
    /// `Closed` if the close frame had already gone out.
    pub async fn drain(&self) -> io::Result<Flushed> {
        loop {
            match self.flush_outbox(true)? {
                Flushed::Blocked => self.tcp.writable().await?,
                done_or_closed => return Ok(done_or_closed),
            }
        }
    }
}

impl Drain for Wire {
    fn queue(self: Arc<Self>) -> Option<Arc<Notify>> {
        let shard = self.shard.clone();
        shard.push(self)
    }
}

/// A server frame's header: FIN and the binary opcode, then the length (servers never mask).
fn binary_header(len: usize, head: &mut [u8; 10]) -> usize {
    head[0] = 0x82;
    if len < 126 {
        head[1] = len as u8;
        2
    } else if len <= usize::from(u16::MAX) {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A close frame with its code and reason (at most 123 bytes, cut on a char boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut frame = Vec::with_capacity(4 + end);
    frame.push(0x88);
    frame.push((2 + end) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(&reason.as_bytes()[..end]);
    frame
}

/// `try_write` that reads "would block" as "wrote nothing".
fn try_write(tcp: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    match tcp.try_write(buf) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

fn write_pending(tcp: &TcpStream, out: &mut Out) -> io::Result<()> {
    while !out.pending.is_empty() {
        let n = try_write(tcp, &out.pending)?;
        if n == 0 {
            break;
        }
        out.pending.advance(n);
    }
    if out.pending.is_empty() && out.pending.capacity() > 0 {
        // Partial writes are rare; a session keeps no buffer between them (5,000 ticker
        // sessions holding a few KB each showed in RSS).
        out.pending = BytesMut::new();
    }
    Ok(())
}

/// Writes `frames` as binary messages, each chunk with one `writev`; whatever the socket does
/// not take goes to `out.pending`, so the caller's frames are always accepted whole and in
/// order.
fn write_frames(tcp: &TcpStream, out: &mut Out, frames: &[Bytes]) -> io::Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let mut heads = [[0u8; 10]; FRAMES_PER_WRITE];
    let mut head_lens = [0usize; FRAMES_PER_WRITE];
    for chunk in frames.chunks(FRAMES_PER_WRITE) {
        for (i, frame) in chunk.iter().enumerate() {
            head_lens[i] = binary_header(frame.len(), &mut heads[i]);
        }
        let mut iov = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
        let mut total = 0;
        for (i, frame) in chunk.iter().enumerate() {
            iov[2 * i] = IoSlice::new(&heads[i][..head_lens[i]]);
            iov[2 * i + 1] = IoSlice::new(frame);
            total += head_lens[i] + frame.len();
        }
        let iov = &iov[..2 * chunk.len()];
        let written = if out.pending.is_empty() {
            match tcp.try_write_vectored(iov) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            }
        } else {
            0
        };
        if written < total {
            let mut skip = written;
            for slice in iov {
                if skip >= slice.len() {
                    skip -= slice.len();
                } else {
                    out.pending.extend_from_slice(&slice[skip..]);
                    skip = 0;
                }
            }
        }
    }
    HOT.frames_written.fetch_add(frames.len() as u64, Relaxed);
    HOT.bytes_written
        .fetch_add(frames.iter().map(Bytes::len).sum::<usize>() as u64, Relaxed);
    HOT.flushes.fetch_add(1, Relaxed);
    Ok(())
}

/// The socket as tokio-tungstenite sees it: reads are plain reads; writes (its pongs and
/// close reply, always whole frames) join the session's ordered output and are accepted at
/// once, since the writer task pushes out what the socket does not take.
#[derive(Debug)]
pub struct WireIo(Arc<Wire>);

impl AsyncRead for WireIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = &self.0.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            // tungstenite hands an initialised buffer, so this zeroes nothing.
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was cleared: poll again to register for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WireIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let wire = &self.0;
        if wire.send_control(buf)? == Flushed::Blocked {
            if wire.lock().pending.len() > CONTROL_BACKLOG_CAP {
                return Poll::Ready(Err(io::Error::other("peer is not reading")));
            }
            wire.outbox.wake_writer();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        let mut h = [0u8; 10];
        assert_eq!(binary_header(125, &mut h), 2);
        assert_eq!(h[..2], [0x82, 125]);
        assert_eq!(binary_header(126, &mut h), 4);
        assert_eq!(h[..4], [0x82, 126, 0, 126]);
        assert_eq!(binary_header(65_536, &mut h), 10);
        assert_eq!(h[..10], [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn close_frames_cut_long_reasons_on_a_char_boundary() {
        let f = close_frame(4000, "slow");
        assert_eq!(f, [0x88, 6, 0x0f, 0xa0, b's', b'l', b'o', b'w']);
        let long = "é".repeat(100);
        let f = close_frame(1000, &long);
        assert!(f.len() - 4 <= 123);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert_eq!(usize::from(f[1]), f.len() - 2);
    }

    /// Reads `n` server frames (unmasked) off `tcp`: (opcode, payload) each.
    async fn read_frames(tcp: &mut TcpStream, n: usize) -> Vec<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut frames = Vec::new();
        for _ in 0..n {
            let mut head = [0u8; 2];
            tcp.read_exact(&mut head).await.unwrap();
            let len = match head[1] {
                126 => usize::from(tcp.read_u16().await.unwrap()),
                127 => tcp.read_u64().await.unwrap() as usize,
                l => usize::from(l),
            };
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload).await.unwrap();
            frames.push((head[0], payload));
        }
        frames
    }

    #[tokio::test]
    async fn frames_the_socket_cannot_take_at_once_arrive_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        let outbox = Arc::new(Outbox::new(1_000));
        let wire = Wire::new(server, outbox.clone(), Arc::new(Shard::default()));
        // Sizes on both sides of the 126 and 65,536 length forms, ~2.5 MB in all: far more
        // than the socket buffers, so writes are partial and the rest waits as pending.
        let sizes = [1usize, 125, 126, 65_535, 65_536, 200_000];
        let sent: Vec<Bytes> = (0..60)
            .map(|i| {
                let len = sizes[i % sizes.len()];
                Bytes::from((0..len).map(|j| (i + j) as u8).collect::<Vec<u8>>())
            })
            .collect();
        for frame in &sent[..30] {
            outbox.push_reliable(frame.clone()).unwrap();
        }
        assert_eq!(wire.flush_outbox(true).unwrap(), Flushed::Blocked);
        // The flusher leaves a blocked session to its writer and takes nothing more.
        for frame in &sent[30..] {
            outbox.push_reliable(frame.clone()).unwrap();
        }
        assert_eq!(wire.flush_outbox(false).unwrap(), Flushed::Blocked);
        assert_eq!(outbox.len(), 30);
        // A ping while blocked queues behind what is pending.
        assert_eq!(wire.send_control(&PING_FRAME).unwrap(), Flushed::Blocked);
        let writer = {
            let wire = wire.clone();
            tokio::spawn(async move {
                assert_eq!(wire.drain().await.unwrap(), Flushed::Done);
                let close = close_frame(1000, "bye");
                wire.finish(Some(&close)).await.unwrap();
            })
        };
        let got = read_frames(&mut client, sent.len() + 2).await;
        writer.await.unwrap();
        let (ping, rest) = got[30..].split_first().unwrap();
        assert_eq!(*ping, (0x89, vec![]));
        let data: Vec<&(u8, Vec<u8>)> = got[..30].iter().chain(&rest[..30]).collect();
        for (i, (op, payload)) in data.iter().enumerate() {
            assert_eq!(*op, 0x82, "frame {i}");
            assert_eq!(payload[..], sent[i][..], "frame {i}");
        }
        assert_eq!(
            rest[30],
            (0x88, [&1000u16.to_be_bytes()[..], b"bye"].concat())
        );
        // Nothing is written after the close frame.
        outbox.push_reliable(sent[0].clone()).unwrap();
        assert_eq!(wire.flush_outbox(true).unwrap(), Flushed::Closed);
    }
}
