//! One WebSocket session: a reader task that decodes client messages and routes them to the
//! room, and a writer task that drains the outbox with one flush per wake-up.
//!
//! Teardown is idempotent: whoever notices the end first (reader: close, error, timeout,
//! bad input; writer: write error; room: slow consumer, kick; server: shutdown) closes the
//! outbox with its reason, and everything else follows from that one closed flag.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use prost::Message as _;
use tickroom_proto::v1::{
    ClientMessage, Error as ErrorMsg, ErrorCode, Join, Pong, ServerMessage, Subscribe,
    client_message::Body, server_message::Body as ServerBody,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{
    self, Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::prepared::{Prepared, PreparedSessions};
use crate::config::SessionConfig;
use crate::engine::{
    Command, JoinRequest, LeaveReason, Registry, RegistryError, RoomHandle, RoomStats, SendError,
    SessionId, unix_time_us,
};
use crate::metrics::HOT;
use crate::outbox::{CloseReason, Outbox};
use crate::rate_limit::{RateLimiter, Verdict};

/// How long a closing session keeps reading for the peer's close reply, and how long the
/// writer tries to deliver its close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a join waits for the room's answer before the session gives up on it.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What every session shares: the rooms, the limits, the shutdown signal and the figures.
#[derive(Debug)]
pub struct SessionHub {
    pub registry: Arc<Registry>,
    pub config: SessionConfig,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// Sessions prepared with `POST /api/v1/sessions`.
    pub prepared: PreparedSessions,
    next_id: AtomicU64,
    active: AtomicU64,
}

impl SessionHub {
    pub fn new(
        registry: Arc<Registry>,
        config: SessionConfig,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        metrics: metrics_exporter_prometheus::PrometheusHandle,
        prepared: PreparedSessions,
    ) -> Self {
        Self {
            registry,
            config,
            shutdown,
            tracker,
            metrics,
            prepared,
            next_id: AtomicU64::new(1),
            active: AtomicU64::new(0),
        }
    }

    /// Sessions currently connected.
    pub fn active(&self) -> u64 {
        self.active.load(Relaxed)
    }
}

/// Keeps the active-session count true however the session ends.
struct ActiveGuard<'a>(&'a AtomicU64);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// How a session begins.
#[derive(Debug)]
pub enum Start {
    /// The client sends Join (and whatever its room takes).
    Plain,
    /// `/ws?session=ID` of a prepared session: join its room and subscribe to its symbols
    /// with no message from the client.
    Prepared(Prepared),
    /// `/ws?session=ID` with an id that is unknown or expired: close at once with a reason.
    UnknownPrepared,
}

/// Detaches a prepared session however the WebSocket ends, so its ttl starts again.
struct Detach<'a>(&'a PreparedSessions, String);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.0.detach(&self.1, std::time::Instant::now());
    }
}

