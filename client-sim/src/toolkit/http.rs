//! The one HTTP client of the tools (client-sim, the integration tests, the benches), on
//! hyper's client: HTTP/1.1, one connection per request, every exchange bounded in time and
//! in answer size. No TLS: every target is on this machine.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONNECTION, HOST, HeaderName, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub use hyper::{HeaderMap, Method};

/// The whole exchange must end within this unless told otherwise: a stalled server must not
/// stall the tool.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer read unless told otherwise (the full quote list of a big ticker room
/// is well below this).
pub const DEFAULT_MAX_BODY: usize = 8 << 20;

/// Why a request got no usable answer. Each names the request (`GET http://...`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{what}: {reason}")]
    Failed { what: String, reason: String },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{what}: the answer is over {limit} bytes")]
    TooLarge { what: String, limit: usize },
    #[error("{what}: status {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: body is not JSON ({reason})")]
    NotJson { what: String, reason: String },
}

/// An answer, whatever its status.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// The client: its limits and, optionally, the `Host` every request names. Cheap to build;
/// it keeps no connection between requests.
#[derive(Clone, Debug)]
pub struct Client {
    hyper: Hyper<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
    host: Option<String>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// [`DEFAULT_TIMEOUT`] and [`DEFAULT_MAX_BODY`], `Host` from the URL.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        // No pool: a connection left open would count on the server (its connection gauge,
        // its tasks) and hold its graceful shutdown.
        let hyper = Hyper::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Client {
            hyper,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            host: None,
        }
    }

    /// Bounds each whole exchange (connect, request, the answer to its last byte).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest body read; a larger one is an error.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The `Host` header of every request, for a URL that names the server's resolved
    /// address while the server should see the name it was given (it builds URLs from it).
    pub fn host(mut self, authority: impl Into<String>) -> Self {
        self.host = Some(authority.into());
        self
    }

    /// One request; any status is an answer.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        let what = format!("{method} {url}");
        let request = self
            .build(method, url, headers, body.into())
            .map_err(|reason| Error::Invalid {
                what: what.clone(),
                reason,
            })?;
        let exchange = async {
            let response = self
                .hyper
                .request(request)
                .await
                .map_err(|e| Error::Failed {
                    what: what.clone(),
                    reason: chain(&e),
                })?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Error::TooLarge {
                            what: what.clone(),
                            limit: self.max_body,
                        }
                    } else {
                        Error::Failed {
                            what: what.clone(),
                            reason: chain(&*e),
                        }
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: head.status.as_u16(),
                headers: head.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                what: what.clone(),
                after: self.timeout,
            })?
    }

    fn build(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// URLs are supported".into());
        }
        let mut request = Request::builder().method(method).uri(uri);
        let h = request.headers_mut().expect("a fresh builder has no error");
        // One connection per request, closed by the server after its answer, as an
        // HTTP/1.0 exchange would be.
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        if let Some(host) = &self.host {
            let value = HeaderValue::from_str(host).map_err(|e| format!("bad host: {e}"))?;
            h.insert(HOST, value);
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("bad header name {name:?}: {e}"))?;
            let value =
                HeaderValue::from_str(value).map_err(|e| format!("bad header {name}: {e}"))?;
            h.insert(name, value);
        }
        request
            .body(Full::new(body))
            .map_err(|e| format!("bad request: {e}"))
    }

    /// `GET url`; any status is an answer.
    pub async fn get(&self, url: &str) -> Result<Response, Error> {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    /// `GET url` as text; anything but 200 is an error.
    pub async fn get_text(&self, url: &str) -> Result<String, Error> {
        let r = self.get(url).await?;
        ok(url, &r)?;
        Ok(r.text())
    }

    /// `GET url` as JSON; anything but 200 with a JSON body is an error.
    pub async fn get_json(&self, url: &str) -> Result<Value, Error> {
        let r = self.get(url).await?;
        ok(url, &r)?;
        r.json().map_err(|e| Error::NotJson {
            what: format!("GET {url}"),
            reason: e.to_string(),
        })
    }

    /// `POST url` with a JSON body; any status is an answer.
    pub async fn post_json(&self, url: &str, body: &Value) -> Result<Response, Error> {
        let content_type = [("content-type", "application/json")];
        self.request(Method::POST, url, &content_type, body.to_string())
            .await
    }
}

