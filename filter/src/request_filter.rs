//! The per-request state machine: strip, verify, annotate, enforce. Pure over [`Host`] and
//! [`SharedStore`]; a request whose agent's keys must be fetched first is paused
//! ([`Action::Wait`]) and handled again, without waiting twice, once the fetch is done.

use crate::config::Config;
use crate::host::Host;
use crate::key_cache::KeyCache;
use crate::plan::{is_owned_header, plan};
use crate::replay::{check_and_record, ReplayCheck, ReplayId};
use crate::request::HttpRequest;
use crate::shared::SharedStore;
use crate::stats::Counter;
use crate::verdict::{Failure, Reason, Verdict};
use crate::verify::verify_request;

/// What the host should do with the request after a callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward it (annotated).
    Continue,
    /// A local response was sent: stop iteration.
    Stop,
    /// Pause until the keys of this agent (normalized URL) are fetched, then call
    /// [`on_request_headers`] again with `may_wait` false.
    Wait(String),
}

/// Filter-state keys visible to access logs.
pub const LOG_KEYS: [&str; 4] = ["wba.result", "wba.reason", "wba.agent", "wba.key_id"];
/// Filter-state key: for a verified request with fetched keys, whether the agent's directory
/// proved possession of its keys (`valid`) or did not sign its response (`absent`).
pub const PROOF_LOG_KEY: &str = "wba.directory_proof";

/// Handles a request's headers: strips the inbound identity headers, verifies (asking to
/// wait for a key fetch when `may_wait` and the agent's keys are missing), checks replays,
/// sets the result headers, counts, records, and rejects by policy.
pub fn on_request_headers(
    host: &mut dyn Host,
    config: &Config,
    keys: &mut KeyCache,
    store: &mut dyn SharedStore,
    may_wait: bool,
) -> Action {
    let headers = host.request_headers();
    // Strip first, whatever the outcome: inbound copies of our headers are forgeries.
    let mut stripped: Vec<&str> = Vec::new();
    for (name, _) in &headers {
        if is_owned_header(&config.header_prefix, name)
            && !stripped.iter().any(|s| s.eq_ignore_ascii_case(name))
        {
            stripped.push(name);
        }
    }
    for name in &stripped {
        host.remove_request_header(name);
    }
    let req = request_from_owned(headers, &config.header_prefix);
    // Verification reads the clock only for a request with signature fields: an unsigned
    // request (most traffic) spares the host call.
    let signed = req.header_values("signature-input").next().is_some()
        || req.header_values("signature").next().is_some();
    let now = if signed { host.now() } else { 0 };
    let mut verdict = verify_request(&req, &config.policy, keys, now);
    if let Verdict::Failed(f) = &verdict {
        if let Some(url) = keys.wants_fetch(f, &config.directory, now) {
            // Another worker may have fetched already: this VM's copy is refreshed on ticks,
            // so look at the shared entry before waiting for a fetch.
            if keys.sync(store, &url) {
                verdict = verify_request(&req, &config.policy, keys, now);
            }
        }
    }
    if may_wait {
        if let Verdict::Failed(f) = &verdict {
            if let Some(url) = keys.wants_fetch(f, &config.directory, now) {
                host.increment(Counter::Waited);
                return Action::Wait(url);
            }
        }
    }
    let verdict = check_replay(host, config, store, verdict, now);
    if let Verdict::Verified(v) = &verdict {
        if let Some(proof) = keys.proof_of(&v.agent_url, &v.key_id) {
            host.set_log_value(PROOF_LOG_KEY, proof);
        }
    }
    apply(host, config, &verdict)
}

/// Records a verified signature's identity; a second use within its life is `replayed`.
fn check_replay(
    host: &mut dyn Host,
    config: &Config,
    store: &mut dyn SharedStore,
    verdict: Verdict,
    now: i64,
) -> Verdict {
    let Verdict::Verified(v) = &verdict else {
        return verdict;
    };
    if !config.replay_protection {
        return verdict;
    }
    // Kept as long as the signature is accepted: until `expires` plus the clock skew.
    let until = v.expires.saturating_add(config.policy.clock_skew_seconds);
    let detail = match check_and_record(store, ReplayId::of(v), until, now) {
        ReplayCheck::Fresh => return verdict,
        ReplayCheck::FreshEvicted => {
            host.increment(Counter::ReplayEvicted);
            return verdict;
        }
        ReplayCheck::Replayed => match &v.nonce {
            Some(_) => "this nonce was already used",
            None => "this signature was already used",
        },
        ReplayCheck::Unavailable => "the replay check could not record this signature",
    };
    Verdict::Failed(Failure {
        label: Some(v.label.clone()),
        agent: Some(v.agent_url.clone()),
        ..Failure::new(Reason::Replayed, detail)
    })
}

