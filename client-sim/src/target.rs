//! Where the swarm connects: a `ws://` URL resolved and checked to be on this machine. Every
//! scenario, and every HTTP request the tool makes, goes to the one [`Target`] of `--url`, or
//! to the operations port's `--metrics-url` (an `http://` URL, checked the same way).

use std::net::SocketAddr;

use anyhow::{Context, anyhow, bail, ensure};
use client_sim::toolkit::http;

/// Where the swarm connects, checked to be on this machine.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    /// `host[:port]` as written, for Host headers and URLs built on the same server.
    pub authority: String,
    /// Path and query of the URL (`/` when it has none).
    pub path: String,
    pub addr: SocketAddr,
}

impl Target {
    /// The HTTP client for this server: requests go to the resolved address (no second
    /// lookup) and name the host as the URL wrote it (the server builds URLs from it).
    pub fn http(&self) -> http::Client {
        http::Client::new().host(&self.authority)
    }

    /// `path` (and query) on this server, for [`Target::http`].
    pub fn http_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// A WebSocket URL on the same server with another path (and query), e.g. the
    /// `/ws?session=...` a REST call handed out.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.authority)
    }
}

/// Parses a `ws://` URL and resolves it, refusing anything that is not loopback: the tool
/// generates real load and its latency figures assume client and server share a clock.
pub async fn resolve(url: &str) -> anyhow::Result<Target> {
    resolve_scheme(url, "ws", "wss").await
}

/// Parses an `http://` URL (the operations port's metrics) and resolves it, loopback only
/// like [`resolve`].
pub async fn resolve_http(url: &str) -> anyhow::Result<Target> {
    resolve_scheme(url, "http", "https").await
}

async fn resolve_scheme(url: &str, scheme: &str, tls: &str) -> anyhow::Result<Target> {
    let rest = match url.split_once("://") {
        Some((s, rest)) if s == scheme => rest,
        Some((s, _)) if s == tls => {
            bail!("{url}: {tls}:// is not supported; use {scheme}:// to a local server")
        }
        _ => bail!("{url}: expected a {scheme}:// URL"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let path = rest[authority.len()..]
        .split('#')
        .next()
        .unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    ensure!(!authority.is_empty(), "{url}: no host");
    ensure!(
        !authority.contains('@'),
        "{url}: user info is not supported"
    );
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| anyhow!("{url}: unclosed '[' in host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("{url}: bad port {p:?}"))?,
        None => 80,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("{url}: cannot resolve {host:?}"))?
        .collect();
    ensure!(!addrs.is_empty(), "{url}: {host:?} resolves to no address");
    if let Some(bad) = addrs.iter().find(|a| !a.ip().to_canonical().is_loopback()) {
        bail!(
            "{url}: {host:?} resolves to {}, which is not loopback; client-sim only targets \
             127.0.0.0/8 or ::1 (it generates real load and compares clocks with the server)",
            bad.ip()
        );
    }
    Ok(Target {
        url: url.to_owned(),
        authority: authority.to_owned(),
        path,
        addr: addrs[0],
    })
}

/// Splits a `ws://host[:port]/path?query` URL into its authority and its path with query
/// (`/` when it has none). `None` for anything else.
pub fn split_ws_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("ws://")?;
    let at = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(at);
    if authority.is_empty() {
        return None;
    }
    Some((authority, if path.is_empty() { "/" } else { path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_only_loopback_ws_urls() {
        let t = resolve("ws://127.0.0.1:18080/ws").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:18080");
        assert_eq!(t.path, "/ws");
        assert_eq!(t.http_url("/rooms"), "http://127.0.0.1:18080/rooms");
        assert_eq!(
            t.ws_url("/ws?session=x"),
            "ws://127.0.0.1:18080/ws?session=x"
        );
        assert!(resolve("ws://[::1]:9/ws").await.is_ok());
        assert!(resolve("ws://localhost:9/ws").await.is_ok());
        assert_eq!(resolve("ws://127.0.0.2/").await.unwrap().addr.port(), 80);
        for (bad, why) in [
            ("ws://10.0.0.1:8080/ws", "not loopback"),
            ("ws://[2001:db8::1]:8080/ws", "not loopback"),
            ("wss://127.0.0.1/ws", "wss:// is not supported"),
            ("http://127.0.0.1/ws", "expected a ws:// URL"),
            ("ws://user@127.0.0.1/ws", "user info is not supported"),
            ("ws://127.0.0.1:notaport/ws", "bad port"),
            ("ws:///ws", "no host"),
        ] {
            let e = resolve(bad).await.expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn accepts_only_loopback_http_urls() {
        let t = resolve_http("http://127.0.0.1:19090/metrics")
            .await
            .unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:19090", "/metrics")
        );
        assert_eq!(
            resolve_http("http://[::1]:9?x=1").await.unwrap().path,
            "/?x=1"
        );
        for (bad, why) in [
            ("http://10.0.0.1:9090/metrics", "not loopback"),
            ("https://127.0.0.1/metrics", "https:// is not supported"),
            ("ws://127.0.0.1:9090/metrics", "expected a http:// URL"),
            ("127.0.0.1:9090/metrics", "expected a http:// URL"),
        ] {
            let e = resolve_http(bad).await.expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn splits_ws_urls() {
        assert_eq!(
            split_ws_url("ws://127.0.0.1:8080/ws?session=ab"),
            Some(("127.0.0.1:8080", "/ws?session=ab"))
        );
        assert_eq!(split_ws_url("ws://h?x=1"), Some(("h", "?x=1")));
        assert_eq!(split_ws_url("ws://h"), Some(("h", "/")));
        assert_eq!(split_ws_url("http://h/ws"), None);
        assert_eq!(split_ws_url("ws:///ws"), None);
    }
}
