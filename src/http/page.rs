//! The browser page at `/` on the public port: `web/dist/` (built from `web/src/`, committed)
//! embedded in the binary, so `make run` on a fresh machine serves it with no build step.
//!
//! Every asset is answered with `Cache-Control: no-cache` and a strong `ETag` computed when the
//! binary is compiled: a browser revalidates each load and gets `304 Not Modified` until the
//! server is rebuilt with other assets, so a deploy is never half cached. `GET /` from a
//! client that does not ask for HTML (curl's `Accept: */*`) gets the one-line hint instead.

use axum::Router;
use axum::http::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
    X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// What `GET /` answers a client that does not accept HTML.
pub const HINT: &str = "tickroom: open a WebSocket at /ws and send protobuf ClientMessage frames (docs/protocol.md); GET /rooms lists rooms; ticker rooms: POST /api/v1/sessions, GET /api/v1/quotes; open / in a browser for the live page\n";

/// One embedded file.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    /// FNV-1a 64 of `body`, computed at compile time.
    pub hash: u64,
}

/// FNV-1a, 64 bits: a content hash for the ETag (a cache validator, not a security check).
const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:literal) => {{
        const BODY: &[u8] =
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/", $file));
        Asset {
            path: $path,
            content_type: $type,
            body: BODY,
            hash: fnv1a64(BODY),
        }
    }};
}

pub const INDEX: Asset = asset!("/", "index.html", "text/html; charset=utf-8");
pub const SCRIPT: Asset = asset!("/assets/app.js", "app.js", "text/javascript; charset=utf-8");
pub const STYLE: Asset = asset!("/assets/app.css", "app.css", "text/css; charset=utf-8");

/// The page loads only its own script and style; it connects to WebSockets on any host,
/// since a clustered server may redirect a game room to another node (docs/protocol.md 15).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl Asset {
    pub fn etag(&self) -> String {
        format!("\"{:016x}\"", self.hash)
    }

    /// The asset, or `304 Not Modified` when `If-None-Match` names its ETag (weak
    /// comparison, as RFC 9110 asks of `If-None-Match`; `*` matches too).
    fn respond(&self, request: &HeaderMap) -> Response {
        let etag = self.etag();
        let fresh = request
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag || t == "*");
        let mut headers = HeaderMap::new();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            ETAG,
            HeaderValue::from_str(&etag).expect("hex is a header value"),
        );
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        if self.path == "/" {
            headers.insert(VARY, HeaderValue::from_static("Accept"));
            headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        }
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        (headers, self.body).into_response()
    }
}

/// Whether the client asked for HTML: browsers say `text/html` in `Accept`; curl and most
/// libraries say `*/*` or nothing, and get the hint.
fn wants_html(request: &HeaderMap) -> bool {
    request
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let mut parts = t.split(';');
            let media = parts.next().unwrap_or("").trim();
            // `text/html;q=0` means "not HTML".
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            media.eq_ignore_ascii_case("text/html") && !refused
        })
}

async fn index(request: HeaderMap) -> Response {
    if wants_html(&request) {
        return INDEX.respond(&request);
    }
    (
        [
            (CONTENT_TYPE, "text/plain; charset=utf-8"),
            (VARY, "Accept"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        HINT,
    )
        .into_response()
}

/// `/` (page or hint), `/assets/app.js`, `/assets/app.css`; `HEAD` too (axum answers it from
/// the `GET` handler without the body).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route(
            SCRIPT.path,
            get(|h: HeaderMap| async move { SCRIPT.respond(&h) }),
        )
        .route(
            STYLE.path,
            get(|h: HeaderMap| async move { STYLE.respond(&h) }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn browsers_get_html_and_curl_gets_the_hint() {
        let chrome = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(wants_html(&accept(chrome)));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept("text/html;q=0, */*")));
    }

    #[test]
    fn etags_are_content_hashes_and_differ_per_asset() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(INDEX.hash, fnv1a64(INDEX.body));
        assert_ne!(INDEX.etag(), SCRIPT.etag());
        assert_eq!(SCRIPT.etag().len(), 18);
    }
}