/// Sets headers, stats and log values for `verdict`, and rejects when the plan says so.
pub fn apply(host: &mut dyn Host, config: &Config, verdict: &Verdict) -> Action {
    let plan = plan(verdict, config);
    for (n, v) in &plan.set {
        host.set_request_header(n, v);
    }
    host.increment(Counter::Outcome(verdict.outcome()));
    if let Some(r) = verdict.reason() {
        host.increment(Counter::Reason(r));
    }
    host.set_log_value(LOG_KEYS[0], verdict.outcome().token());
    match verdict {
        Verdict::Verified(v) => {
            host.set_log_value(LOG_KEYS[2], &v.agent_url);
            host.set_log_value(LOG_KEYS[3], &v.key_id);
        }
        Verdict::Failed(f) => host.set_log_value(LOG_KEYS[1], f.reason.token()),
        Verdict::Unsigned => {}
    }
    match plan.reject {
        Some(r) => {
            host.increment(Counter::Rejected);
            host.send_response(r.status, &r.headers, &r.body);
            Action::Stop
        }
        None => Action::Continue,
    }
}

/// [`request_from_headers`], taking the headers (the per-request path: no copies).
fn request_from_owned(headers: Vec<(String, String)>, prefix: &str) -> HttpRequest {
    let (mut method, mut scheme, mut authority, mut path) = (None, None, None, None);
    let mut fields = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let slot = match name.as_str() {
            ":method" => &mut method,
            ":scheme" => &mut scheme,
            ":authority" => &mut authority,
            ":path" => &mut path,
            n if n.starts_with(':') || is_owned_header(prefix, n) => continue,
            _ => {
                fields.push((name, value));
                continue;
            }
        };
        // The first of repeated pseudo-headers counts.
        slot.get_or_insert(value);
    }
    let mut authority = authority.unwrap_or_default();
    if authority.is_empty() {
        authority = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    let scheme = match scheme.as_deref() {
        None | Some("") => "http",
        Some(s) => s,
    };
    HttpRequest::from_parts(
        method.as_deref().unwrap_or_default(),
        scheme,
        &authority,
        path.as_deref().unwrap_or_default(),
        fields,
    )
}

