//! The room registry: wires each room kind of the config to its simulation, feed and
//! moderation (and, in a cluster, to the bus: a bus feed, a chat relay), starts them, creates
//! game rooms on first join, and lists them for `GET /rooms`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::Serialize;

use super::{DriverConfig, Events, RoomHandle, RoomStats, spawn_room};
use crate::cluster::Cluster;
use crate::config::{Config, EngineConfig, GameDefaults, RoomConfig};
use crate::engine::{Simulation, kind_name};
use crate::feed::{Feed, FeedHandle, Stopped};
use crate::metrics::Metrics;
use crate::moderation::BlockLists;
use crate::sim::chat::{ChatConfig, ChatCounters, ChatEvent, ChatRoom};
use crate::sim::game::{GameConfig, GameRoom};
use crate::sim::ticker::{SymbolTable, TickerConfig, TickerEvent, TickerRoom};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("no room named {0:?}")]
    NotFound(String),
    #[error("invalid room name {0:?}: use 1-64 of A-Z a-z 0-9 _ -")]
    BadName(String),
    #[error("room limit reached")]
    TooManyRooms,
    #[error("your address has created {0} rooms that are still open; that is the limit")]
    TooManyRoomsForAddress(usize),
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("cannot start room thread: {0}")]
    Spawn(String),
    #[error("room {room:?}: {message}")]
    Setup { room: String, message: String },
    #[error("{0:?} is not a ticker room")]
    NotTicker(String),
    #[error("no ticker room is configured")]
    NoTicker,
    #[error("{0:?} is not a chat room")]
    NotChat(String),
}

/// A ticker room as the HTTP API sees it: where to send queries and which symbols it has.
#[derive(Debug, Clone)]
pub struct Ticker {
    pub room: Arc<RoomHandle>,
    pub events: Events<TickerEvent>,
    pub symbols: Arc<SymbolTable>,
    pub max_symbols_per_session: usize,
}

#[derive(Debug)]
pub struct Registry {
    rooms: RwLock<HashMap<Arc<str>, Arc<RoomHandle>>>,
    engine: EngineConfig,
    game: GameDefaults,
    /// Rooms created on first join: who created each and since when it has had no member.
    auto: std::sync::Mutex<HashMap<Arc<str>, AutoRoom>>,
    stopping: std::sync::atomic::AtomicBool,
    /// Numbers the rooms, for their snapshot slots in outboxes.
    next_uid: std::sync::atomic::AtomicU32,
    metrics: Arc<Metrics>,
    /// Ticker rooms in config order; the first is the API's default.
    tickers: Vec<Ticker>,
    /// Chat rooms' event channels (admin notices and gifts), by name.
    chats: HashMap<Arc<str>, Events<ChatEvent>>,
    feeds: Vec<FeedHandle>,
    /// User and IP block lists shared by chat rooms, sessions and the admin API.
    blocks: Arc<BlockLists>,
    /// Configured game rooms another node held at start: created here on a join once this
    /// node has claimed them.
    deferred: HashMap<Arc<str>, GameConfig>,
}

/// What a node of a cluster gives the registry at start.
#[derive(Debug)]
pub struct ClusterStart {
    pub cluster: Arc<Cluster>,
    /// Bus feeds, ready, by ticker room name.
    pub feeds: HashMap<String, Box<dyn Feed>>,
    /// Configured game rooms another node holds: not started now.
    pub elsewhere: HashSet<String>,
}

/// A game room created on first join.
#[derive(Debug)]
struct AutoRoom {
    creator: IpAddr,
    empty_since: Option<Instant>,
}

/// One row of `GET /rooms`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoomInfo {
    pub name: String,
    pub kind: &'static str,
    pub sessions: u64,
    pub tick_rate_hz: u32,
    pub tick: u64,
    pub tick_duration_us: TickSummary,
    pub ticks_total: u64,
    pub overruns_total: u64,
    pub skipped_ticks_total: u64,
    pub command_queue_depth: usize,
    /// Most frames waiting in one session's outbox, sampled about once a second.
    pub outbox_pending_max: u64,
}

