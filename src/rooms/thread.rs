//! The owner thread of a room, the one driver of its [`Room`]: sleeps to the next tick,
//! drains the command channel into the room, runs the tick, then acts on the room's
//! [`Output`](crate::engine::Output): hands the outboxes with something new to their drains
//! (waking each flusher once, after the last: the one wake policy), records the metrics and
//! publishes the figures. The only code that touches the room's state.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use tickroom_proto::v1::RoomKind;

use super::{RoomStats, TickDurations};
use crate::clock::unix_time_us;
use crate::engine::{
    Command, LeaveReason, Room, SessionCommand, Simulation, TickSchedule, wake_drains,
};
use crate::metrics::{Metrics, RoomMetrics, TickRecord};

/// A command could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("room command queue is full")]
    Full,
    #[error("room is gone")]
    Gone,
}

fn send_error<T>(e: TrySendError<T>) -> SendError {
    match e {
        TrySendError::Full(_) => SendError::Full,
        TrySendError::Disconnected(_) => SendError::Gone,
    }
}

/// The channel of a room of any kind, as sessions use it.
trait Channel: Send + Sync + std::fmt::Debug {
    fn session(&self, cmd: SessionCommand) -> Result<(), SendError>;
    fn shutdown(&self) -> Result<(), SendError>;
    fn len(&self) -> usize;
}

impl<E: Send + std::fmt::Debug + 'static> Channel for Sender<Command<E>> {
    fn session(&self, cmd: SessionCommand) -> Result<(), SendError> {
        self.try_send(Command::Session(cmd)).map_err(send_error)
    }

    fn shutdown(&self) -> Result<(), SendError> {
        self.try_send(Command::Shutdown).map_err(send_error)
    }

    fn len(&self) -> usize {
        Sender::len(self)
    }
}

/// The rest of the server's view of a running room, whatever its kind.
#[derive(Debug)]
pub struct RoomHandle {
    pub name: Arc<str>,
    pub kind: RoomKind,
    pub tick_rate_hz: u32,
    pub stats: Arc<RoomStats>,
    tx: Box<dyn Channel>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RoomHandle {
    /// Queues a session's command without blocking: async tasks must never wait on a room.
    pub fn send(&self, cmd: SessionCommand) -> Result<(), SendError> {
        self.tx.session(cmd)
    }

    /// Commands waiting in the channel.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_rate_hz))
    }

    /// Asks the room to stop and waits for its thread. Safe to call more than once.
    pub fn stop(&self) {
        self.ask_to_stop();
        self.join();
    }

