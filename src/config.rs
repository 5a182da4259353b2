//! Server configuration: the embedded default, a TOML file over it, and flags over both.

use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

use crate::sim::chat::ChatConfig;
use crate::sim::game::GameConfig;
use crate::sim::ticker::TickerConfig;

/// The demo configuration `make run` serves when no file is given.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub session: SessionConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub game: GameDefaults,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub auth: crate::auth::AuthConfig,
    #[serde(default)]
    pub rooms: Vec<RoomConfig>,
    /// Absent: a single node, no bus.
    #[serde(default)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    /// Connections open at once on the public port; beyond it a connection is answered 503.
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no cap); beyond it, 503.
    pub max_connections_per_ip: usize,
    /// New connections per second from one address, with bursts of `connect_burst_per_ip`
    /// (0: no rate); beyond it, 429.
    pub connects_per_ip_per_sec: f64,
    pub connect_burst_per_ip: f64,
    /// Each request's headers must arrive within this, an idle connection's first one
    /// included; otherwise the connection is closed.
    pub header_timeout_ms: u64,
    /// A whole HTTP request (body included) must be read and answered within this (408).
    pub request_timeout_ms: u64,
    /// Largest HTTP request body accepted (413).
    pub max_request_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            ops_listen: ([127, 0, 0, 1], 9090).into(),
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            connects_per_ip_per_sec: 200.0,
            connect_burst_per_ip: 1_000.0,
            header_timeout_ms: 10_000,
            request_timeout_ms: 10_000,
            max_request_body_bytes: 64 * 1024,
        }
    }
}

impl ServerConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    pub max_message_bytes: usize,
    pub ping_interval_ms: u64,
    pub idle_timeout_ms: u64,
    pub reliable_queue: usize,
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    pub abuse_drops: u32,
    pub abuse_window_ms: u64,
    /// Kernel send buffer of each connection (SO_SNDBUF), 0 for the system's default.
    pub send_buffer_bytes: usize,
    /// Bytes that may wait unsent in a session's socket (TCP_NOTSENT_LOWAT): beyond it the
    /// server stops writing to the session and its snapshots conflate in the outbox. 0: no
    /// bound but the kernel's send buffer.
    pub max_unsent_bytes: usize,
    /// Bytes a session may send per second, with bursts; a client that sends faster is read
    /// slower (its frames, complete or not, cannot take more than a share of a core).
    pub read_bytes_per_sec: usize,
    pub read_burst_bytes: usize,
    /// A data message in progress this long (from its first frame; control frames between
    /// its fragments do not end it) closes the session (1008).
    pub message_timeout_ms: u64,
    /// A session whose writes stay deferred this long (socket full, or its flow-control
    /// window never reopened) is closed with 4000; checked at each heartbeat. 0: never.
    pub stall_timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 4096,
            ping_interval_ms: 25_000,
            idle_timeout_ms: 60_000,
            reliable_queue: 256,
            rate_per_sec: 120,
            rate_burst: 240,
            abuse_drops: 600,
            abuse_window_ms: 10_000,
            send_buffer_bytes: 0,
            max_unsent_bytes: 32 * 1024,
            read_bytes_per_sec: 64 * 1024,
            read_burst_bytes: 256 * 1024,
            message_timeout_ms: 10_000,
            stall_timeout_ms: 30_000,
        }
    }
}

impl SessionConfig {
    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn abuse_window(&self) -> Duration {
        Duration::from_millis(self.abuse_window_ms)
    }
    pub fn message_timeout(&self) -> std::time::Duration {
        Duration::from_millis(self.message_timeout_ms)
    }
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    pub command_channel: usize,
    pub max_catchup_ticks: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            command_channel: 65_536,
            max_catchup_ticks: 3,
        }
    }
}

/// How game rooms that are not in the config come to exist.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GameDefaults {
    /// Create a game room from `template` when a client joins an unknown name.
    pub auto_create: bool,
    /// Upper bound on rooms created that way (at once: idle ones are removed).
    pub max_rooms: usize,
    /// Rooms one client address may have created and still open.
    pub max_rooms_per_ip: usize,
    /// A created room with no member for this long is removed and its thread ends.
    pub idle_room_ms: u64,
    pub template: GameConfig,
}

