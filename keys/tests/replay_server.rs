//! `wba replay-server` against a real `redis-server` (Debian's package) that each test starts
//! on a free port: fresh then replayed, expiry on Redis's clock, 1,000 concurrent requests for
//! one id, Redis stopped, paused and restarted, the server restarted, two servers on one Redis,
//! and a three-master Redis Cluster.
//!
//! Without `redis-server` on the PATH these tests skip with a message, unless
//! `WBA_REQUIRE_REDIS=1` (as `make unit` sets), which makes them fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

// ---- Redis ----

/// Whether the tests can run; panics when they must.
fn have_redis(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("WBA_REQUIRE_REDIS").as_deref() != Ok("1"),
            "redis-server is not installed (make redis-deps installs it)"
        );
        eprintln!("skipping {test}: redis-server is not installed (make redis-deps)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` child on a port of its own, in a temporary directory, without persistence.
struct Redis {
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(free_port(), Vec::new())
    }

    fn start_with(port: u16, extra: Vec<String>) -> Redis {
        let mut r = Redis {
            child: None,
            port,
            extra,
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(redis::Value::SimpleString(s)) = self.try_cmd(&["PING"]) {
                if s == "PONG" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
    }

    fn cmd(&self, args: &[&str]) -> redis::Value {
        self.try_cmd(args).expect("redis command")
    }

    fn int(&self, args: &[&str]) -> i64 {
        match self.cmd(args) {
            redis::Value::Int(n) => n,
            v => panic!("{args:?}: {v:?}"),
        }
    }

    /// Redis's clock (TIME): seconds and microseconds.
    fn time(&self) -> (u64, u64) {
        match self.cmd(&["TIME"]) {
            redis::Value::Array(v) => {
                let n = |x: &redis::Value| -> u64 {
                    match x {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().unwrap(),
                        other => panic!("{other:?}"),
                    }
                };
                (n(&v[0]), n(&v[1]))
            }
            v => panic!("TIME: {v:?}"),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it (SIGKILL: no chance to answer anything more) and waits.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused server would not die of SIGTERM.
            signal(c.id(), "CONT");
        }
        self.stop();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

// ---- the server ----

/// A `wba replay-server` child, its address and what it logged.
struct Server {
    child: Option<Child>,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(redis: &[String], extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wba"));
        cmd.args(["replay-server", "--listen", "127.0.0.1:0"]);
        for r in redis {
            cmd.args(["--redis", r]);
        }
        let mut child = cmd
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wba replay-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server printed nothing");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .to_string();
        Server {
            child: Some(child),
            addr,
            log,
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, and the exit status (bounded wait).
    fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("the server did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---- HTTP ----

/// Sends `raw` (a whole HTTP/1.1 request with `Connection: close`) and returns the status and
/// body. Bounded: a hang fails the test.
async fn http(addr: &str, raw: Vec<u8>) -> (u16, String) {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(&raw).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("no answer within 60 s")
        .expect("HTTP exchange");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn post_request(id: &str, until: u64) -> Vec<u8> {
    format!(
        "POST /v1/replay/{id} HTTP/1.1\r\nHost: replay\r\nx-wba-until: {until}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

async fn post(addr: &str, id: &str, until: u64) -> (u16, String) {
    http(addr, post_request(id, until)).await
}

async fn health(addr: &str) -> (u16, String) {
    http(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: replay\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A distinct id per (test, n).
fn id(test: &str, n: u64) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::new()
        .chain_update(test.as_bytes())
        .chain_update(n.to_be_bytes())
        .finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Polls `/healthz` until it answers 200 (bounded).
async fn wait_healthy(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(addr).await.0 != 200 {
        assert!(Instant::now() < deadline, "/healthz never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_then_replayed_and_refusals() {
    if !have_redis("fresh_then_replayed_and_refusals") {
        return;
    }
    let redis = Redis::start();
    let server = Server::start(&[redis.url()], &[]);
    let a = &server.addr;
    let id1 = id("fresh", 1);
    let until = now() + 120;
    assert_eq!(post(a, &id1, until).await, (201, "fresh\n".into()));
    assert_eq!(post(a, &id1, until).await, (409, "replayed\n".into()));
    // A later until does not make it fresh again.
    assert_eq!(post(a, &id1, until + 60).await.0, 409);
    // What Redis holds: the hash only, as wba:replay:<id>, expiring at until.
    let key = format!("wba:replay:{id1}");
    assert_eq!(redis.int(&["EXISTS", &key]), 1);
    assert_eq!(redis.int(&["EXPIRETIME", &key]), until as i64);
    assert_eq!(redis.int(&["DBSIZE"]), 1);
    assert_eq!(health(a).await, (200, "ok\n".into()));

    // Refusals never reach Redis.
    let bad: Vec<(Vec<u8>, u16)> = vec![
        (post_request(&id1.to_uppercase(), until), 400),
        (post_request(&id1[..31], until), 400),
        (post_request(&id("fresh", 2), now() - 10), 400),
        (post_request(&id("fresh", 3), now() + 400 * 86_400), 400),
        (
            format!("POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", id("fresh", 4)).into_bytes(),
            400,
        ),
        (
            format!("POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\nx-wba-until: {until}\r\nConnection: close\r\n\r\n", id("fresh", 5)).into_bytes(),
            400,
        ),
        (
            format!("GET /v1/replay/{} HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\nConnection: close\r\n\r\n", id("fresh", 6)).into_bytes(),
            400,
        ),
        (
            format!("POST /v1/replay/{}?x=1 HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\nConnection: close\r\n\r\n", id("fresh", 7)).into_bytes(),
            400,
        ),
        (b"POST / HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"DELETE /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n".to_vec(), 400),
        // Bodies: announced too large, sent too large in chunks.
        (
            format!("POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\nContent-Length: 1025\r\nConnection: close\r\n\r\n{}", id("fresh", 8), "a".repeat(1025)).into_bytes(),
            413,
        ),
        (
            format!("POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n", id("fresh", 9), "a".repeat(1024), "b".repeat(1024)).into_bytes(),
            413,
        ),
        (
            format!("POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n", id("fresh", 10)).into_bytes(),
            413,
        ),
        // Heads: one huge header, too many headers, a huge path.
        (
            format!("GET /healthz HTTP/1.1\r\nHost: r\r\nx-big: {}\r\nConnection: close\r\n\r\n", "a".repeat(9000)).into_bytes(),
            431,
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: r\r\n{}Connection: close\r\n\r\n", (0..40).map(|i| format!("x-h{i}: v\r\n")).collect::<String>()).into_bytes(),
            431,
        ),
        (
            format!("POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400),
    ];
    for (i, (raw, want)) in bad.into_iter().enumerate() {
        let (status, body) = http(a, raw).await;
        assert_eq!(status, want, "case {i}: {body}");
    }
    assert_eq!(redis.int(&["DBSIZE"]), 1, "a refused request reached Redis");
    // A small body is read and ignored.
    let raw = format!(
        "POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        id("fresh", 11)
    );
    assert_eq!(http(a, raw.into_bytes()).await.0, 201);
    // Keep-alive: several requests on one connection.
    let mut raw = Vec::new();
    for n in 20..23 {
        raw.extend(
            format!(
                "POST /v1/replay/{} HTTP/1.1\r\nHost: r\r\nx-wba-until: {until}\r\n\r\n",
                id("fresh", n)
            )
            .into_bytes(),
        );
    }
    raw.extend(b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n");
    let mut s = tokio::net::TcpStream::connect(a).await.unwrap();
    s.write_all(&raw).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.matches("HTTP/1.1 201").count(), 3, "{out}");
    assert_eq!(out.matches("HTTP/1.1 200").count(), 1, "{out}");
    // Nothing logged per request: the startup lines only.
    let log = server.log();
    assert!(log.len() <= 2, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_ids_are_fresh_together_or_record_nothing() {
    if !have_redis("several_ids_are_fresh_together_or_record_nothing") {
        return;
    }
    let redis = Redis::start();
    let server = Server::start(&[redis.url()], &[]);
    let a = &server.addr;
    let until = now() + 120;
    let (x, y, z) = (id("several", 1), id("several", 2), id("several", 3));
    // One request's signatures, recorded in one question.
    assert_eq!(
        post(a, &format!("{x},{y}"), until).await,
        (201, "fresh\n".into())
    );
    // Each was recorded: alone, each is a replay.
    assert_eq!(post(a, &y, until).await.0, 409);
    assert_eq!(post(a, &x, until).await.0, 409);
    // A request with a fresh one and a used one is a replay and records nothing: the fresh
    // one is still fresh alone.
    assert_eq!(post(a, &format!("{z},{x}"), until).await.0, 409);
    assert_eq!(redis.int(&["EXISTS", &format!("wba:replay:{z}")]), 0);
    assert_eq!(post(a, &z, until).await.0, 201);
    // Malformed lists are refused.
    assert_eq!(post(a, &format!("{x},"), until).await.0, 400);
    assert_eq!(post(a, &format!("{x},{x}"), until).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_on_redis_clock() {
    if !have_redis("records_expire_on_redis_clock") {
        return;
    }
    let redis = Redis::start();
    let server = Server::start(&[redis.url()], &[]);
    let a = &server.addr;
    // At least half a second before the record expires, so the replay check below is sure.
    let (mut t, usec) = redis.time();
    if usec > 500_000 {
        tokio::time::sleep(Duration::from_micros(1_000_000 - usec)).await;
        t = redis.time().0;
    }
    let id1 = id("expiry", 1);
    let until = t + 1;
    assert_eq!(post(a, &id1, until).await.0, 201);
    assert_eq!(post(a, &id1, until).await.0, 409);
    // Redis drops it once its clock passes `until`: poll, never sleep longer than needed.
    let key = format!("wba:replay:{id1}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.int(&["EXISTS", &key]) == 1 {
        assert!(Instant::now() < deadline, "the record never expired");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(redis.time().0 >= until);
    // The same id is fresh again (with a new, later until).
    assert_eq!(post(a, &id1, now() + 60).await.0, 201);
    assert_eq!(post(a, &id1, now() + 60).await.0, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_for_one_id_give_one_fresh() {
    if !have_redis("a_thousand_concurrent_requests_for_one_id_give_one_fresh") {
        return;
    }
    let redis = Redis::start();
    // A generous timeout: this is about atomicity, not speed.
    let server = Server::start(&[redis.url()], &["--redis-timeout-ms", "20000"]);
    let until = now() + 300;
    for round in 0..2 {
        let id1 = id("concurrent", round);
        let barrier = Arc::new(tokio::sync::Barrier::new(1000));
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let addr = server.addr.clone();
                let id1 = id1.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    post(&addr, &id1, until).await.0
                })
            })
            .collect();
        let mut counts = std::collections::BTreeMap::new();
        for t in tasks {
            *counts.entry(t.await.unwrap()).or_insert(0) += 1;
        }
        assert_eq!(
            counts,
            [(201, 1), (409, 999)].into_iter().collect(),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_paused_and_restarted() {
    if !have_redis("redis_stopped_paused_and_restarted") {
        return;
    }
    let mut redis = Redis::start();
    let server = Server::start(&[redis.url()], &["--redis-timeout-ms", "200"]);
    let a = &server.addr;
    let until = now() + 300;
    assert_eq!(post(a, &id("down", 0), until).await.0, 201);

    // Stopped: 503 at once (connection refused), never a hang; the health check says so.
    redis.stop();
    for n in 1..=20 {
        let started = Instant::now();
        let (status, body) = post(a, &id("down", n), until).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.starts_with("redis unavailable: "), "{body}");
        assert!(started.elapsed() < Duration::from_secs(3), "{n}: hung");
    }
    assert_eq!(health(a).await.0, 503);

    // Restarted (empty): used again without restarting the server.
    redis.restart();
    wait_healthy(a).await;
    assert_eq!(post(a, &id("down", 1), until).await.0, 201);
    assert_eq!(post(a, &id("down", 1), until).await.0, 409);

    // Paused (SIGSTOP): connections open but nothing answers: 503 after the timeout.
    signal(redis.pid(), "STOP");
    for n in 100..105 {
        let started = Instant::now();
        let (status, body) = post(a, &id("down", n), until).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("no answer within 200 ms"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(3), "{n}: hung");
    }
    assert_eq!(health(a).await.0, 503);
    signal(redis.pid(), "CONT");
    wait_healthy(a).await;
    assert_eq!(post(a, &id("down", 200), until).await.0, 201);

    // One line per change of state, not one per request.
    let log = server.log();
    let down = log.iter().filter(|l| l.contains("unreachable")).count();
    let up = log.iter().filter(|l| l.contains("reachable again")).count();
    assert_eq!((down, up), (2, 2), "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down() {
    if !have_redis("starts_while_redis_is_down") {
        return;
    }
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let server = Server::start(std::slice::from_ref(&url), &[]);
    let a = &server.addr;
    assert_eq!(post(a, &id("late", 1), now() + 60).await.0, 503);
    assert_eq!(health(a).await.0, 503);
    let _redis = Redis::start_with(port, Vec::new());
    wait_healthy(a).await;
    assert_eq!(post(a, &id("late", 1), now() + 60).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_still_sees_records() {
    if !have_redis("a_restarted_server_still_sees_records") {
        return;
    }
    let redis = Redis::start();
    let until = now() + 300;
    let mut first = Server::start(&[redis.url()], &[]);
    assert_eq!(post(&first.addr, &id("restart", 1), until).await.0, 201);
    let status = first.terminate();
    assert!(status.success(), "SIGTERM: {status:?}");
    assert!(first.log().iter().any(|l| l.contains("stopping")));
    let second = Server::start(&[redis.url()], &[]);
    assert_eq!(post(&second.addr, &id("restart", 1), until).await.0, 409);
    assert_eq!(post(&second.addr, &id("restart", 2), until).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_agree() {
    if !have_redis("two_servers_on_one_redis_agree") {
        return;
    }
    let redis = Redis::start();
    let one = Server::start(&[redis.url()], &["--redis-timeout-ms", "20000"]);
    let two = Server::start(&[redis.url()], &["--redis-timeout-ms", "20000"]);
    let until = now() + 300;
    assert_eq!(post(&one.addr, &id("two", 1), until).await.0, 201);
    assert_eq!(post(&two.addr, &id("two", 1), until).await.0, 409);
    assert_eq!(post(&two.addr, &id("two", 2), until).await.0, 201);
    assert_eq!(post(&one.addr, &id("two", 2), until).await.0, 409);
    // The same id sent to both at once, 200 times: one fresh in all.
    let id3 = id("two", 3);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let addr = if i % 2 == 0 {
                one.addr.clone()
            } else {
                two.addr.clone()
            };
            let id3 = id3.clone();
            tokio::spawn(async move { post(&addr, &id3, until).await.0 })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => fresh += 1,
            409 => {}
            s => panic!("{s}"),
        }
    }
    assert_eq!(fresh, 1);
}

// ---- Redis Cluster ----

/// Three masters on free ports (client and bus ports), joined with `redis-cli --cluster create`.
struct Cluster {
    nodes: Vec<Redis>,
}

impl Cluster {
    fn start() -> Cluster {
        let nodes: Vec<Redis> = (0..3)
            .map(|_| {
                let bus = free_port();
                Redis::start_with(
                    free_port(),
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-port",
                        &bus.to_string(),
                    ]
                    .map(String::from)
                    .to_vec(),
                )
            })
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &nodes {
            loop {
                let ok = matches!(
                    n.try_cmd(&["CLUSTER", "INFO"]),
                    Ok(redis::Value::VerbatimString { text, .. }) if text.contains("cluster_state:ok")
                ) || matches!(
                    n.try_cmd(&["CLUSTER", "INFO"]),
                    Ok(redis::Value::BulkString(b)) if String::from_utf8_lossy(&b).contains("cluster_state:ok")
                );
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Cluster { nodes }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_spreads_records_over_masters() {
    if !have_redis("redis_cluster_spreads_records_over_masters") {
        return;
    }
    if !Path::new("/usr/bin/redis-cli").exists()
        && Command::new("redis-cli").arg("--version").output().is_err()
    {
        assert!(
            std::env::var("WBA_REQUIRE_REDIS").as_deref() != Ok("1"),
            "redis-cli is not installed"
        );
        return;
    }
    let cluster = Cluster::start();
    let urls: Vec<String> = cluster.nodes.iter().map(Redis::url).collect();
    // One seed node is enough to find the others: give two.
    let server = Server::start(&urls[..2], &["--cluster", "--redis-timeout-ms", "5000"]);
    let a = &server.addr;
    wait_healthy(a).await;
    let until = now() + 300;
    for n in 0..300 {
        assert_eq!(post(a, &id("cluster", n), until).await.0, 201, "{n}");
    }
    for n in 0..300 {
        assert_eq!(post(a, &id("cluster", n), until).await.0, 409, "{n}");
    }
    // Every master holds a share (no hash tag pins them to one slot).
    let sizes: Vec<i64> = cluster.nodes.iter().map(|n| n.int(&["DBSIZE"])).collect();
    assert_eq!(sizes.iter().sum::<i64>(), 300, "{sizes:?}");
    assert!(sizes.iter().all(|s| *s >= 50), "{sizes:?}");
    // Same answer from a second server (seeded by the third node).
    let other = Server::start(&urls[2..], &["--cluster", "--redis-timeout-ms", "5000"]);
    assert_eq!(post(&other.addr, &id("cluster", 7), until).await.0, 409);
}

#[test]
fn usage_errors_need_no_redis() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_wba"))
            .arg("replay-server")
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--redis"), "{err}");
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--redis",
        "redis://127.0.0.1:1",
        "--redis",
        "redis://127.0.0.1:2",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("add --cluster"), "{err}");
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--redis",
        "redis://127.0.0.1:1",
        "--redis-timeout-ms",
        "0",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--redis-timeout-ms"), "{err}");
    let (code, err) = run(&[
        "--listen",
        "127.0.0.1:0",
        "--redis",
        "redis://u:hunter2@h:1/x",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--redis") && !err.contains("hunter2"), "{err}");
    let (code, err) = run(&["--listen", "nonsense", "--redis", "redis://127.0.0.1:1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot listen on nonsense"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_kills_the_server() {
    if !have_redis("garbage_never_kills_the_server") {
        return;
    }
    let redis = Redis::start();
    let mut server = Server::start(&[redis.url()], &[]);
    let a = server.addr.clone();
    // A small deterministic generator (xorshift64*).
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let pieces: [&[u8]; 16] = [
        b"POST ",
        b"GET ",
        b"/v1/replay/",
        b"/healthz",
        b"0123456789abcdef",
        b" HTTP/1.1\r\n",
        b"x-wba-until: ",
        b"1800000000",
        b"99999999999999999999999999",
        b"\r\n",
        b"Content-Length: ",
        b"Transfer-Encoding: chunked\r\n",
        b"\xff\x00\xfe",
        b"?",
        b"%00",
        b"\r\n\r\n",
    ];
    for _ in 0..300 {
        let mut raw = Vec::new();
        for _ in 0..(next() % 24) {
            let r = next();
            if r % 5 == 0 {
                raw.push((r >> 8) as u8);
            } else {
                raw.extend_from_slice(pieces[(r >> 8) as usize % pieces.len()]);
            }
        }
        raw.extend_from_slice(b"\r\n\r\n");
        // Any answer, or none (a closed connection), but the server must stay up.
        let _ = tokio::time::timeout(Duration::from_secs(15), async {
            let mut s = tokio::net::TcpStream::connect(&a).await?;
            s.write_all(&raw).await?;
            s.shutdown().await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        })
        .await;
    }
    assert_eq!(health(&a).await.0, 200);
    assert!(server.child.as_mut().unwrap().try_wait().unwrap().is_none());
}