    /// Asks the room to stop without waiting: it closes its members at its next tick.
    pub fn ask_to_stop(&self) {
        // A full channel still ends the thread: the room also stops when every sender is
        // gone, but the handle keeps one, so retry until the command fits.
        while let Err(SendError::Full) = self.tx.shutdown() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for the room's thread to end (after [`ask_to_stop`](Self::ask_to_stop)).
    pub fn join(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// A room's channel for its simulation's own events (a feed's quotes, admin notices,
/// questions), typed by the room kind.
#[derive(Debug)]
pub struct Events<E> {
    tx: Sender<Command<E>>,
}

impl<E> Clone for Events<E> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<E> Events<E> {
    /// Queues an event without blocking.
    pub fn try_send(&self, event: E) -> Result<(), SendError> {
        self.tx.try_send(Command::Event(event)).map_err(send_error)
    }

    /// Queues an event, waiting while the channel is full: for a feed thread, where
    /// back-pressure is right and losing quotes is not. Gives up when `stop` is set.
    pub fn send_blocking(&self, event: E, stop: &AtomicBool) -> Result<(), SendError> {
        let mut cmd = Command::Event(event);
        loop {
            if stop.load(Relaxed) {
                return Err(SendError::Gone);
            }
            match self.tx.send_timeout(cmd, Duration::from_millis(100)) {
                Ok(()) => return Ok(()),
                Err(crossbeam_channel::SendTimeoutError::Timeout(c)) => cmd = c,
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => {
                    return Err(SendError::Gone);
                }
            }
        }
    }
}

/// Settings of the driver loop, common to every room kind.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    pub tick_rate_hz: u32,
    pub command_channel: usize,
    pub max_catchup_ticks: u32,
}

/// Starts `sim` on its own named OS thread as room number `uid` of its server. Returns the
/// handle every session uses and the channel for the kind's own events.
pub fn spawn_room<S: Simulation>(
    uid: u32,
    name: &str,
    sim: S,
    cfg: DriverConfig,
    metrics: &Metrics,
) -> std::io::Result<(Arc<RoomHandle>, Events<S::Event>)> {
    let (tx, rx) = bounded(cfg.command_channel);
    let stats = Arc::new(RoomStats::default());
    let name: Arc<str> = name.into();
    let kind = sim.kind();
    let room = Room::numbered(uid, name.clone(), cfg.tick_rate_hz, sim);
    let room_metrics = metrics.room(kind, &name);
    // Thread names show in flamegraphs; Linux keeps 15 bytes.
    let thread_name: String = format!("room-{name}").chars().take(15).collect();
    let thread = std::thread::Builder::new().name(thread_name).spawn({
        let stats = stats.clone();
        move || run(room, rx, stats, cfg, room_metrics)
    })?;
    let handle = Arc::new(RoomHandle {
        name,
        kind,
        tick_rate_hz: cfg.tick_rate_hz,
        stats,
        tx: Box::new(tx.clone()),
        thread: std::sync::Mutex::new(Some(thread)),
    });
    Ok((handle, Events { tx }))
}

/// How a tick's commands ended.
enum Drained {
    Going(u64),
    Stop(u64),
}

fn run<S: Simulation>(
    mut room: Room<S>,
    rx: Receiver<Command<S::Event>>,
    stats: Arc<RoomStats>,
    cfg: DriverConfig,
    metrics: RoomMetrics,
) {
    let _stopped = StoppedOnDrop(stats.clone());
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.tick_rate_hz.max(1)));
    let mut schedule = TickSchedule::new(Instant::now(), period, cfg.max_catchup_ticks);
    let mut durations = TickDurations::new(1024);
    let mut next_summary = Instant::now() + Duration::from_secs(1);
    let mut wakers = Vec::new();
    // Draining at most the channel's capacity per tick bounds a tick's cost under a flood.
    let max_drain = cfg.command_channel;
    loop {
        let deadline = schedule.deadline();
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        let started = Instant::now();
        let start = schedule.begin(started);
        room.begin_tick(start.tick, unix_time_us());
        // A panic in the simulation ends this room, not the server: its sessions are closed
        // and told, like at a shutdown.
        let ticked = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let drained = drain(&mut room, &rx, max_drain);
            if let Drained::Going(_) = drained {
                room.run_tick();
            }
            drained
        }));
        let drained = match ticked {
            Ok(d) => d,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(room = %room.core().name(), panic = why, "room failed; closing it");
                metrics.failed();
                room.abort(LeaveReason::Shutdown);
                Drained::Stop(0)
            }
        };
        let ended = Instant::now();
        durations.record(ended - started);
        let overrun = schedule.end(ended);
        // The one wake policy: every writer with something new hears of it once, after the
        // tick's whole hand-out (its commands included), so a session in several groups gets
        // all of its frames in one write and no flusher takes the core mid-hand-out.
        let out = room.output();
        wake_drains(&mut out.ready, &mut wakers);
        let commands = match drained {
            Drained::Going(n) | Drained::Stop(n) => n,
        };
        metrics.record(
            TickRecord {
                duration: ended - started,
                overrun,
                skipped: start.skipped,
                queue_depth: rx.len(),
            },
            out,
        );
        out.clear();

        RoomStats::set(&stats.tick, start.tick);
        RoomStats::add(&stats.ticks_total, 1);
        RoomStats::add(&stats.commands_total, commands);
        RoomStats::add(&stats.skipped_ticks_total, start.skipped);
        if overrun {
            RoomStats::add(&stats.overruns_total, 1);
        }
        RoomStats::set(&stats.sessions, room.core().member_count() as u64);
        RoomStats::set(&stats.last_tick_end_us, unix_time_us() as u64);
        if let Drained::Stop(_) = drained {
            break;
        }
        if ended >= next_summary {
            next_summary = ended + Duration::from_secs(1);
            let most = room.sweep();
            RoomStats::set(&stats.outbox_pending_max, most as u64);
            if let Some((p50, p99, max)) = durations.summary() {
                RoomStats::set(&stats.tick_p50_us, u64::from(p50));
                RoomStats::set(&stats.tick_p99_us, u64::from(p99));
                RoomStats::set(&stats.tick_max_us, u64::from(max));
            }
        }
    }
    tracing::debug!(room = %room.core().name(), "room thread stopped");
}