/// The request as the verifier sees it: pseudo-headers for the derived components, the other
/// headers (minus the stripped ones) as fields.
pub fn request_from_headers(headers: &[(String, String)], prefix: &str) -> HttpRequest {
    request_from_owned(headers.to_vec(), prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::Fetched;
    use crate::host::RecordingHost;
    use crate::jwk::Jwk;
    use crate::plan::Rejection;
    use crate::shared::MemoryStore;
    use crate::sign::{sign_request, SignOptions};
    use ed25519_dalek::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: i64 = 1_800_000_000;

    fn config(mode: &str) -> Config {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let jwk = Jwk::from_ed25519(sk.verifying_key().as_bytes()).to_json();
        Config::from_json(
            format!(r#"{{"mode":"{mode}","agents":[{{"name":"A","url":"https://a.example","keys":[{jwk}]}}]}}"#)
                .as_bytes(),
        )
        .expect("config")
    }

    fn host(signed: bool, extra: &[(&str, &str)]) -> RecordingHost {
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), "GET".into()),
            (":scheme".into(), "http".into()),
            (":authority".into(), "shop.example".into()),
            (":path".into(), "/x?y=1".into()),
        ];
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        if signed {
            let req = request_from_headers(&headers, "x-web-bot-auth-");
            let h = sign_request(
                &req,
                &SigningKey::from_bytes(&[5; 32]),
                &SignOptions::web_bot_auth("https://a.example", NOW, 60),
            )
            .expect("sign");
            headers.extend(h.pairs());
        }
        RecordingHost::new(headers, NOW)
    }

    fn run(h: &mut RecordingHost, c: &Config) -> Action {
        on_request_headers(
            h,
            c,
            &mut KeyCache::new(c),
            &mut MemoryStore::default(),
            true,
        )
    }

    #[test]
    fn verified_request_is_annotated_and_forwarded() {
        let c = config("require");
        let mut h = host(true, &[]);
        assert_eq!(run(&mut h, &c), Action::Continue);
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
        assert_eq!(
            h.header_values("x-web-bot-auth-agent"),
            ["https://a.example"]
        );
        assert_eq!(h.header_values("x-web-bot-auth-agent-name"), ["A"]);
        assert_eq!(
            h.header_values("x-web-bot-auth-expires"),
            [(NOW + 60).to_string().as_str()]
        );
        assert_eq!(
            h.header_values("signature").len(),
            1,
            "signature headers pass unchanged"
        );
        assert!(h
            .counters
            .contains(&Counter::Outcome(crate::verdict::Outcome::Verified)));
        assert!(h.log.contains(&("wba.result".into(), "verified".into())));
        assert!(h.sent.is_none());
    }

    #[test]
    fn forged_identity_headers_are_stripped_whatever_the_case_or_count() {
        let c = config("enforce");
        let forged = [
            ("x-web-bot-auth-result", "verified"),
            ("X-Web-Bot-Auth-Agent", "https://evil.example"),
            ("x-web-bot-auth-agent", "https://evil2.example"),
            ("X-WEB-BOT-AUTH-KEY-ID", "k"),
            ("x-web-bot-auth-anything", "1"),
        ];
        for signed in [false, true] {
            let mut h = host(signed, &forged);
            assert_eq!(run(&mut h, &c), Action::Continue);
            let ours: Vec<_> = h
                .headers
                .iter()
                .filter(|(n, _)| is_owned_header("x-web-bot-auth-", n))
                .collect();
            assert!(
                ours.iter().all(|(n, _)| n == &n.to_ascii_lowercase()),
                "{ours:?}"
            );
            assert!(
                !ours
                    .iter()
                    .any(|(_, v)| v.contains("evil") || v == "k" || v == "1"),
                "{ours:?}"
            );
            if signed {
                assert_eq!(
                    h.header_values("x-web-bot-auth-agent"),
                    ["https://a.example"]
                );
            } else {
                assert_eq!(ours.len(), 1, "{ours:?}");
                assert_eq!(h.header_values("x-web-bot-auth-result"), ["unsigned"]);
            }
        }
    }

    #[test]
    fn modes_decide_rejection() {
        for (mode, signed, tamper, status) in [
            ("observe", true, true, None),
            ("enforce", true, true, Some(403)),
            ("enforce", false, false, None),
            ("require", false, false, Some(403)),
            ("require", true, false, None),
        ] {
            let c = config(mode);
            let mut h = host(signed, &[]);
            if tamper {
                for (n, v) in &mut h.headers {
                    if n == ":path" {
                        *v = "/other".into();
                    }
                }
            }
            let action = run(&mut h, &c);
            assert_eq!(
                h.sent.as_ref().map(|s| s.status),
                status,
                "{mode} signed={signed} tamper={tamper}"
            );
            assert_eq!(action == Action::Stop, status.is_some());
        }
    }

    #[test]
    fn malformed_is_400_and_counted() {
        let c = config("enforce");
        let mut h = host(false, &[("signature-input", "((("), ("signature", "x")]);
        assert_eq!(run(&mut h, &c), Action::Stop);
        let Rejection {
            status,
            headers,
            body,
        } = h.sent.clone().expect("sent");
        assert_eq!(status, 400);
        assert!(headers.contains(&("content-type".into(), "application/problem+json".into())));
        assert!(body.contains("\"reason\":\"malformed\""));
        assert!(h
            .counters
            .contains(&Counter::Reason(crate::verdict::Reason::Malformed)));
        assert!(h.counters.contains(&Counter::Rejected));
        assert!(h.log.contains(&("wba.reason".into(), "malformed".into())));
    }

    #[test]
    fn authority_falls_back_to_host() {
        let r = request_from_headers(
            &[
                (":method".into(), "GET".into()),
                (":path".into(), "/".into()),
                ("host".into(), "h.example".into()),
            ],
            "x-",
        );
        assert_eq!(r.authority, "h.example");
        assert_eq!(r.scheme, "http");
    }

    fn directory_config(extra: &str) -> Config {
        Config::from_json(
            format!(
                r#"{{"mode":"require",{extra}"agents":[{{"name":"A","url":"https://a.example","cluster":"dir"}}]}}"#
            )
            .as_bytes(),
        )
        .expect("config")
    }

    /// Records agent A's key (the one `host` signs with) as fetched at `NOW`.
    fn record_fetched(cache: &mut KeyCache, store: &mut MemoryStore, c: &Config) {
        let key = Jwk::from_ed25519(SigningKey::from_bytes(&[5; 32]).verifying_key().as_bytes())
            .to_key()
            .expect("key");
        let fetched = Ok(Fetched::unproven(vec![key], 600));
        cache.record(store, "https://a.example", &fetched, &c.directory, NOW);
    }

    #[test]
    fn a_request_waits_for_missing_keys_once() {
        let c = directory_config("");
        let mut cache = KeyCache::new(&c);
        let mut store = MemoryStore::default();
        cache.prepare(&mut store).expect("prepare");
        let forged = [("x-web-bot-auth-result", "verified")];
        let mut h = host(true, &forged);
        let action = on_request_headers(&mut h, &c, &mut cache, &mut store, true);
        assert_eq!(action, Action::Wait("https://a.example".into()));
        // Paused: nothing decided yet, but the forgery is already gone.
        assert!(h.header_values("x-web-bot-auth-result").is_empty());
        assert!(h.sent.is_none());
        assert!(h.counters.contains(&Counter::Waited));
        record_fetched(&mut cache, &mut store, &c);
        let action = on_request_headers(&mut h, &c, &mut cache, &mut store, false);
        assert_eq!(action, Action::Continue);
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
        assert!(h.log.contains(&(PROOF_LOG_KEY.into(), "absent".into())));
    }

    #[test]
    fn a_failed_fetch_leaves_the_request_unverified() {
        let c = directory_config("");
        let mut cache = KeyCache::new(&c);
        let mut store = MemoryStore::default();
        cache.prepare(&mut store).expect("prepare");
        let mut h = host(true, &[]);
        assert!(matches!(
            on_request_headers(&mut h, &c, &mut cache, &mut store, true),
            Action::Wait(_)
        ));
        let failure = Err(crate::fetch::FetchFailure {
            kind: crate::fetch::FailureKind::Status,
            detail: "status 500".into(),
            retry_after: None,
        });
        cache.record(&mut store, "https://a.example", &failure, &c.directory, NOW);
        assert_eq!(
            on_request_headers(&mut h, &c, &mut cache, &mut store, false),
            Action::Stop
        );
        assert_eq!(
            h.header_values("x-web-bot-auth-reason"),
            ["directory_unavailable"]
        );
        assert_eq!(h.sent.as_ref().map(|s| s.status), Some(403));
        // Negative-cached: the next request does not wait.
        let mut h = host(true, &[]);
        assert_eq!(
            on_request_headers(&mut h, &c, &mut cache, &mut store, true),
            Action::Stop
        );
    }

    #[test]
    fn a_replayed_signature_is_429() {
        let c = directory_config(r#""replay_protection":true,"#);
        let mut cache = KeyCache::new(&c);
        let mut store = MemoryStore::default();
        cache.prepare(&mut store).expect("prepare");
        record_fetched(&mut cache, &mut store, &c);
        let mut first = host(true, &[]);
        let mut again = RecordingHost::new(first.headers.clone(), NOW + 1);
        assert_eq!(
            on_request_headers(&mut first, &c, &mut cache, &mut store, true),
            Action::Continue
        );
        assert_eq!(
            on_request_headers(&mut again, &c, &mut cache, &mut store, true),
            Action::Stop
        );
        let Rejection { status, body, .. } = again.sent.clone().expect("sent");
        assert_eq!(status, 429);
        assert!(body.contains("\"reason\":\"replayed\""));
        // Without replay protection the same request passes twice.
        let c = directory_config(r#""replay_protection":false,"#);
        let mut twice = RecordingHost::new(first.headers.clone(), NOW + 1);
        assert_eq!(
            on_request_headers(&mut twice, &c, &mut cache, &mut store, true),
            Action::Continue
        );
    }

    #[test]
    fn keys_another_worker_fetched_are_used_without_waiting() {
        let c = directory_config("");
        let mut other_worker = KeyCache::new(&c);
        let mut this_worker = KeyCache::new(&c);
        let mut store = MemoryStore::default();
        this_worker.prepare(&mut store).expect("prepare");
        record_fetched(&mut other_worker, &mut store, &c);
        let mut h = host(true, &[]);
        let action = on_request_headers(&mut h, &c, &mut this_worker, &mut store, true);
        assert_eq!(action, Action::Continue);
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
        assert!(!h.counters.contains(&Counter::Waited));
    }
}
