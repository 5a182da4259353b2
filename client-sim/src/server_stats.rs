//! The server's own view of a room, from one `GET /rooms` on the public port.

use anyhow::anyhow;
use serde::Serialize;
use serde_json::Value;

use crate::target::Target;

/// One room's row of `GET /rooms`, names as the server spells them.
#[derive(Debug, Clone, Serialize)]
pub struct RoomStats {
    pub name: String,
    pub kind: String,
    pub sessions: u64,
    pub tick_rate_hz: u64,
    pub tick: u64,
    pub tick_duration_us: TickDuration,
    pub ticks_total: u64,
    pub overruns_total: u64,
    pub skipped_ticks_total: u64,
    pub command_queue_depth: u64,
}

/// Tick duration summary the server keeps over its recent ticks.
#[derive(Debug, Clone, Serialize)]
pub struct TickDuration {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

/// Fetches `/rooms` from the target and returns the row of `room`, or `None` when the server
/// does not list it (a room created on first join does not exist before the run).
pub async fn fetch_room(target: &Target, room: &str) -> anyhow::Result<Option<RoomStats>> {
    let json = target.http().get_json(&target.http_url("/rooms")).await?;
    let rooms = json["rooms"]
        .as_array()
        .ok_or_else(|| anyhow!("GET /rooms: no \"rooms\" array"))?;
    rooms
        .iter()
        .find(|r| r["name"].as_str() == Some(room))
        .map(parse_room)
        .transpose()
}

fn parse_room(row: &Value) -> anyhow::Result<RoomStats> {
    let num = |v: &Value, key: &str| {
        v[key]
            .as_u64()
            .ok_or_else(|| anyhow!("GET /rooms: field {key:?} missing or not a number"))
    };
    let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
    let tick = &row["tick_duration_us"];
    Ok(RoomStats {
        name: text("name"),
        kind: text("kind"),
        sessions: num(row, "sessions")?,
        tick_rate_hz: num(row, "tick_rate_hz")?,
        tick: num(row, "tick")?,
        tick_duration_us: TickDuration {
            p50: num(tick, "p50")?,
            p99: num(tick, "p99")?,
            max: num(tick, "max")?,
        },
        ticks_total: num(row, "ticks_total")?,
        overruns_total: num(row, "overruns_total")?,
        skipped_ticks_total: num(row, "skipped_ticks_total")?,
        command_queue_depth: num(row, "command_queue_depth")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_server_row() {
        let row = serde_json::json!({
            "name": "arena", "kind": "game", "sessions": 3, "tick_rate_hz": 60, "tick": 99,
            "tick_duration_us": {"p50": 40, "p99": 90, "max": 300},
            "ticks_total": 100, "overruns_total": 1, "skipped_ticks_total": 0,
            "command_queue_depth": 0
        });
        let r = parse_room(&row).unwrap();
        assert_eq!(
            (r.sessions, r.tick_duration_us.p99, r.kind.as_str()),
            (3, 90, "game")
        );
        let e = parse_room(&serde_json::json!({"name": "x"})).unwrap_err();
        assert!(e.to_string().contains("missing or not a number"), "{e}");
    }
}
