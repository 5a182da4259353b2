//! The page at `/` in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `web/test/driver.mjs` (playwright-core over the DevTools protocol) against the real server,
//! with the Rust WebSocket client as the other player in each room. Also the page's assets
//! over plain HTTP: types, caching, the hint for curl.
//!
//! The browser reaches the server through a small TCP relay in this file, so the test can drop
//! the page's connections without the page's help and watch it resume.
//!
//! `TICKROOM_SCREENSHOT=docs/page.png cargo test --test browser` also writes the screenshot
//! README.md shows (relative paths are from the repository root).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tickroom::config::RoomConfig;
use tickroom::feed::{FeedConfig, SyntheticConfig};
use tickroom::proto::v1::server_message::Body as SBody;
use tickroom::sim::chat::ChatConfig;
use tickroom::sim::ticker::TickerConfig;
use tickroom_proto::view::ViewState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::watch;

const ADMIN_TOKEN: &str = "browser-test-admin";
/// Browser-side waits: a page on a busy 2-core machine may take a while to start.
const BROWSER_WAIT: Duration = Duration::from_secs(30);
const PAGE_NAME: &str = "webpage";
/// Bots in the test arena.
const BOTS: u32 = 40;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ------------------------------------------------------------------ the browser

/// One headless Chromium page behind `web/test/driver.mjs`.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: tokio::io::Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

/// Why the browser cannot run here, in words a person can act on. CI installs all of it
/// (.ci/run); a test that needs the browser fails rather than skips without it.
fn browser_prerequisites() -> Result<(), String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err(
            "node (Node.js 20 or later) is not on PATH: install nodejs and npm \
                    (apt-get install nodejs npm; .ci/run does)"
                .into(),
        );
    }
    if !repo().join("web/node_modules/playwright-core").is_dir() {
        return Err("web/node_modules is missing: run `make web-deps` (cd web && npm ci)".into());
    }
    let chromium =
        std::env::var("TICKROOM_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!(
            "{chromium} not found: install Debian's chromium (apt-get install chromium; .ci/run \
             does) or set TICKROOM_CHROMIUM"
        ));
    }
    Ok(())
}

