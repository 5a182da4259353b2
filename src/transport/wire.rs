//! A session's socket, and the one owner of its write side. Reading goes through
//! tokio-tungstenite ([`WireIo`]); writing does not: a server's binary frame is a 2–10 byte
//! header before the payload, so a tick's frames leave with one `writev` of headers and the
//! rooms' shared `Bytes`, with no copy and no task of its own.
//!
//! Everything that writes goes through one state machine under one lock, so frames never
//! interleave and leave in the order they were taken:
//!
//! ```text
//!            room: frames (ready)            flusher: writev, all taken
//!   Idle ───────────────────────▶ Queued ───────────────────────────────▶ Idle
//!    ▲                              │ socket took part: rest pending
//!    │ writer: pending and outbox   ▼
//!    └─────── written ─────────── Blocked ◀── ping/pong that did not fit
//!   any state ── close (reader, room, writer, shutdown) ──▶ Closing ──▶ Closed
//!                                  writer: last frames, close frame   (nothing more)
//! ```
//!
//! * **Idle**: nothing waits. A room's new frames queue the session on its flusher.
//! * **Queued**: on a flusher's queue; more frames join the same write.
//! * **Blocked**: the socket did not take everything; the rest is `pending`. The session's
//!   writer task waits until the socket is writable, writes it, then takes the outbox itself
//!   until nothing is left. New snapshots wait (and conflate) in the outbox meanwhile.
//! * **Held**: the client asked for flow control (`Ack`) and the last message written is a
//!   whole window past its last acknowledged tick; frames wait (and conflate) in the outbox
//!   until a newer `Ack` reopens the window.
//! * **Closing**: the end is decided; the writer task writes what is left and the close
//!   frame, within a bounded time.
//! * **Closed**: the close frame went out or the socket failed; writes are dropped.
//!
//! **Unsent bytes are bounded.** Bytes the kernel has accepted are history that can no longer
//! conflate, so a session may have only `max_unsent_bytes` of them unsent: the socket's
//! `TCP_NOTSENT_LOWAT` is that bound (set at accept), and after every half of it written the
//! writer asks the socket (`poll`, one system call per 16 KiB by default, none per tick) whether
//! fewer than half the bound wait unsent. If not, the session goes Blocked with nothing
//! pending and its writer task waits for the kernel's wake-up, which comes when the reader has
//! taken enough; the frames wait in the outbox meanwhile. So at most `max_unsent_bytes` plus
//! one write (a tick's frames) are ever in the socket unsent.
//!
//! Pings (the writer's timer) and tungstenite's own pong and close replies are control
//! frames: written at once when nothing is pending, else after what is.

use std::future::Future;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::close::CloseReason;
use super::framing::MessageClock;
use crate::engine::Outbox;
use crate::metrics::{Metrics, WriteCounters};

/// Frames per `writev`; a session's take is normally one to three.
const FRAMES_PER_WRITE: usize = 32;

/// Bytes of control frames (pongs) that may wait unsent before the peer counts as not
/// reading: a client that pings without reading would otherwise grow them.
const CONTROL_BACKLOG_CAP: usize = 64 * 1024;

/// A server-to-client ping with no payload.
pub const PING_FRAME: [u8; 2] = [0x89, 0x00];

/// Where the write side is; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteState {
    Idle,
    Queued,
    Blocked,
    Held,
    Closing,
    Closed,
}

/// Why writes were deferred (metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferred {
    /// The socket holds as many unsent bytes as allowed.
    Unsent,
    /// The client's flow-control window is used up.
    Window,
}

impl Deferred {
    pub fn as_str(self) -> &'static str {
        match self {
            Deferred::Unsent => "unsent",
            Deferred::Window => "window",
        }
    }
}

/// What may be written now.
enum Gate {
    Open,
    Shut(Deferred),
}

/// The client's flow-control window (`Ack`).
#[derive(Debug, Clone, Copy)]
struct Flow {
    acked: u64,
    window: u64,
}

