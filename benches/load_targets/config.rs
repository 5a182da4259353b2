//! The server's configuration, as far as the targets need it.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

/// `--config` laid over the embedded default (config/default.toml), as the server does: keys
/// replace the default's, and a `rooms` list replaces the default's whole.
pub struct LoadConfig {
    pub file: toml::Table,
    pub default: toml::Table,
}

impl LoadConfig {
    pub fn read(file: &Path, default: &Path) -> Result<LoadConfig> {
        let parse = |path: &Path| -> Result<toml::Table> {
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            text.parse()
                .with_context(|| format!("parsing {}", path.display()))
        };
        Ok(LoadConfig {
            file: parse(file)?,
            default: parse(default)?,
        })
    }

    /// `[session] idle_timeout_ms`, in seconds: the heartbeat timeout the leak checks allow
    /// twice.
    pub fn idle_timeout_s(&self) -> Result<f64> {
        let ms = |t: &toml::Table| t.get("session")?.get("idle_timeout_ms")?.as_integer();
        let ms = ms(&self.file)
            .or_else(|| ms(&self.default))
            .context("no session.idle_timeout_ms in the config or the default")?;
        Ok(ms as f64 / 1e3)
    }

    pub fn room(&self, name: &str) -> Result<&toml::Table> {
        let rooms = self
            .file
            .get("rooms")
            .or_else(|| self.default.get("rooms"))
            .and_then(|r| r.as_array())
            .context("the config has no rooms")?;
        rooms
            .iter()
            .filter_map(|r| r.as_table())
            .find(|r| r.get("name").and_then(|n| n.as_str()) == Some(name))
            .with_context(|| format!("the config has no room {name:?}, which a target needs"))
    }

    pub fn tick_hz(&self, room: &str) -> Result<f64> {
        let hz = self.room(room)?.get("tick_hz").and_then(|v| v.as_integer());
        Ok(hz.with_context(|| format!("room {room:?} sets no tick_hz"))? as f64)
    }

    /// Feed updates per symbol per tick of a ticker room with a synthetic feed (`None` for
    /// another feed, whose update process is unknown here).
    pub fn feed_updates_per_tick(&self, room: &str) -> Result<Option<f64>> {
        let feed = self.room(room)?.get("feed").and_then(|f| f.as_table());
        let synthetic =
            feed.is_some_and(|f| f.get("kind").and_then(|k| k.as_str()) == Some("synthetic"));
        let rate = feed
            .and_then(|f| f.get("updates_per_sec"))
            .and_then(|v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)));
        Ok(match (synthetic, rate) {
            (true, Some(r)) => Some(r / self.tick_hz(room)?),
            _ => None,
        })
    }
}
