//! The accept loop shared by the public and operations ports: HTTP/1.1 with upgrades,
//! TCP_NODELAY, a cap on open connections, and graceful stop on shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Held by a connection for as long as it lives, upgraded or not (connection limit).
#[derive(Debug, Clone)]
pub struct ConnGuard(#[allow(dead_code)] pub Arc<tokio::sync::OwnedSemaphorePermit>);

/// Serves `router` on `listener` until `shutdown` fires. Connections beyond
/// `max_connections` wait in the kernel's accept queue. `send_buffer` sets SO_SNDBUF on
/// each connection (0: the system default).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    max_connections: usize,
    send_buffer: usize,
) {
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.cancelled() => break,
        };
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
        // Nagle would hold small frames for up to ~40 ms.
        let _ = tcp.set_nodelay(true);
        if send_buffer > 0
            && let Err(e) = socket2::SockRef::from(&tcp).set_send_buffer_size(send_buffer)
        {
            tracing::debug!(%peer, error = %e, "cannot set the send buffer size");
        }
        let guard = ConnGuard(Arc::new(permit));
        let router = router.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(guard.clone());
                router.clone().oneshot(req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
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
