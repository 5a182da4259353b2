//! A session's outbox: the hand-off between a room thread and the session's writer task.
//!
//! Two delivery paths share one ordered queue. Snapshots are latest-only: at most one pending
//! snapshot per interest group, and a newer one replaces the older (conflation) and moves to
//! the back, so frames still leave in tick order. Reliable frames (created/deleted, errors,
//! welcome) are never dropped; past `reliable_cap` of them the outbox closes as a slow
//! consumer, because dropping one would corrupt the client's view. Memory per outbox is thus
//! bounded by `reliable_cap + groups` frames, however slow the client.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use tokio::sync::Notify;

/// An interest group within a room: the unit a snapshot is encoded for (a whole game room,
/// later a symbol).
pub type GroupId = u32;

/// A snapshot slot in an outbox: the group qualified by its room, so a session that moves
/// between rooms never has one room's snapshot replace another's.
pub type SlotKey = u64;

/// Why a session ends. The first reason given wins; later ones are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client left (close frame or end of stream).
    ClientClosed,
    /// The socket failed or the peer vanished.
    PeerGone,
    /// No frame from the peer within the idle timeout.
    HeartbeatTimeout,
    /// The reliable queue overflowed.
    SlowConsumer,
    /// The client kept exceeding the message rate limit.
    RateAbuse,
    /// A message larger than the configured maximum.
    MessageTooBig,
    /// A text frame, which this protocol does not use.
    TextFrame,
    /// A WebSocket protocol violation.
    ProtocolError,
    /// Another connection resumed this session's avatar.
    ResumedElsewhere,
    /// The server is shutting down.
    ShuttingDown,
    /// The room the session was in stopped.
    RoomClosed,
    /// `/ws?session=ID` named a prepared session that does not exist or expired.
    UnknownSession,
}

impl CloseReason {
    /// The WebSocket close code and reason text sent to the client (docs/protocol.md).
    pub fn close_code(self) -> (u16, &'static str) {
        match self {
            CloseReason::ClientClosed => (1000, "bye"),
            CloseReason::PeerGone => (1001, "connection lost"),
            CloseReason::HeartbeatTimeout => (4001, "heartbeat timeout"),
            CloseReason::SlowConsumer => (4000, "slow consumer: reliable queue overflow"),
            CloseReason::RateAbuse => (1008, "message rate limit exceeded"),
            CloseReason::MessageTooBig => (1009, "message too big"),
            CloseReason::TextFrame => (1003, "text frames are not supported; send binary protobuf"),
            CloseReason::ProtocolError => (1002, "websocket protocol error"),
            CloseReason::ResumedElsewhere => (4002, "session resumed by another connection"),
            CloseReason::ShuttingDown => (1001, "server shutting down"),
            CloseReason::RoomClosed => (1001, "room closed"),
            CloseReason::UnknownSession => (4003, "unknown or expired session id"),
        }
    }

    /// A short stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::PeerGone => "peer_gone",
            CloseReason::HeartbeatTimeout => "timeout",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::RateAbuse => "rate_abuse",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::TextFrame => "text_frame",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::ResumedElsewhere => "resumed_elsewhere",
            CloseReason::ShuttingDown => "shutdown",
            CloseReason::RoomClosed => "room_closed",
            CloseReason::UnknownSession => "unknown_session",
        }
    }
}

/// The outbox refused a frame because it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbox closed: {0:?}")]
pub struct Closed(pub CloseReason);

#[derive(Debug)]
enum Entry {
    Reliable(Bytes),
    Snapshot(SlotKey, Bytes),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    reliable: usize,
    closed: Option<CloseReason>,
    conflated: u64,
}

/// Consecutive snapshot frames being joined into one (see [`Outbox::take`]).
#[derive(Default)]
struct SnapshotRun {
    first: Option<Bytes>,
    joined: Option<bytes::BytesMut>,
}

impl SnapshotRun {
    fn push(&mut self, frame: Bytes) {
        if let Some(joined) = &mut self.joined {
            joined.extend_from_slice(&frame);
        } else if let Some(first) = self.first.take() {
            let mut joined = bytes::BytesMut::with_capacity(4 * (first.len() + frame.len()));
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&frame);
            self.joined = Some(joined);
        } else {
            self.first = Some(frame);
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        if let Some(joined) = self.joined.take() {
            out.push(joined.freeze());
        } else if let Some(first) = self.first.take() {
            out.push(first);
        }
    }
}

