//! The per-request state machine: strip, verify, annotate, enforce. Pure over [`Host`] and
//! [`SharedStore`]; a request whose agent's keys must be fetched first is paused
//! ([`Action::Wait`]) and handled again, without waiting twice, once the fetch is done; a
//! request whose verified signature covers `Content-Digest` is held until its whole body is
//! there ([`Action::NeedBody`]), and only then decided and forwarded.

use crate::config::Config;
use crate::content_digest::{self, BodyHasher};
use crate::host::Host;
use crate::keys::Keys;
use crate::plan::{is_owned_header, plan, problem};
use crate::replay::{ReplayCheck, ReplayGuard, ReplayId};
use crate::replay_store::{OnError, StoreAnswer, StoreQuery};
use crate::request::HttpRequest;
use crate::stats::Counter;
use crate::verdict::{Failure, Reason, ReplayKey, Verdict, Verified};
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
    /// The verified signature covers `Content-Digest`: hold the request, buffering its body
    /// (forward no byte of it), and call [`on_request_body`] once the body is complete (or
    /// grows past `max_body_bytes`).
    NeedBody(Box<PendingBody>),
    /// The signature is fresh in this Envoy's table; hold the request, dispatch
    /// [`StoreQuery::request`] to the fleet's replay store and call [`on_store_answer`] with
    /// what it answers.
    AskStore(Box<StoreQuery>),
}

/// A request whose signature verified but whose body is still to be checked against the
/// `Content-Digest` the signature covers: nothing is decided, recorded or annotated yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBody {
    verified: Verified,
    /// The `Content-Digest` field value (every line, combined), as the signature covered it.
    content_digest: String,
    /// The directory proof status of the key that verified, for the access log.
    proof: Option<String>,
}

/// The body a [`PendingBody`] waits for, as the host has it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// The whole body (empty when the request has none).
    Complete(&'a [u8]),
    /// The whole body, hashed as it streamed past ([`PendingBody::hasher`]).
    Hashed(&'a BodyHasher),
    /// The body is larger than `max_body_bytes` (this many bytes so far, or announced).
    TooLarge(u64),
}

impl<'a> Body<'a> {
    /// A body hashed as it streamed past ([`PendingBody::hasher`]), as far as it came: too
    /// large once past `max_body_bytes`.
    pub fn hashed(hasher: &'a BodyHasher, config: &Config) -> Body<'a> {
        if hasher.len() > config.max_body_bytes as u64 {
            Body::TooLarge(hasher.len())
        } else {
            Body::Hashed(hasher)
        }
    }
}

impl PendingBody {
    /// A hasher for the digests this request's `Content-Digest` names, for hosts that see the
    /// body in pieces.
    pub fn hasher(&self) -> BodyHasher {
        BodyHasher::for_field(&self.content_digest)
    }
}

/// Filter-state keys visible to access logs.
pub const LOG_KEYS: [&str; 4] = ["wba.result", "wba.reason", "wba.agent", "wba.key_id"];
/// Filter-state key: for a verified request with fetched keys, whether the agent's directory
/// proved possession of the key that verified (`valid`), did not sign its response (`absent`)
/// or signed it with a proof that does not hold (`invalid`).
pub const PROOF_LOG_KEY: &str = "wba.directory_proof";

/// Handles a request's headers: strips the inbound identity headers, verifies (asking to
/// wait for a key fetch when `may_wait` and the agent's keys are missing), holds a request
/// whose signature covers its body, checks replays, sets the result headers, counts,
/// records, and rejects by policy.
pub fn on_request_headers(
    host: &mut dyn Host,
    config: &Config,
    keys: &mut dyn Keys,
    replay: &mut dyn ReplayGuard,
    may_wait: bool,
) -> Action {
    let Ok(headers) = host.request_headers() else {
        // Nothing can be stripped or checked: never let such a request through.
        return reject_unreadable(host);
    };
    // Strip first, whatever the outcome: inbound copies of our headers are forgeries.
    for name in owned_names(config, headers.iter().map(|(n, _)| n.as_str())) {
        host.remove_request_header(name);
    }
    // An unsigned request (most traffic) is decided without building the request view,
    // reading the clock or looking at keys: without either signature field, verification
    // answers `unsigned` whatever else the request holds.
    let signed = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("signature-input") || n.eq_ignore_ascii_case("signature")
    });
    if !signed {
        return decide(host, config, replay, Verdict::Unsigned, None, 0);
    }
    let req = request_from_owned(headers, &config.header_prefix);
    let now = host.now();
    let mut verdict = verify_request(&req, &config.policy, keys.cache(), now);
    if let Verdict::Failed(f) = &verdict {
        if let Some(url) = keys.cache().wants_fetch(f, &config.directory, now) {
            // Another worker may have fetched already (this view is refreshed on ticks), so
            // look at the shared state before waiting for a fetch.
            if keys.refresh(&url) {
                verdict = verify_request(&req, &config.policy, keys.cache(), now);
            }
        }
    }
    if may_wait {
        if let Verdict::Failed(f) = &verdict {
            if let Some(url) = keys.cache().wants_fetch(f, &config.directory, now) {
                host.increment(Counter::Waited);
                return Action::Wait(url);
            }
        }
    }
    let proof = match &verdict {
        Verdict::Verified(v) => keys
            .cache()
            .proof_of(&v.agent_url, &v.key_id)
            .map(str::to_string),
        _ => None,
    };
    let verdict = match verdict {
        Verdict::Verified(v) if v.covers_content_digest => {
            // A signature already used is refused now (429), before any of its body is read;
            // it is recorded only once its body matched (see `seen_before`).
            if let Some(replayed) = seen_before(config, replay, &v, now) {
                return conclude(host, config, &replayed, proof.as_deref());
            }
            let pending = PendingBody {
                verified: *v,
                content_digest: req.header("content-digest").unwrap_or_default(),
                proof,
            };
            // A body announced larger than the bound is refused before any of it is buffered.
            let announced = req
                .header("content-length")
                .and_then(|l| l.trim().parse::<u64>().ok())
                .filter(|l| *l > config.max_body_bytes as u64);
            return match announced {
                Some(length) => {
                    on_request_body(host, config, replay, &pending, Body::TooLarge(length))
                }
                None => Action::NeedBody(Box::new(pending)),
            };
        }
        verdict => verdict,
    };
    decide(host, config, replay, verdict, proof.as_deref(), now)
}