impl Browser {
    async fn launch() -> Browser {
        if let Err(why) = browser_prerequisites() {
            panic!("cannot run the browser tests: {why}");
        }
        let mut child = Command::new("node")
            .arg(repo().join("web/test/driver.mjs"))
            .current_dir(repo().join("web"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(BROWSER_WAIT * 2, stdout.next_line())
            .await
            .expect("chromium starts in time")
            .expect("driver output")
            .expect("the driver says it is ready (see its error above)");
        let ready: Value = serde_json::from_str(&ready).expect("JSON from the driver");
        assert_eq!(ready["ready"], true, "{ready}");
        eprintln!("browser: Chromium {}", ready["version"]);
        Browser {
            child,
            stdin,
            stdout,
            next_id: 1,
        }
    }

    /// Sends one command and waits for its answer; panics with the driver's error.
    async fn call(&mut self, mut cmd: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = id.into();
        let what = cmd["cmd"].as_str().unwrap_or("?").to_owned();
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("driver alive");
        self.stdin.flush().await.unwrap();
        loop {
            let line = tokio::time::timeout(BROWSER_WAIT * 2, self.stdout.next_line())
                .await
                .unwrap_or_else(|_| panic!("driver answers {what} in time"))
                .expect("driver output")
                .unwrap_or_else(|| panic!("driver exited during {what}"));
            let answer: Value = serde_json::from_str(&line).expect("JSON from the driver");
            if answer["id"] != id {
                continue;
            }
            if answer["ok"] != true {
                panic!(
                    "browser {what} failed: {}",
                    answer["error"].as_str().unwrap_or("?")
                );
            }
            return answer["value"].clone();
        }
    }

    async fn eval(&mut self, expr: &str) -> Value {
        self.call(json!({"cmd": "eval", "expr": expr})).await
    }

    /// Waits until `expr` is truthy in the page; returns its value.
    async fn wait(&mut self, what: &str, expr: &str) -> Value {
        let timeout = BROWSER_WAIT.as_millis() as u64;
        let cmd = json!({"cmd": "wait", "expr": expr, "timeoutMs": timeout});
        let id = self.next_id;
        let v = self.call(cmd).await;
        assert!(!v.is_null(), "waiting for {what} (command {id})");
        v
    }

    /// The page's `window.tickroom.state()`.
    async fn state(&mut self) -> Value {
        self.eval("window.tickroom.state()").await
    }

    async fn screenshot(&mut self, selector: Option<&str>, path: Option<&Path>) -> String {
        let mut cmd = json!({"cmd": "screenshot"});
        if let Some(s) = selector {
            cmd["selector"] = s.into();
        }
        if let Some(p) = path {
            cmd["path"] = p.to_string_lossy().into_owned().into();
        }
        self.call(cmd)
            .await
            .as_str()
            .expect("base64 PNG")
            .to_owned()
    }

    async fn errors(&mut self) -> Vec<String> {
        serde_json::from_value(self.call(json!({"cmd": "errors"})).await).unwrap()
    }

    async fn close(mut self) {
        self.call(json!({"cmd": "close"})).await;
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

// ------------------------------------------------------------------ a relay that can cut

/// Forwards TCP connections to the server; `cut` drops every connection open now (a FIN to
/// each side, no WebSocket close frame: a lost connection) and keeps accepting new ones.
struct Relay {
    addr: SocketAddr,
    cut: Arc<watch::Sender<u64>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(watch::channel(0u64).0);
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                // Subscribed now: only cuts after this connection opened end it.
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, cut }
    }

    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

// ------------------------------------------------------------------ the other player

/// What the other player sees: each object's (x, y, seq) in units of 1/position_scale, as of
/// the newest snapshot it applied.
#[derive(Debug, Clone, Default)]
struct Seen {
    tick: u64,
    objects: HashMap<u32, (u32, u32, u32)>,
}

/// A Rust client in the arena speaking protocol 2 with the Rust reference view state
/// (`tickroom_proto::view`). It reads in the background for as long as the test runs, so the
/// server never takes it for a slow consumer while the test is busy with the browser.
struct Player {
    seen: watch::Receiver<Seen>,
}

impl Player {
    async fn join(server: &TestServer) -> Player {
        let mut client = Client::connect(server).await;
        let welcome = client.join_speaking("arena", "", "", 2).await;
        assert_eq!(welcome.position_scale, 64, "a protocol 2 Welcome");
        let (tx, seen) = watch::channel(Seen::default());
        tokio::spawn(async move {
            let mut view = ViewState::default();
            while let Ok(m) = client.next().await {
                let Some(SBody::Snapshot(snap)) = m.body else {
                    continue;
                };
                let Some(v) = &snap.view else {
                    // Fails the waits that follow ("the other client stopped reading").
                    panic!("a protocol 2 snapshot without a view: {snap:?}");
                };
                if view.apply(m.tick, v).is_err() {
                    continue; // a delta on a base we lack: the next keyframe repairs it
                }
                let objects = view
                    .rows()
                    .iter()
                    .map(|r| (r.id, (r.x, r.y, r.seq)))
                    .collect();
                if tx
                    .send(Seen {
                        tick: m.tick,
                        objects,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Player { seen }
    }

    /// Waits until the other player sees object `id` in a state `pred` accepts.
    async fn sees(
        &mut self,
        what: &str,
        id: u32,
        pred: impl Fn(u32, u32, u32) -> bool,
    ) -> (u32, u32, u32) {
        let found = {
            let wait = tokio::time::timeout(
                BROWSER_WAIT,
                self.seen
                    .wait_for(|s| s.objects.get(&id).is_some_and(|&(x, y, q)| pred(x, y, q))),
            )
            .await;
            match wait {
                Ok(Ok(seen)) => Ok(seen.objects[&id]),
                Ok(Err(_)) => Err("the other client stopped reading"),
                Err(_) => Err("timed out"),
            }
        };
        found.unwrap_or_else(|why| {
            let seen = self.seen.borrow();
            panic!(
                "waiting for the other client to see {what}: {why}; at tick {} it sees {:?}",
                seen.tick,
                seen.objects.get(&id)
            )
        })
    }
}

// ------------------------------------------------------------------ the server

/// The test arena ([`BOTS`] bots, one view for the whole room so both players see each other), a
/// ticker room and a chat room named as the page expects, and the admin API.
fn page_config() -> tickroom::Config {
    let mut c = test_config();
    c.admin.token = ADMIN_TOKEN.into();
    let game = arena(&mut c);
    game.bots = BOTS;
    game.cell_size = 0.0;
    c.rooms.push(RoomConfig::Ticker {
        name: "ticker".into(),
        ticker: TickerConfig {
            tick_hz: 20,
            max_symbols_per_session: 100,
            feed: FeedConfig::Synthetic(SyntheticConfig {
                symbols: 20,
                updates_per_sec: 5.0,
                ..Default::default()
            }),
        },
    });
    c.rooms.push(RoomConfig::Chat {
        name: "chat".into(),
        chat: ChatConfig {
            blocked_words: vec!["badword".into()],
            ..ChatConfig::default()
        },
    });
    c
}

async fn admin_post(server: &TestServer, path: &str, body: &str) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _) = http_call(server.ops, "POST", path, &[("Authorization", &auth)], body).await;
    assert_eq!(status, 202, "POST {path}");
}

/// `GET /api/v1/quotes` for one symbol: (seq, last, bid, ask).
async fn rest_quote(server: &TestServer, symbol: &str) -> (u64, f64, f64, f64) {
    let (status, body) = http_get(
        server.addr,
        &format!("/api/v1/quotes?room=ticker&symbols={symbol}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let q = &v["quotes"][0];
    (
        q["seq"].as_u64().unwrap(),
        q["last"].as_f64().unwrap(),
        q["bid"].as_f64().unwrap(),
        q["ask"].as_f64().unwrap(),
    )
}

/// Where the README screenshot goes, when asked for.
fn screenshot_path() -> Option<PathBuf> {
    let p = std::env::var_os("TICKROOM_SCREENSHOT")?;
    let p = PathBuf::from(p);
    Some(if p.is_absolute() { p } else { repo().join(p) })
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_plays_quotes_chats_and_resumes_in_chromium() {
    let started = Instant::now();
    let server = start(page_config()).await;
    let relay = Relay::start(server.addr).await;
    let mut b = Browser::launch().await;
    let url = format!(
        "http://{}/?name={PAGE_NAME}&symbols=SYM001,SYM002,SYM003,SYM004,SYM005,SYM006",
        relay.addr
    );
    assert_eq!(b.call(json!({"cmd": "goto", "url": url})).await, 200);

    // Loaded: every room joined, the arena drawn with its bots, prices on the board.
    let s = b
        .wait(
            "all three rooms joined, bots and prices shown",
            &format!(
                "(() => {{ const s = window.tickroom?.state(); \
                   return s && s.arena.state === 'joined' && s.arena.server !== null \
                     && s.arena.bots === {BOTS} && s.board.state === 'joined' \
                     && ['SYM001','SYM002','SYM003'].every(k => s.board.values[k]) \
                     && s.chat.state === 'joined' ? s : null; }})()"
            ),
        )
        .await;
    let my_id = s["arena"]["id"].as_u64().unwrap() as u32;
    assert_ne!(my_id, 0);
    assert_eq!(
        b.errors().await,
        Vec::<String>::new(),
        "console errors on load"
    );

    // The canvas changes as the room ticks.
    let before = b.screenshot(Some("#arena"), None).await;
    let tick = s["arena"]["tick"].as_u64().unwrap();
    b.wait(
        "ten more ticks",
        &format!("window.tickroom.state().arena.tick >= {}", tick + 10),
    )
    .await;
    let after = b.screenshot(Some("#arena"), None).await;
    assert_ne!(
        before, after,
        "two screenshots of the arena ten ticks apart"
    );

    // What the page does when nobody touches it, over three seconds of its own clock.
    let a = b.state().await["totals"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let z = b.state().await["totals"].clone();
    let secs = (z["at"].as_f64().unwrap() - a["at"].as_f64().unwrap()) / 1000.0;
    let rate = |k: &str| (z[k].as_f64().unwrap() - a[k].as_f64().unwrap()) / secs;
    eprintln!(
        "browser: over {secs:.1} s idle the page drew {:.1} frames/s, took {:.1} arena \
         snapshots/s, {:.0} bytes/s in all ({:.0} of them the arena's), {:.1} messages/s",
        rate("frames"),
        rate("snapshots"),
        rate("bytes"),
        rate("arenaBytes"),
        rate("messages"),
    );
    assert!(rate("frames") > 5.0, "the page draws");
    assert!(
        rate("snapshots") > 10.0,
        "snapshots arrive at the room's rate (60 Hz; conflated when the page is slow)"
    );

    // Keys move the own avatar, and another client sees it where the page says it is.
    let mut other = Player::join(&server).await;
    let start_x = s["arena"]["server"]["x"].as_u64().unwrap();
    let (key, sign) = if start_x > 32_000 {
        ("ArrowLeft", -1i64)
    } else {
        ("ArrowRight", 1)
    };
    b.call(json!({"cmd": "focus", "selector": "#arena"})).await;
    b.call(json!({"cmd": "keydown", "key": key})).await;
    // 100 world units (30 inputs at 60 Hz, half a second).
    let target = start_x as i64 + sign * 100 * 64;
    b.wait(
        "the avatar to walk 100 units",
        &format!(
            "(() => {{ const a = window.tickroom.state().arena; \
               return a.server && ({sign} > 0 ? a.server.x >= {target} : a.server.x <= {target}); }})()"
        ),
    )
    .await;
    b.call(json!({"cmd": "keyup", "key": key})).await;
    let arena = b
        .wait(
            "every input acknowledged",
            "(() => { const a = window.tickroom.state().arena; \
               return a.pending === 0 && a.seq > 0 && a.server.seq === a.seq ? a : null; })()",
        )
        .await;
    let (px, py) = (
        arena["server"]["x"].as_u64().unwrap() as u32,
        arena["server"]["y"].as_u64().unwrap() as u32,
    );
    let seq = arena["seq"].as_u64().unwrap() as u32;
    assert_eq!(arena["predicted"]["x"], arena["server"]["x"]);
    assert_eq!(arena["predicted"]["y"], arena["server"]["y"]);
    let seen = other
        .sees("the page's avatar with its last input", my_id, |_, _, s| {
            s == seq
        })
        .await;
    assert_eq!(
        (seen.0, seen.1),
        (px, py),
        "the page's avatar as the other client sees it"
    );
    // The page's step is the server's, bit for bit (docs/protocol.md 4.1).
    assert_eq!(
        arena["mispredictions"], 0,
        "every acknowledged input was predicted exactly: {arena}"
    );
    eprintln!(
        "browser: walked {} inputs to ({px}, {py})/64, {} predictions confirmed",
        seq, arena["confirmedPredictions"]
    );

    // The board shows what GET /api/v1/quotes says, by the time the answer is in.
    let mut matched = std::collections::BTreeSet::new();
    let deadline = Instant::now() + BROWSER_WAIT;
    while matched.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the board never agreed with the REST API three times ({matched:?})"
        );
        let (seq, last, bid, ask) = rest_quote(&server, "SYM001").await;
        let page = b.eval("window.tickroom.state().board.values.SYM001").await;
        let page_seq = page["seq"].as_u64().unwrap();
        assert!(
            page_seq <= seq + 1,
            "the page is not ahead of the room: {page_seq} vs {seq}"
        );
        if page_seq >= seq {
            let at = page["history"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["seq"] == seq)
                .unwrap_or_else(|| panic!("seq {seq} in the page's history: {page}"));
            assert_eq!(
                (at["last"].as_f64(), at["bid"].as_f64(), at["ask"].as_f64()),
                (Some(last), Some(bid), Some(ask)),
                "SYM001 at seq {seq}"
            );
            matched.insert(seq);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the price on the board itself changes (and flashes).
    let cell = "document.querySelector('#board tr[data-symbol=SYM001] td.last')";
    let shown = b.eval(&format!("{cell}.textContent")).await;
    b.wait(
        "SYM001's price on the board to change",
        &format!("{cell}.textContent !== {shown} && /flash-(up|down)/.test({cell}.className)"),
    )
    .await;
    let board = b.state().await["board"].clone();
    assert!(
        !board["values"]["SYM001"]["stale"].as_bool().unwrap(),
        "a live value is not marked stale"
    );

    // Chat both ways, masked where the filter says; notices and gifts styled apart.
    let mut viewer = Client::connect(&server).await;
    viewer.join_as("chat", "", "rustbot").await;
    b.call(json!({"cmd": "fill", "selector": "#chat-text", "text": "hello from the page"}))
        .await;
    b.call(json!({"cmd": "press", "selector": "#chat-text", "key": "Enter"}))
        .await;
    let got = viewer
        .recv_until(|m| match &m.body {
            Some(SBody::ChatBatch(batch)) => batch.messages.iter().any(|c| c.from == PAGE_NAME),
            _ => false,
        })
        .await;
    let Some(SBody::ChatBatch(batch)) = got.body else {
        unreachable!()
    };
    let line = batch.messages.iter().find(|c| c.from == PAGE_NAME).unwrap();
    assert_eq!(line.text, "hello from the page");
    viewer.say("no badword here", 1).await;
    admin_post(
        &server,
        "/admin/rooms/chat/notice",
        r#"{"text": "maintenance at noon"}"#,
    )
    .await;
    admin_post(
        &server,
        "/admin/rooms/chat/gift",
        r#"{"from": "rustbot", "gift": "rocket", "count": 3}"#,
    )
    .await;
    let shown = b
        .wait(
            "the test client's line, masked, a notice and a gift on the page",
            "(() => { const ls = [...document.querySelectorAll('#chat-lines li')]; \
               const by = (c) => ls.find(l => l.classList.contains(c)); \
               const user = ls.find(l => l.textContent.includes('rustbot') && l.classList.contains('user')); \
               return user && by('notice') && by('gift') && ls.some(l => l.classList.contains('mine')) \
                 ? { user: user.textContent, notice: by('notice').textContent, gift: by('gift').textContent } : null; })()",
        )
        .await;
    assert_eq!(shown["user"], "rustbotno ******* here", "{shown}");
    assert_eq!(shown["notice"], "maintenance at noon");
    assert_eq!(shown["gift"], "rustbot sent 3 × rocket");

    if let Some(path) = screenshot_path() {
        b.screenshot(None, Some(&path)).await;
        eprintln!("browser: wrote {}", path.display());
    }

    // Cut every connection of the page: it comes back and resumes the same avatar.
    let before = b.state().await;
    relay.cut();
    let back = b
        .wait(
            "the page to reconnect and resume",
            &format!(
                "(() => {{ const s = window.tickroom.state(); \
                   return s.arena.reconnects > {} && s.arena.state === 'joined' && s.arena.resumed \
                     && s.arena.server !== null && s.board.state === 'joined' && s.chat.state === 'joined' \
                     && s.board.reconnects > 0 && s.chat.reconnects > 0 ? s : null; }})()",
                before["arena"]["reconnects"]
            ),
        )
        .await;
    assert_eq!(back["arena"]["id"], my_id, "the same avatar after the cut");
    assert_ne!(
        back["arena"]["sessionId"], before["arena"]["sessionId"],
        "a new connection"
    );
    // Its inputs continue above the highest sent: the avatar moves again.
    let seq_before = back["arena"]["seq"].as_u64().unwrap();
    b.call(json!({"cmd": "focus", "selector": "#arena"})).await;
    b.call(json!({"cmd": "keydown", "key": "ArrowDown"})).await;
    b.wait(
        "inputs after the resume to be acknowledged",
        &format!(
            "(() => {{ const a = window.tickroom.state().arena; return a.server && a.server.seq > {}; }})()",
            seq_before + 5
        ),
    )
    .await;
    b.call(json!({"cmd": "keyup", "key": "ArrowDown"})).await;
    let moved = other
        .sees("the resumed avatar's new inputs", my_id, |_, _, s| {
            s > seq_before as u32
        })
        .await;
    assert!(moved.1 > py, "it walked down: {moved:?} from ({px}, {py})");
    b.wait(
        "the board to update again after the cut",
        "(() => { const s = window.tickroom.state(); return s.board.values.SYM001 && !s.board.values.SYM001.stale; })()",
    )
    .await;

    // The page's own figures over the last second.
    let s = b.state().await;
    let rates = &s["rates"];
    eprintln!(
        "browser: {:.1} frames/s, {:.1} snapshots/s, {:.0} bytes/s ({:.1} messages/s), ping {} ms; \
         arena view: {} keyframes, {} deltas, {} protocol 1 snapshots, {} missed bases, {} failed",
        rates["fps"].as_f64().unwrap_or(0.0),
        rates["snapshotsPerSec"].as_f64().unwrap_or(0.0),
        rates["bytesPerSec"].as_f64().unwrap_or(0.0),
        rates["messagesPerSec"].as_f64().unwrap_or(0.0),
        rates["rttMs"],
        s["arena"]["view"]["keyframes"],
        s["arena"]["view"]["deltas"],
        s["arena"]["view"]["objectSnapshots"],
        s["arena"]["view"]["missedBase"],
        s["arena"]["view"]["failed"],
    );
    assert!(
        rates["fps"].as_f64().unwrap() > 5.0,
        "the page draws: {rates}"
    );
    assert!(
        rates["snapshotsPerSec"].as_f64().unwrap() > 10.0,
        "snapshots arrive at the room's rate (60 Hz, conflated when the page is slow): {rates}"
    );
    assert_eq!(
        s["arena"]["view"]["failed"], 0,
        "no view failed its checksum"
    );
    eprintln!("browser: arena view figures {}", s["arena"]["view"]);
    assert!(
        s["arena"]["view"]["deltas"].as_u64().unwrap() > 0
            && s["arena"]["view"]["objectSnapshots"] == 0,
        "the page speaks protocol 2 (views, not objects): {}",
        s["arena"]["view"]
    );
    assert_eq!(b.errors().await, Vec::<String>::new(), "console errors");

    b.close().await;
    server.stop().await;
    eprintln!(
        "browser: test took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_assets_have_types_caching_and_curl_gets_a_hint() {
    let server = start(test_config()).await;
    let html = [("accept", "text/html,application/xhtml+xml,*/*;q=0.8")];
    for (path, headers, content_type) in [
        ("/", &html[..], "text/html; charset=utf-8"),
        ("/assets/app.js", &[][..], "text/javascript; charset=utf-8"),
        ("/assets/app.css", &[][..], "text/css; charset=utf-8"),
    ] {
        let a = http_answer(server.addr, "GET", path, headers, "").await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(a.headers["content-type"], content_type, "{path}");
        assert_eq!(a.headers["cache-control"], "no-cache", "{path}");
        assert_eq!(a.headers["x-content-type-options"], "nosniff", "{path}");
        let etag = a.headers["etag"].to_str().unwrap().to_owned();
        assert!(
            etag.starts_with('"') && etag.len() == 18,
            "{path}: strong ETag {etag}"
        );
        assert!(!a.body.is_empty());

        // Revalidation: the same ETag is 304 without a body, weak or in a list too.
        for inm in [etag.clone(), format!("\"x\", W/{etag}"), "*".into()] {
            let mut h = headers.to_vec();
            h.push(("if-none-match", &inm));
            let r = http_answer(server.addr, "GET", path, &h, "").await;
            assert_eq!(r.status, 304, "{path} If-None-Match: {inm}");
            assert_eq!(r.headers["etag"], etag.as_str());
            assert!(r.body.is_empty());
        }
        let mut h = headers.to_vec();
        h.push(("if-none-match", "\"0000000000000000\""));
        assert_eq!(
            http_answer(server.addr, "GET", path, &h, "").await.status,
            200
        );

        // HEAD: the headers of GET, no body.
        let head = http_answer(server.addr, "HEAD", path, headers, "").await;
        assert_eq!(head.status, 200, "HEAD {path}");
        assert_eq!(head.headers["etag"], etag.as_str());
        assert_eq!(head.headers["content-type"], content_type);
        assert!(head.body.is_empty());
    }
    let page = http_answer(server.addr, "GET", "/", &html, "").await;
    let text = page.text();
    assert!(text.contains("/assets/app.js") && text.contains("/assets/app.css"));
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("connect-src")
    );

    // curl (Accept: */*) and clients that send no Accept get the one-line hint.
    for accept in [&[("accept", "*/*")][..], &[][..]] {
        let a = http_answer(server.addr, "GET", "/", accept, "").await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(a.text(), tickroom::http::page::HINT);
        assert_eq!(a.text().lines().count(), 1);
    }
    server.stop().await;
}
