//! The failover report: what the clients handed back, added up; its JSON schema (the field
//! names) and its table.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Instant;

use super::track::History;
use crate::drive::ConnTally;
use crate::report::{Outcome, Table, counts, list, nearest_rank, round2};
use crate::swarm::Conn;

/// What one client hands back when the run ends.
#[derive(Debug, Default)]
pub struct ClientEnd {
    pub id: usize,
    /// The URL it joined through first (`--urls` round-robin).
    pub through: String,
    /// Why that first join failed (it did not try again).
    pub join_fail: Option<String>,
    /// The node it was in the room on when the run ended (where its last join landed);
    /// `None` while it was still trying to get back in.
    pub ended_on: Option<String>,
    /// Why its latest try to get back in failed.
    pub last_error: Option<String>,
    pub history: History,
    pub conn: Conn,
}

#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub scenario: &'static str,
    pub config: FailoverConfig,
    /// From the first join to the end of the run.
    pub wall_s: f64,
    pub interrupted: bool,
    pub clients: usize,
    /// Clients in the room (Welcome and a first snapshot) through their own URL.
    pub joined: u64,
    pub failed_joins: u64,
    pub first_join_error: Option<String>,
    /// Clients whose connection ended at least once before the run did.
    pub lost: u64,
    /// Of those, the ones back in the room after every loss.
    pub recovered: u64,
    /// Lost connections in all (a client may lose more than one), by cause: `dropped` (reset
    /// or end of stream, no close frame) or `close CODE`.
    pub losses: u64,
    pub loss_causes: BTreeMap<String, u64>,
    /// Loss → first snapshot after it, per loss recovered.
    pub recovery_ms: Recovery,
    /// Tries per loss, the one that got back in included (a loss not recovered: those made
    /// by the end).
    pub attempts: Attempts,
    /// Why a try failed last, at a client that did not get back in.
    pub last_attempt_error: Option<String>,
    /// Redirects followed, first joins and tries after losses.
    pub redirects: u64,
    /// The longest time between two snapshots at any client, losses included.
    pub max_snapshot_gap_ms: f64,
    /// Clients by the node they were in the room on at the end (`none`: trying to get back
    /// in, or never joined).
    pub ended_on: BTreeMap<String, u64>,
    /// Error messages received, by code name (`redirect`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Close codes the servers sent, by code.
    pub close_codes: BTreeMap<u16, u64>,
    pub per_client: Vec<ClientRow>,
    pub warnings: Vec<String>,
    /// `--urls` as given, for messages.
    #[serde(skip)]
    urls_text: String,
}

#[derive(Debug, Serialize)]
pub struct FailoverConfig {
    pub urls: Vec<String>,
    pub room: String,
    pub clients: usize,
    pub duration_s: f64,
}

