//! Web Bot Auth verification as an Envoy `ext_authz` HTTP service, on the `wba-filter` core.
//!
//! This is what an operator would deploy instead of the Wasm filter: Envoy's
//! `envoy.filters.http.ext_authz` sends each request's headers to this service, which runs the
//! very same request state machine as the filter ([`on_request_headers`]: strip, verify, check
//! replays, annotate, enforce) and answers:
//!
//! - to let the request through: `200`, with the `x-web-bot-auth-*` result headers (Envoy adds
//!   them upstream through `allowed_upstream_headers`) and the inbound copies to strip in
//!   `x-envoy-auth-headers-to-remove`;
//! - to reject it: the filter's own status, headers and `application/problem+json` body, which
//!   Envoy sends to the client.
//!
//! Envoy's check request carries the original method, path and `Host` (the authority) and the
//! headers listed in `authorization_request.allowed_headers`: `signature`, `signature-input`,
//! `signature-agent`, the components the signatures cover, and the `x-web-bot-auth-` prefix.
//! The configuration is the filter's plugin JSON. Keys must be pinned: this service does not
//! fetch key directories (an agent known only by its `cluster` is `directory_unavailable`).
//! Replay protection uses one in-process table shared by the service's threads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use wba_filter::config::{Config, ConfigError};
use wba_filter::host::{HeadersUnavailable, Host};
use wba_filter::key_cache::KeyCache;
use wba_filter::replay::{MemoryReplay, SECRET_BYTES};
use wba_filter::replay_store::StoreAnswer;
use wba_filter::request_filter::{
    on_request_body, on_request_headers, on_store_answer, Action, Body,
};
use wba_filter::stats::Counter;

/// The response header through which Envoy's ext_authz removes headers from the request.
pub const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// What to answer Envoy's check request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The service: configuration, replay table and counters, shared by every thread.
#[derive(Debug)]
pub struct Service {
    pub config: Config,
    replay: MemoryReplay,
    counters: Vec<AtomicU64>,
}

