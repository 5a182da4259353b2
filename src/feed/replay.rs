//! The replay feed: quotes read from a CSV or NDJSON file, played at their recorded pace or
//! as fast as the room takes them. Format in docs/protocol.md ("Replay files").
//!
//! The whole file is read and checked when the feed is built, so a bad file stops the server
//! at start with the line at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Feed, FeedError, FeedSink, QuoteUpdate, Stopped, SymbolSpec};

/// Records handed to the room per command at `fast` pace.
const FAST_BATCH: usize = 1024;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Pace {
    /// Keep the gaps between the file's timestamps.
    #[default]
    Recorded,
    /// As fast as the room's channel takes them (the room keeps the newest per tick).
    Fast,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplayConfig {
    /// A `.csv` file with a header row, or `.ndjson`/`.jsonl` with one object per line.
    pub path: PathBuf,
    #[serde(default)]
    pub pace: Pace,
    /// Start again from the top after the last record.
    #[serde(default)]
    pub repeat: bool,
    /// Wait this long after the room starts before the first record (time for clients to
    /// subscribe to a short replay).
    #[serde(default)]
    pub delay_ms: u64,
}

/// One line of a replay file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    time_us: i64,
    symbol: String,
    last: f64,
    bid: f64,
    ask: f64,
    volume: u64,
    /// Day-change reference; read from a symbol's first record only.
    #[serde(default)]
    prev_close: Option<f64>,
}

/// See the module docs.
#[derive(Debug)]
pub struct ReplayFeed {
    config: ReplayConfig,
    symbols: Vec<SymbolSpec>,
    updates: Vec<QuoteUpdate>,
}

fn parse_error(path: &Path, line: usize, message: impl Into<String>) -> FeedError {
    FeedError::Parse {
        path: path.display().to_string(),
        line,
        message: message.into(),
    }
}

impl ReplayFeed {
    pub fn open(config: ReplayConfig) -> Result<Self, FeedError> {
        let path = config.path.clone();
        let text = std::fs::read_to_string(&path).map_err(|source| FeedError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        // (line number, record) in file order.
        let records: Vec<(usize, Record)> = match ext {
            "csv" => {
                let mut reader = csv::ReaderBuilder::new()
                    .trim(csv::Trim::All)
                    .from_reader(text.as_bytes());
                let mut out = Vec::new();
                for row in reader.deserialize::<Record>() {
                    let record = row.map_err(|e| {
                        let line = e.position().map_or(0, |p| p.line() as usize);
                        parse_error(&path, line, e.to_string())
                    })?;
                    out.push((out.len() + 2, record));
                }
                out
            }
            "ndjson" | "jsonl" => {
                let mut out = Vec::new();
                for (i, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let record = serde_json::from_str::<Record>(line)
                        .map_err(|e| parse_error(&path, i + 1, e.to_string()))?;
                    out.push((i + 1, record));
                }
                out
            }
            _ => {
                return Err(FeedError::Invalid(format!(
                    "replay: {}: use a .csv, .ndjson or .jsonl file",
                    path.display()
                )));
            }
        };
        if records.is_empty() {
            return Err(parse_error(&path, 0, "no records"));
        }
        let mut symbols: Vec<SymbolSpec> = Vec::new();
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut updates = Vec::with_capacity(records.len());
        let mut prev_time = i64::MIN;
        for (line, r) in records {
            let bad = |m: &str| parse_error(&path, line, m);
            if r.time_us < prev_time {
                return Err(bad("time_us goes backwards; records must be in time order"));
            }
            prev_time = r.time_us;
            if r.symbol.is_empty()
                || r.symbol.len() > 32
                || !r.symbol.bytes().all(|b| b.is_ascii_graphic() && b != b',')
            {
                return Err(bad("symbol must be 1-32 printable characters, no commas"));
            }
            let price_ok = |v: f64| v.is_finite() && v >= 0.0;
            if !price_ok(r.last) || !price_ok(r.bid) || !price_ok(r.ask) {
                return Err(bad("last, bid and ask must be finite and >= 0"));
            }
            let symbol = match index.get(&r.symbol) {
                Some(&i) => i,
                None => {
                    let prev_close = r.prev_close.unwrap_or(r.last);
                    if !(prev_close.is_finite() && prev_close > 0.0) {
                        return Err(bad("prev_close must be finite and > 0"));
                    }
                    let i = symbols.len() as u32;
                    index.insert(r.symbol.clone(), i);
                    symbols.push(SymbolSpec {
                        name: r.symbol,
                        prev_close,
                    });
                    i
                }
            };
            updates.push(QuoteUpdate {
                symbol,
                last: r.last,
                bid: r.bid,
                ask: r.ask,
                volume: r.volume,
                exchange_time_us: r.time_us,
                seq: 0,
            });
        }
        Ok(Self {
            config,
            symbols,
            updates,
        })
    }

    /// Every update of the file, in order.
    pub fn updates(&self) -> &[QuoteUpdate] {
        &self.updates
    }

    fn play_once(&self, sink: &FeedSink) -> Result<(), Stopped> {
        match self.config.pace {
            Pace::Fast => {
                for chunk in self.updates.chunks(FAST_BATCH) {
                    sink.send(chunk.to_vec())?;
                }
            }
            Pace::Recorded => {
                let start = Instant::now();
                let base = self.updates[0].exchange_time_us;
                let due = |u: &QuoteUpdate| {
                    start + Duration::from_micros((u.exchange_time_us - base) as u64)
                };
                let mut i = 0;
                while i < self.updates.len() {
                    sink.sleep_until(due(&self.updates[i]))?;
                    // Everything due by now goes in one batch.
                    let now = Instant::now();
                    let end = self.updates[i..]
                        .iter()
                        .position(|u| due(u) > now)
                        .map_or(self.updates.len(), |n| i + n);
                    sink.send(self.updates[i..end].to_vec())?;
                    i = end;
                }
            }
        }
        Ok(())
    }
}

impl Feed for ReplayFeed {
    fn kind(&self) -> &'static str {
        "replay"
    }

