//! The owner thread of a room: sleeps to the next tick, drains the command channel, runs the
//! tick and publishes its figures. The only code that touches the room's state.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use tickroom_proto::v1::RoomKind;

use super::{Command, Room, RoomStats, Simulation, TickDurations, TickSchedule, unix_time_us};
use crate::outbox::CloseReason;

/// A command could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("room command queue is full")]
    Full,
    #[error("room is gone")]
    Gone,
}

/// The rest of the process's view of a running room.
#[derive(Debug)]
pub struct RoomHandle {
    pub name: Arc<str>,
    pub kind: RoomKind,
    pub tick_rate_hz: u32,
    pub stats: Arc<RoomStats>,
    tx: Sender<Command>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RoomHandle {
    /// Queues a command without blocking: async tasks must never wait on a room.
    pub fn send(&self, cmd: Command) -> Result<(), SendError> {
        self.tx.try_send(cmd).map_err(|e| match e {
            TrySendError::Full(_) => SendError::Full,
            TrySendError::Disconnected(_) => SendError::Gone,
        })
    }

    /// Queues a command, waiting while the channel is full: for a feed thread, where
    /// back-pressure is right and losing quotes is not. Gives up when `stop` is set.
    pub fn send_blocking(
        &self,
        mut cmd: Command,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<(), SendError> {
        loop {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
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

    /// Commands waiting in the channel.
    pub fn queue_depth(&self) -> usize {
        self.tx.len()
    }

    pub fn tick_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / f64::from(self.tick_rate_hz))
    }

    /// Asks the room to stop and waits for its thread. Safe to call more than once.
    pub fn stop(&self) {
        // A full channel still ends the thread: the room also stops when every sender is
        // gone, but the handle keeps one, so retry until the command fits.
        while let Err(TrySendError::Full(_)) = self.tx.try_send(Command::Shutdown) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
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

/// Starts `sim` on its own named OS thread.
pub fn spawn_room<S: Simulation>(
    name: &str,
    sim: S,
    cfg: DriverConfig,
) -> std::io::Result<Arc<RoomHandle>> {
    let (tx, rx) = bounded(cfg.command_channel);
    let stats = Arc::new(RoomStats::default());
    let name: Arc<str> = name.into();
    let kind = sim.kind();
    let room = Room::new(name.clone(), cfg.tick_rate_hz, sim);
    // Thread names show in flamegraphs; Linux keeps 15 bytes.
    let thread_name: String = format!("room-{name}").chars().take(15).collect();
    let thread = std::thread::Builder::new().name(thread_name).spawn({
        let stats = stats.clone();
        move || run(room, rx, stats, cfg)
    })?;
    Ok(Arc::new(RoomHandle {
        name,
        kind,
        tick_rate_hz: cfg.tick_rate_hz,
        stats,
        tx,
        thread: std::sync::Mutex::new(Some(thread)),
    }))
}

fn run<S: Simulation>(
    mut room: Room<S>,
    rx: Receiver<Command>,
    stats: Arc<RoomStats>,
    cfg: DriverConfig,
) {
    let _stopped = StoppedOnDrop(stats.clone());
    let metrics = crate::metrics::RoomMetrics::new(room.core().kind(), room.core().name());
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.tick_rate_hz.max(1)));
    let mut schedule = TickSchedule::new(Instant::now(), period, cfg.max_catchup_ticks);
    let mut durations = TickDurations::new(1024);
    let mut next_summary = Instant::now() + Duration::from_secs(1);
    // Draining at most the channel's capacity per tick bounds a tick's cost under a flood.
    let max_drain = cfg.command_channel;
    'ticks: loop {
        let deadline = schedule.deadline();
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        let started = Instant::now();
        let start = schedule.begin(started);
        room.begin_tick(start.tick, unix_time_us());
        let mut drained = 0;
        while drained < max_drain {
            match rx.try_recv() {
                Ok(cmd) => {
                    drained += 1;
                    if !room.handle(cmd) {
                        break 'ticks;
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => break 'ticks,
            }
        }
        room.run_tick();
        let ended = Instant::now();
        durations.record(ended - started);

        RoomStats::set(&stats.tick, start.tick);
        RoomStats::add(&stats.ticks_total, 1);
        RoomStats::add(&stats.commands_total, drained as u64);
        RoomStats::add(&stats.skipped_ticks_total, start.skipped);
        let overrun = schedule.end(ended);
        if overrun {
            RoomStats::add(&stats.overruns_total, 1);
        }
        let timings = room.timings();
        metrics.record_tick(
            ended - started,
            timings.encode,
            timings.handout,
            overrun,
            start.skipped,
            rx.len(),
        );
        RoomStats::set(&stats.sessions, room.core().member_count() as u64);
        RoomStats::set(&stats.last_tick_end_us, unix_time_us() as u64);
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
    room.close_all(CloseReason::RoomClosed);
    tracing::debug!(room = %room.core().name(), "room thread stopped");
}

/// Marks the room stopped however its thread ends, a panic included.
struct StoppedOnDrop(Arc<RoomStats>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        RoomStats::set(&self.0.sessions, 0);
        self.0
            .stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CommandError, JoinRequest, LeaveReason, RoomCore, SessionId};
    use tickroom_proto::v1::{Welcome, client_message::Body};

    struct Idle;
    impl Simulation for Idle {
        fn kind(&self) -> RoomKind {
            RoomKind::Game
        }
        fn join(&mut self, _: &mut RoomCore, _: &JoinRequest) -> Result<Welcome, CommandError> {
            Ok(Welcome::default())
        }
        fn leave(&mut self, _: &mut RoomCore, _: SessionId, _: LeaveReason) {}
        fn command(&mut self, _: &mut RoomCore, _: SessionId, _: Body) -> Result<(), CommandError> {
            Ok(())
        }
        fn step(&mut self, _: &mut RoomCore) {}
        fn replicate(&mut self, _: &mut RoomCore) {}
    }

    #[test]
    fn a_full_channel_is_an_answer_not_a_block_and_stop_is_idempotent() {
        let cfg = DriverConfig {
            tick_rate_hz: 1,
            command_channel: 2,
            max_catchup_ticks: 3,
        };
        let room = spawn_room("t", Idle, cfg).unwrap();
        let leave = || Command::Leave {
            session: 1,
            reason: LeaveReason::Left,
        };
        room.send(leave()).unwrap();
        room.send(leave()).unwrap();
        assert_eq!(room.send(leave()), Err(SendError::Full));
        room.stop();
        room.stop();
        assert!(
            room.stats
                .stopped
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        assert_eq!(room.send(leave()), Err(SendError::Gone));
    }
}