impl Service {
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut secret)
            .map_err(|e| ConfigError(format!("no random bytes for the replay table: {e}")))?;
        Ok(Service {
            replay: MemoryReplay::new(config.replay_capacity, secret),
            config,
            counters: Counter::all().iter().map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// From the filter's plugin configuration (JSON).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::new(Config::from_json(bytes)?)
    }

    /// A key cache for one thread (keys are decoded once, here).
    pub fn key_cache(&self) -> KeyCache {
        KeyCache::new(&self.config)
    }

    /// How many times `counter` was incremented.
    pub fn count(&self, counter: Counter) -> u64 {
        self.counters
            .get(counter.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Decides on one check request: its method, path (with query), and headers as Envoy sent
    /// them, `Host` being the original request's authority.
    pub fn check(
        &self,
        cache: &mut KeyCache,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = Vec::with_capacity(headers.len() + 4);
        let mut authority = "";
        let mut scheme = "http";
        for (n, v) in headers {
            if n.eq_ignore_ascii_case("host") {
                authority = v;
            } else if n.eq_ignore_ascii_case("x-forwarded-proto") {
                scheme = v;
            }
        }
        request.push((":method".to_string(), method.to_string()));
        request.push((":scheme".to_string(), scheme.to_string()));
        request.push((":authority".to_string(), authority.to_string()));
        request.push((":path".to_string(), path.to_string()));
        for (n, v) in headers {
            if !n.eq_ignore_ascii_case("host") {
                request.push((n.to_ascii_lowercase(), v.to_string()));
            }
        }
        let mut host = CheckHost {
            headers: request,
            removed: Vec::new(),
            set: Vec::new(),
            sent: None,
            counters: &self.counters,
        };
        let mut replay = &self.replay;
        // `may_wait` false: there is no key fetch to wait for, the keys are pinned.
        let mut action = on_request_headers(&mut host, &self.config, cache, &mut replay, false);
        if let Action::NeedBody(pending) = &action {
            // Envoy does not send this service the request body (no `with_request_body`), so a
            // signature that covers Content-Digest cannot be checked here: refused.
            let body = Body::TooLarge(0);
            action = on_request_body(&mut host, &self.config, &mut replay, pending, body);
        }
        if let Action::AskStore(query) = &action {
            // This baseline has no client for the fleet's replay store: `on_error` decides.
            let answer =
                StoreAnswer::Failed("the ext_authz baseline has no replay store client".into());
            on_store_answer(&mut host, &self.config, &mut replay, query, &answer);
        }
        if let Some(answer) = host.sent {
            return answer;
        }
        // Headers that are set replace every inbound copy anyway; remove the other ones.
        let remove: Vec<&str> = host
            .removed
            .iter()
            .filter(|r| !host.set.iter().any(|(n, _)| n == *r))
            .map(String::as_str)
            .collect();
        let mut headers = host.set;
        if !remove.is_empty() {
            headers.push((HEADERS_TO_REMOVE.to_string(), remove.join(",")));
        }
        Answer {
            status: 200,
            headers,
            body: String::new(),
        }
    }
}

/// The filter's [`Host`] over one check request.
struct CheckHost<'a> {
    headers: Vec<(String, String)>,
    removed: Vec<String>,
    set: Vec<(String, String)>,
    sent: Option<Answer>,
    counters: &'a [AtomicU64],
}

impl Host for CheckHost<'_> {
    fn request_headers(&self) -> Result<Vec<(String, String)>, HeadersUnavailable> {
        Ok(self.headers.clone())
    }

    fn remove_request_header(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        if !self.removed.contains(&name) {
            self.removed.push(name);
        }
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        self.set.retain(|(n, _)| *n != name);
        self.set.push((name, value.to_string()));
    }

    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str) {
        self.sent = Some(Answer {
            status,
            headers: headers.to_vec(),
            body: body.to_string(),
        });
    }

    fn increment(&mut self, counter: Counter) {
        if let Some(c) = self.counters.get(counter.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn set_log_value(&mut self, _key: &str, _value: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use wba_filter::jwk::Jwk;
    use wba_filter::request::HttpRequest;
    use wba_filter::sign::{sign_request, SignOptions};
    use wba_filter::verdict::Outcome;

    fn service(mode: &str) -> Service {
        let jwk = Jwk::from_ed25519(SigningKey::from_bytes(&[9; 32]).verifying_key().as_bytes())
            .to_json();
        Service::from_json(
            format!(
                r#"{{"mode":"{mode}","agents":[{{"name":"A","url":"https://agent.example","keys":[{jwk}]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    }

    /// The headers of a check request for a request signed now, plus `extra`.
    fn signed(extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let req = HttpRequest::from_parts("GET", "http", "shop.example", "/items/1?x=2", vec![]);
        let signed = sign_request(
            &req,
            &SigningKey::from_bytes(&[9; 32]),
            &SignOptions::web_bot_auth("https://agent.example", now, 60),
        )
        .unwrap();
        let mut h: Vec<(String, String)> = vec![("host".into(), "shop.example".into())];
        h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        h.extend(signed.pairs());
        h
    }

    fn check(s: &Service, path: &str, headers: &[(String, String)]) -> Answer {
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        s.check(&mut s.key_cache(), "GET", path, &pairs)
    }

    fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a str> {
        a.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn verifies_a_signed_request_and_strips_forgeries() {
        let s = service("require");
        let headers = signed(&[
            ("X-Web-Bot-Auth-Result", "verified"),
            ("x-web-bot-auth-other", "forged"),
        ]);
        let a = check(&s, "/items/1?x=2", &headers);
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(header(&a, "x-web-bot-auth-result"), Some("verified"));
        assert_eq!(
            header(&a, "x-web-bot-auth-agent"),
            Some("https://agent.example")
        );
        assert_eq!(header(&a, "x-web-bot-auth-agent-name"), Some("A"));
        assert_eq!(header(&a, HEADERS_TO_REMOVE), Some("x-web-bot-auth-other"));
        assert_eq!(s.count(Counter::Outcome(Outcome::Verified)), 1);
        // The same signature again is a replay.
        let again = check(&s, "/items/1?x=2", &headers);
        assert_eq!(again.status, 429);
    }

    #[test]
    fn rejects_a_tampered_request_and_passes_unsigned_by_policy() {
        let s = service("enforce");
        let a = check(&s, "/items/2?x=2", &signed(&[]));
        assert_eq!(a.status, 403);
        assert!(a.body.contains("bad_signature"), "{}", a.body);
        let unsigned = vec![("host".to_string(), "shop.example".to_string())];
        let a = check(&s, "/", &unsigned);
        assert_eq!(a.status, 200);
        assert_eq!(header(&a, "x-web-bot-auth-result"), Some("unsigned"));
        assert_eq!(check(&service("require"), "/", &unsigned).status, 403);
    }
}
