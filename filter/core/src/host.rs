//! The host calls the request path needs, behind a trait: Envoy implements it through
//! proxy-wasm; [`RecordingHost`] keeps everything in memory, for tests and for embedding the
//! core elsewhere.

use std::fmt;

use crate::plan::Rejection;
use crate::stats::Counter;

/// The host could not hand over the request headers (the call failed, or what it returned is
/// not a header map). The request cannot be checked, nor its forged headers removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadersUnavailable;

impl fmt::Display for HeadersUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request headers could not be read")
    }
}

impl std::error::Error for HeadersUnavailable {}

/// What the filter asks of its host for one request.
pub trait Host {
    /// All request headers, pseudo-headers (`:method`, `:path`...) included, names lowercase.
    fn request_headers(&self) -> Result<Vec<(String, String)>, HeadersUnavailable>;
    /// Removes every line of a request header.
    fn remove_request_header(&mut self, name: &str);
    /// Sets (replaces) a request header.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Wall-clock time in unix seconds.
    fn now(&self) -> i64;
    /// Answers the request locally instead of forwarding it.
    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str);
    fn increment(&mut self, counter: Counter);
    /// Records a value for access logs (filter state).
    fn set_log_value(&mut self, key: &str, value: &str);
}

/// A [`Host`] over one request held in memory, recording what the filter did to it: the
/// headers as it left them, the local response it sent, the counters it incremented and the
/// log values it set, in order.
///
/// ```
/// use wba_filter::config::Config;
/// use wba_filter::host::RecordingHost;
/// use wba_filter::key_cache::KeyCache;
/// use wba_filter::replay::ReplayTable;
/// use wba_filter::request_filter::{on_request_headers, Action};
/// use wba_filter::shared::MemoryStore;
///
/// let config = Config::from_json(br#"{"mode":"require","agents":[]}"#).unwrap();
/// let headers = [(":method", "GET"), (":authority", "a.example"), (":path", "/")];
/// let mut host = RecordingHost::new(
///     headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
///     1_800_000_000,
/// );
/// let mut keys = KeyCache::new(&config);
/// let mut store = MemoryStore::default();
/// let replay = ReplayTable::open(&mut store, config.replay_capacity, [7; 32]).unwrap();
/// let action = on_request_headers(&mut host, &config, &mut keys, &mut replay.guard(&mut store), true);
/// assert_eq!(action, Action::Stop);
/// assert_eq!(host.sent.map(|r| r.status), Some(403));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingHost {
    /// The request headers: what [`Host::request_headers`] answers, changed in place.
    pub headers: Vec<(String, String)>,
    /// What [`Host::now`] answers.
    pub now: i64,
    /// The last local response sent, if any.
    pub sent: Option<Rejection>,
    /// Every counter incremented, in order.
    pub counters: Vec<Counter>,
    /// Every log value set, as (key, value), in order.
    pub log: Vec<(String, String)>,
    /// Makes [`Host::request_headers`] fail, as a host that cannot read them would.
    pub headers_unreadable: bool,
}

impl RecordingHost {
    /// A host for a request with these headers (pseudo-headers included), at `now`.
    pub fn new(headers: Vec<(String, String)>, now: i64) -> Self {
        RecordingHost {
            headers,
            now,
            ..RecordingHost::default()
        }
    }

    /// The values of a request header (name compared case-insensitively), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl Host for RecordingHost {
    fn request_headers(&self) -> Result<Vec<(String, String)>, HeadersUnavailable> {
        if self.headers_unreadable {
            return Err(HeadersUnavailable);
        }
        Ok(self.headers.clone())
    }
    fn remove_request_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    fn set_request_header(&mut self, name: &str, value: &str) {
        self.remove_request_header(name);
        self.headers.push((name.to_string(), value.to_string()));
    }
    fn now(&self) -> i64 {
        self.now
    }
    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str) {
        self.sent = Some(Rejection {
            status,
            headers: headers.to_vec(),
            body: body.to_string(),
        });
    }
    fn increment(&mut self, counter: Counter) {
        self.counters.push(counter);
    }
    fn set_log_value(&mut self, key: &str, value: &str) {
        self.log.push((key.to_string(), value.to_string()));
    }
}