/// Who moves an outbox's frames to its socket when a room queued some: the transport
/// attaches one so a tick's hand-out wakes a few flushers rather than a task per session.
pub trait Drain: Send + Sync {
    /// Queues the session for writing. Returns the flusher to wake when it was idle: the
    /// caller wakes it once it has queued everything it has, so a room's hand-out does not
    /// hand the core to the flusher after each session.
    fn queue(self: Arc<Self>) -> Option<Arc<Notify>>;
}

/// See the module docs.
pub struct Outbox {
    state: Mutex<State>,
    // Weak: the transport's drain owns the socket, which must close with the session even
    // while a room still holds the outbox (an avatar waiting to be resumed).
    drain: OnceLock<Weak<dyn Drain>>,
    notify: Notify,
    closed_notify: Notify,
    // Mirrors `state.closed.is_some()` so the room's sweep needs no lock.
    closed: AtomicBool,
    reliable_cap: usize,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("state", &self.state)
            .field("drain", &self.drain.get().is_some())
            .field("closed", &self.closed)
            .field("reliable_cap", &self.reliable_cap)
            .finish_non_exhaustive()
    }
}

/// What `take` found besides frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Taken {
    pub frames: usize,
    pub closed: Option<CloseReason>,
}

impl Outbox {
    pub fn new(reliable_cap: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            drain: OnceLock::new(),
            notify: Notify::new(),
            closed_notify: Notify::new(),
            closed: AtomicBool::new(false),
            reliable_cap: reliable_cap.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue half-updated in a way that
        // matters more than losing the session, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one tick's frames for this session under one lock: reliable frames in order,
    /// then the group's snapshot, which replaces any pending snapshot of the same group.
    /// Wakes the writer only when the queue goes from empty to non-empty.
    pub fn deliver(
        &self,
        reliable: &[Bytes],
        snapshot: Option<(SlotKey, &Bytes)>,
    ) -> Result<(), Closed> {
        if self.enqueue(reliable, snapshot)? {
            self.wake();
        }
        Ok(())
    }

    /// Like [`deliver`](Self::deliver), but leaves the wake-up to the caller: returns true
    /// when the queue went from empty to non-empty and the writer must be woken with
    /// [`wake`](Self::wake). A room queues all of a tick's frames first and wakes afterwards,
    /// so a session in several groups gets them in one write instead of racing the hand-out.
    pub fn enqueue(
        &self,
        reliable: &[Bytes],
        snapshot: Option<(SlotKey, &Bytes)>,
    ) -> Result<bool, Closed> {
        let mut st = self.lock();
        if let Some(reason) = st.closed {
            return Err(Closed(reason));
        }
        let was_empty = st.queue.is_empty();
        if st.reliable + reliable.len() > self.reliable_cap {
            drop(st);
            self.close(CloseReason::SlowConsumer);
            return Err(Closed(CloseReason::SlowConsumer));
        }
        for frame in reliable {
            st.queue.push_back(Entry::Reliable(frame.clone()));
        }
        st.reliable += reliable.len();
        if let Some((group, frame)) = snapshot {
            // Newest pending first: a client that keeps up has at most one entry here.
            if let Some(pos) = st
                .queue
                .iter()
                .rposition(|e| matches!(e, Entry::Snapshot(g, _) if *g == group))
            {
                st.queue.remove(pos);
                st.conflated += 1;
                crate::metrics::HOT
                    .snapshots_conflated
                    .fetch_add(1, Ordering::Relaxed);
            }
            st.queue.push_back(Entry::Snapshot(group, frame.clone()));
        }
        Ok(was_empty && !st.queue.is_empty())
    }

    /// Sets who moves the frames out when there are some; without one (or once it is gone)
    /// [`wake`](Self::wake) wakes the task waiting in [`ready`](Self::ready). First one wins.
    pub fn attach(&self, drain: Weak<dyn Drain>) {
        let _ = self.drain.set(drain);
    }

    /// Hands the frames to the drain, or wakes the writer (after [`enqueue`](Self::enqueue)
    /// said so).
    pub fn wake(&self) {
        if let Some(flusher) = self.hand_to_drain() {
            flusher.notify_one();
        }
    }

    /// Like [`wake`](Self::wake), but a flusher to wake is put on `flushers`, for the caller
    /// to wake after the rest of its hand-out.
    pub fn wake_later(&self, flushers: &mut Vec<Arc<Notify>>) {
        flushers.extend(self.hand_to_drain());
    }

    /// Queues the frames on the drain and returns the flusher it says to wake; without a
    /// drain, wakes the writer itself.
    fn hand_to_drain(&self) -> Option<Arc<Notify>> {
        match self.drain.get().and_then(Weak::upgrade) {
            Some(drain) => drain.queue(),
            None => {
                self.notify.notify_one();
                None
            }
        }
    }

    /// Wakes the task waiting in [`ready`](Self::ready) whatever the drain: its socket is
    /// full, or it has control frames to write.
    pub fn wake_writer(&self) {
        self.notify.notify_one();
    }

    /// Queues one reliable frame.
    pub fn push_reliable(&self, frame: Bytes) -> Result<(), Closed> {
        self.deliver(std::slice::from_ref(&frame), None)
    }

    /// Queues a snapshot for `group`, replacing a pending older one.
    pub fn publish(&self, group: SlotKey, frame: &Bytes) -> Result<(), Closed> {
        self.deliver(&[], Some((group, frame)))
    }

    /// Closes the outbox. Returns true for the call that closed it; later calls (any reason)
    /// change nothing, which makes teardown idempotent.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut st = self.lock();
        if st.closed.is_some() {
            return false;
        }
        st.closed = Some(reason);
        self.closed.store(true, Ordering::Release);
        drop(st);
        self.notify.notify_one();
        self.closed_notify.notify_waiters();
        true
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().closed
    }

