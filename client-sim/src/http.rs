//! A minimal HTTP/1.0 client for the server's JSON endpoints (`/rooms`, `/api/v1/...`) and
//! its Prometheus text (`/metrics` on the operations port): one request per `TcpStream`. The server closes the connection after the answer, so reading to
//! EOF frames the body and no HTTP client crate is needed.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::target::Target;

/// The whole exchange must finish within this; a stalled server must not stall the tool.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The largest answer read (the full quote list of a big ticker room is well below this).
const MAX_RESPONSE_BYTES: u64 = 8 << 20;

/// Status and JSON body of an answer (`Value::Null` when the body is empty or not JSON).
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub json: Value,
}

/// `GET path`; anything but 200 with a JSON body is an error.
pub async fn get_json(target: &Target, path: &str) -> anyhow::Result<Value> {
    let r = request(target, "GET", path, None).await?;
    if r.status != 200 {
        let error = r.json["error"].as_str().unwrap_or_default();
        anyhow::bail!("GET {path}: status {} {error}", r.status);
    }
    anyhow::ensure!(!r.json.is_null(), "GET {path}: body is not JSON");
    Ok(r.json)
}

/// `GET` the target's own path as text (e.g. Prometheus metrics); anything but 200 is an
/// error.
pub async fn get_text(target: &Target) -> anyhow::Result<String> {
    let path = &target.path;
    let (status, body) = send(target, "GET", path, None, "text/plain").await?;
    anyhow::ensure!(status == 200, "GET {path}: status {status}");
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One request with an optional JSON body; any status is an answer.
pub async fn request(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Response> {
    let (status, body) = send(target, method, path, body, "application/json").await?;
    Ok(Response {
        status,
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

/// One exchange, bounded by [`TIMEOUT`]: the status and the raw body.
async fn send(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
    accept: &str,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(target.addr)
            .await
            .with_context(|| format!("{method} {path}: connect {}", target.addr))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: {accept}\r\n",
            target.authority
        );
        if !body.is_empty() {
            request += &format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        request += "\r\n";
        request += &body;
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut response)
            .await?;
        parse_response(&response).with_context(|| format!("{method} {path}"))
    };
    tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| {
        anyhow!(
            "{method} http://{}{path} timed out after {TIMEOUT:?}",
            target.addr
        )
    })?
}

fn parse_response(response: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("response has no header end"))?;
    let head = String::from_utf8_lossy(&response[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    Ok((status, response[split + 4..].to_vec()))
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
    use super::*;

    #[test]
    fn parses_status_and_json_body() {
        let (status, body) =
            parse_response(b"HTTP/1.0 400 Bad Request\r\nx: y\r\n\r\n{\"unknown\":[\"A\"]}")
                .unwrap();
        assert_eq!((status, &body[..]), (400, &b"{\"unknown\":[\"A\"]}"[..]));
        let (status, body) = parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot json").unwrap();
        assert_eq!((status, &body[..]), (200, &b"not json"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(query_value("ticker"), "ticker");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
    }
}