/// Recovery times, ms (nearest rank over the losses recovered).
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Recovery {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Attempts {
    pub samples: usize,
    pub p50: u32,
    pub max: u32,
}

#[derive(Debug, Serialize)]
pub struct ClientRow {
    pub client: usize,
    pub joined_through: String,
    pub ended_on: Option<String>,
    pub snapshots: u64,
    pub max_gap_ms: f64,
    pub redirects: u64,
    pub losses: Vec<LossRow>,
}

#[derive(Debug, Serialize)]
pub struct LossRow {
    /// Seconds after the run started.
    pub at_s: f64,
    pub cause: String,
    pub attempts: u32,
    /// `None`: not back in by the end.
    pub recovery_ms: Option<f64>,
}

/// Where the clients not in the room at the end are counted in `ended_on`.
pub const NOWHERE: &str = "none";

fn ms(d: std::time::Duration) -> f64 {
    round2(d.as_secs_f64() * 1e3)
}

impl FailoverReport {
    /// Adds up the clients' ends (in any order) of a run that started at `start`.
    pub fn new(
        config: FailoverConfig,
        mut ends: Vec<ClientEnd>,
        start: Instant,
        wall_s: f64,
        interrupted: bool,
        warnings: Vec<String>,
    ) -> Self {
        ends.sort_by_key(|e| e.id);
        let conns = ConnTally::of(ends.iter().map(|e| &e.conn));
        let histories = || ends.iter().map(|e| &e.history);
        let mut recoveries: Vec<f64> = histories()
            .flat_map(|h| h.losses.iter().filter_map(|l| l.recovery().map(ms)))
            .collect();
        recoveries.sort_by(f64::total_cmp);
        let mut attempts: Vec<u32> = histories()
            .flat_map(|h| h.losses.iter().map(|l| l.attempts))
            .collect();
        attempts.sort_unstable();
        let mut loss_causes = BTreeMap::new();
        for loss in histories().flat_map(|h| &h.losses) {
            *loss_causes.entry(loss.cause.clone()).or_insert(0) += 1;
        }
        let mut ended_on = BTreeMap::new();
        for e in &ends {
            let on = e.ended_on.as_deref().unwrap_or(NOWHERE);
            *ended_on.entry(on.to_owned()).or_insert(0) += 1;
        }
        let per_client = ends
            .iter()
            .map(|e| ClientRow {
                client: e.id,
                joined_through: e.through.clone(),
                ended_on: e.ended_on.clone(),
                snapshots: e.history.snapshots,
                max_gap_ms: ms(e.history.max_gap),
                redirects: e.conn.redirects,
                losses: (e.history.losses.iter())
                    .map(|l| LossRow {
                        at_s: round2(l.at.saturating_duration_since(start).as_secs_f64()),
                        cause: l.cause.clone(),
                        attempts: l.attempts,
                        recovery_ms: l.recovery().map(ms),
                    })
                    .collect(),
            })
            .collect();
        let count = |f: fn(&History) -> bool| histories().filter(|h| f(h)).count() as u64;
        FailoverReport {
            scenario: "failover",
            urls_text: config.urls.join(","),
            clients: config.clients,
            config,
            wall_s: round2(wall_s),
            interrupted,
            joined: count(|h| h.joined_at.is_some()),
            failed_joins: ends.iter().filter(|e| e.join_fail.is_some()).count() as u64,
            first_join_error: ends.iter().find_map(|e| e.join_fail.clone()),
            lost: count(History::lost_any),
            recovered: count(History::recovered),
            losses: histories().map(|h| h.losses.len() as u64).sum(),
            loss_causes,
            recovery_ms: Recovery {
                samples: recoveries.len(),
                p50: nearest_rank(&recoveries, 0.5).unwrap_or_default(),
                p99: nearest_rank(&recoveries, 0.99).unwrap_or_default(),
                max: recoveries.last().copied().unwrap_or_default(),
            },
            attempts: Attempts {
                samples: attempts.len(),
                p50: nearest_rank(&attempts, 0.5).unwrap_or_default(),
                max: attempts.last().copied().unwrap_or_default(),
            },
            last_attempt_error: ends
                .iter()
                .filter(|e| e.history.lost_any() && !e.history.recovered())
                .find_map(|e| e.last_error.clone()),
            redirects: conns.redirects,
            max_snapshot_gap_ms: histories().map(|h| ms(h.max_gap)).fold(0.0, f64::max),
            ended_on,
            errors: conns.errors,
            close_codes: conns.close_codes,
            per_client,
            warnings,
        }
    }

    /// The report as an aligned plain-text table for stdout.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut t = Table::default();
        t.line(format_args!(
            "client-sim failover: {} clients -> room {:?} through {}, {:.1} s (wall {:.1} s){}",
            c.clients,
            c.room,
            c.urls.join(", "),
            c.duration_s,
            self.wall_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        ));
        t.row(
            "clients",
            format!(
                "joined {}/{}, failed joins {}",
                self.joined, self.clients, self.failed_joins
            ),
        );
        if let Some(e) = &self.first_join_error {
            t.row("first join error", e);
        }
        t.row(
            "lost connection",
            format!(
                "{} clients, {} losses{}",
                self.lost,
                self.losses,
                counts(&self.loss_causes)
            ),
        );
        t.row(
            "recovered",
            format!("{}/{} clients", self.recovered, self.lost),
        );
        let r = &self.recovery_ms;
        if r.samples > 0 {
            t.row(
                "recovery",
                format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} losses)",
                    r.p50, r.p99, r.max, r.samples
                ),
            );
        }
        let a = &self.attempts;
        if a.samples > 0 {
            t.row("attempts", format!("p50 {}, max {} per loss", a.p50, a.max));
        }
        if let Some(e) = &self.last_attempt_error {
            t.row("last attempt error", e);
        }
        t.row("redirects", self.redirects);
        t.row(
            "longest snapshot gap",
            format!("{:.1} ms", self.max_snapshot_gap_ms),
        );
        let mut on: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for row in &self.per_client {
            let url = row.ended_on.as_deref().unwrap_or(NOWHERE);
            on.entry(url).or_default().push(row.client);
        }
        for (url, clients) in on {
            t.row(
                "ended on",
                format!("{url}: {} (clients {})", clients.len(), ranges(&clients)),
            );
        }
        t.row("errors", list(&self.errors));
        t.row("close codes", list(&self.close_codes));
        for w in &self.warnings {
            t.line(format_args!("WARNING: {w}"));
        }
        t.into_string()
    }
}

impl Outcome for FailoverReport {
    fn summary(&self) -> (String, u64, &str) {
        (self.table(), self.joined, &self.urls_text)
    }

