//! One WebSocket session: a reader task that decodes client messages and routes them to the
//! room, and a writer task for pings, a full socket and the close; in steady state a flusher
//! (`flusher`) writes the room's frames, one `writev` per session per tick.
//!
//! Teardown is idempotent: whoever notices the end first (reader: close, error, timeout,
//! bad input; writer and flusher: write error; room: slow consumer, kick; server: shutdown)
//! closes the session with its reason ([`Wire::close`], or the room through the outbox), and
//! everything else follows from that one decision.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use prost::Message as _;
use tickroom_proto::v1::{
    ClientMessage, Error as ErrorMsg, ErrorCode, Join, Pong, ServerMessage, Subscribe,
    client_message::Body, server_message::Body as ServerBody,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, protocol::Role};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::close::CloseReason;
use super::flusher::{Flushers, Link};
use super::prepared::{Prepared, PreparedSessions};
use super::wire::{
    PING_FRAME, ReadLimits, Wire, WireIo, WriteState, close_frame, set_unsent_bound,
};
use crate::auth::{Identity, Perm};
use crate::clock::unix_time_us;
use crate::cluster::rooms::{Lease, Owner};
use crate::config::SessionConfig;
use crate::engine::{JoinRequest, LeaveReason, Outbox, SessionCommand, SessionId};
use crate::metrics::Metrics;
use crate::rate_limit::{RateLimiter, Verdict};
use crate::rooms::{Registry, RegistryError, RoomHandle, RoomStats, SendError};

