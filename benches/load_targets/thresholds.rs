//! The thresholds, which each target is held to.

pub const GAME_MIN_SNAPSHOTS_PER_S: f64 = 59.0;
pub const GAME_MAX_P99_US: f64 = 30_000.0;
/// The game goal: N ≥ this share of what the probe says one core can write at the tick rate.
pub const GAME_GOAL_SHARE: f64 = 0.85;
pub const GAME_MAX_TICK_P99_US: f64 = 2_000.0;
pub const OVERHEAD_MAX: f64 = 1.25;
pub const TICKER_MAX_P99_US: f64 = 70_000.0;
pub const TICKER_MAX_RSS_BYTES: f64 = 100e6;
/// Conflation beyond what "newest value per tick" explains, in percentage points, that counts
/// as lost ticks. client-sim cannot tell a tick a session missed from values replaced within a
/// tick (both are a seq jump), so the measured share is held against the expected one.
pub const TICKER_CONFLATION_SLACK_PP: f64 = 0.5;
pub const CHAT_FANOUT_FACTOR: f64 = 1.25;
pub const CHAT_LATENCY_SLACK_US: f64 = 20_000.0;
/// SI units, as client-sim and the docs print them: 8 KB = 8,000 bytes.
pub const IDLE_MAX_RSS_PER_SESSION: f64 = 8_000.0;
pub const IDLE_MAX_CPU_PCT: f64 = 5.0;
pub const SPIKE_MAX_P99_US: f64 = 50_000.0;
pub const MAX_RSS_GROWTH_PCT: f64 = 10.0;
/// Sessions and tasks must be back within this many heartbeat (idle) timeouts.
pub const SETTLE_TIMEOUTS: f64 = 2.0;