#[derive(Debug)]
struct Out {
    state: WriteState,
    /// Bytes accepted but not yet taken by the socket (Blocked, Closing).
    pending: BytesMut,
    /// Control frame bytes among `pending`, bounded by [`CONTROL_BACKLOG_CAP`].
    control: usize,
    /// The transport's reason, once the session's end is decided (first wins).
    reason: Option<CloseReason>,
    batch: Vec<Bytes>,
    /// Bytes written since the socket last said it had room (the unsent bound).
    since_check: usize,
    /// The tick of the last message written, for flow control.
    last_tick: u64,
    flow: Option<Flow>,
    /// Since when writes have been deferred (Blocked or Held), for the stall timeout.
    deferred_since: Option<Instant>,
}

/// See the module docs. Shared by the session's reader (through [`WireIo`]), its writer task
/// and, while it is queued, a flusher.
#[derive(Debug)]
pub struct Wire {
    tcp: TcpStream,
    out: Mutex<Out>,
    outbox: Arc<Outbox>,
    /// Ask the socket for room after this many bytes (half of `max_unsent_bytes`; 0: never).
    check_every: usize,
    /// Wakes the writer task: Blocked or Closing.
    writer: Notify,
    /// Wakes whoever waits for the end (the reader).
    ended: Notify,
}