/// Hands the room at most `max` commands waiting in `rx`.
fn drain<S: Simulation>(
    room: &mut Room<S>,
    rx: &Receiver<Command<S::Event>>,
    max: usize,
) -> Drained {
    let mut n = 0;
    while n < max as u64 {
        match rx.try_recv() {
            Ok(cmd) => {
                n += 1;
                if !room.handle(cmd) {
                    return Drained::Stop(n);
                }
            }
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => {
                room.close_all(LeaveReason::Shutdown);
                return Drained::Stop(n);
            }
        }
    }
    Drained::Going(n)
}

/// Marks the room stopped however its thread ends.
struct StoppedOnDrop(Arc<RoomStats>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        RoomStats::set(&self.0.sessions, 0);
        self.0.stopped.store(true, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CommandError, Drain, JoinRequest, NoEvent, Outbox, RoomCore, SessionId};
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};
    use tickroom_proto::v1::{Welcome, client_message::Body};

    /// Admits everyone; panics on any client message.
    struct Fragile;
    impl Simulation for Fragile {
        type Event = NoEvent;
        fn kind(&self) -> RoomKind {
            RoomKind::Game
        }
        fn join(&mut self, _: &mut RoomCore, _: &JoinRequest) -> Result<Welcome, CommandError> {
            Ok(Welcome::default())
        }
        fn leave(&mut self, _: &mut RoomCore, _: SessionId, _: LeaveReason) {}
        fn command(&mut self, _: &mut RoomCore, _: SessionId, _: Body) -> Result<(), CommandError> {
            panic!("a bug in the simulation")
        }
        fn event(&mut self, _: &mut RoomCore, e: NoEvent) {
            match e {}
        }
        fn step(&mut self, _: &mut RoomCore) {}
        fn replicate(&mut self, _: &mut RoomCore) {}
    }

    /// Counts what the driver hands it, and how often its waker is woken.
    #[derive(Default)]
    struct Counting {
        queued: AtomicUsize,
        woken: Arc<AtomicUsize>,
    }
    struct CountWakes(Arc<AtomicUsize>);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }
    impl Drain for Counting {
        fn queue(self: Arc<Self>) -> Option<Waker> {
            self.queued.fetch_add(1, Relaxed);
            Some(Waker::from(Arc::new(CountWakes(self.woken.clone()))))
        }
    }

    fn cfg(hz: u32, channel: usize) -> DriverConfig {
        DriverConfig {
            tick_rate_hz: hz,
            command_channel: channel,
            max_catchup_ticks: 3,
        }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_full_channel_is_an_answer_not_a_block_and_stop_is_idempotent() {
        let (room, _) = spawn_room(1, "t", Fragile, cfg(1, 2), &Metrics::new()).unwrap();
        let leave = || SessionCommand::Leave {
            session: 1,
            reason: LeaveReason::Left,
        };
        room.send(leave()).unwrap();
        room.send(leave()).unwrap();
        assert_eq!(room.send(leave()), Err(SendError::Full));
        room.stop();
        room.stop();
        assert!(room.stats.stopped.load(Relaxed));
        assert_eq!(room.send(leave()), Err(SendError::Gone));
    }

    #[test]
    fn the_driver_hands_new_frames_to_the_drain_and_a_panic_ends_only_the_room() {
        let metrics = Metrics::new();
        let (room, _) = spawn_room(1, "t", Fragile, cfg(100, 16), &metrics).unwrap();
        let outbox = Arc::new(Outbox::new(8));
        let drain = Arc::new(Counting::default());
        let weak: Arc<dyn Drain> = drain.clone();
        outbox.attach(Arc::downgrade(&weak));
        let (tx, rx) = std::sync::mpsc::channel();
        room.send(SessionCommand::Join(JoinRequest {
            session: 7,
            outbox: outbox.clone(),
            resume_token: String::new(),
            name: String::new(),
            protocol: 0,
            reply: Some(Box::new(move |ok| tx.send(ok).unwrap())),
        }))
        .unwrap();
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        // The welcome is in the outbox, and the drain heard of it and was woken.
        wait_for("the drain is told", || drain.woken.load(Relaxed) == 1);
        assert_eq!(drain.queued.load(Relaxed), 1);
        assert_eq!(outbox.len(), 1);
        room.send(SessionCommand::Client {
            session: 7,
            body: Body::Leave(Default::default()),
        })
        .unwrap();
        wait_for("the room stops", || room.stats.stopped.load(Relaxed));
        assert_eq!(outbox.close_reason(), Some(LeaveReason::Shutdown));
        assert_eq!(
            drain.queued.load(Relaxed),
            2,
            "its writer heard of the close"
        );
        assert_eq!(
            room.send(SessionCommand::Leave {
                session: 7,
                reason: LeaveReason::Left
            }),
            Err(SendError::Gone)
        );
        room.stop();
    }
}
