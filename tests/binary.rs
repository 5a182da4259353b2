//! The `tickroom` binary itself: the embedded demo config, and SIGTERM ends it cleanly.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let (port, ops_port) = (free_port(), free_port());
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_tickroom"))
            .args(["serve", "--log", "warn"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts"),
    );
    let server = TestServer {
        addr: format!("127.0.0.1:{port}").parse().unwrap(),
        ops: format!("127.0.0.1:{ops_port}").parse().unwrap(),
        shutdown: Default::default(),
        task: tokio::spawn(async {}),
    };
    eventually("binary is healthy", || async {
        tokio::net::TcpStream::connect(server.ops).await.is_ok()
            && http_get(server.ops, "/healthz").await.0 == 200
    })
    .await;

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