/// Decides a request held for its body ([`Action::NeedBody`]): the body must match the
/// `Content-Digest` the signature covers (RFC 9530), within `max_body_bytes`; then replay
/// check, annotation and policy as for any request.
pub fn on_request_body(
    host: &mut dyn Host,
    config: &Config,
    replay: &mut dyn ReplayGuard,
    pending: &PendingBody,
    body: Body<'_>,
) -> Action {
    let v = &pending.verified;
    let failed = |reason, detail: String| failed_after_verifying(v, reason, detail);
    let judged = |checked: Result<(), content_digest::DigestError>| match checked {
        Ok(()) => Verdict::Verified(Box::new(v.clone())),
        Err(e) => failed(Reason::DigestMismatch, e.to_string()),
    };
    let verdict = match body {
        Body::TooLarge(size) => failed(
            Reason::BodyTooLarge,
            format!(
                "the signature covers Content-Digest and the body ({size} bytes or more) is larger than the {} bytes this verifier checks",
                config.max_body_bytes
            ),
        ),
        Body::Complete(bytes) => judged(content_digest::check(&pending.content_digest, bytes)),
        Body::Hashed(hasher) => judged(hasher.check(&pending.content_digest)),
    };
    let now = host.now();
    decide(host, config, replay, verdict, pending.proof.as_deref(), now)
}

/// The provisional replay check of a signature that covers its body, when its headers are
/// decided: `replayed` when this Envoy's table already has one of the request's signatures, so
/// a copy of an accepted request is refused before its body is buffered. Nothing is recorded
/// yet: a record made before the body is checked would let whoever sends a captured request
/// first, with a body that never completes or does not match, block the agent's own request.
fn seen_before(
    config: &Config,
    replay: &mut dyn ReplayGuard,
    v: &Verified,
    now: i64,
) -> Option<Verdict> {
    if !config.replay_protection {
        return None;
    }
    let ids = ReplayId::all(v, config.policy.clock_skew_seconds);
    ids.iter()
        .any(|(id, _)| replay.seen(*id, now))
        .then(|| failed_after_verifying(v, Reason::Replayed, "this signature was already used"))
}

/// The last steps for a decided verdict: replay check (this Envoy's table, then the fleet's
/// store when one is configured), proof log, annotation, policy.
fn decide(
    host: &mut dyn Host,
    config: &Config,
    replay: &mut dyn ReplayGuard,
    verdict: Verdict,
    proof: Option<&str>,
    now: i64,
) -> Action {
    match check_replay(host, config, replay, verdict, now) {
        // Recorded here; the fleet's store is asked about the same identities.
        (Verdict::Verified(v), ids) if config.replay_store.is_some() && !ids.is_empty() => {
            Action::AskStore(Box::new(StoreQuery::new(
                *v,
                proof.map(str::to_string),
                ids,
            )))
        }
        (verdict, _) => conclude(host, config, &verdict, proof),
    }
}