    fn failure(&self) -> Option<String> {
        (self.recovered < self.lost).then(|| {
            format!(
                "{} of {} clients that lost their connection were not back in room {:?} by the end",
                self.lost - self.recovered,
                self.lost,
                self.config.room
            )
        })
    }
}

/// Sorted client numbers as runs: `0-3, 5, 7-9`.
fn ranges(ids: &[usize]) -> String {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &id in ids {
        match runs.last_mut() {
            Some((_, end)) if id == *end + 1 => *end = id,
            _ => runs.push((id, id)),
        }
    }
    let runs: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    runs.join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::track::DROPPED;
    use super::*;

    /// Four clients: two lost their node and came back on the other (one after three tries,
    /// one after five), one lost it and was still trying at the end, one never lost it.
    #[test]
    fn adds_up_losses_and_recoveries() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let (a, b) = ("ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws");
        let client = |id: usize, snapshots: &[u64], loss: Option<(u64, u32)>, on: Option<&str>| {
            let mut h = History::default();
            let (before, after) = snapshots.split_at(snapshots.len().min(2));
            for &s in before {
                h.snapshot(t0 + ms(s));
            }
            if let Some((at, tries)) = loss {
                h.lost(t0 + ms(at), DROPPED);
                for _ in 0..tries {
                    h.attempt();
                }
            }
            for &s in after {
                h.snapshot(t0 + ms(s));
            }
            ClientEnd {
                id,
                through: [a, b][id % 2].into(),
                ended_on: on.map(str::to_owned),
                last_error: loss.map(|_| "connect: Connection refused (os error 111)".into()),
                history: h,
                conn: Conn {
                    joined: true,
                    redirects: 1,
                    ..Conn::default()
                },
                ..ClientEnd::default()
            }
        };
        let ends = vec![
            client(3, &[0, 100, 200], None, Some(b)),
            client(0, &[0, 100, 1_300], Some((300, 3)), Some(b)),
            client(1, &[0, 100, 2_300, 2_316], Some((300, 5)), Some(b)),
            client(2, &[0, 100], Some((300, 40)), None),
        ];
        let config = FailoverConfig {
            urls: vec![a.into(), b.into()],
            room: "duel".into(),
            clients: 4,
            duration_s: 3.0,
        };
        let r = FailoverReport::new(config, ends, t0, 3.05, false, vec![]);
        assert_eq!((r.clients, r.joined, r.failed_joins), (4, 4, 0));
        assert_eq!((r.lost, r.recovered, r.losses), (3, 2, 3));
        assert_eq!(r.loss_causes[DROPPED], 3);
        assert_eq!(
            r.recovery_ms,
            Recovery {
                samples: 2,
                p50: 1_000.0,
                p99: 2_000.0,
                max: 2_000.0
            }
        );
        assert_eq!(
            r.attempts,
            Attempts {
                samples: 3,
                p50: 5,
                max: 40
            }
        );
        assert_eq!(r.redirects, 4);
        assert_eq!(r.max_snapshot_gap_ms, 2_200.0);
        assert_eq!(r.ended_on[b], 3);
        assert_eq!(r.ended_on[NOWHERE], 1);
        assert!(r.last_attempt_error.as_deref().unwrap().contains("refused"));
        let ids: Vec<usize> = r.per_client.iter().map(|c| c.client).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        let c0 = &r.per_client[0];
        assert_eq!((c0.joined_through.as_str(), c0.max_gap_ms), (a, 1_200.0));
        assert_eq!(c0.losses[0].at_s, 0.3);
        assert_eq!(c0.losses[0].recovery_ms, Some(1_000.0));
        assert_eq!(r.per_client[2].losses[0].recovery_ms, None);
        let why = r.failure().unwrap();
        assert!(why.starts_with("1 of 3 clients"), "{why}");

        let table = r.table();
        for row in [
            "lost connection      3 clients, 3 losses (dropped 3)",
            "recovered            2/3 clients",
            "recovery             p50 1000.0 ms, p99 2000.0 ms, max 2000.0 ms (2 losses)",
            "attempts             p50 5, max 40 per loss",
            "longest snapshot gap 2200.0 ms",
            "ended on             ws://127.0.0.1:2/ws: 3 (clients 0-1, 3)",
            "ended on             none: 1 (clients 2)",
        ] {
            assert!(table.contains(row), "{row:?} in\n{table}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["recovery_ms"]["p99"], 2_000.0);
        assert_eq!(json["attempts"]["max"], 40);
        assert_eq!(json["per_client"][1]["ended_on"], b);
        assert_eq!(json["per_client"][2]["ended_on"], serde_json::Value::Null);
        assert!(json.get("urls_text").is_none());
    }

    #[test]
    fn client_numbers_as_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 3, 5, 7, 8, 9]), "0-3, 5, 7-9");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }
}
