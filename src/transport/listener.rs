//! The accept loop shared by the public and operations ports: admission (caps and connect
//! rates, a refusal answered at once), HTTP/1.1 with upgrades, TCP_NODELAY, a deadline for
//! every request's headers, and graceful stop on shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::admission::{Admission, AdmissionLimits, Admitted, Refusal};

/// Held by a connection for as long as it lives, upgraded or not: its place under the caps.
#[derive(Debug, Clone)]
pub struct ConnGuard(#[allow(dead_code)] pub Arc<Admitted>);

/// How a port serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct Serving {
    pub admission: AdmissionLimits,
    /// SO_SNDBUF of each connection (0: the system's default).
    pub send_buffer: usize,
    /// A client must send each request's headers within this (idle connections included).
    pub header_timeout: Duration,
}

/// How long a refused connection gets to read its answer before it is closed.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown` fires. `on_refused` hears of every
/// connection refused at admission (for metrics).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serving: Serving,
    on_refused: Arc<dyn Fn(Refusal) + Send + Sync>,
) {
    let admission = Admission::new(serving.admission);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on the error.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let admitted = match admission.admit(peer.ip(), std::time::Instant::now()) {
            Ok(a) => a,
            Err(refusal) => {
                on_refused(refusal);
                tracing::debug!(%peer, reason = refusal.as_str(), "connection refused");
                tracker.spawn(refuse(tcp, refusal));
                continue;
            }
        };
        // Nagle would hold small frames for up to ~40 ms.
        let _ = tcp.set_nodelay(true);
        if serving.send_buffer > 0
            && let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(serving.send_buffer)
        {
            tracing::debug!(%peer, error = %e, "cannot set the send buffer size");
        }
        let guard = ConnGuard(Arc::new(admitted));
        let router = router.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(guard.clone());
                router.clone().oneshot(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(serving.header_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "http connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
    }
}

/// Answers a refused connection and closes it, within a bounded time.
async fn refuse(mut tcp: TcpStream, refusal: Refusal) {
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        tcp.write_all(&refusal.response()).await?;
        tcp.shutdown().await?;
        // Read what the client sent until it closes: closing with unread bytes would reset
        // the connection, and the client could lose the answer.
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