/// Runs a session to its end. `keep` is held for the session's lifetime (connection limit).
pub async fn run_session<S, K>(
    ws: WebSocketStream<S>,
    hub: Arc<SessionHub>,
    peer: SocketAddr,
    start: Start,
    keep: K,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    K: Send + 'static,
{
    hub.active.fetch_add(1, Relaxed);
    let _active = ActiveGuard(&hub.active);
    let id = hub.next_id.fetch_add(1, Relaxed);
    let outbox = Arc::new(Outbox::new(hub.config.reliable_queue));
    let token = hub.shutdown.child_token();
    let (sink, stream) = ws.split();
    let writer = hub.tracker.spawn(write_loop(
        sink,
        outbox.clone(),
        token.clone(),
        hub.config.ping_interval(),
    ));
    tracing::debug!(session = id, %peer, "session started");

    let mut reader = Reader {
        id,
        peer: peer.ip(),
        hub: &hub,
        outbox: &outbox,
        room: None,
        limiter: RateLimiter::new(
            hub.config.rate_per_sec,
            hub.config.rate_burst,
            hub.config.abuse_drops,
            hub.config.abuse_window(),
            Instant::now().into_std(),
        ),
        buf: BytesMut::new(),
    };
    let mut _detach = None;
    match start {
        Start::Plain => {}
        Start::UnknownPrepared => {
            outbox.close(CloseReason::UnknownSession);
        }
        Start::Prepared(p) => {
            _detach = Some(Detach(&hub.prepared, p.id));
            reader
                .join(Join {
                    room: p.room.to_string(),
                    ..Default::default()
                })
                .await;
            if reader.room.is_some() {
                reader.forward_to_room(Body::Subscribe(Subscribe {
                    symbols: p.symbols.to_vec(),
                }));
            }
        }
    }
    let mut stream = stream;
    let reason = reader.read_loop(&mut stream, &token).await;
    // First reason wins: a writer or room that closed first keeps its own.
    outbox.close(reason);
    let reason = outbox.close_reason().unwrap_or(reason);
    if let Some(room) = reader.room.take() {
        // If the queue is full the room's sweep still finds the closed outbox.
        let _ = room.send(Command::Leave {
            session: id,
            reason: LeaveReason::Closed(reason),
        });
    }
    if !matches!(reason, CloseReason::PeerGone) {
        // Read on (and discard) until the peer answers our close frame or goes away, so
        // unread bytes do not turn our close into a reset that loses the close frame.
        let _ = tokio::time::timeout(CLOSE_LINGER * 2, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    }
    token.cancel();
    let _ = writer.await;
    crate::metrics::connection_closed(reason);
    drop(keep);
    tracing::debug!(session = id, reason = reason.as_str(), "session ended");
}

struct Reader<'a> {
    id: SessionId,
    peer: std::net::IpAddr,
    hub: &'a SessionHub,
    outbox: &'a Arc<Outbox>,
    room: Option<Arc<RoomHandle>>,
    limiter: RateLimiter,
    buf: BytesMut,
}

impl Reader<'_> {
    async fn read_loop<St>(&mut self, stream: &mut St, token: &CancellationToken) -> CloseReason
    where
        St: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
    {
        let idle_timeout = self.hub.config.idle_timeout();
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        loop {
            let msg = tokio::select! {
                biased;
                _ = token.cancelled() => {
                    return self.outbox.close_reason().unwrap_or(CloseReason::ShuttingDown);
                }
                // The room or the writer ended the session (slow consumer, kick, write error).
                _ = self.outbox.closed() => {
                    return self.outbox.close_reason().unwrap_or(CloseReason::PeerGone);
                }
                _ = &mut idle => return CloseReason::HeartbeatTimeout,
                msg = stream.next() => msg,
            };
            idle.as_mut().reset(Instant::now() + idle_timeout);
            match msg {
                None => return CloseReason::PeerGone,
                Some(Err(e)) => return read_error_reason(&e),
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(reason) = self.on_binary(bytes).await {
                        return reason;
                    }
                }
                Some(Ok(Message::Text(_))) => return CloseReason::TextFrame,
                Some(Ok(Message::Close(_))) => return CloseReason::ClientClosed,
                // Pings are answered by tungstenite; any frame proves the peer alive.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            }
        }
    }

    async fn on_binary(&mut self, bytes: Bytes) -> Option<CloseReason> {
        match self.limiter.check(Instant::now().into_std()) {
            Verdict::Allow => {}
            Verdict::Drop { notify } => {
                crate::metrics::message_rejected(ErrorCode::RateLimited);
                if notify {
                    self.send_error(
                        ErrorCode::RateLimited,
                        "message rate limit exceeded: messages are being dropped",
                    );
                }
                return None;
            }
            Verdict::Abuse => return Some(CloseReason::RateAbuse),
        }
        let msg = match ClientMessage::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.send_error(ErrorCode::Malformed, &format!("not a ClientMessage: {e}"));
                return None;
            }
        };
        match msg.body {
            None => self.send_error(
                ErrorCode::UnknownMessage,
                "ClientMessage has no body this server knows",
            ),
            Some(Body::Join(join)) => self.join(join).await,
            Some(Body::Leave(_)) => {
                if self.room.is_none() {
                    self.send_error(ErrorCode::NotInRoom, "not in a room");
                } else if let Err(e) = self.leave_room() {
                    self.send_error(ErrorCode::Busy, &format!("leave: {e}; try again"));
                }
            }
            Some(Body::Ping(ping)) => {
                let pong = ServerBody::Pong(Pong {
                    client_time_us: ping.client_time_us,
                    server_time_us: unix_time_us(),
                });
                self.send(pong);
            }
            // An address blocked after this connection opened can still not send.
            Some(Body::ChatSend(_)) if self.hub.registry.blocks().ip_blocked(self.peer) => {
                self.send_error(ErrorCode::Blocked, "your address is blocked from sending");
            }
            Some(body) => self.forward_to_room(body),
        }
        None
    }

    async fn join(&mut self, join: Join) {
        if join.room.is_empty() {
            return self.send_error(ErrorCode::InvalidArgument, "join: room is empty");
        }
        if join.resume_token.len() > 128 {
            return self.send_error(ErrorCode::InvalidArgument, "join: resume_token too long");
        }
        if let Err(e) = self.leave_room() {
            return self.send_error(ErrorCode::Busy, &format!("leaving the current room: {e}"));
        }
        let room = match self.hub.registry.get_or_create(&join.room) {
            Ok(room) => room,
            Err(e) => {
                let code = match e {
                    RegistryError::NotFound(_) => ErrorCode::RoomNotFound,
                    RegistryError::BadName(_) => ErrorCode::InvalidArgument,
                    _ => ErrorCode::Unavailable,
                };
                return self.send_error(code, &e.to_string());
            }
        };
        let (reply, joined) = tokio::sync::oneshot::channel();
        let cmd = Command::Join(JoinRequest {
            session: self.id,
            outbox: self.outbox.clone(),
            resume_token: join.resume_token,
            name: join.name,
            reply: Some(reply),
        });
        if let Err(e) = room.send(cmd) {
            return self.send_error(send_error_code(e), &format!("join: {e}"));
        }
        // Waiting here (one tick at most, normally) keeps the session's idea of its room
        // true: after a refused join, later inputs are answered NOT_IN_ROOM. The room has
        // already sent the client its Welcome or Error.
        match tokio::time::timeout(JOIN_TIMEOUT, joined).await {
            Ok(Ok(true)) => self.room = Some(room),
            Ok(Ok(false)) => {}
            // The room stopped before answering.
            Ok(Err(_)) => self.send_error(ErrorCode::Unavailable, "join: room stopped"),
            Err(_) => {
                // The join may still be applied later; leave so nothing is left behind.
                let _ = room.send(Command::Leave {
                    session: self.id,
                    reason: LeaveReason::Left,
                });
                self.send_error(ErrorCode::Busy, "join: the room did not answer in time");
            }
        }
    }

    /// Leaves the current room, if any. A full room queue keeps the session in the room
    /// (the client is told and may retry); a vanished room counts as left.
    fn leave_room(&mut self) -> Result<(), SendError> {
        let Some(room) = &self.room else {
            return Ok(());
        };
        match room.send(Command::Leave {
            session: self.id,
            reason: LeaveReason::Left,
        }) {
            Err(SendError::Full) => Err(SendError::Full),
            Ok(()) | Err(SendError::Gone) => {
                self.room = None;
                Ok(())
            }
        }
    }

    fn forward_to_room(&mut self, body: Body) {
        let Some(room) = &self.room else {
            return self.send_error(ErrorCode::NotInRoom, "join a room first");
        };
        if let Err(e) = room.send(Command::Client {
            session: self.id,
            body,
        }) {
            if e == SendError::Gone {
                self.room = None;
            }
            self.send_error(send_error_code(e), &e.to_string());
        }
    }

    fn send_error(&mut self, code: ErrorCode, message: &str) {
        // Rate-limit drops are counted where they happen, one per dropped message.
        if code != ErrorCode::RateLimited {
            crate::metrics::message_rejected(code);
        }
        self.send(ServerBody::Error(ErrorMsg {
            code: code as i32,
            message: message.to_owned(),
        }));
    }

    /// Queues a message of the session's own (pong, error) on the reliable path.
    fn send(&mut self, body: ServerBody) {
        let tick = self
            .room
            .as_ref()
            .map_or(0, |r| RoomStats::get(&r.stats.tick));
        let msg = ServerMessage {
            tick,
            body: Some(body),
        };
        self.buf.reserve(msg.encoded_len());
        msg.encode(&mut self.buf).expect("reserved");
        // On overflow the outbox closes itself as a slow consumer; the writer reports it.
        let _ = self.outbox.push_reliable(self.buf.split().freeze());
    }
}

