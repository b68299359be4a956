//! `wba replay-server`: replay protection across a fleet of Envoys, on Redis.
//!
//! The filter asks this small stateless service, through an Envoy cluster, to record each
//! verified signature: `POST /v1/replay/<id>` with `x-wba-until: <unix seconds>`, answered `201
//! fresh` (first use, recorded now) or `409 replayed`, decided atomically by Redis with
//! `SET wba:replay:<id> 1 NX EXAT <until>`. Any number of instances can serve one Redis (or
//! Redis Cluster). See [`protocol`] for the requests and answers, [`store`] for Redis.
//!
//! hyper 1 (HTTP/1.1, keep-alive) on a tokio multi-threaded runtime, as `wba-authz`. Requests
//! are bounded: a head of at most [`protocol::MAX_HEADER_BYTES`] in at most
//! [`protocol::MAX_HEADERS`] fields, read within 10 s; a body of at most
//! [`protocol::MAX_BODY_BYTES`]. Nothing is logged per request: one startup line, then a line
//! each time Redis becomes unreachable or reachable again. SIGTERM (or SIGINT) stops accepting,
//! lets requests in flight finish (at most 10 s), and exits 0.

pub mod protocol;
pub mod store;

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use protocol::{Answer, Head, Route, MAX_BODY_BYTES, UNTIL_HEADER};
use store::{Recorded, Store};

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long requests in flight may take to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// `wba replay-server`'s settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOST:PORT` to listen on (port 0: a free one).
    pub listen: String,
    /// Redis URLs: one for a standalone Redis, the seed nodes with `cluster`.
    pub redis: Vec<String>,
    /// Treat `redis` as the seed nodes of a Redis Cluster.
    pub cluster: bool,
    /// The longest wait for Redis before answering 503.
    pub redis_timeout: Duration,
    /// How far ahead of now `x-wba-until` may be.
    pub max_ttl_seconds: u64,
    /// Tokio worker threads (0: one per core).
    pub threads: usize,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the server until SIGTERM or SIGINT. Prints `listening on ADDR` as the first line of
/// stdout once bound.
pub fn run(cfg: Config) -> anyhow::Result<()> {
    if cfg.redis_timeout.is_zero() {
        anyhow::bail!("--redis-timeout-ms must be positive");
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if cfg.threads > 0 {
        rt.worker_threads(cfg.threads);
    }
    let rt = rt.enable_all().build()?;
    rt.block_on(serve(cfg))
}

struct State {
    store: Store,
    max_ttl: u64,
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    // The client first (it checks the URLs), then the socket: errors in either stop here.
    let store = store::open(&cfg.redis, cfg.cluster, cfg.redis_timeout)?;
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut o = std::io::stdout().lock();
        writeln!(o, "listening on {addr}")?;
        o.flush()?;
    }
    eprintln!(
        "wba replay-server: listening on {addr}, redis {} (timeout {} ms)",
        store.describe,
        cfg.redis_timeout.as_millis()
    );
    let state = Arc::new(State {
        store,
        max_ttl: cfg.max_ttl_seconds,
    });
    {
        let state = state.clone();
        tokio::spawn(async move { state.store.startup_check().await });
    }

    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(protocol::MAX_HEADERS)
        .max_header_size(protocol::MAX_HEADER_BYTES)
        .max_buf_size(protocol::MAX_HEADER_BYTES.max(8192) + MAX_BODY_BYTES);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut accept_error_logged = false;
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => {
                    accept_error_logged = false;
                    c
                }
                Err(e) => {
                    // Out of file descriptors, typically: wait a little, log once per episode.
                    if !accept_error_logged {
                        eprintln!("wba replay-server: cannot accept connections: {e}");
                        accept_error_logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(&state, req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    eprintln!("wba replay-server: stopping");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("wba replay-server: connections still open after 10 s: closing them");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Answers one request. Never panics; every refusal is an answer.
async fn handle(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let answer = match decide(state, req).await {
        Ok(a) | Err(a) => a,
    };
    reply(answer)
}

async fn decide(state: &State, req: Request<Incoming>) -> Result<Answer, Answer> {
    let (parts, body) = req.into_parts();
    protocol::check_content_length(parts.headers.get(CONTENT_LENGTH).map(HeaderValue::as_bytes))?;
    // A chunked body is read up to the limit; anything beyond it is refused.
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(_) => {}
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(Answer::too_large()),
        Err(_) => return Err(Answer::text(400, "cannot read the request body")),
    }
    let until: Vec<&[u8]> = parts
        .headers
        .get_all(UNTIL_HEADER)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let head = Head {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        until: &until,
    };
    match protocol::route(&head, now(), state.max_ttl)? {
        Route::Health => match state.store.ping().await {
            Ok(()) => Ok(Answer::ok()),
            Err(e) => Err(Answer::unavailable(e)),
        },
        Route::Record(r) => match state.store.record(&r).await {
            Ok(Recorded::Fresh) => Ok(Answer::fresh()),
            Ok(Recorded::Replayed) => Ok(Answer::replayed()),
            Err(e) => Err(Answer::unavailable(e)),
        },
    }
}

fn reply(a: Answer) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(a.body)));
    *resp.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_REQUEST);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if a.close {
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}
