//! A minimal HTTP/1.0 client for the server's JSON endpoints (`/rooms`, `/api/v1/...`): one
//! request per `TcpStream`. The server closes the connection after the answer, so reading to
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

/// One request with an optional JSON body; any status is an answer.
pub async fn request(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Response> {
    tokio::time::timeout(TIMEOUT, exchange(target, method, path, body))
        .await
        .map_err(|_| {
            anyhow!(
                "{method} http://{}{path} timed out after {TIMEOUT:?}",
                target.addr
            )
        })?
}

async fn exchange(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("{method} {path}: connect {}", target.addr))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\n",
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
}

fn parse_response(response: &[u8]) -> anyhow::Result<Response> {
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
    let json = serde_json::from_slice(&response[split + 4..]).unwrap_or(Value::Null);
    Ok(Response { status, json })
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
        let r = parse_response(b"HTTP/1.0 400 Bad Request\r\nx: y\r\n\r\n{\"unknown\":[\"A\"]}")
            .unwrap();
        assert_eq!((r.status, r.json["unknown"][0].as_str()), (400, Some("A")));
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nnot json").unwrap();
        assert!(r.json.is_null());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn encodes_query_values() {
        assert_eq!(query_value("ticker"), "ticker");
        assert_eq!(query_value("a b&c"), "a%20b%26c");
    }
}