impl Default for GameDefaults {
    fn default() -> Self {
        Self {
            auto_create: false,
            max_rooms: 64,
            max_rooms_per_ip: 4,
            idle_room_ms: 60_000,
            template: GameConfig::default(),
        }
    }
}

impl GameDefaults {
    pub fn idle_room(&self) -> Duration {
        Duration::from_millis(self.idle_room_ms)
    }
}

/// The REST API of ticker rooms (`/api/v1/...` on the public port).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// A session made with `POST /api/v1/sessions` expires after this long without a
    /// WebSocket attached.
    pub session_ttl_ms: u64,
    /// Sessions kept at once; creating more answers 503.
    pub max_sessions: usize,
    /// Sessions one client address may hold (0: no cap); creating more answers 429.
    pub max_sessions_per_ip: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            session_ttl_ms: 60_000,
            max_sessions: 100_000,
            max_sessions_per_ip: 100,
        }
    }
}

impl ApiConfig {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_millis(self.session_ttl_ms)
    }
}

/// The admin API on the operations port (`/admin/...`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token the admin API requires; empty disables the API. The environment variable
    /// `TICKROOM_ADMIN_TOKEN` overrides it, so the secret need not be in a file.
    pub token: String,
}

impl AdminConfig {
    /// The token in force: the environment's, else the config's; `None` when neither is set.
    pub fn effective_token(&self) -> Option<String> {
        std::env::var("TICKROOM_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| Some(self.token.clone()).filter(|t| !t.is_empty()))
    }
}

/// One room started at boot.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RoomConfig {
    Game {
        name: String,
        #[serde(flatten)]
        game: GameConfig,
    },
    Ticker {
        name: String,
        #[serde(flatten)]
        ticker: TickerConfig,
    },
    Chat {
        name: String,
        #[serde(flatten)]
        chat: ChatConfig,
    },
}

impl RoomConfig {
    pub fn name(&self) -> &str {
        match self {
            RoomConfig::Game { name, .. }
            | RoomConfig::Ticker { name, .. }
            | RoomConfig::Chat { name, .. } => name,
        }
    }
}

impl Config {
    /// The embedded demo configuration.
    pub fn embedded() -> Self {
        Self::from_toml(DEFAULT_TOML).expect("embedded default config is valid")
    }

