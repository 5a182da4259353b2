//! Real parts for the cluster tests: a `nats-server` with JetStream on a port it picks, and
//! tickroom nodes and feed publishers as real processes of the built binary (so a node can
//! be killed with SIGKILL). Every process is killed when its handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{TestServer, eventually};

/// A directory of its own for each test, removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tickroom-{tag}-{}-{}",
            std::process::id(),
            crate::common::unique()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nats-server -js` on loopback with a temporary store.
pub struct Nats {
    pub port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl Nats {
    /// Starts on a port of the server's choosing (read back from its ports file).
    pub async fn start(dir: &Path) -> Self {
        let mut nats = Self {
            port: 0,
            dir: dir.join("nats"),
            process: None,
        };
        nats.spawn(None).await;
        nats
    }

    async fn spawn(&mut self, port: Option<u16>) {
        let ports = self.dir.join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).unwrap();
        let port_arg = port.map_or("-1".to_owned(), |p| p.to_string());
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port_arg])
            .arg("-sd")
            .arg(self.dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (apt-get install nats-server; .ci/run does)");
        self.process = Some(Process(child));
        let mut found = None;
        eventually("nats-server writes its ports file", || {
            found = std::fs::read_dir(&ports)
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .and_then(|e| std::fs::read_to_string(e.path()).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            std::future::ready(found.is_some())
        })
        .await;
        let url = found.unwrap()["nats"][0].as_str().unwrap().to_owned();
        self.port = url.rsplit(':').next().unwrap().parse().unwrap();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (the bus is lost).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts it again on the same port and store.
    pub async fn restart(&mut self) {
        let port = self.port;
        self.spawn(Some(port)).await;
    }
}

/// A tickroom node: the binary, serving `config` (TOML) on ports of its choosing.
pub struct Node {
    pub name: String,
    pub server: TestServer,
    process: Option<Process>,
    pub log: PathBuf,
}

impl Node {
    pub async fn start(dir: &Path, name: &str, config: &str) -> Self {
        let config_file = dir.join(format!("{name}.toml"));
        std::fs::write(&config_file, config).unwrap();
        let addr_file = dir.join(format!("{name}.addr.json"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tickroom"))
            .args(["serve", "--log", "info"])
            .arg("--config")
            .arg(&config_file)
            .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("tickroom starts");
        let mut process = Process(child);
        let mut written = None;
        eventually(&format!("node {name} is serving"), || {
            if let Ok(Some(status)) = process.0.try_wait() {
                panic!(
                    "node {name} exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            written = std::fs::read_to_string(&addr_file).ok();
            std::future::ready(written.is_some())
        })
        .await;
        let addrs: serde_json::Value = serde_json::from_str(&written.unwrap()).unwrap();
        let addr = |k: &str| -> SocketAddr { addrs[k].as_str().unwrap().parse().unwrap() };
        Self {
            name: name.to_owned(),
            server: TestServer {
                addr: addr("public"),
                ops: addr("ops"),
                shutdown: Default::default(),
                task: tokio::spawn(async {}),
            },
            process: Some(process),
            log,
        }
    }

    pub fn ws_url(&self) -> String {
        self.server.ws_url()
    }

    /// SIGKILL: no goodbye, no lease released.
    pub fn kill9(&mut self) {
        self.process = None;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `tickroom feed`, publishing until dropped.
pub struct Publisher {
    _process: Process,
}

impl Publisher {
    pub fn start(nats: &Nats, name: &str, args: &[&str], log: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_tickroom"))
            .args(["feed", "--nats", &nats.url(), "--name", name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("tickroom feed starts");
        Self {
            _process: Process(child),
        }
    }
}

/// The `[cluster]` table of a test node: short leases so failover fits in a test.
pub fn cluster_table(nats: &Nats, node: &str) -> String {
    format!(
        "[cluster]\nnats_url = \"{}\"\nnode = \"{node}\"\nlease_ms = 2000\nannounce_ms = 300\nconnect_timeout_ms = 10000\n",
        nats.url()
    )
}

/// Polls until `f` is true, for at most `limit`.
pub async fn within<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
