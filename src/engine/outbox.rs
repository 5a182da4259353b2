//! A session's outbox: the hand-off between a room and whoever writes the session's socket.
//!
//! Two delivery paths share one ordered queue. Snapshots are latest-only: at most one pending
//! snapshot per interest group, and a newer one replaces the older (conflation) and moves to
//! the back, so frames still leave in tick order. Reliable frames (created/deleted, errors,
//! welcome) are never dropped; past `reliable_cap` of them the outbox closes as a slow
//! consumer, because dropping one would corrupt the client's view. Memory per outbox is thus
//! bounded by `reliable_cap + groups` frames, however slow the client.
//!
//! The outbox never wakes anyone itself. A room reports which outboxes got something new
//! ([`Output::ready`](super::Output)); its driver hands them to their [`Drain`] with
//! [`wake_drains`], once per tick, so one policy decides when writers run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;

use bytes::Bytes;

use super::LeaveReason;

/// An interest group within a room: the unit a snapshot is encoded for (a view of a game
/// room, a symbol, a chat room's viewers).
pub type GroupId = u32;

/// A snapshot slot in an outbox: the group qualified by its room, so a session that moves
/// between rooms never has one room's snapshot replace another's.
pub type SlotKey = u64;

/// The outbox refused a frame because it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("outbox closed: {0:?}")]
pub struct Closed(pub LeaveReason);

/// What [`Outbox::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Enqueued {
    /// The queue went from empty to non-empty: its drain must hear of it.
    pub ready: bool,
    /// A pending snapshot was replaced by the new one.
    pub conflated: bool,
}