    /// Moves every pending frame, in order, into `out`. Snapshots that are next to each other
    /// in the queue leave as ONE frame, their bytes concatenated: every snapshot frame is a
    /// `ServerMessage { tick, snapshot }`, and protobuf decodes concatenated messages as one
    /// whose `snapshot.objects` are all of theirs (and whose tick is the last). A ticker
    /// session's 20 changed symbols are then one WebSocket message, not 20.
    pub fn take(&self, out: &mut Vec<Bytes>) -> Taken {
        let mut st = self.lock();
        let frames = st.queue.len();
        crate::metrics::HOT
            .reliable_backlog_max
            .fetch_max(st.reliable as u64, Ordering::Relaxed);
        out.reserve(frames);
        let mut run = SnapshotRun::default();
        for entry in st.queue.drain(..) {
            match entry {
                Entry::Snapshot(_, b) => run.push(b),
                Entry::Reliable(b) => {
                    run.finish(out);
                    out.push(b);
                }
            }
        }
        run.finish(out);
        st.reliable = 0;
        if st.queue.capacity() > 64 {
            // A burst grew the queue; give the memory back once it is drained.
            st.queue.shrink_to(8);
        }
        Taken {
            frames,
            closed: st.closed,
        }
    }

    /// Takes and decodes every pending frame (tests that read what a room sent).
    #[cfg(test)]
    pub(crate) fn take_decoded(&self) -> Vec<tickroom_proto::v1::server_message::Body> {
        use prost::Message;
        let mut v = Vec::new();
        self.take(&mut v);
        v.into_iter()
            .map(|b| {
                let msg = tickroom_proto::v1::ServerMessage::decode(b).expect("a ServerMessage");
                msg.body.expect("a body")
            })
            .collect()
    }

    /// Frames pending (reliable + snapshots).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reliable frames pending.
    pub fn reliable_len(&self) -> usize {
        self.lock().reliable
    }

    /// Snapshots replaced by a newer one before the writer took them.
    pub fn conflated(&self) -> u64 {
        self.lock().conflated
    }

