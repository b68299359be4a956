//! `wba-authz --config FILE [--listen ADDR] [--threads N]`: the Web Bot Auth ext_authz HTTP
//! service (see the library's documentation). hyper 1 (HTTP/1.1, keep-alive) on a tokio
//! multi-threaded runtime with `N` worker threads (default 1); prints `listening on ADDR` once
//! bound (`ADDR` may use port 0 for an ephemeral port).

use std::cell::RefCell;
use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use wba_authz::Service;
use wba_filter::key_cache::KeyCache;

thread_local! {
    /// Each runtime thread decodes the pinned keys once, as each Envoy worker's VM does.
    static CACHE: RefCell<Option<KeyCache>> = const { RefCell::new(None) };
}

struct Args {
    config: String,
    listen: SocketAddr,
    threads: usize,
}

fn args() -> Result<Args, String> {
    let mut config = None;
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut threads = 1;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--config" => config = Some(value()?),
            "--listen" => listen = value()?.parse().map_err(|e| format!("--listen: {e}"))?,
            "--threads" => {
                threads = value()?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--threads: a positive number")?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        config: config.ok_or("--config FILE is required (the filter's plugin JSON)")?,
        listen,
        threads,
    })
}

fn handle(service: &Service, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
        .collect();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let answer = CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let cache = c.get_or_insert_with(|| service.key_cache());
        service.check(cache, req.method().as_str(), path, &headers)
    });
    let mut resp = Response::new(Full::new(Bytes::from(answer.body)));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::FORBIDDEN);
    for (n, v) in answer.headers {
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(n.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}

async fn serve(service: Arc<Service>, listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let _ = std::io::stdout().flush();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = handle(&service, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wba-authz: {e}");
            return ExitCode::from(2);
        }
    };
    let service = match std::fs::read(&args.config)
        .map_err(|e| format!("{}: {e}", args.config))
        .and_then(|b| Service::from_json(&b).map_err(|e| e.to_string()))
    {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("wba-authz: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_io()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wba-authz: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(service, args.listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wba-authz: {e}");
            ExitCode::FAILURE
        }
    }
}