    /// A config from TOML text alone; keys it lacks take the built-in defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded demo config with `text` laid over it key by key. Tables merge; any
    /// other value, `rooms` included, replaces the default's.
    pub fn over_embedded(text: &str) -> Result<Self, ConfigError> {
        let mut base: toml::Table = toml::from_str(DEFAULT_TOML)?;
        let over: toml::Table = toml::from_str(text)?;
        merge(&mut base, over);
        let config: Config = base.try_into()?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file and lays it over the embedded default.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::over_embedded(&text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.session;
        if s.max_message_bytes < 64 {
            return Err(ConfigError::Invalid(
                "session.max_message_bytes must be >= 64".into(),
            ));
        }
        if s.ping_interval_ms == 0 || s.idle_timeout_ms <= s.ping_interval_ms {
            return Err(ConfigError::Invalid(
                "session.idle_timeout_ms must exceed session.ping_interval_ms (> 0)".into(),
            ));
        }
        if s.reliable_queue == 0 || s.rate_per_sec == 0 || s.rate_burst == 0 {
            return Err(ConfigError::Invalid(
                "session.reliable_queue, rate_per_sec and rate_burst must be > 0".into(),
            ));
        }
        if self.api.session_ttl_ms == 0 || self.api.max_sessions == 0 {
            return Err(ConfigError::Invalid(
                "api.session_ttl_ms and api.max_sessions must be > 0".into(),
            ));
        }
        if self.engine.command_channel == 0 {
            return Err(ConfigError::Invalid(
                "engine.command_channel must be > 0".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for room in &self.rooms {
            if !names.insert(room.name()) {
                return Err(ConfigError::Invalid(format!(
                    "room {:?} is defined twice",
                    room.name()
                )));
            }
            let checked = match room {
                RoomConfig::Game { game, .. } => game.validate(),
                RoomConfig::Ticker { ticker, .. } => ticker.validate(),
                RoomConfig::Chat { chat, .. } => chat.validate(),
            };
            checked.map_err(|e| ConfigError::Invalid(format!("room {:?}: {e}", room.name())))?;
        }
        self.game
            .template
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("game.template: {e}")))?;
        if let Some(cluster) = &self.cluster {
            cluster.validate().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_config_has_the_demo_arena() {
        let c = Config::embedded();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.server.ops_listen.port(), 9090);
        let RoomConfig::Game { name, game } = &c.rooms[0] else {
            panic!("the first demo room is a game room");
        };
        assert_eq!(name, "arena");
        assert_eq!(game.tick_hz, 60);
        assert_eq!(game.bots, 100);
        let RoomConfig::Ticker { name, ticker } = &c.rooms[1] else {
            panic!("the second demo room is a ticker room");
        };
        assert_eq!(name, "ticker");
        assert_eq!(ticker.tick_hz, 20);
        let crate::feed::FeedConfig::Synthetic(feed) = &ticker.feed else {
            panic!("the demo ticker runs the synthetic feed");
        };
        assert_eq!((feed.symbols, feed.updates_per_sec), (500, 20.0));
        let RoomConfig::Chat { name, chat } = &c.rooms[2] else {
            panic!("the third demo room is a chat room");
        };
        assert_eq!((name.as_str(), chat.tick_hz), ("chat", 10));
        assert!(!chat.word_filter().unwrap().is_empty());
    }

    #[test]
    fn a_file_is_laid_over_the_embedded_default() {
        let c = Config::over_embedded("[server]\nlisten = \"127.0.0.1:7000\"").unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        assert_eq!(
            c.server.ops_listen.port(),
            9090,
            "untouched keys keep the default"
        );
        assert_eq!(c.rooms.len(), 3, "the demo rooms stay");
        let c =
            Config::over_embedded("[[rooms]]\nname = \"duel\"\nkind = \"game\"\nbots = 2").unwrap();
        assert_eq!(c.rooms.len(), 1);
        assert_eq!(
            c.rooms[0].name(),
            "duel",
            "rooms are replaced, not appended"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(Config::from_toml("[server]\nlisten_typo = 1").is_err());
        let bad = "[session]\nping_interval_ms = 5000\nidle_timeout_ms = 1000";
        assert!(matches!(
            Config::from_toml(bad),
            Err(ConfigError::Invalid(_))
        ));
        let dup = "[[rooms]]\nname='a'\nkind='game'\n[[rooms]]\nname='a'\nkind='game'";
        assert!(matches!(
            Config::from_toml(dup),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn ticker_rooms_take_a_feed_table() {
        let c = Config::from_toml(
            "[[rooms]]\nname = 'replayed'\nkind = 'ticker'\ntick_hz = 50\n\
             [rooms.feed]\nkind = 'replay'\npath = 'q.csv'\npace = 'fast'\n",
        )
        .unwrap();
        let RoomConfig::Ticker { name, ticker } = &c.rooms[0] else {
            panic!("a ticker room");
        };
        assert_eq!((name.as_str(), ticker.tick_hz), ("replayed", 50));
        assert!(matches!(&ticker.feed, crate::feed::FeedConfig::Replay(r)
            if r.pace == crate::feed::Pace::Fast && !r.repeat));
        let bad_feed = "[[rooms]]\nname='t'\nkind='ticker'\n[rooms.feed]\nkind='carrier-pigeon'";
        assert!(Config::from_toml(bad_feed).is_err());
        let typo = "[[rooms]]\nname='t'\nkind='ticker'\n[rooms.feed]\nkind='synthetic'\nsymbol=5";
        assert!(
            Config::from_toml(typo).is_err(),
            "unknown feed keys are refused"
        );
    }
}
