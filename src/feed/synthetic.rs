//! The synthetic feed: N symbols whose prices follow a geometric Brownian motion, updated at a
//! configurable rate, with an optional bursty "market open" window that multiplies the rate.
//!
//! Updates are spread evenly in time (a 5 ms step) and over symbols at random, so each
//! symbol updates `updates_per_sec` times a second on average. Deterministic per seed except
//! for timing.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde::Deserialize;

use super::{Feed, FeedError, FeedSink, QuoteUpdate, Stopped, SymbolSpec, cents};
use crate::clock::unix_time_us;

/// How often the feed wakes to emit what is due.
const STEP: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Number of symbols, named SYM001, SYM002, ... (zero-padded to a common width).
    pub symbols: u32,
    /// Average updates per second of each symbol.
    pub updates_per_sec: f64,
    /// Standard deviation of one update's log return (0.0005 = 5 basis points).
    pub volatility: f64,
    pub seed: u64,
    /// Rate multiplier during a burst ("market open"); 1 disables bursts.
    pub burst_factor: f64,
    /// Length of a burst, from the feed's start.
    pub burst_secs: f64,
    /// A burst starts again every this many seconds; 0 means only once, at the start.
    pub burst_every_secs: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            symbols: 500,
            updates_per_sec: 20.0,
            volatility: 0.0005,
            seed: 1,
            burst_factor: 1.0,
            burst_secs: 0.0,
            burst_every_secs: 0.0,
        }
    }
}