fn send_error_code(e: SendError) -> ErrorCode {
    match e {
        SendError::Full => ErrorCode::Busy,
        SendError::Gone => ErrorCode::Unavailable,
    }
}

fn read_error_reason(e: &tungstenite::Error) -> CloseReason {
    use tungstenite::Error as E;
    use tungstenite::error::ProtocolError as P;
    match e {
        E::Capacity(_) => CloseReason::MessageTooBig,
        // A TCP close without a close frame is a lost connection, not a bad client: the
        // avatar stays resumable.
        E::Protocol(P::ResetWithoutClosingHandshake) => CloseReason::PeerGone,
        E::Protocol(_) | E::Utf8(_) => CloseReason::ProtocolError,
        _ => CloseReason::PeerGone,
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Sends everything pending, then flushes once: one socket write per wake-up.
async fn write_batch<S>(
    sink: &mut Sink<S>,
    batch: &mut Vec<Bytes>,
) -> Result<(), tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frames = batch.len() as u64;
    let bytes: usize = batch.iter().map(Bytes::len).sum();
    for frame in batch.drain(..) {
        sink.feed(Message::Binary(frame)).await?;
    }
    sink.flush().await?;
    HOT.frames_written.fetch_add(frames, Relaxed);
    HOT.bytes_written.fetch_add(bytes as u64, Relaxed);
    HOT.flushes.fetch_add(1, Relaxed);
    Ok(())
}

async fn write_loop<S>(
    mut sink: Sink<S>,
    outbox: Arc<Outbox>,
    token: CancellationToken,
    ping_every: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut batch: Vec<Bytes> = Vec::new();
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                outbox.close(CloseReason::ShuttingDown);
            }
            _ = outbox.ready() => {}
            _ = ping.tick() => {
                if sink.feed(Message::Ping(Bytes::new())).await.is_err() {
                    break CloseReason::PeerGone;
                }
            }
        }
        let taken = outbox.take(&mut batch);
        let write = write_batch(&mut sink, &mut batch);
        let written = if taken.closed.is_some() {
            // Last frames before the close frame: worth a bounded try, no more.
            matches!(tokio::time::timeout(CLOSE_LINGER, write).await, Ok(Ok(())))
        } else {
            // A peer that stopped reading must not hold the writer past the session's end.
            tokio::select! {
                biased;
                r = write => r.is_ok(),
                _ = token.cancelled() => false,
                _ = outbox.closed() => false,
            }
        };
        if let Some(reason) = taken.closed {
            break reason;
        }
        if !written {
            outbox.close(CloseReason::PeerGone);
            break outbox.close_reason().unwrap_or(CloseReason::PeerGone);
        }
    };
    // The batch's memory goes with the session, not kept for a next write that never comes.
    drop(batch);
    if reason != CloseReason::PeerGone {
        let (code, text) = reason.close_code();
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: text.into(),
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, sink.send(Message::Close(Some(frame)))).await;
    }
    outbox.close(reason);
    token.cancel();
}
