//! CPU profiling on the operations port (pprof-rs): `GET /debug/pprof/profile` answers a pprof
//! protobuf profile, `GET /debug/pprof/flamegraph` an SVG flamegraph. This module owns the
//! query bounds, the process-wide "one profile at a time" rule, and keeping the sampling off
//! the runtime's worker threads.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pprof::protos::Message as _;
use pprof::{ProfilerGuardBuilder, Report};
use serde::Deserialize;

const DEFAULT_SECONDS: u64 = 10;
const SECONDS: RangeInclusive<u64> = 1..=60;
const DEFAULT_FREQUENCY: u64 = 99;
const FREQUENCY: RangeInclusive<u64> = 1..=1000;
/// Unwinding through these (signal trampolines, libc internals, the vDSO) can crash or loop
/// inside the SIGPROF handler; their frames say nothing about our code anyway.
///
/// The price: samples taken inside libc are dropped, and that is where send(2), epoll_wait
/// and memcpy run. `libc=true` keeps them (only libgcc and the vDSO stay blocked); unwinding
/// from inside libc is normally fine, but a sample landing while a thread holds the dynamic
/// loader's lock (dl_iterate_phdr) can deadlock the unwinder, so it is an opt-in.
const BLOCKLIST: &[&str] = &["libc", "libgcc", "pthread", "vdso"];
const BLOCKLIST_WITH_LIBC: &[&str] = &["libgcc", "vdso"];

/// pprof-rs has one global profiler: a second `build()` fails with `Error::Running`. This flag
/// turns that into a quick 409 before any sampling starts.
static PROFILING: AtomicBool = AtomicBool::new(false);

/// Ownership of [`PROFILING`]. It travels into the blocking work, so the flag stays set until
/// sampling has really stopped, even after the request that started it has gone away.
struct Busy;