/// Tick durations over the last 1,024 ticks (drain + step + encode + hand-out).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TickSummary {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Registry {
    /// Starts every room of the config; they record into `metrics`. In a cluster, `cluster`
    /// brings the bus feeds and the game rooms to leave to other nodes; chat rooms are joined
    /// to their shards elsewhere. Call inside the async runtime.
    pub fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        mut cluster: Option<ClusterStart>,
    ) -> Result<Arc<Self>, RegistryError> {
        let mut registry = Self {
            rooms: RwLock::new(HashMap::new()),
            engine: config.engine.clone(),
            game: config.game.clone(),
            auto: Default::default(),
            stopping: Default::default(),
            next_uid: std::sync::atomic::AtomicU32::new(1),
            metrics,
            tickers: Vec::new(),
            chats: HashMap::new(),
            feeds: Vec::new(),
            blocks: Arc::new(BlockLists::default()),
            deferred: HashMap::new(),
        };
        for room in &config.rooms {
            let started = match room {
                RoomConfig::Game { name, game }
                    if cluster.as_ref().is_some_and(|c| c.elsewhere.contains(name)) =>
                {
                    registry.deferred.insert(name.as_str().into(), game.clone());
                    Ok(())
                }
                RoomConfig::Game { name, game } => registry.insert(name, game).map(drop),
                RoomConfig::Ticker { name, ticker } => {
                    let feed = cluster.as_mut().and_then(|c| c.feeds.remove(name));
                    registry.start_ticker(name, ticker, feed)
                }
                RoomConfig::Chat { name, chat } => {
                    registry.start_chat(name, chat, cluster.as_ref().map(|c| &c.cluster))
                }
            };
            if let Err(e) = started {
                // Rooms and feeds already running must not outlive a failed start.
                registry.shutdown();
                return Err(e);
            }
        }
        Ok(Arc::new(registry))
    }

    /// Starts `sim` on its own thread with the engine settings of the config.
    fn spawn<S: Simulation>(
        &self,
        name: &str,
        sim: S,
        tick_rate_hz: u32,
    ) -> Result<(Arc<RoomHandle>, Events<S::Event>), RegistryError> {
        let cfg = DriverConfig {
            tick_rate_hz,
            command_channel: self.engine.command_channel,
            max_catchup_ticks: self.engine.max_catchup_ticks,
        };
        let uid = self
            .next_uid
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        spawn_room(uid, name, sim, cfg, &self.metrics)
            .map_err(|e| RegistryError::Spawn(e.to_string()))
    }

    /// Builds the feed (a replay reads its file now) unless a bus feed is given, starts the
    /// room, then the feed thread.
    fn start_ticker(
        &mut self,
        name: &str,
        config: &TickerConfig,
        feed: Option<Box<dyn Feed>>,
    ) -> Result<(), RegistryError> {
        let feed_error = |message: String| RegistryError::Setup {
            room: name.to_owned(),
            message,
        };
        let feed = match feed {
            Some(feed) => feed,
            None => config.feed.build().map_err(|e| feed_error(e.to_string()))?,
        };
        let room = TickerRoom::new(config, feed.symbols());
        let symbols = room.symbol_table();
        let (handle, events) = self.spawn(name, room, config.tick_hz)?;
        self.write().insert(handle.name.clone(), handle.clone());
        let kind = feed.kind();
        let deliver = {
            let events = events.clone();
            Box::new(move |batch, stop: &std::sync::atomic::AtomicBool| {
                events
                    .send_blocking(TickerEvent::Quotes(batch), stop)
                    .map_err(|_| Stopped)
            })
        };
        let feed = FeedHandle::spawn(feed, name, deliver)
            .map_err(|e| RegistryError::Spawn(e.to_string()))?;
        self.feeds.push(feed);
        self.tickers.push(Ticker {
            room: handle,
            events,
            symbols: symbols.clone(),
            max_symbols_per_session: config.max_symbols_per_session as usize,
        });
        tracing::info!(
            room = name,
            kind = "ticker",
            tick_hz = config.tick_hz,
            feed = kind,
            symbols = symbols.len(),
            "room started"
        );
        Ok(())
    }

    /// Loads the word list (a bad file stops the server at start) and starts the room, joined
    /// to its shards on the other nodes in a cluster.
    fn start_chat(
        &mut self,
        name: &str,
        config: &ChatConfig,
        cluster: Option<&Arc<Cluster>>,
    ) -> Result<(), RegistryError> {
        let filter = config.word_filter().map_err(|e| RegistryError::Setup {
            room: name.to_owned(),
            message: e.to_string(),
        })?;
        let words = filter.len();
        let counter = |outcome: &str| {
            self.metrics
                .counter("tickroom_chat_messages_total", &[("outcome", outcome)])
        };
        let counters = ChatCounters {
            broadcast: counter("broadcast"),
            dropped_cap: counter("dropped_cap"),
            blocked: counter("blocked"),
        };
        let mut room =
            ChatRoom::new(config.clone(), filter, self.blocks.clone()).with_counters(counters);
        // The relay's inlet needs the room's event channel, which exists once the room runs.
        let inlet: Arc<std::sync::OnceLock<Events<ChatEvent>>> = Default::default();
        if let Some(cluster) = cluster {
            let events = inlet.clone();
            let relay = cluster.chat_relay(name, move |messages| {
                events
                    .get()
                    .is_some_and(|e| e.try_send(ChatEvent::Relayed(messages)).is_ok())
            });
            room = room.with_relay(move |messages| relay.send(messages));
        }
        let (handle, events) = self.spawn(name, room, config.tick_hz)?;
        let _ = inlet.set(events.clone());
        self.chats.insert(handle.name.clone(), events);
        self.write().insert(handle.name.clone(), handle);
        tracing::info!(
            room = name,
            kind = "chat",
            tick_hz = config.tick_hz,
            filtered_words = words,
            "room started"
        );
        Ok(())
    }

    /// The block lists every chat room and session consults.
    pub fn blocks(&self) -> &Arc<BlockLists> {
        &self.blocks
    }

    /// The ticker room called `name`, or the first one configured.
    pub fn ticker(&self, name: Option<&str>) -> Result<Ticker, RegistryError> {
        match name {
            None => self.tickers.first().cloned().ok_or(RegistryError::NoTicker),
            Some(name) => self
                .tickers
                .iter()
                .find(|t| &*t.room.name == name)
                .cloned()
                .ok_or_else(|| match self.get(name) {
                    Some(_) => RegistryError::NotTicker(name.to_owned()),
                    None => RegistryError::NotFound(name.to_owned()),
                }),
        }
    }

    /// The event channel of the chat room called `name`.
    pub fn chat(&self, name: &str) -> Result<Events<ChatEvent>, RegistryError> {
        self.chats
            .get(name)
            .cloned()
            .ok_or_else(|| match self.get(name) {
                Some(_) => RegistryError::NotChat(name.to_owned()),
                None => RegistryError::NotFound(name.to_owned()),
            })
    }

    fn spawn_game(&self, name: &str, game: &GameConfig) -> Result<Arc<RoomHandle>, RegistryError> {
        // A game room takes no events: its event channel is not kept.
        self.spawn(name, GameRoom::new(game.clone()), game.tick_hz)
            .map(|(handle, _)| handle)
    }

    fn insert(&self, name: &str, game: &GameConfig) -> Result<Arc<RoomHandle>, RegistryError> {
        let handle = self.spawn_game(name, game)?;
        self.write().insert(handle.name.clone(), handle.clone());
        tracing::info!(
            room = name,
            kind = "game",
            tick_hz = game.tick_hz,
            "room started"
        );
        Ok(handle)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Arc<RoomHandle>>> {
        self.rooms.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Arc<RoomHandle>>> {
        self.rooms.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, name: &str) -> Option<Arc<RoomHandle>> {
        self.read().get(name).cloned()
    }

    /// Game rooms this node runs (their leases, in a cluster).
    pub fn game_rooms(&self) -> HashSet<String> {
        self.read()
            .values()
            .filter(|r| r.kind == tickroom_proto::v1::RoomKind::Game)
            .map(|r| r.name.to_string())
            .collect()
    }

    /// True when a join of `name` may create it here: a configured room deferred to another
    /// node, or any valid name when rooms are created on first join.
    pub fn may_create(&self, name: &str) -> bool {
        self.deferred.contains_key(name) || (self.game.auto_create && valid_name(name))
    }

    /// Stops room `name` (its lease went to another node): its members are closed and told.
    pub fn remove(&self, name: &str) {
        let room = self.write().remove(name);
        if let Some(room) = room {
            self.auto
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
            room.ask_to_stop();
        }
    }

    /// The room to join: an existing one, or a new game room when the config allows, made
    /// for a client at `creator` (at most `max_rooms_per_ip` of them open at once).
    pub fn get_or_create(
        &self,
        name: &str,
        creator: IpAddr,
    ) -> Result<Arc<RoomHandle>, RegistryError> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.stopping.load(Relaxed) {
            return Err(RegistryError::ShuttingDown);
        }
        if let Some(room) = self.get(name) {
            return Ok(room);
        }
        if let Some(game) = self.deferred.get(name) {
            // A configured room: not counted against created rooms, never reaped.
            let mut rooms = self.write();
            if let Some(room) = rooms.get(name) {
                return Ok(room.clone());
            }
            let handle = self.spawn_game(name, game)?;
            rooms.insert(handle.name.clone(), handle.clone());
            tracing::info!(
                room = name,
                kind = "game",
                "configured room started on this node"
            );
            return Ok(handle);
        }
        if !self.game.auto_create {
            return Err(RegistryError::NotFound(name.to_owned()));
        }
        if !valid_name(name) {
            return Err(RegistryError::BadName(name.to_owned()));
        }
        // Hold the write lock while creating so two first joins make one room.
        let mut rooms = self.write();
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        let mut auto = self.auto.lock().unwrap_or_else(|e| e.into_inner());
        if auto.len() >= self.game.max_rooms {
            return Err(RegistryError::TooManyRooms);
        }
        let creator = creator.to_canonical();
        let theirs = auto.values().filter(|r| r.creator == creator).count();
        if theirs >= self.game.max_rooms_per_ip {
            return Err(RegistryError::TooManyRoomsForAddress(theirs));
        }
        let handle = self.spawn_game(name, &self.game.template)?;
        rooms.insert(handle.name.clone(), handle.clone());
        auto.insert(
            handle.name.clone(),
            AutoRoom {
                creator,
                empty_since: None,
            },
        );
        tracing::info!(room = name, kind = "game", %creator, "room created on first join");
        Ok(handle)
    }

    /// Removes created rooms that have had no member for `idle_room_ms`; their threads end.
    /// Returns how many went. The server calls it about once a second.
    pub fn reap_idle(&self, now: Instant) -> usize {
        let idle = self.game.idle_room();
        let mut gone = Vec::new();
        {
            let mut rooms = self.write();
            let mut auto = self.auto.lock().unwrap_or_else(|e| e.into_inner());
            auto.retain(|name, a| {
                let Some(room) = rooms.get(name) else {
                    return false;
                };
                if RoomStats::get(&room.stats.sessions) > 0 {
                    a.empty_since = None;
                    return true;
                }
                let since = *a.empty_since.get_or_insert(now);
                if now.duration_since(since) < idle {
                    return true;
                }
                if let Some(room) = rooms.remove(name) {
                    gone.push(room);
                }
                false
            });
        }
        for room in &gone {
            tracing::info!(room = %room.name, "idle room removed");
            room.ask_to_stop();
        }
        gone.len()
    }

    pub fn list(&self) -> Vec<RoomInfo> {
        let mut rooms: Vec<RoomInfo> = self
            .read()
            .values()
            .map(|r| {
                let s = &r.stats;
                RoomInfo {
                    name: r.name.to_string(),
                    kind: kind_name(r.kind),
                    sessions: RoomStats::get(&s.sessions),
                    tick_rate_hz: r.tick_rate_hz,
                    tick: RoomStats::get(&s.tick),
                    tick_duration_us: TickSummary {
                        p50: RoomStats::get(&s.tick_p50_us),
                        p99: RoomStats::get(&s.tick_p99_us),
                        max: RoomStats::get(&s.tick_max_us),
                    },
                    ticks_total: RoomStats::get(&s.ticks_total),
                    overruns_total: RoomStats::get(&s.overruns_total),
                    skipped_ticks_total: RoomStats::get(&s.skipped_ticks_total),
                    command_queue_depth: r.queue_depth(),
                    outbox_pending_max: RoomStats::get(&s.outbox_pending_max),
                }
            })
            .collect();
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        rooms
    }

    /// True while every room has ticked within a few periods (readiness).
    pub fn all_ticking(&self, now_us: i64) -> bool {
        self.read().values().all(|r| {
            let last = RoomStats::get(&r.stats.last_tick_end_us) as i64;
            let allowed = (r.tick_period().as_micros() as i64) * 5 + 1_000_000;
            !r.stats.stopped.load(std::sync::atomic::Ordering::Relaxed)
                && (last == 0 || now_us - last <= allowed)
        })
    }

    /// Stops every feed and room and joins their threads. New joins are refused from here on.
    pub fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for feed in &self.feeds {
            feed.stop();
        }
        let rooms: Vec<_> = self.write().drain().map(|(_, r)| r).collect();
        // All at once: each room stops at its next tick, so stopping them one after another
        // would add a tick period per room to the shutdown.
        for room in &rooms {
            room.ask_to_stop();
        }
        for room in &rooms {
            room.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_checked_before_creation() {
        assert!(valid_name("arena-2_b"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