/// How long a closing session keeps reading for the peer's close reply, and how long the
/// writer tries to deliver its close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a join waits for the room's answer before the session gives up on it.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// WebSocket limits for one session: small buffers, since an idle session should cost a
/// few KB (client messages are small; the read buffer grows while a larger one arrives), and
/// messages capped at the configured size (larger ones close with 1009).
pub fn ws_config(cfg: &SessionConfig) -> WebSocketConfig {
    let max = cfg.max_message_bytes;
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(64 * 1024)
        .max_write_buffer_size(64 * 1024 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// What every session shares: the rooms, the limits, the shutdown signal and the figures.
#[derive(Debug)]
pub struct SessionHub {
    pub registry: Arc<Registry>,
    pub config: SessionConfig,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub metrics: Arc<Metrics>,
    /// Checks the clients' tokens.
    pub auth: Arc<crate::auth::Verifier>,
    /// Sessions prepared with `POST /api/v1/sessions`.
    pub prepared: PreparedSessions,
    /// The bus and this node's place in the cluster; `None` for a single node.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    flushers: Flushers,
    next_id: AtomicU64,
    active: AtomicU64,
}

impl SessionHub {
    pub fn new(
        registry: Arc<Registry>,
        config: SessionConfig,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        metrics: Arc<Metrics>,
        auth: Arc<crate::auth::Verifier>,
        prepared: PreparedSessions,
    ) -> Self {
        let flushers = Flushers::start(&tracker, &shutdown, &metrics);
        for reason in CloseReason::ALL {
            metrics
                .counter(
                    "tickroom_connections_closed_total",
                    &[("reason", reason.as_str())],
                )
                .increment(0);
        }
        Self {
            registry,
            config,
            shutdown,
            tracker,
            metrics,
            auth,
            prepared,
            cluster: None,
            flushers,
            next_id: AtomicU64::new(1),
            active: AtomicU64::new(0),
        }
    }

    /// Makes the hub a cluster node's.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::Cluster>>) -> Self {
        self.cluster = cluster;
        self
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

/// Runs a session to its end on `tcp`, an upgraded connection; `read` holds what the HTTP
/// layer read past the upgrade request. `keep` is held for the session's lifetime
/// (connection limit).
pub async fn run_session<K>(
    tcp: TcpStream,
    read: Vec<u8>,
    hub: Arc<SessionHub>,
    peer: SocketAddr,
    start: Start,
    identity: Identity,
    keep: K,
) where
    K: Send + 'static,
{
    hub.active.fetch_add(1, Relaxed);
    let _active = ActiveGuard(&hub.active);
    let id = hub.next_id.fetch_add(1, Relaxed);
    let outbox = Arc::new(Outbox::new(hub.config.reliable_queue));
    let max_unsent = hub.config.max_unsent_bytes;
    if max_unsent > 0
        && let Err(e) = set_unsent_bound(&tcp, max_unsent)
    {
        tracing::debug!(%peer, error = %e, "cannot bound the socket's unsent bytes");
    }
    let wire = Wire::new(tcp, outbox.clone(), max_unsent);
    let link = Link::attach(wire.clone(), hub.flushers.shard(id));
    let mut io = wire.io(ReadLimits {
        bytes_per_sec: hub.config.read_bytes_per_sec as f64,
        burst_bytes: hub.config.read_burst_bytes as f64,
    });
    io.already_read(&read);
    let mut stream =
        WebSocketStream::from_partially_read(io, read, Role::Server, Some(ws_config(&hub.config)))
            .await;
    let token = hub.shutdown.child_token();
    let writer = hub.tracker.spawn(write_loop(
        wire.clone(),
        token.clone(),
        hub.config.ping_interval(),
        hub.config.stall_timeout(),
        hub.metrics.clone(),
    ));
    tracing::debug!(session = id, %peer, "session started");

    let mut reader = Reader {
        id,
        peer: peer.ip(),
        identity,
        hub: &hub,
        wire: &wire,
        link: &link,
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
            wire.close(CloseReason::UnknownSession);
        }
        Start::Prepared(p) => {
            // The newest WebSocket on a prepared session wins, like a game resume.
            if let Some(older) = hub.prepared.hold(&p.id, &wire) {
                older.close(CloseReason::ResumedElsewhere);
            }
            _detach = Some(Detach(&hub.prepared, p.id));
            Box::pin(reader.join(Join {
                room: p.room.to_string(),
                ..Default::default()
            }))
            .await;
            if reader.room.is_some()
                && let Ok(ticker) = hub.registry.ticker(Some(&p.room))
            {
                let symbols = p
                    .symbols
                    .iter()
                    .map(|&i| ticker.symbols.name(i).to_owned())
                    .collect();
                reader.forward_to_room(Body::Subscribe(Subscribe { symbols }));
            }
        }
    }
    let reason = reader.read_loop(&mut stream).await;
    // First reason wins: a writer or room that closed first keeps its own.
    wire.close(reason);
    let reason = wire.close_reason().unwrap_or(reason);
    if let Some(room) = reader.room.take() {
        // If the queue is full the room's sweep still finds the closed outbox.
        let _ = room.send(SessionCommand::Leave {
            session: id,
            reason: reason.leave_reason(),
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
    hub.metrics
        .connection_closed(reason.as_str(), reason == CloseReason::SlowConsumer);
    drop(link);
    drop(keep);
    tracing::debug!(session = id, reason = reason.as_str(), "session ended");
}

struct Reader<'a> {
    id: SessionId,
    peer: std::net::IpAddr,
    /// Who the client is and what it may do.
    identity: Identity,
    hub: &'a SessionHub,
    wire: &'a Arc<Wire>,
    link: &'a Arc<Link>,
    room: Option<Arc<RoomHandle>>,
    limiter: RateLimiter,
    buf: BytesMut,
}

impl Reader<'_> {
    async fn read_loop(&mut self, stream: &mut WebSocketStream<WireIo>) -> CloseReason {
        let idle_timeout = self.hub.config.idle_timeout();
        let message_timeout = self.hub.config.message_timeout();
        // The deadline moves only when the timer fires (to last frame + timeout): resetting
        // a timer on every message of every session costs more than the reading.
        let mut last_frame = Instant::now();
        let idle = tokio::time::sleep(idle_timeout);
        // Built once and polled only while no message is waiting: the waiter stays
        // registered, where a fresh future per message would register it again each time.
        let wire = self.wire;
        let ended = wire.ended();
        // The token's expiry ends the session (none: never).
        let left = self.identity.time_left(std::time::SystemTime::now());
        let expiry = tokio::time::sleep(left.unwrap_or(Duration::from_secs(86_400 * 365)));
        tokio::pin!(idle, ended, expiry);
        loop {
            let msg = tokio::select! {
                biased;
                msg = stream.next() => msg,
                _ = &mut expiry, if left.is_some() => return CloseReason::TokenExpired,
                // The room, the writer or the shutdown (the writer closes the session then)
                // ended it: slow consumer, kick, write error.
                _ = &mut ended => {
                    return wire.close_reason().unwrap_or(CloseReason::PeerGone);
                }
                _ = &mut idle => {
                    let now = Instant::now();
                    let deadline = last_frame + idle_timeout;
                    if deadline <= now {
                        // Bytes kept coming but no message from them: a message that never
                        // ends is not a sign of life.
                        if stream.get_ref().partial_for(now.into_std()) >= message_timeout {
                            return CloseReason::MessageTimeout;
                        }
                        return CloseReason::HeartbeatTimeout;
                    }
                    idle.as_mut().reset(deadline);
                    continue;
                }
            };
            // A client that never stops sending still sees its session end.
            if wire.outbox().is_closed() {
                return wire.close_reason().unwrap_or(CloseReason::PeerGone);
            }
            last_frame = Instant::now();
            // Each fragment after a message's first frame counts towards the message rate
            // too: a message cut into many frames costs what that many messages cost.
            for _ in 0..stream.get_mut().take_continuations() {
                if self.limiter.check(last_frame.into_std()) == Verdict::Abuse {
                    return CloseReason::RateAbuse;
                }
            }
            match msg {
                None => return CloseReason::PeerGone,
                Some(Err(e)) => return read_error_reason(&e),
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(reason) = self.on_binary(bytes, last_frame).await {
                        return reason;
                    }
                }
                Some(Ok(Message::Text(_))) => return CloseReason::TextFrame,
                Some(Ok(Message::Close(_))) => return CloseReason::ClientClosed,
                // Pings are answered by tungstenite; any frame proves the peer alive, unless
                // it comes between the fragments of a data message that never ends (a client
                // that only answers heartbeats has none in progress). Pings cost a pong
                // each, so they count towards the message rate.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    if stream.get_ref().partial_for(last_frame.into_std()) >= message_timeout {
                        return CloseReason::MessageTimeout;
                    }
                    if self.limiter.check(last_frame.into_std()) == Verdict::Abuse {
                        return CloseReason::RateAbuse;
                    }
                }
            }
        }
    }

    async fn on_binary(&mut self, bytes: Bytes, now: Instant) -> Option<CloseReason> {
        match self.limiter.check(now.into_std()) {
            Verdict::Allow => {}
            Verdict::Drop { notify } => {
                self.hub.metrics.message_rejected(ErrorCode::RateLimited);
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
            // Boxed: a join's future (cluster lookups included) is kilobytes that every
            // session would otherwise carry inline, in its read loop, for its whole life.
            Some(Body::Join(join)) => Box::pin(self.join(join)).await,
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
            // Flow control is the session's own business: the room never hears of it.
            Some(Body::Ack(ack)) => {
                if self.wire.ack(ack.tick, ack.window) {
                    self.link.requeue();
                }
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
        // The token's rooms and kinds; creating a room is playing.
        let allowed = match self.hub.registry.get(&join.room) {
            Some(room) => self
                .identity
                .may_enter(&join.room, crate::engine::kind_name(room.kind)),
            None => self.identity.may_enter(&join.room, "game") && self.identity.may(Perm::Play),
        };
        if !allowed {
            return self.send_error(
                ErrorCode::Forbidden,
                &format!("join: your token does not allow room {:?}", join.room),
            );
        }
        if let Err(e) = self.leave_room() {
            return self.send_error(ErrorCode::Busy, &format!("leaving the current room: {e}"));
        }
        // In a cluster a game room this node does not run may live elsewhere, or be ours to
        // create once we hold its lease.
        let mut claimed = false;
        if let Some(cluster) = self.hub.cluster.clone()
            && self.hub.registry.get(&join.room).is_none()
        {
            match self.place(&cluster, &join.room).await {
                Ok(Some(Owner::Elsewhere(lease))) => {
                    return self.send_redirect(&cluster, &join.room, &lease);
                }
                Ok(Some(Owner::Here)) => claimed = true,
                Ok(None) => {}
                Err(e) => return self.send_error(ErrorCode::Unavailable, &format!("join: {e}")),
            }
        }
        let room = match self.hub.registry.get_or_create(&join.room, self.peer) {
            Ok(room) => room,
            Err(e) => {
                if claimed && let Some(cluster) = &self.hub.cluster {
                    cluster.release(&join.room).await;
                }
                let code = match e {
                    RegistryError::NotFound(_) => ErrorCode::RoomNotFound,
                    RegistryError::BadName(_) => ErrorCode::InvalidArgument,
                    RegistryError::TooManyRoomsForAddress(_) => ErrorCode::LimitExceeded,
                    _ => ErrorCode::Unavailable,
                };
                return self.send_error(code, &e.to_string());
            }
        };
        let (reply, joined) = tokio::sync::oneshot::channel();
        let cmd = SessionCommand::Join(JoinRequest {
            session: self.id,
            outbox: self.wire.outbox().clone(),
            resume_token: join.resume_token,
            // A signed-in client is shown by its token's name, whatever Join says.
            name: self
                .identity
                .display_name
                .as_deref()
                .map_or(join.name, str::to_owned),
            protocol: join.protocol,
            reply: Some(Box::new(move |ok| {
                let _ = reply.send(ok);
            })),
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
                let _ = room.send(SessionCommand::Leave {
                    session: self.id,
                    reason: LeaveReason::Left,
                });
                self.send_error(ErrorCode::Busy, "join: the room did not answer in time");
            }
        }
    }

    /// Who runs game room `room`, which this node does not: another node (redirect), this one
    /// after claiming it (create it), or no one (`None`: not a name this node may create).
    async fn place(
        &self,
        cluster: &crate::cluster::Cluster,
        room: &str,
    ) -> Result<Option<Owner>, crate::cluster::ClusterError> {
        match cluster.owner(room).await? {
            Some(Owner::Elsewhere(lease)) => Ok(Some(Owner::Elsewhere(lease))),
            // Held by this node's name but not running here: a restart within the lease.
            Some(Owner::Here) | None if self.hub.registry.may_create(room) => {
                cluster.claim(room).await.map(Some)
            }
            _ => Ok(None),
        }
    }

    fn send_redirect(&mut self, cluster: &crate::cluster::Cluster, room: &str, lease: &Lease) {
        cluster.metrics.redirect();
        self.send_error_with(
            ErrorCode::Redirect,
            &format!("room {room:?} runs on node {}", lease.node),
            lease.public_url.clone(),
        );
    }

    /// Leaves the current room, if any. A full room queue keeps the session in the room
    /// (the client is told and may retry); a vanished room counts as left.
    fn leave_room(&mut self) -> Result<(), SendError> {
        let Some(room) = &self.room else {
            return Ok(());
        };
        match room.send(SessionCommand::Leave {
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
        let needs = match &body {
            Body::Input(_) => Some(Perm::Play),
            Body::Subscribe(_) | Body::Unsubscribe(_) => Some(Perm::Subscribe),
            Body::ChatSend(_) => Some(Perm::Chat),
            _ => None,
        };
        if let Some(perm) = needs
            && !self.identity.may(perm)
        {
            return self.send_error(
                ErrorCode::Forbidden,
                &format!(
                    "your token does not have the {:?} permission",
                    perm.as_str()
                ),
            );
        }
        if let Err(e) = room.send(SessionCommand::Client {
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
        self.send_error_with(code, message, String::new());
    }

    /// An `Error`, with `redirect_url` for `ERROR_CODE_REDIRECT` (empty otherwise).
    fn send_error_with(&mut self, code: ErrorCode, message: &str, redirect_url: String) {
        // Rate-limit drops are counted where they happen, one per dropped message.
        if code != ErrorCode::RateLimited {
            self.hub.metrics.message_rejected(code);
        }
        self.send(ServerBody::Error(ErrorMsg {
            code: code as i32,
            message: message.to_owned(),
            redirect_url,
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
        match self.wire.outbox().push_reliable(self.buf.split().freeze()) {
            Ok(true) => self.link.queue_now(),
            Ok(false) => {}
            // On overflow the outbox closed itself as a slow consumer; the writer says so.
            Err(_) => {
                self.link.queue_now();
            }
        }
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
        // Text frames are not part of the protocol, valid UTF-8 or not: one rule, 1003.
        E::Utf8(_) => CloseReason::TextFrame,
        E::Protocol(_) => CloseReason::ProtocolError,
        _ => CloseReason::PeerGone,
    }
}

async fn write_loop(
    wire: Arc<Wire>,
    token: CancellationToken,
    ping_every: Duration,
    stall_timeout: Duration,
    metrics: Arc<Metrics>,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A flusher writes a session's frames in steady state; this task wakes for pings, a full
    // socket (Blocked: it waits until the socket has room and takes over) and the end
    // (Closing). A session whose writes stay deferred past the stall timeout is closed at
    // the next heartbeat.
    loop {
        let blocked = wire.state() == WriteState::Blocked;
        tokio::select! {
            biased;
            _ = token.cancelled() => {
                wire.close(CloseReason::ShuttingDown);
            }
            r = wire.catch_up(&metrics), if blocked => {
                if r.is_err() {
                    wire.close(CloseReason::PeerGone);
                }
            }
            _ = wire.writer_woken() => {}
            _ = ping.tick() => {
                if wire.send_control(&PING_FRAME).is_err() {
                    wire.close(CloseReason::PeerGone);
                }
                if !stall_timeout.is_zero()
                    && wire.deferred_for().is_some_and(|d| d >= stall_timeout)
                {
                    wire.close(CloseReason::Stalled);
                }
            }
        }
        if matches!(wire.state(), WriteState::Closing | WriteState::Closed) {
            break;
        }
    }
    let reason = wire.close_reason().unwrap_or(CloseReason::PeerGone);
    if reason == CloseReason::PeerGone {
        wire.shut();
    } else {
        // Last frames, then the close frame: worth a bounded try, no more.
        let (code, text) = reason.close_code();
        let frame = close_frame(code, text);
        if !matches!(
            tokio::time::timeout(CLOSE_LINGER, wire.finish(Some(&frame), &metrics)).await,
            Ok(Ok(()))
        ) {
            wire.shut();
        }
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    /// A session's future lives as long as the session, and all of it is allocated whatever
    /// state it is in. With a join (and its cluster lookups) inline, it was 25 KB in a
    /// release build, and an idle session cost ~2.7 KB more resident memory than now
    /// (docs/benchmarks.md, "Idle sessions: the session's future"). Rare paths are boxed.
    #[tokio::test]
    async fn a_session_future_stays_small() {
        let mut config = Config::embedded();
        config.rooms.clear();
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::start(&config, metrics.clone(), None).unwrap();
        let shutdown = CancellationToken::new();
        let hub = Arc::new(SessionHub::new(
            registry,
            config.session.clone(),
            shutdown.clone(),
            TaskTracker::new(),
            metrics,
            Arc::new(crate::auth::Verifier::new(&config.auth).unwrap()),
            PreparedSessions::new(config.api.session_ttl(), 1, 1),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (tcp, peer) = listener.accept().await.unwrap();
        let session = run_session(
            tcp,
            Vec::new(),
            hub,
            peer,
            Start::Plain,
            Identity::anonymous(),
            (),
        );
        let size = std::mem::size_of_val(&session);
        assert!(size <= 4096, "a session's future takes {size} bytes");
        shutdown.cancel();
    }
}