/// Anything but 200 as an error, with the server's `error` field when it sent one.
fn ok(url: &str, r: &Response) -> Result<(), Error> {
    if r.status == 200 {
        return Ok(());
    }
    let error = r.json().ok();
    let detail = match error.as_ref().and_then(|v| v["error"].as_str()) {
        Some(e) => format!(" {e}"),
        None => String::new(),
    };
    Err(Error::Status {
        what: format!("GET {url}"),
        status: r.status,
        detail,
    })
}

/// An error and its sources on one line: hyper's own message says little ("client error
/// (Connect)"), its source says why ("Connection refused").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

/// [`Client::request`] with the default client.
pub async fn request(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Response, Error> {
    Client::new().request(method, url, headers, body).await
}

/// [`Client::get`] with the default client.
pub async fn get(url: &str) -> Result<Response, Error> {
    Client::new().get(url).await
}

/// [`Client::get_json`] with the default client.
pub async fn get_json(url: &str) -> Result<Value, Error> {
    Client::new().get_json(url).await
}

/// [`Client::post_json`] with the default client.
pub async fn post_json(url: &str, body: &Value) -> Result<Response, Error> {
    Client::new().post_json(url, body).await
}

/// The client for synchronous code (the bench harness): each call runs on a runtime of its
/// own, dropped with the call, so no socket outlives it.
#[derive(Clone, Debug, Default)]
pub struct Blocking(Client);

impl Blocking {
    pub fn new(client: Client) -> Self {
        Blocking(client)
    }

    pub fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Failed {
                what: format!("{method} {url}"),
                reason: format!("starting a runtime: {e}"),
            })?;
        runtime.block_on(self.0.request(method, url, headers, body))
    }

    pub fn get(&self, url: &str) -> Result<Response, Error> {
        self.request(Method::GET, url, &[], Bytes::new())
    }
}

/// Percent-encodes a query parameter value (everything but RFC 3986 unreserved characters).
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers each connection once with `answer`, and hands back each
    /// request's head.
    async fn serve(answer: &'static [u8]) -> (String, tokio::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into()).await;
                let _ = s.write_all(answer).await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn reads_status_headers_and_body() {
        let (url, mut heads) =
            serve(b"HTTP/1.1 400 Bad Request\r\nx-a: b\r\ncontent-length: 17\r\n\r\n{\"unknown\":[\"A\"]}")
                .await;
        let client = Client::new().host("example:1");
        let r = client
            .request(Method::POST, &format!("{url}/p?q=1"), &[("x-k", "v")], "{}")
            .await
            .unwrap();
        assert_eq!(
            (r.status, &r.body[..]),
            (400, &b"{\"unknown\":[\"A\"]}"[..])
        );
        assert_eq!(r.headers["x-a"], "b");
        assert_eq!(r.json().unwrap()["unknown"][0], "A");
        let head = heads.recv().await.unwrap().to_ascii_lowercase();
        for line in [
            "post /p?q=1 http/1.1",
            "host: example:1",
            "x-k: v",
            "connection: close",
        ] {
            assert!(head.contains(line), "{line:?} not in {head}");
        }
        let e = client.get_json(&url).await.unwrap_err();
        assert!(matches!(e, Error::Status { status: 400, .. }), "{e}");
    }

    #[tokio::test]
    async fn bounds_time_and_size() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accepts and never answers.
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let slow = Client::new().timeout(Duration::from_millis(100));
        let e = slow.get(&url).await.unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");

        let (url, _) = serve(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789").await;
        let e = Client::new().max_body(4).get(&url).await.unwrap_err();
        assert!(matches!(e, Error::TooLarge { limit: 4, .. }), "{e}");
        assert_eq!(Client::new().get_text(&url).await.unwrap(), "0123456789");
        let e = get_json(&url).await.unwrap_err();
        assert!(matches!(e, Error::NotJson { .. }), "{e}");
    }

    #[test]
    fn refused_and_blocking() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let e = Blocking::default().get(&url).unwrap_err();
        assert!(matches!(e, Error::Failed { .. }), "{e}");
        assert!(e.to_string().contains("refused"), "{e}");
        let e = Blocking::default().get("https://127.0.0.1/").unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(query_value("ticker"), "ticker");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
    }
}
