//! A joined client's life until it leaves, the same for every scenario: it reads what the
//! server sends, sends on a timer while it has something to say, leaves at its deadline or at
//! the run's stop, and notes how the connection ended. A scenario says what a frame means and
//! what to send ([`Talk`]); [`talk`] is the loop.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::swarm::{Conn, Swarm, Ws};

/// What a frame does to the talk.
pub enum Step {
    Stay,
    Leave,
}

/// The send timer: its period, its first tick `phase` after the join, and what it does with
/// ticks it missed.
pub struct Pace {
    pub period: Duration,
    pub phase: Duration,
    pub missed: MissedTickBehavior,
}

impl Pace {
    /// Ticks spread over the period by the client's number (golden-ratio phases), so that a
    /// swarm's sends do not burst together.
    pub fn spread(id: usize, period: Duration, missed: MissedTickBehavior) -> Pace {
        Pace {
            period,
            phase: period.mul_f64((id as f64 * 0.618_033_988_75).fract()),
            missed,
        }
    }
}

/// What a scenario's client does in [`talk`]. Every hook but [`Talk::frame`] has a default
/// that does nothing.
pub trait Talk {
    /// A message to send once before the loop (the ticker's Subscribe).
    fn opening(&mut self) -> Option<Vec<u8>> {
        None
    }

    /// A binary frame arrived at `now`; `conn` has counted it.
    fn frame(&mut self, conn: &mut Conn, frame: Bytes, now: Instant) -> Step;

    /// A WebSocket ping arrived (tungstenite answers it while reading).
    fn ping(&mut self) {}

    /// The connection ended before the client left: the server closed it, or it failed.
    fn ended(&mut self) {}

    /// Whether the send timer runs now (asked before each wait).
    fn sending(&self) -> bool {
        false
    }

    /// The message to send at a tick of the send timer.
    fn outgoing(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// The message of [`Talk::outgoing`] went out.
    fn sent(&mut self) {}

    /// When to leave unless something ends the talk first (asked before each wait).
    fn deadline(&self) -> Option<Instant> {
        None
    }

    /// The deadline came; the client leaves.
    fn expired(&mut self) {}
}

/// Runs `talk` on joined client `id`'s socket until it leaves (a frame says so, its deadline
/// passes, or the run stops) or the connection ends; a failed send ends it as the client's
/// own. Returns whether the server closed the connection, which [`crate::swarm::leave`] takes.
pub async fn talk(
    swarm: &Swarm,
    conn: &mut Conn,
    id: usize,
    ws: &mut Ws,
    stop: &mut watch::Receiver<bool>,
    pace: Option<Pace>,
    talk: &mut impl Talk,
) -> bool {
    if let Some(first) = talk.opening()
        && let Err(e) = ws.send(Message::Binary(first.into())).await
    {
        tracing::debug!(client = id, "send failed: {e}");
        conn.ended_early = true;
        talk.ended();
        return false;
    }
    let mut timer = pace.map(|p| {
        let mut t = tokio::time::interval_at(Instant::now() + p.phase, p.period);
        t.set_missed_tick_behavior(p.missed);
        t
    });
    // One timer for the deadline, moved when the deadline moves: a sleep made per wait would
    // cost a timer registration per frame.
    let wake = tokio::time::sleep_until(Instant::now());
    tokio::pin!(wake);
    let mut armed: Option<Instant> = None;
    loop {
        let deadline = talk.deadline();
        if deadline != armed {
            if let Some(at) = deadline {
                wake.as_mut().reset(at);
            }
            armed = deadline;
        }
        let sending = timer.is_some() && talk.sending();
        tokio::select! {
            item = ws.next() => {
                if matches!(&item, Some(Ok(Message::Ping(_)))) {
                    talk.ping();
                }
                match conn.skim(swarm, item) {
                    Ok(Some((frame, now))) => {
                        if let Step::Leave = talk.frame(conn, frame, now) {
                            return false;
                        }
                    }
                    Ok(None) => {}
                    Err(end) => {
                        let server_closed = conn.ended(id, end);
                        talk.ended();
                        return server_closed;
                    }
                }
            }
            _ = tick(&mut timer), if sending => {
                let message = talk.outgoing();
                if let Err(e) = ws.send(Message::Binary(message.into())).await {
                    tracing::debug!(client = id, "send failed: {e}");
                    conn.ended_early = true;
                    return false;
                }
                talk.sent();
            }
            _ = &mut wake, if armed.is_some() => {
                talk.expired();
                return false;
            }
            _ = stop.changed() => return false,
        }
    }
}

/// The send timer's next tick (only awaited while there is one).
async fn tick(timer: &mut Option<Interval>) {
    if let Some(t) = timer {
        t.tick().await;
    }
}
