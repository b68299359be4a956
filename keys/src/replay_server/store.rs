//! Redis behind the replay server: standalone through a [`ConnectionManager`] (one multiplexed
//! connection, reconnected in the background), or a Redis Cluster through the cluster client.
//! Every call is bounded by the configured timeout, and every outcome updates one
//! reachable/unreachable state that is logged when it changes, never per request.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo as _, ProtocolVersion, RedisError, Value};

use super::protocol::Record;

/// The outcome of a check-and-record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now: first use.
    Fresh,
    /// Already recorded and not expired.
    Replayed,
}

/// Why Redis gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within the timeout.
    Timeout(Duration),
    /// An error (connection refused or lost, a server error, an unexpected reply).
    Failed(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Timeout(d) => write!(f, "no answer within {} ms", d.as_millis()),
            StoreError::Failed(e) => f.write_str(e),
        }
    }
}

fn failed(e: &RedisError) -> StoreError {
    let mut msg = e.to_string();
    if msg.contains("syntax error") {
        // SET ... EXAT arrived in Redis 6.2.
        msg.push_str(" (SET ... NX EXAT needs Redis 6.2 or later)");
    }
    StoreError::Failed(msg)
}

/// Where the records live.
pub enum Backend {
    Standalone(ConnectionManager),
    Cluster(Box<ClusterHandle>),
}

/// A Redis Cluster connection, made on first use and remade only if it was never made (the
/// cluster client itself reconnects to nodes and follows slot moves once it has a topology).
pub struct ClusterHandle {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
    /// Held while connecting, so that one task at a time connects.
    connecting: tokio::sync::Mutex<()>,
}

impl ClusterHandle {
    async fn connection(&self) -> Result<ClusterConnection, RedisError> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let _guard = self.connecting.lock().await;
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let c = self.client.get_async_connection().await?;
        if let Ok(mut slot) = self.conn.lock() {
            *slot = Some(c.clone());
        }
        Ok(c)
    }

    fn current(&self) -> Option<ClusterConnection> {
        self.conn.lock().ok().and_then(|c| c.clone())
    }
}

/// The reachability last seen, for logging changes.
const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Redis, the timeout, and the reachability state.
pub struct Store {
    backend: Backend,
    timeout: Duration,
    state: AtomicU8,
    /// How Redis is named in log lines (no password).
    pub describe: String,
}

/// Parses the URLs and builds the client. No connection is made here: the server starts, and
/// answers 503, while Redis is unreachable.
pub fn open(urls: &[String], cluster: bool, timeout: Duration) -> anyhow::Result<Store> {
    let mut infos = Vec::new();
    for u in urls {
        let info = u
            .as_str()
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("--redis {}: {e}", redact(u)))?;
        infos.push(info);
    }
    let Some(first) = infos.first().cloned() else {
        anyhow::bail!("--redis URL is required");
    };
    let addrs: Vec<String> = infos.iter().map(|i| i.addr().to_string()).collect();
    let backend = if cluster {
        let client = ClusterClientBuilder::new(infos)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(timeout.as_millis().try_into().unwrap_or(u64::MAX))
            .build()
            .map_err(|e| anyhow::anyhow!("--redis (cluster): {e}"))?;
        Backend::Cluster(Box::new(ClusterHandle {
            client,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }))
    } else {
        if infos.len() > 1 {
            anyhow::bail!(
                "several --redis URLs name the seed nodes of one Redis Cluster: add --cluster"
            );
        }
        // RESP3 unless the URL chose: the connection then hears of its own loss and reconnects
        // before the next request needs it. Redis >= 6.2 is required anyway (EXAT).
        let info = if urls.first().is_some_and(|u| u.contains("protocol=")) {
            first
        } else {
            let settings = first
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            first.set_redis_settings(settings)
        };
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One attempt per reconnection: the next request (or health check) starts the
            // next one, so a Redis that comes back is used at once, and a Redis that is down
            // costs one failed connect at a time, not a backlog of retries.
            .set_number_of_retries(0)
            .set_pipeline_buffer_size(1024);
        Backend::Standalone(ConnectionManager::new_lazy_with_config(client, config)?)
    };
    Ok(Store {
        backend,
        timeout,
        state: AtomicU8::new(UNKNOWN),
        describe: format!(
            "{} {}",
            if cluster { "cluster" } else { "standalone" },
            addrs.join(",")
        ),
    })
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".to_string(),
    }
}