impl Wire {
    /// Wraps the socket; at most `max_unsent` bytes may wait unsent in it (0: no bound beyond
    /// the kernel's own). The socket's `TCP_NOTSENT_LOWAT` must be `max_unsent`
    /// ([`set_unsent_bound`]).
    pub fn new(tcp: TcpStream, outbox: Arc<Outbox>, max_unsent: usize) -> Arc<Self> {
        Arc::new(Self {
            tcp,
            out: Mutex::new(Out {
                state: WriteState::Idle,
                pending: BytesMut::new(),
                control: 0,
                reason: None,
                batch: Vec::new(),
                since_check: 0,
                last_tick: 0,
                flow: None,
                deferred_since: None,
            }),
            outbox,
            check_every: max_unsent / 2,
            writer: Notify::new(),
            ended: Notify::new(),
        })
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The read half tungstenite sees, reading within `limits`; what it writes (pongs, its
    /// close reply) comes here.
    pub fn io(self: &Arc<Self>, limits: ReadLimits) -> WireIo {
        WireIo {
            wire: self.clone(),
            limits,
            tokens: limits.burst_bytes,
            refilled: Instant::now(),
            wait: None,
            clock: MessageClock::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Out> {
        // Poisoning would only mean a panic mid-write; the session is lost either way.
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> WriteState {
        self.lock().state
    }

    /// Moves to Closing (unless the end is already under way) and wakes the writer and the
    /// reader.
    fn to_closing(&self, out: &mut Out) {
        if matches!(out.state, WriteState::Closing | WriteState::Closed) {
            return;
        }
        out.state = WriteState::Closing;
        if out.reason.is_none() {
            out.reason = Some(
                self.outbox
                    .close_reason()
                    .map_or(CloseReason::PeerGone, CloseReason::from_room),
            );
        }
        self.writer.notify_one();
        self.ended.notify_waiters();
    }

    /// The outbox has something new (frames after being empty, or its close): true when the
    /// session must go on its flusher's queue (it was Idle and is now Queued).
    pub fn ready(&self) -> bool {
        let mut out = self.lock();
        if self.outbox.is_closed() {
            self.to_closing(&mut out);
            return false;
        }
        if out.state == WriteState::Idle {
            out.state = WriteState::Queued;
            return true;
        }
        false
    }

    /// Ends the session with `reason` (first reason wins, the room's included). Returns
    /// true for the call that decided it.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut out = self.lock();
        let first = self.outbox.close(reason.leave_reason());
        if first {
            out.reason = Some(reason);
        }
        self.to_closing(&mut out);
        first
    }

    /// Why the session ends, once decided.
    pub fn close_reason(&self) -> Option<CloseReason> {
        let out = self.lock();
        out.reason
            .or_else(|| self.outbox.close_reason().map(CloseReason::from_room))
    }

    /// Resolves once the session's end is decided (by anyone, for any reason).
    pub async fn ended(&self) {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            // Register before checking, so an end between the check and the await is seen.
            notified.as_mut().enable();
            if matches!(self.state(), WriteState::Closing | WriteState::Closed)
                || self.outbox.is_closed()
            {
                return;
            }
            notified.await;
        }
    }

    /// Resolves when the writer task has something to do (Blocked or Closing).
    pub async fn writer_woken(&self) {
        self.writer.notified().await
    }

    /// The flusher's turn: writes what the outbox holds with one `writev` if the session is
    /// Queued. A write failure ends the session as `PeerGone`.
    pub fn flush(&self, metrics: &Metrics) {
        let mut out = self.lock();
        if out.state != WriteState::Queued {
            // Blocked, Held, Closing or Closed: not the flusher's to write.
            return;
        }
        out.state = WriteState::Idle;
        match self.gate(&mut out) {
            Gate::Shut(why) => {
                self.defer(&mut out, why, metrics);
                return;
            }
            Gate::Open => {}
        }
        match self.take_and_write(&mut out, metrics) {
            Ok(()) if !out.pending.is_empty() => {
                if out.state == WriteState::Idle {
                    out.state = WriteState::Blocked;
                    out.deferred_since.get_or_insert_with(Instant::now);
                    self.writer.notify_one();
                }
            }
            Ok(()) => out.deferred_since = None,
            Err(_) => {
                drop(out);
                self.close(CloseReason::PeerGone);
            }
        }
    }

    /// Whether frames may be written now: the client's window, then (every `check_every`
    /// bytes) the socket's unsent bytes.
    fn gate(&self, out: &mut Out) -> Gate {
        if let Some(f) = out.flow
            && out.last_tick >= f.acked.saturating_add(f.window)
        {
            return Gate::Shut(Deferred::Window);
        }
        if self.check_every > 0 && out.since_check >= self.check_every {
            if !has_room(&self.tcp) {
                return Gate::Shut(Deferred::Unsent);
            }
            out.since_check = 0;
        }
        Gate::Open
    }

    /// Holds writes back: Held for the window (an `Ack` reopens it), Blocked for the socket
    /// (the writer task waits for the kernel's wake-up).
    fn defer(&self, out: &mut Out, why: Deferred, metrics: &Metrics) {
        out.deferred_since.get_or_insert_with(Instant::now);
        metrics.writes_deferred(why.as_str());
        match why {
            Deferred::Window => out.state = WriteState::Held,
            Deferred::Unsent => {
                metrics.unsent_bytes(unsent_bytes(&self.tcp));
                out.state = WriteState::Blocked;
                self.writer.notify_one();
            }
        }
    }

    /// The client acknowledged `tick` and asks for `window` ticks in flight (0: no flow
    /// control). True when a held session may write again: the caller queues it.
    pub fn ack(&self, tick: u64, window: u32) -> bool {
        let mut out = self.lock();
        // The newest Ack wins (a session that changed rooms acks the new room's ticks).
        out.flow = (window > 0).then_some(Flow {
            acked: tick,
            window: u64::from(window),
        });
        if out.state == WriteState::Held && !matches!(self.gate_window(&out), Gate::Shut(_)) {
            out.state = WriteState::Queued;
            return true;
        }
        false
    }

    fn gate_window(&self, out: &Out) -> Gate {
        match out.flow {
            Some(f) if out.last_tick >= f.acked.saturating_add(f.window) => {
                Gate::Shut(Deferred::Window)
            }
            _ => Gate::Open,
        }
    }

    /// How long writes have been deferred (Blocked or Held), if they are.
    pub fn deferred_for(&self) -> Option<Duration> {
        let out = self.lock();
        match out.state {
            WriteState::Blocked | WriteState::Held => out.deferred_since.map(|t| t.elapsed()),
            _ => None,
        }
    }

    /// Takes everything from the outbox and writes it; whatever the socket does not take
    /// goes to `pending`. A closed outbox moves the session to Closing.
    fn take_and_write(&self, out: &mut Out, metrics: &Metrics) -> io::Result<()> {
        let mut batch = std::mem::take(&mut out.batch);
        let taken = self.outbox.take(&mut batch);
        metrics.reliable_backlog(taken.reliable);
        let written = write_frames(&self.tcp, out, &batch, metrics.writes());
        out.since_check += batch.iter().map(|f| f.len() + 10).sum::<usize>();
        if let Some(tick) = batch.iter().rev().find_map(|f| frame_tick(f)) {
            out.last_tick = tick;
        }
        batch.clear();
        out.batch = batch;
        if taken.closed.is_some() {
            self.to_closing(out);
        }
        written
    }

    /// Writes one control frame (a ping, tungstenite's pong) now if nothing is pending, else
    /// after what is. Dropped once the session is ending. Fails when the peer has left more
    /// than [`CONTROL_BACKLOG_CAP`] unread.
    pub fn send_control(&self, frame: &[u8]) -> io::Result<()> {
        let mut out = self.lock();
        match out.state {
            WriteState::Closing | WriteState::Closed => Ok(()),
            WriteState::Blocked => {
                if out.control + frame.len() > CONTROL_BACKLOG_CAP {
                    return Err(io::Error::other("peer is not reading"));
                }
                out.control += frame.len();
                out.pending.extend_from_slice(frame);
                Ok(())
            }
            WriteState::Idle | WriteState::Queued | WriteState::Held => {
                let n = try_write(&self.tcp, frame)?;
                if n < frame.len() {
                    out.pending.extend_from_slice(&frame[n..]);
                    out.control += frame.len() - n;
                    // A queued flusher finds it Blocked and leaves it to the writer.
                    out.state = WriteState::Blocked;
                    out.deferred_since.get_or_insert_with(Instant::now);
                    self.writer.notify_one();
                }
                Ok(())
            }
        }
    }

    /// The writer task's turn while Blocked: writes what is pending, waiting until the socket
    /// is writable, then (once the socket has room under the unsent bound) takes the outbox
    /// itself until nothing is left, and goes Idle (or Held, if the client's window is used
    /// up). Returns at once in any other state.
    pub async fn catch_up(&self, metrics: &Metrics) -> io::Result<()> {
        /// What to wait for before the next try.
        enum Wait {
            Writable,
            Room,
        }
        loop {
            let wait = {
                let mut out = self.lock();
                if out.state != WriteState::Blocked {
                    return Ok(());
                }
                write_pending(&self.tcp, &mut out)?;
                if !out.pending.is_empty() {
                    Wait::Writable
                } else {
                    match self.gate(&mut out) {
                        Gate::Shut(Deferred::Window) => {
                            out.state = WriteState::Held;
                            return Ok(());
                        }
                        Gate::Shut(Deferred::Unsent) => Wait::Room,
                        Gate::Open => {
                            self.take_and_write(&mut out, metrics)?;
                            if out.pending.is_empty() {
                                if out.state == WriteState::Blocked {
                                    out.state = WriteState::Idle;
                                    out.deferred_since = None;
                                }
                                return Ok(());
                            }
                            Wait::Writable
                        }
                    }
                }
            };
            match wait {
                Wait::Writable => self.tcp.writable().await?,
                Wait::Room => self.room_to_write().await?,
            }
        }
    }

    /// Waits until the socket has room under the unsent bound. Asking the socket (`poll`)
    /// also arms the kernel's wake-up for when it has, which tokio then reports as writable.
    async fn room_to_write(&self) -> io::Result<()> {
        loop {
            let room = self.tcp.try_io(Interest::WRITABLE, || {
                if has_room(&self.tcp) {
                    Ok(())
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            });
            match room {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.tcp.writable().await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// The writer task's turn while Closing: writes what is pending, the outbox's last
    /// frames and then `close` (a close frame), waiting for the socket as long as it takes
    /// (the caller bounds it). Nothing is written after it.
    pub async fn finish(&self, close: Option<&[u8]>, metrics: &Metrics) -> io::Result<()> {
        {
            let mut out = self.lock();
            if out.state == WriteState::Closed {
                return Ok(());
            }
            out.state = WriteState::Closing;
            let mut batch = std::mem::take(&mut out.batch);
            self.outbox.take(&mut batch);
            // Behind what is pending, if anything is, so it leaves in order.
            write_frames(&self.tcp, &mut out, &batch, metrics.writes())?;
            batch.clear();
            if let Some(frame) = close {
                out.pending.extend_from_slice(frame);
            }
        }
        loop {
            {
                let mut out = self.lock();
                write_pending(&self.tcp, &mut out)?;
                if out.pending.is_empty() {
                    out.state = WriteState::Closed;
                    return Ok(());
                }
            }
            self.tcp.writable().await?;
        }
    }

    /// Ends all writing (the peer is gone, or the close could not be delivered): pending
    /// bytes are dropped.
    pub fn shut(&self) {
        let mut out = self.lock();
        out.state = WriteState::Closed;
        out.pending = BytesMut::new();
        out.batch = Vec::new();
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

/// True when the socket has room under its unsent bound: `poll` reports it writable when
/// fewer than half its `TCP_NOTSENT_LOWAT` bytes wait unsent (and the send buffer has
/// space). When it has not, the same call arms the kernel's wake-up for when it has.
fn has_room(tcp: &TcpStream) -> bool {
    let mut fds = libc::pollfd {
        fd: tcp.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout: poll only reads the socket's state.
    let n = unsafe { libc::poll(&mut fds, 1, 0) };
    n == 1 && fds.revents & libc::POLLOUT != 0
}

/// Bytes the socket holds not yet sent (`SIOCOUTQNSD`), for metrics; 0 if it cannot say.
fn unsent_bytes(tcp: &TcpStream) -> usize {
    const SIOCOUTQNSD: libc::c_ulong = 0x894B;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int to the pointer given.
    let rc = unsafe { libc::ioctl(tcp.as_raw_fd(), SIOCOUTQNSD, &mut n) };
    if rc == 0 { n.max(0) as usize } else { 0 }
}

/// Sets the socket's `TCP_NOTSENT_LOWAT` to `bytes` (see the module docs).
pub fn set_unsent_bound(tcp: &TcpStream, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket and an int option of the right size.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The tick a `ServerMessage` frame carries: field 1 (varint) comes first when set.
fn frame_tick(frame: &[u8]) -> Option<u64> {
    let (&key, mut rest) = frame.split_first()?;
    if key != 0x08 {
        return None;
    }
    prost::encoding::decode_varint(&mut rest).ok()
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
    if out.pending.is_empty() {
        out.control = 0;
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
fn write_frames(
    tcp: &TcpStream,
    out: &mut Out,
    frames: &[Bytes],
    counters: &WriteCounters,
) -> io::Result<()> {
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
    counters.frames.increment(frames.len() as u64);
    counters
        .bytes
        .increment(frames.iter().map(Bytes::len).sum::<usize>() as u64);
    counters.flushes.increment(1);
    Ok(())
}

/// What a session may read: bytes a second with bursts, and how long a message may stay
/// incomplete.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    pub bytes_per_sec: f64,
    pub burst_bytes: f64,
}

/// The socket as tokio-tungstenite sees it: reads are plain reads within a byte budget (a
/// client that sends faster is read slower: its frames, complete or not, cannot take more
/// than a share of a core); writes (its pongs and close reply, always whole frames) are
/// control frames of the session's ordered output (see [`Wire::send_control`]) and are
/// accepted at once.
#[derive(Debug)]
pub struct WireIo {
    wire: Arc<Wire>,
    limits: ReadLimits,
    tokens: f64,
    refilled: Instant,
    /// While the budget is spent: when to read again.
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether a data message is in progress in what was read, and since when.
    clock: MessageClock,
}

impl WireIo {
    /// Bytes of the stream read before this reader took over (the upgrade's leftovers).
    pub fn already_read(&mut self, bytes: &[u8]) {
        self.clock.read(bytes, Instant::now());
    }

    /// Continuation frames (fragments after a message's first) read since the last call.
    pub fn take_continuations(&mut self) -> u32 {
        self.clock.take_continuations()
    }

    /// How long a data message has been in progress without ending (zero: none is).
    pub fn partial_for(&self, now: Instant) -> Duration {
        self.clock.partial_for(now)
    }
}

impl AsyncRead for WireIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(wait) = &mut this.wait {
            ready!(wait.as_mut().poll(cx));
            this.wait = None;
        }
        let now = Instant::now();
        let l = this.limits;
        this.tokens = (this.tokens
            + now.duration_since(this.refilled).as_secs_f64() * l.bytes_per_sec)
            .min(l.burst_bytes);
        this.refilled = now;
        if this.tokens < 1.0 {
            // Sleep until a little is back (a tenth of a second's worth), then read on.
            let need = (l.bytes_per_sec / 10.0).max(1.0) - this.tokens;
            let until = now + Duration::from_secs_f64(need / l.bytes_per_sec);
            let mut wait = Box::pin(tokio::time::sleep_until(until.into()));
            // Registers the waker; the sleep is in the future, so this is Pending.
            let _ = wait.as_mut().poll(cx);
            this.wait = Some(wait);
            return Poll::Pending;
        }
        let tcp = &this.wire.tcp;
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            // tungstenite hands an initialised buffer, so this zeroes nothing.
            let room = buf.initialize_unfilled();
            let take = room.len().min(this.tokens as usize);
            match tcp.try_read(&mut room[..take]) {
                Ok(n) => {
                    this.clock.read(&room[..n], now);
                    buf.advance(n);
                    this.tokens -= n as f64;
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
        self.wire.send_control(buf)?;
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

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn frames_the_socket_cannot_take_at_once_arrive_whole_and_in_order() {
        let (mut client, server) = pair().await;
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        let m = Metrics::new();
        let outbox = Arc::new(Outbox::new(1_000));
        let wire = Wire::new(server, outbox.clone(), 0);
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
        assert!(wire.ready(), "an idle session goes on its flusher's queue");
        wire.flush(&m);
        assert_eq!(wire.state(), WriteState::Blocked);
        // Blocked: the writer task owns the socket; new frames wait in the outbox.
        for frame in &sent[30..] {
            outbox.push_reliable(frame.clone()).unwrap();
        }
        assert!(!wire.ready());
        wire.flush(&m);
        assert_eq!(outbox.len(), 30);
        // A ping while blocked queues behind what is pending.
        wire.send_control(&PING_FRAME).unwrap();
        let writer = {
            let wire = wire.clone();
            tokio::spawn(async move {
                let m = Metrics::new();
                wire.catch_up(&m).await.unwrap();
                assert_eq!(wire.state(), WriteState::Idle);
                assert!(wire.close(CloseReason::ClientClosed));
                let close = close_frame(1000, "bye");
                wire.finish(Some(&close), &m).await.unwrap();
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
        assert_eq!(wire.state(), WriteState::Closed);
        wire.send_control(&PING_FRAME).unwrap();
        assert!(!wire.ready());
    }

    #[tokio::test]
    async fn queued_once_until_flushed_and_a_close_by_the_room_ends_the_session() {
        let (_client, server) = pair().await;
        let m = Metrics::new();
        let outbox = Arc::new(Outbox::new(8));
        let wire = Wire::new(server, outbox.clone(), 0);
        assert!(wire.ready());
        assert!(!wire.ready(), "already queued");
        outbox.push_reliable(Bytes::from_static(b"x")).unwrap();
        wire.flush(&m);
        assert_eq!(wire.state(), WriteState::Idle);
        assert!(outbox.is_empty());
        // The room kicks the session: its outbox closes and the driver says so.
        outbox.close(crate::engine::LeaveReason::Replaced);
        assert!(!wire.ready());
        assert_eq!(wire.state(), WriteState::Closing);
        tokio::time::timeout(std::time::Duration::from_secs(1), wire.ended())
            .await
            .expect("the end is seen");
        assert_eq!(wire.close_reason(), Some(CloseReason::ResumedElsewhere));
        // A later close by the transport does not change the reason.
        assert!(!wire.close(CloseReason::PeerGone));
        assert_eq!(wire.close_reason(), Some(CloseReason::ResumedElsewhere));
    }
}