    fn symbols(&self) -> &[SymbolSpec] {
        &self.symbols
    }

    fn run(self: Box<Self>, sink: FeedSink) -> Result<(), Stopped> {
        sink.sleep_until(Instant::now() + Duration::from_millis(self.config.delay_ms))?;
        loop {
            self.play_once(&sink)?;
            if !self.config.repeat {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> ReplayConfig {
        ReplayConfig {
            path: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(name),
            pace: Pace::Recorded,
            repeat: false,
            delay_ms: 0,
        }
    }

    #[test]
    fn the_csv_and_ndjson_samples_hold_the_same_quotes() {
        let csv = ReplayFeed::open(sample("replay-sample.csv")).unwrap();
        let json = ReplayFeed::open(sample("replay-sample.ndjson")).unwrap();
        assert_eq!(csv.symbols(), json.symbols());
        assert_eq!(csv.updates(), json.updates());
        assert!(csv.symbols().len() >= 3);
        assert!(csv.updates().len() >= 30);
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tickroom-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn open(path: PathBuf) -> Result<ReplayFeed, FeedError> {
        ReplayFeed::open(ReplayConfig {
            path,
            ..sample("x.csv")
        })
    }

    #[test]
    fn records_keep_file_order_and_first_seen_symbol_numbers() {
        let path = write(
            "order.csv",
            "time_us,symbol,last,bid,ask,volume,prev_close\n\
             10,BBB,5.5,5.4,5.6,100,5.0\n\
             20,AAA,1.25,1.2,1.3,7,\n\
             20,BBB,5.75,5.7,5.8,200,\n",
        );
        let f = open(path).unwrap();
        let names: Vec<_> = f.symbols().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["BBB", "AAA"]);
        assert_eq!(f.symbols()[0].prev_close, 5.0);
        assert_eq!(
            f.symbols()[1].prev_close,
            1.25,
            "defaults to the first last"
        );
        let lasts: Vec<_> = f.updates().iter().map(|u| (u.symbol, u.last)).collect();
        assert_eq!(lasts, [(0, 5.5), (1, 1.25), (0, 5.75)]);
    }

    #[test]
    fn bad_files_name_the_line_at_fault() {
        let backwards = write(
            "back.ndjson",
            "{\"time_us\":20,\"symbol\":\"A\",\"last\":1,\"bid\":1,\"ask\":1,\"volume\":1}\n\
             {\"time_us\":10,\"symbol\":\"A\",\"last\":1,\"bid\":1,\"ask\":1,\"volume\":1}\n",
        );
        let err = open(backwards).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("backwards"), "{err}");
        let nan = write(
            "nan.csv",
            "time_us,symbol,last,bid,ask,volume\n1,A,NaN,1,1,1\n",
        );
        assert!(open(nan).unwrap_err().to_string().contains(":2:"));
        assert!(open(write("x.txt", "")).is_err());
        assert!(open(write("empty.csv", "time_us,symbol,last,bid,ask,volume\n")).is_err());
    }
}