#[derive(Debug)]
enum Entry {
    Reliable(Bytes),
    Snapshot(SlotKey, Bytes),
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    reliable: usize,
    closed: Option<LeaveReason>,
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

/// Whoever moves an outbox's frames to its socket (the transport attaches one per session).
/// Called by a room's driver, never by the room, for an outbox that got frames after being
/// empty or was closed.
pub trait Drain: Send + Sync {
    /// Takes note that the outbox has something new. Returns a waker for the driver to call
    /// once it has handed over everything of this tick (a flusher that was idle), so the
    /// writers do not take the core from the driver after each session.
    fn queue(self: Arc<Self>) -> Option<Waker>;
}

/// The driver's side of the wake policy: hands every outbox in `ready` to its drain, then
/// wakes each waker the drains returned, once, after the last. `wakers` is scratch space
/// kept for its allocation. Outboxes without a drain (tests that read them directly) are
/// skipped.
pub fn wake_drains(ready: &mut Vec<Arc<Outbox>>, wakers: &mut Vec<Waker>) {
    for outbox in ready.drain(..) {
        let Some(drain) = outbox.drain.get().and_then(Weak::upgrade) else {
            continue;
        };
        if let Some(w) = drain.queue()
            && !wakers.iter().any(|seen| seen.will_wake(&w))
        {
            wakers.push(w);
        }
    }
    for w in wakers.drain(..) {
        w.wake();
    }
}

/// See the module docs.
pub struct Outbox {
    state: Mutex<State>,
    // Weak: the transport's drain owns the socket, which must close with the session even
    // while a room still holds the outbox (an avatar waiting to be resumed).
    drain: OnceLock<Weak<dyn Drain>>,
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
    /// Entries taken (before neighbouring snapshots were joined).
    pub frames: usize,
    /// Reliable frames among them: the backlog the writer found.
    pub reliable: usize,
    pub closed: Option<LeaveReason>,
}

impl Outbox {
    pub fn new(reliable_cap: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            drain: OnceLock::new(),
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
    /// Says whether the queue went from empty to non-empty (its drain must hear of it) and
    /// whether a snapshot was conflated. Past `reliable_cap` reliable frames the outbox
    /// closes as a slow consumer.
    pub fn enqueue(
        &self,
        reliable: &[Bytes],
        snapshot: Option<(SlotKey, &Bytes)>,
    ) -> Result<Enqueued, Closed> {
        let mut st = self.lock();
        if let Some(reason) = st.closed {
            return Err(Closed(reason));
        }
        let was_empty = st.queue.is_empty();
        if st.reliable + reliable.len() > self.reliable_cap {
            drop(st);
            self.close(LeaveReason::SlowConsumer);
            return Err(Closed(LeaveReason::SlowConsumer));
        }
        for frame in reliable {
            st.queue.push_back(Entry::Reliable(frame.clone()));
        }
        st.reliable += reliable.len();
        let mut conflated = false;
        if let Some((group, frame)) = snapshot {
            // Newest pending first: a client that keeps up has at most one entry here.
            if let Some(pos) = st
                .queue
                .iter()
                .rposition(|e| matches!(e, Entry::Snapshot(g, _) if *g == group))
            {
                st.queue.remove(pos);
                st.conflated += 1;
                conflated = true;
            }
            st.queue.push_back(Entry::Snapshot(group, frame.clone()));
        }
        Ok(Enqueued {
            ready: was_empty && !st.queue.is_empty(),
            conflated,
        })
    }

    /// Sets who moves the frames out ([`wake_drains`] hands it this outbox). First one wins.
    pub fn attach(&self, drain: Weak<dyn Drain>) {
        let _ = self.drain.set(drain);
    }

    /// Queues one reliable frame; true when the queue went from empty to non-empty.
    pub fn push_reliable(&self, frame: Bytes) -> Result<bool, Closed> {
        self.enqueue(std::slice::from_ref(&frame), None)
            .map(|e| e.ready)
    }

    /// Queues a snapshot for `group`, replacing a pending older one.
    pub fn publish(&self, group: SlotKey, frame: &Bytes) -> Result<Enqueued, Closed> {
        self.enqueue(&[], Some((group, frame)))
    }

    /// Closes the outbox. Returns true for the call that closed it; later calls (any reason)
    /// change nothing, which makes teardown idempotent.
    pub fn close(&self, reason: LeaveReason) -> bool {
        let mut st = self.lock();
        if st.closed.is_some() {
            return false;
        }
        st.closed = Some(reason);
        self.closed.store(true, Ordering::Release);
        true
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn close_reason(&self) -> Option<LeaveReason> {
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
        let reliable = st.reliable;
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
            reliable,
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
                        view: None,
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
            Err(Closed(LeaveReason::SlowConsumer))
        );
        assert!(o.is_closed());
        assert_eq!(o.close_reason(), Some(LeaveReason::SlowConsumer));
        // Everything queued before the overflow is still handed to the writer with the reason.
        let mut v = Vec::new();
        let t = o.take(&mut v);
        assert_eq!(t.frames, 3);
        assert_eq!(t.closed, Some(LeaveReason::SlowConsumer));
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
        assert!(o.close(LeaveReason::TimedOut));
        assert!(!o.close(LeaveReason::Shutdown));
        assert_eq!(o.close_reason(), Some(LeaveReason::TimedOut));
        assert_eq!(o.publish(1, &b("x")), Err(Closed(LeaveReason::TimedOut)));
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

    /// A drain that counts how often it was told and hands back one shared waker.
    struct Counting {
        queued: std::sync::atomic::AtomicUsize,
        woken: Arc<std::sync::atomic::AtomicUsize>,
    }

    struct CountWakes(Arc<std::sync::atomic::AtomicUsize>);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Drain for Counting {
        fn queue(self: Arc<Self>) -> Option<Waker> {
            self.queued.fetch_add(1, Ordering::Relaxed);
            Some(Waker::from(Arc::new(CountWakes(self.woken.clone()))))
        }
    }

    #[test]
    fn the_queue_is_ready_once_per_empty_to_nonempty_transition() {
        let o = Outbox::new(4);
        assert!(o.publish(0, &b("a")).unwrap().ready);
        let again = o.publish(0, &b("b")).unwrap();
        assert!(!again.ready, "the queue was not empty");
        assert!(again.conflated);
        assert_eq!(taken(&o), vec![b("b")]);
        assert!(o.push_reliable(b("c")).unwrap());
    }

    #[test]
    fn wake_drains_tells_each_drain_and_wakes_once_per_waker_after_the_last() {
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let drain = Arc::new(Counting {
            queued: Default::default(),
            woken: woken.clone(),
        });
        let outboxes: Vec<Arc<Outbox>> = (0..3).map(|_| Arc::new(Outbox::new(4))).collect();
        let weak: Weak<dyn Drain> = Arc::downgrade(&(drain.clone() as Arc<dyn Drain>));
        for o in &outboxes[..2] {
            o.attach(weak.clone());
        }
        // The third has no drain: skipped.
        let mut ready = outboxes.clone();
        let mut wakers = Vec::new();
        wake_drains(&mut ready, &mut wakers);
        assert!(ready.is_empty() && wakers.is_empty());
        assert_eq!(drain.queued.load(Ordering::Relaxed), 2);
        // Two wakers of the same task (`will_wake` cannot tell them apart here: two Arcs),
        // each woken once.
        assert_eq!(woken.load(Ordering::Relaxed), 2);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Reliable(u8),
            Snapshot(u8, u8),
            Take,
            Close,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                any::<u8>().prop_map(Op::Reliable),
                (0..4u8, any::<u8>()).prop_map(|(g, v)| Op::Snapshot(g, v)),
                Just(Op::Take),
                Just(Op::Close),
            ]
        }

        proptest! {
            /// Whatever happens: reliable frames come out all, in order (until an overflow
            /// or a close ends the session); a snapshot comes out only if it is the newest of
            /// its group at the take; at most one per group waits; memory stays bounded.
            #[test]
            fn reliable_in_order_snapshots_newest_only_bounded(ops in proptest::collection::vec(op(), 0..200)) {
                const CAP: usize = 8;
                let o = Outbox::new(CAP);
                let mut sent_reliable: Vec<u8> = Vec::new();
                let mut got_reliable: Vec<u8> = Vec::new();
                let mut newest: [Option<u8>; 4] = [None; 4];
                for op in ops {
                    match op {
                        Op::Reliable(v) => {
                            if o.push_reliable(Bytes::from(vec![b'r', v])).is_ok() {
                                sent_reliable.push(v);
                            }
                        }
                        Op::Snapshot(g, v) => {
                            if o.publish(u64::from(g), &Bytes::from(vec![b's', g, v])).is_ok() {
                                newest[g as usize] = Some(v);
                            }
                        }
                        Op::Take => {
                            let mut out = Vec::new();
                            o.take(&mut out);
                            for f in out {
                                match f[0] {
                                    b'r' => got_reliable.push(f[1]),
                                    // Snapshot runs are joined: 3 bytes each.
                                    _ => {
                                        for s in f.chunks(3) {
                                            let (g, v) = (s[1] as usize, s[2]);
                                            prop_assert_eq!(newest[g], Some(v), "only the newest");
                                            newest[g] = None;
                                        }
                                    }
                                }
                            }
                        }
                        Op::Close => {
                            o.close(LeaveReason::Disconnected);
                        }
                    }
                    prop_assert!(o.len() <= CAP + 4, "bounded: {} pending", o.len());
                    prop_assert!(o.reliable_len() <= CAP);
                }
                let mut out = Vec::new();
                o.take(&mut out);
                got_reliable.extend(out.iter().filter(|f| f[0] == b'r').map(|f| f[1]));
                prop_assert_eq!(got_reliable, sent_reliable, "every accepted reliable frame, in order");
            }
        }
    }
}