impl Busy {
    fn acquire() -> Option<Busy> {
        PROFILING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

/// True while a CPU profile is being taken (exported as `tickroom_cpu_profile_running`).
pub fn running() -> bool {
    PROFILING.load(Ordering::Acquire)
}

/// Routes under `/debug/pprof/`.
pub fn router() -> Router {
    Router::new()
        .route("/debug/pprof/profile", get(profile))
        .route("/debug/pprof/flamegraph", get(flamegraph))
}

#[derive(Debug, thiserror::Error)]
enum ProfileError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a CPU profile is already being taken; retry when it has finished")]
    Busy,
    #[error("profiler: {0}")]
    Pprof(#[from] pprof::Error),
    #[error("encoding the profile: {0}")]
    Encode(String),
    #[error("profiling task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("request cancelled")]
    Cancelled,
}

impl IntoResponse for ProfileError {
    fn into_response(self) -> Response {
        let status = match self {
            ProfileError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProfileError::Busy => StatusCode::CONFLICT,
            // Nobody is left to read it.
            ProfileError::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
            ProfileError::Pprof(_) | ProfileError::Encode(_) | ProfileError::Task(_) => {
                tracing::warn!(error = %self, "CPU profile failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// Strings, not numbers, so a bad value gets our message rather than serde's.
#[derive(Deserialize)]
struct RawParams {
    seconds: Option<String>,
    frequency: Option<String>,
    libc: Option<String>,
}

#[derive(Clone, Copy)]
struct Params {
    seconds: u64,
    frequency: u64,
    /// Keep samples inside libc (system calls); see [`BLOCKLIST`].
    libc: bool,
}

impl Params {
    fn parse(query: Result<Query<RawParams>, QueryRejection>) -> Result<Self, ProfileError> {
        // With only optional string fields, what is left to reject is a malformed query
        // (a repeated parameter, bad percent-encoding).
        let Query(raw) = query.map_err(|e| {
            ProfileError::BadRequest(format!("invalid query string: {}", e.body_text()))
        })?;
        Ok(Params {
            seconds: bounded("seconds", raw.seconds.as_deref(), DEFAULT_SECONDS, SECONDS)?,
            frequency: bounded(
                "frequency",
                raw.frequency.as_deref(),
                DEFAULT_FREQUENCY,
                FREQUENCY,
            )?,
            libc: match raw.libc.as_deref() {
                None | Some("false") | Some("0") => false,
                Some("true") | Some("1") => true,
                Some(other) => {
                    return Err(ProfileError::BadRequest(format!(
                        "libc must be true or false, got {other:?}"
                    )));
                }
            },
        })
    }
}

fn bounded(
    name: &str,
    value: Option<&str>,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<u64, ProfileError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ProfileError::BadRequest(format!(
            "{name} must be an integer in {}..={}, got {text:?}",
            range.start(),
            range.end()
        ))),
    }
}

async fn profile(
    query: Result<Query<RawParams>, QueryRejection>,
) -> Result<Response, ProfileError> {
    let params = Params::parse(query)?;
    let body = sample(params, |report| {
        let profile = report.pprof()?;
        let mut buf = Vec::with_capacity(profile.encoded_len());
        profile
            .encode(&mut buf)
            .map_err(|e| ProfileError::Encode(e.to_string()))?;
        Ok(buf)
    })
    .await?;
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream"),
        // `curl -OJ` and browsers save it under the name `go tool pprof` users expect.
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"profile.pb\"",
        ),
    ];
    Ok((headers, body).into_response())
}

async fn flamegraph(
    query: Result<Query<RawParams>, QueryRejection>,
) -> Result<Response, ProfileError> {
    let params = Params::parse(query)?;
    let body = sample(params, move |report| {
        let mut options = pprof::flamegraph::Options::default();
        options.title = format!(
            "tickroom CPU: {} s at {} Hz",
            params.seconds, params.frequency
        );
        let mut svg = Vec::new();
        report.flamegraph_with_options(&mut svg, &mut options)?;
        // pprof-rs writes nothing at all for an empty report; answer a valid image rather
        // than an empty body labelled SVG.
        if svg.is_empty() {
            svg = EMPTY_SVG.as_bytes().to_vec();
        }
        Ok(svg)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], body).into_response())
}

const EMPTY_SVG: &str = concat!(
    r#"<?xml version="1.0" standalone="no"?>"#,
    "\n",
    r#"<svg xmlns="http://www.w3.org/2000/svg" width="600" height="60">"#,
    r#"<text x="10" y="35" font-family="Verdana" font-size="14">"#,
    "No CPU samples: the process was idle, or only ran in blocklisted libraries (libc).</text></svg>\n"
);

/// Samples the whole process for `params.seconds`, then turns the report into a body with
/// `render`. Symbolising and rendering are CPU-heavy too, so all of it runs off the runtime.
async fn sample<F>(params: Params, render: F) -> Result<Vec<u8>, ProfileError>
where
    F: FnOnce(&Report) -> Result<Vec<u8>, ProfileError> + Send + 'static,
{
    let busy = Busy::acquire().ok_or(ProfileError::Busy)?;
    // Held by this future only: when the client disconnects (or the ops port shuts down)
    // the future is dropped, the channel disconnects, and sampling stops early instead of
    // holding the profiler, and a blocking thread, for up to a minute.
    let (_request_alive, request_gone) = mpsc::channel::<()>();
    let work = tokio::task::spawn_blocking(move || {
        let _busy = busy;
        let frequency = i32::try_from(params.frequency).expect("bounded to 1..=1000");
        let guard = ProfilerGuardBuilder::default()
            .frequency(frequency)
            .blocklist(if params.libc {
                BLOCKLIST_WITH_LIBC
            } else {
                BLOCKLIST
            })
            .build()?;
        match request_gone.recv_timeout(Duration::from_secs(params.seconds)) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(ProfileError::Cancelled);
            }
        }
        let report = guard.report().build()?;
        // The samples are in the report: stop the SIGPROF timer before the slow rendering.
        drop(guard);
        let rendered = render(&report);
        drop(report);
        // Symbolizing parsed the binary's debug info into backtrace-rs's cache (hundreds of
        // MB, kept for the process's life): drop it, then give the freed pages back.
        backtrace::clear_symbol_cache();
        crate::memory::trim();
        rendered
    });
    work.await?
}
