//! The `tickroom` binary itself: the embedded demo config, and SIGTERM ends it cleanly.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Kills the child if the test fails midway, so no server outlives it.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_demo_and_exits_on_sigterm_closing_sessions() {
    // Port 0: the binary binds what the system picks and writes it to the address file.
    let dir = std::env::temp_dir().join(format!("tickroom-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let addr_file = dir.join("addr.json");
    let _ = std::fs::remove_file(&addr_file);
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_tickroom"))
            .args(["serve", "--log", "warn"])
            .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
            .arg("--addr-file")
            .arg(&addr_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let mut written = None;
    eventually("the address file is written", || {
        written = std::fs::read_to_string(&addr_file).ok();
        std::future::ready(written.is_some())
    })
    .await;
    let addrs: serde_json::Value = serde_json::from_str(&written.unwrap()).unwrap();
    let addr = |k: &str| -> std::net::SocketAddr { addrs[k].as_str().unwrap().parse().unwrap() };
    let server = TestServer {
        addr: addr("public"),
        ops: addr("ops"),
        shutdown: Default::default(),
        task: tokio::spawn(async {}),
    };
    assert_ne!(server.addr.port(), 0);
    assert_eq!(http_get(server.ops, "/healthz").await.0, 200);

    // The embedded config serves the 60 Hz arena with 100 bots, seen by area of interest:
    // our avatar and the bots near it, not the whole room.
    let mut c = Client::connect(&server).await;
    let w = c.join("arena").await;
    assert_eq!(w.tick_rate_hz, 60);
    let (_, snap) = c.snapshot().await;
    assert!(snap.objects.iter().any(|o| o.id == w.your_object_id));
    assert!(
        (2..101).contains(&snap.objects.len()),
        "{} objects in view",
        snap.objects.len()
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = Instant::now();
    let closed = c.expect_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1001, "server shutting down")
    );
    loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            assert!(exit.success(), "clean exit, got {exit}");
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "exits within 5 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