impl Store {
    /// Sends `cmd`, within the timeout.
    async fn query(&self, cmd: &Cmd) -> Result<Value, StoreError> {
        let run = async {
            match &self.backend {
                Backend::Standalone(m) => {
                    let mut m = m.clone();
                    match cmd.query_async::<Value>(&mut m).await {
                        // The manager hands out the outcome of its last connection attempt
                        // once more before it starts the next one: a refused connection
                        // means the command was never sent, so it is safe to send it again
                        // (on the new attempt), and a Redis that is back is used at once.
                        Err(e) if e.is_connection_refusal() => {
                            cmd.query_async::<Value>(&mut m).await
                        }
                        r => r,
                    }
                }
                Backend::Cluster(h) => {
                    let mut c = h.connection().await?;
                    cmd.query_async::<Value>(&mut c).await
                }
            }
        };
        let result = match tokio::time::timeout(self.timeout, run).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            // The client's own response or connection timeout (the same length) said it first.
            Ok(Err(e)) if e.is_timeout() => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(failed(&e)),
            Ok(Ok(Value::ServerError(e))) => Err(failed(&RedisError::from(e))),
            Ok(Ok(v)) => Ok(v),
        };
        self.note(&result);
        result
    }

    /// `SET wba:replay:<id> 1 NX EXAT <until>` for each id, in order: atomic check-and-record
    /// of each. Fresh when every one was; at the first that was recorded before, the ones this
    /// call recorded are deleted again (a replayed request records nothing) and the answer is
    /// replayed. Each key hashes to its own slot in a Redis Cluster, so they are sent one by
    /// one rather than as one multi-key command.
    pub async fn record(&self, r: &Record) -> Result<Recorded, StoreError> {
        let mut recorded = Vec::new();
        for key in r.keys() {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key).arg(1).arg("NX").arg("EXAT").arg(r.until);
            match self.query(&cmd).await {
                Ok(Value::Okay) => recorded.push(key),
                Ok(Value::SimpleString(s)) if s == "OK" => recorded.push(key),
                Ok(Value::Nil) => {
                    self.forget(&recorded).await;
                    return Ok(Recorded::Replayed);
                }
                Ok(other) => {
                    let e = StoreError::Failed(format!("unexpected reply to SET: {other:?}"));
                    self.note::<()>(&Err(e.clone()));
                    self.forget(&recorded).await;
                    return Err(e);
                }
                Err(e) => {
                    self.forget(&recorded).await;
                    return Err(e);
                }
            }
        }
        Ok(Recorded::Fresh)
    }

    /// Deletes keys this server just recorded (best effort: one that stays expires as set).
    async fn forget(&self, keys: &[String]) {
        for key in keys {
            let mut cmd = redis::cmd("DEL");
            cmd.arg(key);
            let _ = self.query(&cmd).await;
        }
    }

    /// `PING`, within the timeout.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.query(&redis::cmd("PING")).await.map(|_| ())
    }

    /// At startup: whether Redis answers, and a warning when its eviction policy could evict
    /// live records (any policy but `noeviction`). Logs; never fails.
    pub async fn startup_check(&self) {
        if self.ping().await.is_err() {
            return; // logged by `note`
        }
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let policy = match tokio::time::timeout(self.timeout, async {
            match &self.backend {
                Backend::Standalone(m) => {
                    let mut m = m.clone();
                    cmd.query_async::<Vec<String>>(&mut m).await
                }
                // One node's answer: every master should be configured alike.
                Backend::Cluster(h) => {
                    let mut c = h.connection().await?;
                    cmd.query_async::<Vec<String>>(&mut c).await
                }
            }
        })
        .await
        {
            Ok(Ok(v)) => v.get(1).cloned(),
            // CONFIG may be disabled (managed Redis): nothing to say.
            _ => None,
        };
        if let Some(p) = policy.filter(|p| p != "noeviction") {
            eprintln!(
                "wba replay-server: warning: redis maxmemory-policy is {p}: when Redis is full it \
                 may evict live records, and their replays would be accepted; set noeviction"
            );
        }
    }

    /// Logs a change of reachability (once per change).
    fn note<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => {
                let before = self.state.swap(UP, Ordering::AcqRel);
                if before != UP {
                    let again = if before == DOWN { " again" } else { "" };
                    eprintln!(
                        "wba replay-server: redis {} reachable{again}",
                        self.describe
                    );
                }
            }
            Err(e) => {
                if self.state.swap(DOWN, Ordering::AcqRel) != DOWN {
                    eprintln!(
                        "wba replay-server: redis {} unreachable: {e} (answering 503 until it is back)",
                        self.describe
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("redis://user:secret@10.0.0.1:6379/0"),
            "redis://user:***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("::"), "(unparsable URL)");
    }

    #[test]
    fn opens_without_connecting_and_refuses_bad_urls() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = open(
                &["redis://127.0.0.1:1".into()],
                false,
                Duration::from_millis(200),
            )
            .unwrap();
            assert_eq!(s.describe, "standalone 127.0.0.1:1");
            // Nothing listens on port 1: a prompt 503-worthy error, not a hang.
            assert!(s.ping().await.is_err());
            let err = open(&["http://x".into()], false, Duration::from_millis(200))
                .err()
                .unwrap();
            assert!(err.to_string().contains("--redis"), "{err}");
            let err = open(
                &["redis://a:1".into(), "redis://b:1".into()],
                false,
                Duration::from_millis(200),
            )
            .err()
            .unwrap();
            assert!(err.to_string().contains("--cluster"), "{err}");
            let err = open(
                &["redis://u:hunter2@a:1/x".into()],
                false,
                Duration::from_millis(200),
            )
            .err()
            .unwrap();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            let c = open(
                &["redis://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
                true,
                Duration::from_millis(200),
            )
            .unwrap();
            assert_eq!(c.describe, "cluster 127.0.0.1:1,127.0.0.1:2");
            assert!(c.ping().await.is_err());
        });
    }
}