    /// Resolves once the outbox is closed (by anyone, for any reason).
    pub async fn closed(&self) {
        loop {
            let notified = self.closed_notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a close between the check and the await is seen.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once something was queued or the outbox closed since the last wake-up.
    pub async fn ready(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn taken(o: &Outbox) -> Vec<Bytes> {
        let mut v = Vec::new();
        o.take(&mut v);
        v
    }

    #[test]
    fn snapshots_are_latest_only_per_group_and_keep_tick_order() {
        let o = Outbox::new(8);
        o.publish(1, &b("s1-t1")).unwrap();
        o.publish(2, &b("s2-t1")).unwrap();
        o.push_reliable(b("deleted-t2")).unwrap();
        o.publish(1, &b("s1-t2")).unwrap();
        // s1-t1 was replaced, and its successor comes after the reliable frame of tick 2.
        assert_eq!(taken(&o), vec![b("s2-t1"), b("deleted-t2"), b("s1-t2")]);
        assert_eq!(o.conflated(), 1);
        assert!(o.is_empty());
    }

    #[test]
    fn neighbouring_snapshots_leave_as_one_frame_that_decodes_as_one_snapshot() {
        use prost::Message;
        use tickroom_proto::v1::{
            Object, ServerMessage, Snapshot, server_message::Body as ServerBody,
        };
        let snap = |tick: u64, id: u32| {
            Bytes::from(
                ServerMessage {
                    tick,
                    body: Some(ServerBody::Snapshot(Snapshot {
                        server_time_us: 1,
                        objects: vec![Object { id, state: None }],
                    })),
                }
                .encode_to_vec(),
            )
        };
        let o = Outbox::new(8);
        o.publish(1, &snap(7, 1)).unwrap();
        o.publish(2, &snap(7, 2)).unwrap();
        o.publish(3, &snap(8, 3)).unwrap();
        o.push_reliable(b("reliable")).unwrap();
        o.publish(4, &snap(8, 4)).unwrap();
        let frames = taken(&o);
        assert_eq!(frames.len(), 3, "[1 2 3] reliable [4]");
        assert_eq!(frames[1], b("reliable"));
        let joined = ServerMessage::decode(frames[0].clone()).unwrap();
        assert_eq!(joined.tick, 8, "the newest tick");
        let Some(ServerBody::Snapshot(s)) = joined.body else {
            panic!("a snapshot")
        };
        let ids: Vec<u32> = s.objects.iter().map(|o| o.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            frames[2],
            snap(8, 4),
            "a lone snapshot is passed on as it is"
        );
    }

    #[test]
    fn memory_stays_bounded_for_a_client_that_never_reads() {
        let o = Outbox::new(4);
        for _ in 0..10_000 {
            o.publish(7, &b("snap")).unwrap();
        }
        assert_eq!(o.len(), 1);
        assert_eq!(o.conflated(), 9_999);
    }

    #[test]
    fn reliable_overflow_closes_as_slow_consumer() {
        let o = Outbox::new(3);
        for _ in 0..3 {
            o.push_reliable(b("r")).unwrap();
        }
        assert_eq!(
            o.push_reliable(b("r")),
            Err(Closed(CloseReason::SlowConsumer))
        );
        assert!(o.is_closed());
        assert_eq!(o.close_reason(), Some(CloseReason::SlowConsumer));
        // Everything queued before the overflow is still handed to the writer with the reason.
        let mut v = Vec::new();
        let t = o.take(&mut v);
        assert_eq!(t.frames, 3);
        assert_eq!(t.closed, Some(CloseReason::SlowConsumer));
    }

    #[test]
    fn taking_frees_reliable_room() {
        let o = Outbox::new(2);
        o.push_reliable(b("a")).unwrap();
        o.push_reliable(b("b")).unwrap();
        assert_eq!(taken(&o).len(), 2);
        o.push_reliable(b("c")).unwrap();
        o.push_reliable(b("d")).unwrap();
        assert_eq!(o.reliable_len(), 2);
    }

    #[test]
    fn close_is_idempotent_and_first_reason_wins() {
        let o = Outbox::new(2);
        assert!(o.close(CloseReason::HeartbeatTimeout));
        assert!(!o.close(CloseReason::ShuttingDown));
        assert_eq!(o.close_reason(), Some(CloseReason::HeartbeatTimeout));
        assert_eq!(
            o.publish(1, &b("x")),
            Err(Closed(CloseReason::HeartbeatTimeout))
        );
    }

    #[test]
    fn shares_frames_without_copying() {
        let frame = Bytes::from(vec![1u8; 1024]);
        let outboxes: Vec<Outbox> = (0..3).map(|_| Outbox::new(4)).collect();
        for o in &outboxes {
            o.publish(0, &frame).unwrap();
        }
        for o in &outboxes {
            let v = taken(o);
            assert_eq!(v[0].as_ptr(), frame.as_ptr());
        }
    }

    #[tokio::test]
    async fn closed_resolves_for_waiters_and_after_the_fact() {
        let o = std::sync::Arc::new(Outbox::new(4));
        let waiter = tokio::spawn({
            let o = o.clone();
            async move { o.closed().await }
        });
        tokio::task::yield_now().await;
        o.close(CloseReason::SlowConsumer);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("waiter woken")
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), o.closed())
            .await
            .expect("already closed resolves at once");
    }

    #[tokio::test]
    async fn wakes_the_writer_once_per_empty_to_nonempty_transition() {
        let o = std::sync::Arc::new(Outbox::new(4));
        o.publish(0, &b("a")).unwrap();
        // A permit is stored even though nobody waited yet.
        tokio::time::timeout(std::time::Duration::from_secs(1), o.ready())
            .await
            .expect("woken");
        o.publish(0, &b("b")).unwrap(); // queue was not empty: no new permit
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), o.ready())
                .await
                .is_err()
        );
        assert_eq!(taken(&o), vec![b("b")]);
    }
}