/// Decides a request held for the fleet's replay store ([`Action::AskStore`]) with its answer.
pub fn on_store_answer(
    host: &mut dyn Host,
    config: &Config,
    replay: &mut dyn ReplayGuard,
    query: &StoreQuery,
    answer: &StoreAnswer,
) -> Action {
    let v = &query.verified;
    let failed = |reason, detail: String| failed_after_verifying(v, reason, detail);
    let verdict = match answer {
        StoreAnswer::Fresh => {
            host.increment(Counter::StoreFresh);
            Verdict::Verified(Box::new(v.clone()))
        }
        StoreAnswer::Replayed => {
            host.increment(Counter::StoreReplayed);
            failed(
                Reason::Replayed,
                "this signature was already used (the fleet's replay store has it)".into(),
            )
        }
        StoreAnswer::Failed(why) => {
            host.increment(Counter::StoreError);
            let on_error = config.replay_store.as_ref().map(|s| s.on_error);
            if on_error == Some(OnError::Accept) {
                host.increment(Counter::StoreAcceptedOnError);
                Verdict::Verified(Box::new(v.clone()))
            } else {
                // Refused, never accepted: this Envoy's records of it go, so that the retry
                // the 503 invites is asked about again rather than taken for a replay.
                let now = host.now();
                for id in query.ids() {
                    replay.release(*id, now);
                }
                failed(Reason::ReplayStoreUnavailable, why.clone())
            }
        }
    };
    conclude(host, config, &verdict, query.proof.as_deref())
}

/// Annotates and enforces a final verdict, with the proof status of the key that verified.
fn conclude(
    host: &mut dyn Host,
    config: &Config,
    verdict: &Verdict,
    proof: Option<&str>,
) -> Action {
    if let (Verdict::Verified(_), Some(proof)) = (verdict, proof) {
        host.set_log_value(PROOF_LOG_KEY, proof);
    }
    apply(host, config, verdict)
}

/// Records the identity of a verified request's every Web Bot Auth signature (see
/// [`ReplayId::all`]); a request any of whose signatures was used within its life is
/// `replayed`, and then records nothing. Returns the verdict and the identities recorded
/// (none without replay protection), each with the time it is kept until.
fn check_replay(
    host: &mut dyn Host,
    config: &Config,
    replay: &mut dyn ReplayGuard,
    verdict: Verdict,
    now: i64,
) -> (Verdict, Vec<(ReplayId, i64)>) {
    let Verdict::Verified(v) = &verdict else {
        return (verdict, Vec::new());
    };
    if !config.replay_protection {
        return (verdict, Vec::new());
    }
    let ids = ReplayId::all(v, config.policy.clock_skew_seconds);
    let mut recorded = 0;
    for (id, until) in &ids {
        let detail = match replay.check_and_record(*id, *until, now) {
            ReplayCheck::Fresh => {
                recorded += 1;
                continue;
            }
            ReplayCheck::Replayed if recorded > 0 => {
                "another signature of this request was already used"
            }
            ReplayCheck::Replayed => match &v.replay_key {
                ReplayKey::Nonce(_) => "this nonce was already used",
                ReplayKey::Signed(_) => "this signature was already used",
            },
            ReplayCheck::Full => {
                host.increment(Counter::ReplayFull);
                "the replay table has no room to record this signature now; retry with a new signature"
            }
            ReplayCheck::Unavailable => "the replay check could not record this signature",
        };
        for (id, _) in &ids[..recorded] {
            replay.release(*id, now);
        }
        return (
            failed_after_verifying(v, Reason::Replayed, detail),
            Vec::new(),
        );
    }
    (verdict, ids)
}

/// A signature that verified but failed a later check (body digest, replay): the failure names
/// its label and agent.
fn failed_after_verifying(v: &Verified, reason: Reason, detail: impl Into<String>) -> Verdict {
    Verdict::Failed(Failure {
        label: Some(v.label.clone()),
        agent: Some(v.agent_url.clone()),
        ..Failure::new(reason, detail)
    })
}

/// Answers a request whose headers the host could not hand over: 500, whatever the mode.
fn reject_unreadable(host: &mut dyn Host) -> Action {
    fail_closed(
        host,
        "the Web Bot Auth filter could not read the request headers",
    )
}

/// Answers a request the filter cannot decide on because of its host or its deployment (not
/// because of anything the client sent): 500 with a problem body, whatever the mode, counted
/// as `host_error`. Never a pass: nothing about such a request was checked.
pub fn fail_closed(host: &mut dyn Host, detail: &str) -> Action {
    host.increment(Counter::HostError);
    host.increment(Counter::Rejected);
    let r = problem(500, "Request could not be checked", detail, None);
    host.send_response(r.status, &r.headers, &r.body);
    Action::Stop
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
    // Counted here, once per request, even when verification ran twice around a key fetch.
    if matches!(verdict, Verdict::Failed(f) if f.not_tried > 0) {
        host.increment(Counter::SignaturesOverLimit);
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

/// The names among `names` the filter owns ([`is_owned_header`]), each spelling once (in
/// order of first appearance): the header lines, or trailers, to remove.
pub fn owned_names<'a>(config: &Config, names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut owned = Vec::new();
    // The set only once one is found: most requests carry none.
    let mut seen: Option<std::collections::HashSet<String>> = None;
    for name in names {
        if is_owned_header(&config.header_prefix, name)
            && seen
                .get_or_insert_with(Default::default)
                .insert(name.to_ascii_lowercase())
        {
            owned.push(name);
        }
    }
    owned
}

/// The request trailers to remove before the request goes on: every one named with the header
/// prefix, as for headers (some upstreams merge trailers into headers, where a forged
/// `x-web-bot-auth-result` trailer would read as ours).
pub fn trailers_to_strip<'a>(
    config: &Config,
    trailer_names: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    owned_names(config, trailer_names)
}