impl SyntheticConfig {
    /// The rate multiplier `elapsed` seconds after the start.
    fn factor_at(&self, elapsed: f64) -> f64 {
        if self.burst_factor == 1.0 || self.burst_secs <= 0.0 {
            return 1.0;
        }
        let phase = if self.burst_every_secs > 0.0 {
            elapsed % self.burst_every_secs
        } else {
            elapsed
        };
        if phase < self.burst_secs {
            self.burst_factor
        } else {
            1.0
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Price {
    last: f64,
    volume: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct SyntheticFeed {
    config: SyntheticConfig,
    symbols: Vec<SymbolSpec>,
    prices: Vec<Price>,
    rng: SmallRng,
}

impl SyntheticFeed {
    pub fn new(config: SyntheticConfig) -> Result<Self, FeedError> {
        if !(1..=100_000).contains(&config.symbols) {
            return Err(FeedError::Invalid(
                "synthetic: symbols must be 1..=100000".into(),
            ));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(config.updates_per_sec) || config.updates_per_sec > 10_000.0 {
            return Err(FeedError::Invalid(
                "synthetic: updates_per_sec must be in (0, 10000]".into(),
            ));
        }
        if !(config.volatility.is_finite() && (0.0..0.1).contains(&config.volatility)) {
            return Err(FeedError::Invalid(
                "synthetic: volatility must be in [0, 0.1)".into(),
            ));
        }
        let non_negative = |v: f64| v.is_finite() && v >= 0.0;
        if !(positive(config.burst_factor)
            && non_negative(config.burst_secs)
            && non_negative(config.burst_every_secs))
        {
            return Err(FeedError::Invalid(
                "synthetic: burst_factor must be > 0, burst_secs and burst_every_secs >= 0".into(),
            ));
        }
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let width = config.symbols.to_string().len().max(3);
        let mut symbols = Vec::with_capacity(config.symbols as usize);
        let mut prices = Vec::with_capacity(config.symbols as usize);
        for i in 1..=config.symbols {
            let prev_close = cents(rng.random_range(10.0..500.0));
            symbols.push(SymbolSpec {
                name: format!("SYM{i:0width$}"),
                prev_close,
            });
            prices.push(Price {
                last: prev_close,
                volume: 0,
            });
        }
        Ok(Self {
            config,
            symbols,
            prices,
            rng,
        })
    }

    /// The next value of symbol `i`: one GBM step, a spread of about 2 basis points, and
    /// some traded volume.
    fn update(&mut self, i: usize, now_us: i64) -> QuoteUpdate {
        let z: f64 = StandardNormal.sample(&mut self.rng);
        let sigma = self.config.volatility;
        let p = &mut self.prices[i];
        p.last = cents((p.last * (sigma * z - sigma * sigma / 2.0).exp()).max(0.01));
        p.volume += 100 * self.rng.random_range(1..=10u64);
        let half_spread = cents((p.last * 0.0001).max(0.01));
        QuoteUpdate {
            symbol: i as u32,
            last: p.last,
            bid: cents((p.last - half_spread).max(0.0)),
            ask: cents(p.last + half_spread),
            volume: p.volume,
            exchange_time_us: now_us,
            seq: 0,
        }
    }
}

impl Feed for SyntheticFeed {
    fn kind(&self) -> &'static str {
        "synthetic"
    }

    fn symbols(&self) -> &[SymbolSpec] {
        &self.symbols
    }

    fn run(mut self: Box<Self>, sink: FeedSink) -> Result<(), Stopped> {
        let n = self.symbols.len();
        let per_sec = n as f64 * self.config.updates_per_sec;
        let start = Instant::now();
        let mut last = start;
        let mut due = 0.0_f64;
        let mut next = start;
        loop {
            next += STEP;
            sink.sleep_until(next)?;
            let now = Instant::now();
            // Real elapsed time, not steps: a late wake-up emits what fell due meanwhile.
            let factor = self.config.factor_at((now - start).as_secs_f64());
            due += per_sec * factor * (now - last).as_secs_f64();
            last = now;
            if next + STEP < now {
                next = now;
            }
            let count = due.floor() as usize;
            due -= count as f64;
            if count == 0 {
                continue;
            }
            let now_us = unix_time_us();
            let batch: Vec<QuoteUpdate> = (0..count)
                .map(|_| {
                    let i = self.rng.random_range(0..n);
                    self.update(i, now_us)
                })
                .collect();
            sink.send(batch)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_named_and_priced_deterministically() {
        let c = SyntheticConfig {
            symbols: 12,
            ..Default::default()
        };
        let a = SyntheticFeed::new(c.clone()).unwrap();
        let b = SyntheticFeed::new(c).unwrap();
        assert_eq!(a.symbols(), b.symbols());
        assert_eq!(a.symbols()[0].name, "SYM001");
        assert_eq!(a.symbols()[11].name, "SYM012");
        assert!(
            a.symbols()
                .iter()
                .all(|s| (10.0..=500.0).contains(&s.prev_close))
        );
    }

    #[test]
    fn updates_move_prices_a_little_with_a_positive_spread() {
        let mut f = SyntheticFeed::new(SyntheticConfig {
            symbols: 3,
            ..Default::default()
        })
        .unwrap();
        let start = f.symbols()[1].prev_close;
        let mut volume = 0;
        for _ in 0..1000 {
            let u = f.update(1, 42);
            assert_eq!(u.symbol, 1);
            assert!(u.bid < u.last && u.last < u.ask, "{u:?}");
            assert!(u.volume > volume);
            volume = u.volume;
            assert_eq!(u.exchange_time_us, 42);
        }
        let last = f.prices[1].last;
        // 1,000 steps of 5 bp: a drift beyond ±50% would mean the walk is wrong.
        assert!((last / start - 1.0).abs() < 0.5, "{start} -> {last}");
    }

    #[test]
    fn bursts_multiply_the_rate_in_their_window() {
        let c = SyntheticConfig {
            burst_factor: 5.0,
            burst_secs: 2.0,
            burst_every_secs: 10.0,
            ..Default::default()
        };
        assert_eq!(c.factor_at(0.5), 5.0);
        assert_eq!(c.factor_at(3.0), 1.0);
        assert_eq!(c.factor_at(11.0), 5.0);
        assert_eq!(SyntheticConfig::default().factor_at(0.0), 1.0);
    }

    #[test]
    fn bad_settings_are_refused() {
        for c in [
            SyntheticConfig {
                symbols: 0,
                ..Default::default()
            },
            SyntheticConfig {
                updates_per_sec: 0.0,
                ..Default::default()
            },
            SyntheticConfig {
                burst_factor: f64::NAN,
                ..Default::default()
            },
        ] {
            assert!(SyntheticFeed::new(c).is_err());
        }
    }
}
