//! Bystanders: a player in the arena and a ticker reader in `prices`, each reading in a task of
//! its own from an address of its own (127.0.0.3, clear of the per-address caps the tests run
//! into) and recording the tick of every snapshot, so a test can assert that whatever it did to
//! the server, they kept every tick.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use prost::Message as _;
use tickroom::Config;
use tickroom::config::RoomConfig;
use tickroom::feed::{FeedConfig, SyntheticConfig};
use tickroom::proto::v1::{
    ServerMessage, Subscribe, client_message::Body, server_message::Body as SBody,
};
use tickroom::sim::ticker::TickerConfig;
use tokio::task::JoinHandle;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{Client, TestServer, WAIT};

/// The ticker room the bystanders read.
pub const PRICES: &str = "prices";
/// Its one symbol.
const SYMBOL: &str = "SYM001";
/// Where the bystanders connect from.
const ADDRESS: [u8; 4] = [127, 0, 0, 3];

/// Adds the ticker room `prices`: 10 Hz, one symbol updated 200 times a second, so each of
/// its ticks has a new value and a reader that keeps every tick sees consecutive ticks.
pub fn with_prices(config: &mut Config) {
    config.rooms.push(RoomConfig::Ticker {
        name: PRICES.into(),
        ticker: TickerConfig {
            tick_hz: 10,
            feed: FeedConfig::Synthetic(SyntheticConfig {
                symbols: 1,
                updates_per_sec: 200.0,
                ..Default::default()
            }),
            ..Default::default()
        },
    });
}

/// Ticks of the snapshots one bystander has seen so far.
type Ticks = Arc<Mutex<Vec<u64>>>;

/// The two bystanders, reading until [`Bystanders::kept_every_tick`].
pub struct Bystanders {
    stop: CancellationToken,
    readers: Vec<(&'static str, Ticks, JoinHandle<()>)>,
}

impl Bystanders {
    /// Joins the arena and subscribes to `prices` (the config needs [`with_prices`]), and
    /// returns once both have their first snapshot.
    pub async fn start(server: &TestServer) -> Self {
        Self::start_with(server, "").await
    }

    /// [`Bystanders::start`] with a query on the WebSocket URL (e.g. `?token=...` where
    /// auth is required).
    pub async fn start_with(server: &TestServer, query: &str) -> Self {
        let mut player = connect_from(server.addr, query).await;
        player.join("arena").await;
        player.snapshot().await;
        let mut reader = connect_from(server.addr, query).await;
        reader.join(PRICES).await;
        reader
            .send(Body::Subscribe(Subscribe {
                symbols: vec![SYMBOL.into()],
            }))
            .await;
        reader.snapshot().await;
        let stop = CancellationToken::new();
        let readers = [("arena", player), (PRICES, reader)]
            .into_iter()
            .map(|(room, client)| {
                let ticks = Ticks::default();
                let task = tokio::spawn(record(client, ticks.clone(), stop.clone()));
                (room, ticks, task)
            })
            .collect();
        Bystanders { readers, stop }
    }

    /// Stops reading and asserts that each bystander kept every tick: snapshots kept coming,
    /// its session was never closed, and every tick missing between two of its snapshots is
    /// one its room never ran (counted in `tickroom_ticks_skipped_total`: a room that falls
    /// too far behind, on a busy machine, skips to the newest due tick).
    pub async fn kept_every_tick(self, server: &TestServer) {
        // Still ticking now: two more snapshots each from here.
        for (room, ticks, task) in &self.readers {
            let seen = ticks.lock().unwrap().len();
            // A reader that ended was cut: its panic shows below.
            super::wait_for(&format!("{room}: two more snapshots"), || async {
                (ticks.lock().unwrap().len() >= seen + 2 || task.is_finished()).then_some(())
            })
            .await;
        }
        self.stop.cancel();
        let (_, body) = super::http_get(server.ops, "/metrics").await;
        let metrics = client_sim::toolkit::prom::Metrics::parse(&body);
        for (room, ticks, task) in self.readers {
            task.await.expect("bystander task");
            let ticks = std::mem::take(&mut *ticks.lock().unwrap());
            let gaps: Vec<_> = ticks
                .windows(2)
                .filter(|w| w[1] != w[0] + 1)
                .map(|w| (w[0], w[1]))
                .collect();
            let missing: u64 = gaps.iter().map(|(a, b)| b.saturating_sub(a + 1)).sum();
            let kind = if room == PRICES { "ticker" } else { "game" };
            let skipped = metrics
                .value("tickroom_ticks_skipped_total", &[("kind", kind)])
                .unwrap_or(0.0) as u64;
            assert!(
                gaps.iter().all(|(a, b)| b > a) && missing <= skipped,
                "{room}: ticks missing (from, to): {gaps:?} in {} snapshots; the room skipped {skipped}",
                ticks.len()
            );
        }
    }
}

async fn connect_from(addr: SocketAddr, query: &str) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((ADDRESS, 0))).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(
            format!("ws://{addr}/ws{query}"),
            MaybeTlsStream::Plain(tcp),
        ),
    )
    .await
    .expect("bystander connects in time")
    .expect("bystander handshake");
    Client { ws }
}

/// Reads until told to stop; the ticks of the snapshots seen. A close or an error fails the
/// test: a bystander is never cut.
async fn record(mut client: Client, ticks: Ticks, stop: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return,
            next = client.ws.next() => next,
        };
        match next {
            Some(Ok(Message::Binary(bytes))) => {
                let m = ServerMessage::decode(bytes).expect("valid ServerMessage");
                if let Some(SBody::Snapshot(_)) = m.body {
                    ticks.lock().unwrap().push(m.tick);
                }
            }
            Some(Ok(_)) => {}
            other => panic!(
                "bystander cut after {} snapshots: {other:?}",
                ticks.lock().unwrap().len()
            ),
        }
    }
}