/// Refuses, before any of it leaves, a request whose verified signature covers its body when
/// this filter chain cannot hold the body while it is checked (wasm: no hold companion of
/// this chain claimed the request): 500 whatever the mode, `unverified` / `body_not_held`,
/// counted as a `host_error` too. Never a pass: the body would reach the upstream unchecked.
pub fn refuse_unheld(host: &mut dyn Host, config: &Config, detail: &str) -> Action {
    host.increment(Counter::HostError);
    apply(
        host,
        config,
        &Verdict::Failed(Failure::new(Reason::BodyNotHeld, detail)),
    )
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
    use crate::key_cache::KeyCache;
    use crate::keys::StoreSynced;
    use crate::plan::Rejection;
    use crate::replay::{NoReplay, ReplayTable};
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
        let mut store = MemoryStore::default();
        let replay = table(&mut store, c);
        on_request_headers(
            h,
            c,
            &mut KeyCache::new(c),
            &mut replay.guard(&mut store),
            true,
        )
    }

    fn table(store: &mut MemoryStore, c: &Config) -> ReplayTable {
        ReplayTable::open(store, c.replay_capacity, [9; 32]).expect("replay table")
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
    fn forged_identity_headers_are_stripped_whatever_the_case_count_or_underscores() {
        let c = config("enforce");
        let forged = [
            ("x-web-bot-auth-result", "verified"),
            ("X-Web-Bot-Auth-Agent", "https://evil.example"),
            ("x-web-bot-auth-agent", "https://evil2.example"),
            ("X-WEB-BOT-AUTH-KEY-ID", "k"),
            ("x-web-bot-auth-anything", "1"),
            // CGI-style upstreams fold these into the same HTTP_X_WEB_BOT_AUTH_* variables.
            ("x_web_bot_auth_agent", "https://evil3.example"),
            ("X_Web_Bot_Auth_Result", "verified"),
            ("x-web_bot-auth-key-id", "k"),
            // lighttpd's CGI, FastCGI and SCGI fold every non-alphanumeric byte the same way.
            ("x.web.bot.auth.agent", "https://evil4.example"),
            ("x+web+bot+auth+result", "verified"),
            ("x~web!bot#auth$key-id", "k"),
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
                ours.iter().all(|(n, _)| n.starts_with("x-web-bot-auth-")),
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
    fn owned_names_each_spelling_once_trailers_too() {
        let c = config("enforce");
        let names = [
            "x-web-bot-auth-result",
            "content-type",
            "X-Web-Bot-Auth-Result",
            "x_web_bot_auth_agent",
            "x-web-bot-auth-result",
            "x-web-bot-authx",
            "x-web-bot",
        ];
        assert_eq!(
            owned_names(&c, names),
            ["x-web-bot-auth-result", "x_web_bot_auth_agent"]
        );
        assert_eq!(
            trailers_to_strip(&c, ["x-benign", "X_WEB_BOT_AUTH_RESULT"]),
            ["X_WEB_BOT_AUTH_RESULT"]
        );
        assert!(trailers_to_strip(&c, ["grpc-status", "x-benign"]).is_empty());
    }

    #[test]
    fn a_body_no_hold_can_keep_is_refused_in_every_mode() {
        for mode in ["observe", "enforce", "require"] {
            let c = config(mode);
            let mut h = host(true, &[]);
            let action = refuse_unheld(&mut h, &c, "no hold companion in this chain");
            assert_eq!(action, Action::Stop, "{mode}");
            let sent = h.sent.clone().expect("sent");
            assert_eq!(sent.status, 500, "{mode}");
            assert!(sent.body.contains("\"reason\":\"body_not_held\""));
            assert!(h.counters.contains(&Counter::HostError));
            assert!(h.counters.contains(&Counter::Reason(Reason::BodyNotHeld)));
            assert!(h
                .log
                .contains(&("wba.reason".into(), "body_not_held".into())));
        }
    }

    #[test]
    fn unreadable_headers_are_rejected_in_every_mode() {
        for mode in ["observe", "enforce", "require"] {
            let c = config(mode);
            let mut h = host(true, &[("x-web-bot-auth-result", "verified")]);
            h.headers_unreadable = true;
            assert_eq!(run(&mut h, &c), Action::Stop, "{mode}");
            let sent = h.sent.clone().expect("sent");
            assert_eq!(sent.status, 500);
            assert!(h.counters.contains(&Counter::HostError));
            assert!(!h.counters.iter().any(|c| matches!(c, Counter::Outcome(_))));
        }
    }

    /// A host whose request is signed over `body` with a covered Content-Digest of `digested`.
    fn body_host(body: &[u8], digested: &[u8], extra: &[(&str, &str)]) -> RecordingHost {
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), "POST".into()),
            (":scheme".into(), "http".into()),
            (":authority".into(), "shop.example".into()),
            (":path".into(), "/orders".into()),
            ("content-digest".into(), content_digest::sha256(digested)),
            ("content-length".into(), body.len().to_string()),
        ];
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        let req = request_from_headers(&headers, "x-web-bot-auth-");
        let mut opts = SignOptions::web_bot_auth("https://a.example", NOW, 60);
        opts.components.push("content-digest".into());
        let signed = sign_request(&req, &SigningKey::from_bytes(&[5; 32]), &opts).expect("sign");
        headers.extend(signed.pairs());
        RecordingHost::new(headers, NOW)
    }

    fn held(h: &mut RecordingHost, c: &Config, store: &mut MemoryStore) -> Box<PendingBody> {
        let replay = table(store, c);
        match on_request_headers(h, c, &mut KeyCache::new(c), &mut replay.guard(store), true) {
            Action::NeedBody(p) => p,
            other => panic!("not held for the body: {other:?}"),
        }
    }

    #[test]
    fn a_covered_digest_holds_the_request_until_the_body_matches() {
        let c = config("enforce");
        let mut store = MemoryStore::default();
        let mut h = body_host(b"{\"qty\":1}", b"{\"qty\":1}", &[]);
        let pending = held(&mut h, &c, &mut store);
        // Held: nothing decided, counted or annotated yet.
        assert!(h.header_values("x-web-bot-auth-result").is_empty());
        assert!(h.counters.is_empty() && h.sent.is_none());
        let replay = table(&mut store, &c);
        let body = Body::Complete(b"{\"qty\":1}");
        let action = on_request_body(&mut h, &c, &mut replay.guard(&mut store), &pending, body);
        assert_eq!(action, Action::Continue);
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
        // The same request again is a replay, refused on its headers: no body is held.
        let mut again = body_host(b"{\"qty\":1}", b"{\"qty\":1}", &[]);
        let action = on_request_headers(
            &mut again,
            &c,
            &mut KeyCache::new(&c),
            &mut replay.guard(&mut store),
            true,
        );
        assert_eq!(action, Action::Stop);
        assert_eq!(again.sent.map(|s| s.status), Some(429));
    }

    #[test]
    fn a_body_signature_is_looked_up_on_its_headers_and_recorded_after_its_body() {
        let c = config("enforce");
        let mut store = MemoryStore::default();
        let body = b"{\"qty\":1}";
        // Two copies at once are both held: neither is recorded before its body matched, so a
        // copy that never completes its body cannot block the agent's own request.
        let mut first = body_host(body, body, &[]);
        let pending = held(&mut first, &c, &mut store);
        let mut second = body_host(body, body, &[]);
        let pending2 = held(&mut second, &c, &mut store);
        let replay = table(&mut store, &c);
        let action = on_request_body(
            &mut first,
            &c,
            &mut replay.guard(&mut store),
            &pending,
            Body::Complete(body),
        );
        assert_eq!(action, Action::Continue);
        // The other one, complete later, is the replay.
        let action = on_request_body(
            &mut second,
            &c,
            &mut replay.guard(&mut store),
            &pending2,
            Body::Complete(body),
        );
        assert_eq!(action, Action::Stop);
        assert_eq!(second.sent.as_ref().map(|s| s.status), Some(429));
        // Once recorded, a copy is refused on its headers, before any of its body is held.
        let mut copy = body_host(body, body, &[]);
        let action = on_request_headers(
            &mut copy,
            &c,
            &mut KeyCache::new(&c),
            &mut replay.guard(&mut store),
            true,
        );
        assert_eq!(action, Action::Stop);
        assert_eq!(copy.sent.as_ref().map(|s| s.status), Some(429));
        assert_eq!(copy.header_values("x-web-bot-auth-reason"), ["replayed"]);
    }

    #[test]
    fn a_body_refused_for_its_digest_leaves_no_record() {
        let c = config("enforce");
        let mut store = MemoryStore::default();
        let replay = table(&mut store, &c);
        // Signed over one body, sent with another: refused, and the reservation released.
        let mut tampered = body_host(b"{\"qty\":9}", b"{\"qty\":1}", &[]);
        let pending = held(&mut tampered, &c, &mut store);
        let action = on_request_body(
            &mut tampered,
            &c,
            &mut replay.guard(&mut store),
            &pending,
            Body::Complete(b"{\"qty\":9}"),
        );
        assert_eq!(action, Action::Stop);
        assert_eq!(tampered.sent.as_ref().map(|s| s.status), Some(403));
        // The same signed headers with the body they vouch for are still accepted once.
        let mut genuine = body_host(b"{\"qty\":1}", b"{\"qty\":1}", &[]);
        let pending = held(&mut genuine, &c, &mut store);
        let action = on_request_body(
            &mut genuine,
            &c,
            &mut replay.guard(&mut store),
            &pending,
            Body::Complete(b"{\"qty\":1}"),
        );
        assert_eq!(action, Action::Continue);
        assert_eq!(genuine.header_values("x-web-bot-auth-result"), ["verified"]);
    }

    #[test]
    fn a_body_that_does_not_match_its_digest_is_invalid() {
        let c = config("enforce");
        let mut store = MemoryStore::default();
        let mut h = body_host(b"{\"qty\":9}", b"{\"qty\":1}", &[]);
        let pending = held(&mut h, &c, &mut store);
        let replay = table(&mut store, &c);
        let action = on_request_body(
            &mut h,
            &c,
            &mut replay.guard(&mut store),
            &pending,
            Body::Complete(b"{\"qty\":9}"),
        );
        assert_eq!(action, Action::Stop);
        let sent = h.sent.clone().expect("sent");
        assert_eq!(sent.status, 403);
        assert!(sent.body.contains("\"reason\":\"digest_mismatch\""));
        assert_eq!(
            h.header_values("x-web-bot-auth-reason"),
            ["digest_mismatch"]
        );
        assert!(h
            .counters
            .contains(&Counter::Reason(Reason::DigestMismatch)));
        // In observe mode the mismatch is annotated, never passed as verified.
        let c = config("observe");
        let mut h = body_host(b"x", b"y", &[]);
        let pending = held(&mut h, &c, &mut store);
        let action = on_request_body(
            &mut h,
            &c,
            &mut replay.guard(&mut store),
            &pending,
            Body::Complete(b"x"),
        );
        assert_eq!(action, Action::Continue);
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["invalid"]);
    }

    #[test]
    fn a_body_over_the_bound_is_refused_with_413() {
        let c = Config::from_json(
            format!(
                r#"{{"max_body_bytes":8,"agents":[{{"name":"A","url":"https://a.example","keys":[{}]}}]}}"#,
                Jwk::from_ed25519(SigningKey::from_bytes(&[5; 32]).verifying_key().as_bytes()).to_json()
            )
            .as_bytes(),
        )
        .expect("config");
        let mut store = MemoryStore::default();
        let replay = table(&mut store, &c);
        // Announced by Content-Length: refused at once, nothing buffered.
        let mut h = body_host(b"0123456789", b"0123456789", &[]);
        let action = on_request_headers(
            &mut h,
            &c,
            &mut KeyCache::new(&c),
            &mut replay.guard(&mut store),
            true,
        );
        assert_eq!(action, Action::Stop);
        assert_eq!(h.sent.as_ref().map(|s| s.status), Some(413));
        assert_eq!(h.header_values("x-web-bot-auth-reason"), ["body_too_large"]);
        // Streamed without a length: refused when the host sees it grow past the bound.
        let mut h = body_host(b"0123456789", b"0123456789", &[]);
        h.headers.retain(|(n, _)| n != "content-length");
        let pending = held(&mut h, &c, &mut store);
        let action = on_request_body(
            &mut h,
            &c,
            &mut replay.guard(&mut store),
            &pending,
            Body::TooLarge(10),
        );
        assert_eq!(action, Action::Stop);
        assert_eq!(h.sent.map(|s| s.status), Some(413));
        // Hashed as it streams: the bound is what decides between the two.
        let mut hasher = pending.hasher();
        hasher.update(b"01234567");
        assert!(matches!(Body::hashed(&hasher, &c), Body::Hashed(_)));
        hasher.update(b"8");
        assert!(matches!(Body::hashed(&hasher, &c), Body::TooLarge(9)));
    }

    #[test]
    fn a_signature_without_digest_coverage_is_decided_at_once() {
        let c = config("enforce");
        let mut h = host(true, &[("content-digest", "sha-256=:AAAA:")]);
        assert_eq!(run(&mut h, &c), Action::Continue);
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
    }

    #[test]
    fn a_full_replay_bucket_refuses_and_counts() {
        let c = directory_config(r#""replay_capacity":16,"#);
        let mut cache = KeyCache::new(&c);
        let mut store = MemoryStore::default();
        cache.prepare(&mut store).expect("prepare");
        let replay = table(&mut store, &c);
        record_fetched(&mut cache, &mut store, &c);
        let mut statuses = Vec::new();
        for i in 0..20 {
            let mut h = host(true, &[("x-n", &i.to_string())]);
            // A distinct signature each time: sign again over a distinct nonce.
            let req = request_from_headers(&h.headers, "x-web-bot-auth-");
            let mut opts = SignOptions::web_bot_auth("https://a.example", NOW, 60);
            opts.nonce = Some(format!("n{i}"));
            let signed =
                sign_request(&req, &SigningKey::from_bytes(&[5; 32]), &opts).expect("sign");
            h.headers.retain(|(n, _)| !n.starts_with("signature"));
            h.headers.extend(signed.pairs());
            on_request_headers(&mut h, &c, &mut cache, &mut replay.guard(&mut store), true);
            statuses.push(h.sent.as_ref().map(|s| s.status));
            if i >= 16 {
                assert!(h.counters.contains(&Counter::ReplayFull), "{i}");
            }
        }
        assert_eq!(statuses.iter().filter(|s| s.is_none()).count(), 16);
        assert!(statuses[16..].iter().all(|s| *s == Some(429)));
    }

    fn asked(h: &mut RecordingHost, c: &Config, store: &mut MemoryStore) -> Box<StoreQuery> {
        let replay = table(store, c);
        match on_request_headers(h, c, &mut KeyCache::new(c), &mut replay.guard(store), true) {
            Action::AskStore(q) => q,
            other => panic!("the store was not asked: {other:?}"),
        }
    }

    fn store_config(mode: &str, on_error: &str) -> Config {
        let jwk = Jwk::from_ed25519(SigningKey::from_bytes(&[5; 32]).verifying_key().as_bytes())
            .to_json();
        Config::from_json(
            format!(
                r#"{{"mode":"{mode}","replay_store":{{"cluster":"wba_replay","on_error":"{on_error}"}},
                "agents":[{{"name":"A","url":"https://a.example","keys":[{jwk}]}}]}}"#
            )
            .as_bytes(),
        )
        .expect("config")
    }

    #[test]
    fn the_fleet_store_decides_after_the_local_table() {
        let c = store_config("enforce", "reject");
        let mut store = MemoryStore::default();
        let mut h = host(true, &[]);
        let q = asked(&mut h, &c, &mut store);
        // Held: nothing annotated or counted yet.
        assert!(h.header_values("x-web-bot-auth-result").is_empty() && h.counters.is_empty());
        assert_eq!(
            on_store_answer(
                &mut h,
                &c,
                &mut table(&mut store, &c).guard(&mut store),
                &q,
                &StoreAnswer::Fresh
            ),
            Action::Continue
        );
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
        assert!(h.counters.contains(&Counter::StoreFresh));
        // The same signature again at this Envoy: the local table answers, no round trip.
        let mut again = host(true, &[]);
        again.headers = h.headers.clone();
        let replay = table(&mut store, &c);
        let action = on_request_headers(
            &mut again,
            &c,
            &mut KeyCache::new(&c),
            &mut replay.guard(&mut store),
            true,
        );
        assert_eq!(action, Action::Stop);
        assert_eq!(again.sent.map(|s| s.status), Some(429));
    }

    #[test]
    fn a_signature_the_store_has_seen_is_a_replay() {
        let c = store_config("enforce", "reject");
        let mut h = host(true, &[]);
        let q = asked(&mut h, &c, &mut MemoryStore::default());
        assert_eq!(
            on_store_answer(&mut h, &c, &mut NoReplay, &q, &StoreAnswer::Replayed),
            Action::Stop
        );
        let sent = h.sent.clone().expect("sent");
        assert_eq!(sent.status, 429);
        assert!(sent.body.contains("\"reason\":\"replayed\""));
        assert!(h.counters.contains(&Counter::StoreReplayed));
    }

    #[test]
    fn a_store_failure_follows_on_error() {
        let failure = StoreAnswer::Failed("the replay store answered 503".into());
        for mode in ["enforce", "require"] {
            let c = store_config(mode, "reject");
            let mut h = host(true, &[]);
            let q = asked(&mut h, &c, &mut MemoryStore::default());
            assert_eq!(
                on_store_answer(&mut h, &c, &mut NoReplay, &q, &failure),
                Action::Stop
            );
            assert_eq!(h.sent.as_ref().map(|s| s.status), Some(503), "{mode}");
            assert_eq!(h.header_values("x-web-bot-auth-result"), ["unverified"]);
            assert_eq!(
                h.header_values("x-web-bot-auth-reason"),
                ["replay_store_unavailable"]
            );
            assert!(h.counters.contains(&Counter::StoreError));
        }
        // Observe never rejects: annotated, never verified.
        let c = store_config("observe", "reject");
        let mut h = host(true, &[]);
        let q = asked(&mut h, &c, &mut MemoryStore::default());
        assert_eq!(
            on_store_answer(&mut h, &c, &mut NoReplay, &q, &failure),
            Action::Continue
        );
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["unverified"]);
        // on_error accept: verified, and counted as such.
        let c = store_config("require", "accept");
        let mut h = host(true, &[]);
        let q = asked(&mut h, &c, &mut MemoryStore::default());
        assert_eq!(
            on_store_answer(&mut h, &c, &mut NoReplay, &q, &failure),
            Action::Continue
        );
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
        assert!(h.counters.contains(&Counter::StoreAcceptedOnError));
    }

    #[test]
    fn a_request_refused_for_a_store_failure_is_not_kept_in_the_local_table() {
        let failure = StoreAnswer::Failed("the replay store did not answer".into());
        let c = store_config("enforce", "reject");
        let mut store = MemoryStore::default();
        let mut h = host(true, &[]);
        let q = asked(&mut h, &c, &mut store);
        let replay = table(&mut store, &c);
        let action = on_store_answer(&mut h, &c, &mut replay.guard(&mut store), &q, &failure);
        assert_eq!(action, Action::Stop);
        assert_eq!(h.sent.as_ref().map(|s| s.status), Some(503));
        // The retry the 503 invites is asked about again, not taken for a replay.
        let mut retry = host(true, &[]);
        retry.headers = h.headers.clone();
        assert!(matches!(
            on_request_headers(
                &mut retry,
                &c,
                &mut KeyCache::new(&c),
                &mut replay.guard(&mut store),
                true
            ),
            Action::AskStore(_)
        ));
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
        let replay = table(&mut store, &c);
        let forged = [("x-web-bot-auth-result", "verified")];
        let mut h = host(true, &forged);
        let action =
            on_request_headers(&mut h, &c, &mut cache, &mut replay.guard(&mut store), true);
        assert_eq!(action, Action::Wait("https://a.example".into()));
        // Paused: nothing decided yet, but the forgery is already gone.
        assert!(h.header_values("x-web-bot-auth-result").is_empty());
        assert!(h.sent.is_none());
        assert!(h.counters.contains(&Counter::Waited));
        record_fetched(&mut cache, &mut store, &c);
        let action =
            on_request_headers(&mut h, &c, &mut cache, &mut replay.guard(&mut store), false);
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
        let replay = table(&mut store, &c);
        let mut h = host(true, &[]);
        assert!(matches!(
            on_request_headers(&mut h, &c, &mut cache, &mut replay.guard(&mut store), true),
            Action::Wait(_)
        ));
        let failure = Err(crate::fetch::FetchFailure {
            kind: crate::fetch::FailureKind::Status,
            detail: "status 500".into(),
            retry_after: None,
        });
        cache.record(&mut store, "https://a.example", &failure, &c.directory, NOW);
        assert_eq!(
            on_request_headers(&mut h, &c, &mut cache, &mut replay.guard(&mut store), false),
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
            on_request_headers(&mut h, &c, &mut cache, &mut replay.guard(&mut store), true),
            Action::Stop
        );
    }

    #[test]
    fn a_replayed_signature_is_429() {
        let c = directory_config(r#""replay_protection":true,"#);
        let mut cache = KeyCache::new(&c);
        let mut store = MemoryStore::default();
        cache.prepare(&mut store).expect("prepare");
        let replay = table(&mut store, &c);
        record_fetched(&mut cache, &mut store, &c);
        let mut first = host(true, &[]);
        let mut again = RecordingHost::new(first.headers.clone(), NOW + 1);
        assert_eq!(
            on_request_headers(
                &mut first,
                &c,
                &mut cache,
                &mut replay.guard(&mut store),
                true
            ),
            Action::Continue
        );
        assert_eq!(
            on_request_headers(
                &mut again,
                &c,
                &mut cache,
                &mut replay.guard(&mut store),
                true
            ),
            Action::Stop
        );
        let Rejection { status, body, .. } = again.sent.clone().expect("sent");
        assert_eq!(status, 429);
        assert!(body.contains("\"reason\":\"replayed\""));
        // Without replay protection the same request passes twice.
        let c = directory_config(r#""replay_protection":false,"#);
        let mut twice = RecordingHost::new(first.headers.clone(), NOW + 1);
        assert_eq!(
            on_request_headers(
                &mut twice,
                &c,
                &mut cache,
                &mut replay.guard(&mut store),
                true
            ),
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
        let mut replay_store = MemoryStore::default();
        let replay = table(&mut replay_store, &c);
        record_fetched(&mut other_worker, &mut store, &c);
        let mut h = host(true, &[]);
        let mut keys = StoreSynced {
            cache: &mut this_worker,
            store: &store,
        };
        let mut guard = replay.guard(&mut replay_store);
        let action = on_request_headers(&mut h, &c, &mut keys, &mut guard, true);
        assert_eq!(action, Action::Continue);
        assert_eq!(h.header_values("x-web-bot-auth-result"), ["verified"]);
        assert!(!h.counters.contains(&Counter::Waited));
    }
}
