//! Driving a room in tests the way its owner thread does: commands and ticks in, then every
//! outbox the room reported ready handed to its drain with [`wake_drains`]. Each joined
//! outbox gets a drain that notes it was told, and [`Probe::take_decoded`] fails if frames
//! wait in an outbox whose drain never heard of them, so a room that forgot to report one
//! fails its tests as it would strand a real client.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;

use tickroom_proto::v1::server_message::Body as ServerBody;

use super::{
    Command, Drain, Outbox, Room, RoomCore, SessionCommand, SessionId, Simulation, wake_drains,
};

/// A drain that remembers it was told.
#[derive(Debug, Default)]
pub(crate) struct Told(AtomicBool);

impl Drain for Told {
    fn queue(self: Arc<Self>) -> Option<Waker> {
        self.0.store(true, Ordering::Relaxed);
        None
    }
}

/// A joined session's outbox with its drain.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub outbox: Arc<Outbox>,
    told: Arc<Told>,
}

impl Deref for Probe {
    type Target = Arc<Outbox>;
    fn deref(&self) -> &Arc<Outbox> {
        &self.outbox
    }
}

impl Probe {
    fn new(reliable_cap: usize) -> Self {
        let outbox = Arc::new(Outbox::new(reliable_cap));
        let told = Arc::new(Told::default());
        let drain: Arc<dyn Drain> = told.clone();
        outbox.attach(Arc::downgrade(&drain));
        Self { outbox, told }
    }

    /// True when the drain was told since the last take.
    pub fn was_told(&self) -> bool {
        self.told.0.load(Ordering::Relaxed)
    }

    /// Takes and decodes every pending frame, after checking the drain heard of them.
    pub fn take_decoded(&self) -> Vec<ServerBody> {
        assert!(
            self.outbox.is_empty() || self.told.0.swap(false, Ordering::Relaxed),
            "frames wait in an outbox whose drain was never told"
        );
        self.outbox.take_decoded()
    }
}

/// See the module docs. Derefs to the room for reading it.
#[derive(Debug)]
pub(crate) struct TestDriver<S: Simulation> {
    room: Room<S>,
    // The drains of joined sessions: an outbox holds only a weak reference to its drain.
    drains: Vec<Arc<Told>>,
    wakers: Vec<Waker>,
}

impl<S: Simulation> Deref for TestDriver<S> {
    type Target = Room<S>;
    fn deref(&self) -> &Room<S> {
        &self.room
    }
}

impl<S: Simulation> TestDriver<S> {
    pub fn new(name: &str, tick_rate_hz: u32, sim: S) -> Self {
        Self {
            room: Room::new(name, tick_rate_hz, sim),
            drains: Vec::new(),
            wakers: Vec::new(),
        }
    }

    fn wake(&mut self) {
        let out = self.room.output();
        wake_drains(&mut out.ready, &mut self.wakers);
        out.clear();
    }

    pub fn begin_tick(&mut self, tick: u64, now_us: i64) {
        self.room.begin_tick(tick, now_us);
    }

    pub fn run_tick(&mut self) {
        self.room.run_tick();
        self.wake();
    }

    pub fn handle(&mut self, cmd: Command<S::Event>) -> bool {
        let going = self.room.handle(cmd);
        self.wake();
        going
    }

    pub fn sweep(&mut self) -> usize {
        let most = self.room.sweep();
        self.wake();
        most
    }

    /// Joins `session` through a new outbox with a drain; see [`Room::join_new`].
    pub fn join_new(
        &mut self,
        session: SessionId,
        name: &str,
        resume_token: &str,
        reliable_cap: usize,
    ) -> Probe {
        self.join_speaking(session, name, resume_token, reliable_cap, 0)
    }

    /// [`join_new`](Self::join_new) for a client that speaks `protocol` (`Join.protocol`).
    pub fn join_speaking(
        &mut self,
        session: SessionId,
        name: &str,
        resume_token: &str,
        reliable_cap: usize,
        protocol: u32,
    ) -> Probe {
        let probe = Probe::new(reliable_cap);
        self.drains.push(probe.told.clone());
        self.room
            .join_through(session, probe.outbox.clone(), name, resume_token, protocol);
        self.wake();
        probe
    }

    /// A session command, with less to type.
    pub fn session(&mut self, cmd: SessionCommand) -> bool {
        self.handle(Command::Session(cmd))
    }

    pub fn core_mut(&mut self) -> &mut RoomCore {
        self.room.core_mut()
    }
}
