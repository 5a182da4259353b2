//! Joins that a cluster sends elsewhere: a node asked for a game room that lives on another
//! node answers `Join` with `Error{ERROR_CODE_REDIRECT, redirect_url}`, and the client opens a
//! WebSocket to `redirect_url` and sends the same `Join` there ([`crate::swarm::join`] does).
//! This module decides whether a redirect is followed: at most [`MAX_REDIRECTS`] in a row
//! (one more is a loop: the cluster is changing owners), and only to a `ws://` URL that the
//! target rules accept (loopback only, like `--url`: see [`crate::target`]).

use tickroom_proto::v1::{Error as ErrorMsg, ErrorCode};

use crate::swarm::JoinFail;
use crate::target::{self, Target};

/// Redirects one join follows in a row; the next one is a loop.
pub const MAX_REDIRECTS: usize = 3;

/// What to do with `error`, the Error that answered a join after the redirects to `followed`
/// (their URLs, in order): `None` when it is not a redirect (a refusal), else where to go
/// next, checked, or why the join fails there. `rejoin` says whether there is a `Join` to
/// repeat: a prepared session (`/ws?session=...`) was joined by the server, and its session
/// lives on the node that made it.
pub async fn next(
    error: &ErrorMsg,
    followed: &[String],
    rejoin: bool,
) -> Option<Result<Target, JoinFail>> {
    if error.code != ErrorCode::Redirect as i32 {
        return None;
    }
    let url = error.redirect_url.as_str();
    if followed.len() >= MAX_REDIRECTS {
        let chain: Vec<&str> = followed.iter().map(String::as_str).chain([url]).collect();
        return Some(Err(JoinFail::RedirectLoop(format!(
            "redirected again after {MAX_REDIRECTS} redirects: {}",
            chain.join(" -> ")
        ))));
    }
    if url.is_empty() {
        return Some(Err(JoinFail::RedirectRefused(format!(
            "no redirect_url ({})",
            error.message
        ))));
    }
    if !rejoin {
        return Some(Err(JoinFail::RedirectRefused(format!(
            "{url}: a prepared session has no Join to repeat there"
        ))));
    }
    Some(
        target::resolve(url)
            .await
            .map_err(|e| JoinFail::RedirectRefused(format!("{e:#}"))),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::*;
    use crate::game::{self, GameArgs};
    use crate::swarm::{self, Conn};
    use crate::testing::{Redirector, bare_swarm, game_server, redirector, swarm_args};

    fn redirect(url: &str) -> ErrorMsg {
        ErrorMsg {
            code: ErrorCode::Redirect as i32,
            message: "room \"arena\" runs on node b".into(),
            redirect_url: url.into(),
        }
    }

    fn urls(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("ws://127.0.0.{}:1/ws", i + 1))
            .collect()
    }

    #[tokio::test]
    async fn follows_loopback_redirects_only() {
        // Not a redirect: the join was refused, as before.
        let busy = ErrorMsg {
            code: ErrorCode::Busy as i32,
            redirect_url: "ws://127.0.0.1:1/ws".into(),
            ..ErrorMsg::default()
        };
        assert!(next(&busy, &[], true).await.is_none());

        let to = next(&redirect("ws://127.0.0.1:18081/ws"), &[], true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(to.addr, "127.0.0.1:18081".parse().unwrap());
        assert_eq!(to.url, "ws://127.0.0.1:18081/ws");
        // The third redirect in a row is still followed.
        assert!(matches!(
            next(&redirect("ws://[::1]:9/ws"), &urls(2), true).await,
            Some(Ok(_))
        ));

        for (url, why) in [
            ("ws://10.0.0.7:8080/ws", "not loopback"),
            ("wss://127.0.0.1:8080/ws", "wss:// is not supported"),
            ("http://127.0.0.1:8080/ws", "expected a ws:// URL"),
            ("", "no redirect_url (room \"arena\" runs on node b)"),
        ] {
            let Some(Err(fail)) = next(&redirect(url), &[], true).await else {
                panic!("{url:?} followed");
            };
            assert_eq!(fail.kind(), "redirect_refused", "{url:?}");
            assert!(fail.message().contains(why), "{url:?}: {}", fail.message());
        }
        let Some(Err(fail)) = next(&redirect("ws://127.0.0.1:1/ws"), &[], false).await else {
            panic!("a prepared session's redirect was followed");
        };
        assert_eq!(
            fail.message(),
            "redirect refused: ws://127.0.0.1:1/ws: a prepared session has no Join to repeat there"
        );
    }

    #[tokio::test]
    async fn the_fourth_redirect_is_a_loop() {
        let Some(Err(fail)) = next(&redirect("ws://127.0.0.9:1/ws"), &urls(3), true).await else {
            panic!("the fourth redirect was followed");
        };
        assert_eq!(fail.kind(), "redirect_loop");
        assert_eq!(
            fail.message(),
            "redirect loop: redirected again after 3 redirects: ws://127.0.0.1:1/ws -> \
             ws://127.0.0.2:1/ws -> ws://127.0.0.3:1/ws -> ws://127.0.0.9:1/ws"
        );
        // A loop is a loop wherever it points.
        let Some(Err(fail)) = next(&redirect("ws://10.0.0.7:1/ws"), &urls(3), true).await else {
            panic!("followed");
        };
        assert_eq!(fail.kind(), "redirect_loop");
    }

    /// Waits (a little) until the redirector saw `n` first connections closed politely.
    async fn closed(r: &Redirector, n: u64) -> u64 {
        for _ in 0..100 {
            if r.closed.load(Relaxed) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        r.closed.load(Relaxed)
    }

    /// A node that redirects every Join to a real server: the client follows, joins there,
    /// counts the redirect (and the REDIRECT error), and closes the first connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_join_follows_a_redirect_to_a_real_server() {
        let server = game_server(0).await;
        let node = redirector(Some(&server.url)).await;
        let swarm = bare_swarm(&node.url).await;
        let mut conn = Conn::default();
        let hello = swarm::join_message("arena", "");
        let (_ws, welcome) = swarm::join(&swarm, &mut conn, 0, &node.url, Some(hello))
            .await
            .unwrap();
        assert_eq!(welcome.room, "arena");
        assert_eq!(conn.redirects, 1);
        assert_eq!(conn.errors[&(ErrorCode::Redirect as i32)], 1);
        assert_eq!(closed(&node, 1).await, 1);
        assert_eq!(node.joins.load(Relaxed), 1);
    }

    /// Two nodes that send each other the join: three redirects are followed, the fourth is
    /// a loop; a redirect off this machine is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loops_and_remote_redirects_fail_the_join() {
        let node = redirector(None).await;
        let swarm = bare_swarm(&node.url).await;
        let mut conn = Conn::default();
        let hello = swarm::join_message("arena", "");
        let fail = swarm::join(&swarm, &mut conn, 0, &node.url, Some(hello.clone()))
            .await
            .err()
            .unwrap();
        assert_eq!(fail.kind(), "redirect_loop", "{}", fail.message());
        assert_eq!(conn.redirects, 3);
        assert_eq!(node.joins.load(Relaxed), 4);
        assert_eq!(closed(&node, 4).await, 4);

        let remote = redirector(Some("ws://10.0.0.7:8080/ws")).await;
        let swarm = bare_swarm(&remote.url).await;
        let mut conn = Conn::default();
        let fail = swarm::join(&swarm, &mut conn, 0, &remote.url, Some(hello))
            .await
            .err()
            .unwrap();
        assert_eq!(fail.kind(), "redirect_refused");
        assert!(
            fail.message().contains("not loopback"),
            "{}",
            fail.message()
        );
        assert_eq!(conn.redirects, 0);
        assert_eq!(closed(&remote, 1).await, 1);
    }

    /// The game scenario pointed at a node that redirects: every player ends up in the real
    /// room, and the report says how many redirects were followed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_game_report_counts_redirects() {
        let server = game_server(0).await;
        let node = redirector(Some(&server.url)).await;
        let mut swarm = swarm_args(&server, 3, 1.0);
        swarm.target.url = node.url.clone();
        let args = GameArgs {
            swarm,
            clients: 3,
            room: "arena".into(),
            input_hz: 10.0,
            protocol: 2,
            verify_clients: 32,
        };
        let r = game::run(args).await.unwrap();
        let c = &r.head.clients;
        assert_eq!(
            (c.connected, c.failed_joins, c.redirects),
            (3, 0, 3),
            "{c:#?}"
        );
        assert_eq!(r.tail.errors["redirect"], 3);
        assert!(r.snapshots.received > 0);
        assert!(r.table().contains(", redirects 3"), "{}", r.table());
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["clients"]["redirects"], 3);
    }
}
