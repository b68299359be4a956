//! Key material fetches: the request the filter sends through Envoy, and what a response
//! means (accepted key set with its freshness, or a failure kind with its backoff).

use std::fmt;

use crate::config::{AgentConfig, DirectorySettings};
use crate::directory::{
    parse_key_set, verify_directory_response, DirectoryError, KidRule, ProofCheck, SkippedKey,
    DIRECTORY_MEDIA_TYPE,
};
use crate::jwk::{Key, Thumbprint};
use crate::request::{combined, HttpRequest, HttpResponse};

/// What a JWK Set URL other than the well-known directory may be served as.
const JWK_SET_MEDIA_TYPES: &str = "application/jwk-set+json, application/json";

/// Never negative-cache (or back off) longer than this, whatever the server says.
pub const MAX_BACKOFF_SECONDS: i64 = 300;

/// A fetch to dispatch: `dispatch_http_call(cluster, headers, None, [], timeout)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    pub cluster: String,
    /// Pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`) first, then `accept`.
    pub headers: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// The fetch for an agent's key material, if it has a cluster to fetch through.
pub fn fetch_request(agent: &AgentConfig, settings: &DirectorySettings) -> Option<FetchRequest> {
    let cluster = agent.cluster.clone()?;
    // The fetch URL keeps a configured query (`url` is the identity, without it).
    let (authority, path) = agent.agent.fetch_target();
    let accept = if agent.agent.id().is_well_known() {
        DIRECTORY_MEDIA_TYPE
    } else {
        JWK_SET_MEDIA_TYPES
    };
    let h = |n: &str, v: &str| (n.to_string(), v.to_string());
    Some(FetchRequest {
        cluster,
        headers: vec![
            h(":method", "GET"),
            h(":path", &path),
            h(":authority", &authority),
            h(":scheme", "https"),
            h("accept", accept),
            h("user-agent", "web-bot-auth-envoy"),
        ],
        timeout_ms: settings.timeout_ms,
    })
}

/// Why a fetch did not produce a usable key set. The token names the stat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No response: connection failure or reset (Envoy answers these itself with 503).
    Unreachable,
    /// No response within `timeout_ms` (Envoy answers 504 itself).
    Timeout,
    /// A status other than 200 (redirects included: they are not followed).
    Status,
    MediaType,
    TooLarge,
    Malformed,
    TooManyKeys,
    KidMismatch,
    /// Keys are listed but every one of them is unusable (each would be skipped).
    NoUsableKeys,
    /// `require_proof` is set and no listed key has a valid possession proof.
    BadProof,
}

impl FailureKind {
    pub const ALL: [FailureKind; 10] = [
        Self::Unreachable,
        Self::Timeout,
        Self::Status,
        Self::MediaType,
        Self::TooLarge,
        Self::Malformed,
        Self::TooManyKeys,
        Self::KidMismatch,
        Self::NoUsableKeys,
        Self::BadProof,
    ];

    pub fn token(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::MediaType => "media_type",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::TooManyKeys => "too_many_keys",
            Self::KidMismatch => "kid_mismatch",
            Self::NoUsableKeys => "no_usable_keys",
            Self::BadProof => "bad_proof",
        }
    }
}

/// A failed fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    pub kind: FailureKind,
    pub detail: String,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<i64>,
}

impl fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.token(), self.detail)
    }
}

impl std::error::Error for FetchFailure {}

/// Whether the directory proved possession of a key by signing its response with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proof {
    /// A response signature by this key verified (and none by it failed).
    Valid,
    /// No response signature by this key.
    Absent,
    /// A response signature by this key is present but proves nothing (does not verify, is
    /// expired or created in the future, does not cover what it must, or the body does not
    /// match its Content-Digest), or a directory signature cannot be attributed to any key.
    Invalid,
}

impl Proof {
    pub const ALL: [Proof; 3] = [Proof::Valid, Proof::Absent, Proof::Invalid];

    pub fn token(self) -> &'static str {
        match self {
            Proof::Valid => "valid",
            Proof::Absent => "absent",
            Proof::Invalid => "invalid",
        }
    }

    /// The inverse of [`Proof::token`].
    pub fn from_token(token: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.token() == token)
    }
}

/// A key of an accepted set, with its possession proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedKey {
    pub key: Key,
    pub proof: Proof,
}

/// A listed key that is not used while the rest of the set is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// Not a usable public JWK.
    Unusable(SkippedKey),
    /// `require_proof` is set and this key's possession proof is not valid.
    Unproven {
        thumbprint: Thumbprint,
        proof: Proof,
    },
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Unusable(k) => k.fmt(f),
            Skipped::Unproven { thumbprint, proof } => {
                write!(f, "key {thumbprint}: possession proof {}", proof.token())
            }
        }
    }
}

impl std::error::Error for Skipped {}

/// An accepted key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The keys in use, each with its own possession proof.
    pub keys: Vec<FetchedKey>,
    /// Seconds the set is fresh for (already bounded by the settings).
    pub fresh_for: i64,
    /// Listed keys left out (the rest of the set is used).
    pub skipped: Vec<Skipped>,
    /// The body was a bare JWK, read as a one-key set.
    pub bare_jwk: bool,
}

impl Fetched {
    /// A set of `keys` without possession proofs, none skipped (tests, tools).
    pub fn unproven(keys: Vec<Key>, fresh_for: i64) -> Self {
        Fetched {
            keys: keys
                .into_iter()
                .map(|key| FetchedKey {
                    key,
                    proof: Proof::Absent,
                })
                .collect(),
            fresh_for,
            skipped: Vec::new(),
            bare_jwk: false,
        }
    }
}

/// The response to a fetch, as the host received it.
#[derive(Debug, Clone, Default)]
pub struct FetchResponse {
    /// `None` when there was no response (reset, timeout).
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body was larger than `max_bytes` (and was not read).
    pub too_large: bool,
}

/// Judges a fetch response for `agent`: the keys to use, each with its possession proof
/// (`clock_skew_seconds` is the tolerance for the proofs' `created` and `expires`), and the
/// listed keys skipped (unusable, or without a valid proof when `require_proof` is set).
pub fn evaluate(
    agent: &AgentConfig,
    response: &FetchResponse,
    settings: &DirectorySettings,
    clock_skew_seconds: i64,
    now: i64,
) -> Result<Fetched, FetchFailure> {
    let fail = |kind, detail: String| FetchFailure {
        kind,
        detail,
        retry_after: retry_after(&response.headers),
    };
    let Some(status) = response.status else {
        return Err(fail(
            FailureKind::Unreachable,
            "no response (connection failed, reset or timed out)".into(),
        ));
    };
    if status != 200 {
        return Err(match envoy_local_failure(status, &response.body) {
            Some(kind) => fail(
                kind,
                String::from_utf8_lossy(&response.body[..response.body.len().min(120)]).into(),
            ),
            None => fail(FailureKind::Status, format!("status {status}")),
        });
    }
    let content_type = combined(&response.headers, "content-type").unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let media_ok = if agent.agent.id().is_well_known() {
        media == DIRECTORY_MEDIA_TYPE
    } else {
        JWK_SET_MEDIA_TYPES.split(", ").any(|m| m == media)
    };
    if !media_ok {
        return Err(fail(
            FailureKind::MediaType,
            format!("content-type {content_type:?}"),
        ));
    }
    let max_bytes = usize::try_from(settings.max_bytes).unwrap_or(usize::MAX);
    if response.too_large || response.body.len() > max_bytes {
        return Err(fail(
            FailureKind::TooLarge,
            format!("body larger than {max_bytes} bytes"),
        ));
    }
    let max_keys = usize::try_from(settings.max_keys).unwrap_or(usize::MAX);
    let set =
        parse_key_set(&response.body, KidRule::at(agent.agent.id()), max_keys).map_err(|e| {
            let kind = match e {
                DirectoryError::TooManyKeys { .. } => FailureKind::TooManyKeys,
                DirectoryError::KidMismatch { .. } => FailureKind::KidMismatch,
                DirectoryError::NoUsableKey { .. } => FailureKind::NoUsableKeys,
                DirectoryError::NotJson | DirectoryError::NoKeys => FailureKind::Malformed,
            };
            fail(kind, e.to_string())
        })?;
    let (authority, path) = agent.agent.fetch_target();
    let request = HttpRequest::from_parts("GET", "https", &authority, &path, Vec::new());
    let signed = HttpResponse {
        status,
        headers: response.headers.clone(),
    };
    let checks = verify_directory_response(
        &request,
        &signed,
        &response.body,
        &set.keys,
        now,
        clock_skew_seconds,
    );
    let listed = set.keys.len();
    let bare_jwk = set.bare_jwk;
    let mut skipped: Vec<Skipped> = set.skipped.into_iter().map(Skipped::Unusable).collect();
    let mut keys = Vec::with_capacity(listed);
    for key in set.keys {
        let proof = proof_of_key(&key.thumbprint, &checks);
        if settings.require_proof && proof != Proof::Valid {
            skipped.push(Skipped::Unproven {
                thumbprint: key.thumbprint,
                proof,
            });
        } else {
            keys.push(FetchedKey { key, proof });
        }
    }
    if keys.is_empty() && listed > 0 {
        let mut detail =
            "require_proof is set and no listed key has a valid possession proof".to_string();
        // The first proof that failed says why (say, created in the future).
        if let Some(e) = checks.iter().find_map(|c| c.result.as_ref().err()) {
            detail = format!("{detail} ({e})");
        }
        return Err(fail(FailureKind::BadProof, detail));
    }
    Ok(Fetched {
        keys,
        fresh_for: freshness(&response.headers, now, settings),
        skipped,
        bare_jwk,
    })
}

/// The possession proof of the key with `thumbprint` among a response's proofs: invalid when a
/// signature by it fails (one failure is enough: a response is signed once per key, so a bad
/// one means the response is not what that key signed), valid when one verifies, else absent.
/// A directory signature that cannot be attributed to a key (unreadable fields, no `keyid`)
/// makes every key without a valid proof invalid rather than absent: the response did try to
/// prove something.
fn proof_of_key(thumbprint: &str, checks: &[ProofCheck]) -> Proof {
    let mut valid = false;
    for c in checks
        .iter()
        .filter(|c| c.keyid.as_deref() == Some(thumbprint))
    {
        if c.result.is_err() {
            return Proof::Invalid;
        }
        valid = true;
    }
    if valid {
        Proof::Valid
    } else if checks.iter().any(|c| c.keyid.is_none()) {
        Proof::Invalid
    } else {
        Proof::Absent
    }
}

/// Envoy answers a call it could not complete itself, with 503 or 504 and a plain-text body
/// such as `upstream request timeout` or `upstream connect error or disconnect/reset before
/// headers. reset reason: connection failure`: those are not the directory's answers.
fn envoy_local_failure(status: u16, body: &[u8]) -> Option<FailureKind> {
    match (status, body) {
        (504, b"upstream request timeout") => Some(FailureKind::Timeout),
        (503, b) if b.starts_with(b"upstream connect error") || b == b"no healthy upstream" => {
            Some(FailureKind::Unreachable)
        }
        _ => None,
    }
}

/// How long a fetched set is fresh: `Cache-Control: max-age` (or `s-maxage`), else `Expires`,
/// else one hour; `no-store`/`no-cache` mean as short as allowed. Bounded by
/// `[min_refresh_seconds, max_cache_seconds]`.
pub fn freshness(headers: &[(String, String)], now: i64, settings: &DirectorySettings) -> i64 {
    let min = i64::try_from(settings.min_refresh_seconds).unwrap_or(i64::MAX);
    let max = i64::try_from(settings.max_cache_seconds).unwrap_or(i64::MAX);
    let mut fresh: Option<i64> = None;
    if let Some(cc) = combined(headers, "cache-control") {
        for directive in cc.split(',') {
            let d = directive.trim().to_ascii_lowercase();
            if d == "no-store" || d == "no-cache" {
                fresh = Some(0);
                break;
            }
            if let Some(v) = d
                .strip_prefix("s-maxage=")
                .or_else(|| d.strip_prefix("max-age="))
            {
                if let Ok(secs) = v.trim_matches('"').parse::<i64>() {
                    fresh = Some(fresh.map_or(secs, |f| f.min(secs)));
                }
            }
        }
    }
    if fresh.is_none() {
        if let Some(at) = combined(headers, "expires").and_then(|v| parse_http_date(&v)) {
            fresh = Some(at.saturating_sub(now));
        }
    }
    fresh.unwrap_or(3600).clamp(min.min(max), max)
}

/// `Retry-After` as seconds from now (delta-seconds only; dates are rare for this).
pub fn retry_after(headers: &[(String, String)]) -> Option<i64> {
    let v = combined(headers, "retry-after")?;
    v.trim().parse::<i64>().ok().filter(|s| *s >= 0)
}

/// Seconds to wait before the next fetch after `failures` consecutive failures: exponential
/// from 1s, at most `negative_cache_seconds` (itself at most 5 minutes), and at least what the
/// server asked for with `Retry-After` (also capped at 5 minutes).
pub fn backoff(failures: u32, retry_after: Option<i64>, settings: &DirectorySettings) -> i64 {
    let cap = i64::try_from(settings.negative_cache_seconds)
        .unwrap_or(MAX_BACKOFF_SECONDS)
        .min(MAX_BACKOFF_SECONDS);
    let exp = 1i64
        .checked_shl(failures.saturating_sub(1).min(30))
        .unwrap_or(i64::MAX);
    let wait = exp.min(cap);
    match retry_after {
        Some(r) => wait.max(r.min(MAX_BACKOFF_SECONDS)),
        None => wait,
    }
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to unix seconds.
pub fn parse_http_date(v: &str) -> Option<i64> {
    let parts: Vec<&str> = v.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m.eq_ignore_ascii_case(month))?;
    let year: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, mo) = if month < 2 {
        (year - 1, month as i64 + 10)
    } else {
        (year, month as i64 - 2)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::directory::testing::{proof_headers, thumbprint, Spec};
    use crate::directory::{build_key_set, content_digest};
    use crate::jwk::{Jwk, JwkError};
    use ed25519_dalek::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: i64 = 1_790_000_000;

    fn agent() -> AgentConfig {
        let cfg = Config::from_json(
            br#"{"agents":[{"name":"a","url":"https://Agent.Example:443/","cluster":"dir"}]}"#,
        )
        .unwrap();
        cfg.agents[0].clone()
    }

    fn settings() -> DirectorySettings {
        DirectorySettings::default()
    }

    fn jwk(seed: u8) -> Jwk {
        Jwk::from_ed25519(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .as_bytes(),
        )
    }

    fn ok_response(body: &str) -> FetchResponse {
        FetchResponse {
            status: Some(200),
            headers: vec![
                ("content-type".into(), DIRECTORY_MEDIA_TYPE.into()),
                ("cache-control".into(), "max-age=600".into()),
            ],
            body: body.as_bytes().to_vec(),
            too_large: false,
        }
    }

    #[test]
    fn request_for_a_directory() {
        let r = fetch_request(&agent(), &settings()).unwrap();
        assert_eq!(r.cluster, "dir");
        assert_eq!(r.timeout_ms, 2000);
        assert!(r
            .headers
            .contains(&(":authority".into(), "agent.example".into())));
        assert!(r.headers.contains(&(
            ":path".into(),
            "/.well-known/http-message-signatures-directory".into()
        )));
        assert!(r
            .headers
            .contains(&("accept".into(), DIRECTORY_MEDIA_TYPE.into())));
        let mut pinned = agent();
        pinned.cluster = None;
        assert!(fetch_request(&pinned, &settings()).is_none());
    }

    #[test]
    fn accepted_key_set_with_freshness() {
        let body = build_key_set(&[jwk(1), jwk(2)]).unwrap();
        let f = evaluate(&agent(), &ok_response(&body), &settings(), 60, NOW).unwrap();
        assert_eq!(f.keys.len(), 2);
        assert_eq!(f.fresh_for, 600);
        assert!(f.keys.iter().all(|k| k.proof == Proof::Absent));
        assert!(f.skipped.is_empty());
    }

    #[test]
    fn an_unusable_key_is_skipped_and_counted() {
        let body = format!(
            r#"{{"keys":[{},{{"kty":"XYZ"}},{}]}}"#,
            jwk(1).to_json(),
            jwk(2).to_json()
        );
        let f = evaluate(&agent(), &ok_response(&body), &settings(), 60, NOW).unwrap();
        assert_eq!(f.keys.len(), 2);
        assert_eq!(
            f.skipped,
            vec![Skipped::Unusable(SkippedKey {
                index: 1,
                error: JwkError::UnknownKty("XYZ".into())
            })]
        );
        assert_eq!(
            f.skipped[0].to_string(),
            "key 1: unknown JWK key type \"XYZ\""
        );
    }

    #[test]
    fn failure_kinds() {
        let body = build_key_set(&[jwk(1)]).unwrap();
        let kind = |r: FetchResponse| {
            evaluate(&agent(), &r, &settings(), 60, NOW)
                .unwrap_err()
                .kind
        };
        assert_eq!(kind(FetchResponse::default()), FailureKind::Unreachable);
        let mut r = ok_response(&body);
        r.status = Some(504);
        r.body = b"upstream request timeout".to_vec();
        assert_eq!(kind(r), FailureKind::Timeout);
        let mut r = ok_response(&body);
        r.status = Some(503);
        r.body = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure".to_vec();
        assert_eq!(kind(r), FailureKind::Unreachable);
        for status in [301, 404, 500, 503, 504] {
            let mut r = ok_response(&body);
            r.status = Some(status);
            assert_eq!(kind(r), FailureKind::Status);
        }
        let mut r = ok_response(&body);
        r.headers[0].1 = "application/json".into();
        assert_eq!(kind(r), FailureKind::MediaType);
        let mut r = ok_response(&body);
        r.too_large = true;
        assert_eq!(kind(r), FailureKind::TooLarge);
        assert_eq!(kind(ok_response("{not json")), FailureKind::Malformed);
        let many: Vec<Jwk> = (1..=40).map(jwk).collect();
        assert_eq!(
            kind(ok_response(&build_key_set(&many).unwrap())),
            FailureKind::TooManyKeys
        );
        let x = jwk(1).x.unwrap();
        let wrong =
            format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}","kid":"nope"}}]}}"#);
        assert_eq!(kind(ok_response(&wrong)), FailureKind::KidMismatch);
        assert_eq!(
            kind(ok_response(
                r#"{"keys":[{"kty":"XYZ"},{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#
            )),
            FailureKind::NoUsableKeys
        );
        let mut r = ok_response(&body);
        r.status = Some(503);
        r.headers.push(("retry-after".into(), "120".into()));
        let e = evaluate(&agent(), &r, &settings(), 60, NOW).unwrap_err();
        assert_eq!(e.retry_after, Some(120));
    }

    /// A 200 listing the keys of `seeds`, with Content-Digest and the proofs of `specs`.
    fn signed(seeds: &[u8], specs: &[Spec]) -> FetchResponse {
        let jwks: Vec<Jwk> = seeds.iter().map(|s| jwk(*s)).collect();
        let body = build_key_set(&jwks).unwrap();
        let mut r = ok_response(&body);
        r.headers
            .push(("content-digest".into(), content_digest(body.as_bytes())));
        if !specs.is_empty() {
            let proofs = proof_headers(&r.headers, specs);
            r.headers.extend(proofs);
        }
        r
    }

    fn proofs(f: &Fetched) -> Vec<(String, Proof)> {
        f.keys
            .iter()
            .map(|k| (k.key.thumbprint.to_string(), k.proof))
            .collect()
    }

    fn statuses(pairs: &[(u8, Proof)]) -> Vec<(String, Proof)> {
        pairs.iter().map(|(s, p)| (thumbprint(*s), *p)).collect()
    }

    #[test]
    fn possession_proofs_are_per_key() {
        use Proof::*;
        let s = settings();
        // Key 1 proves possession, key 2's proof is for another authority, key 3 has none:
        // every key is used, each with its own status.
        let elsewhere = Spec {
            authority: "evil.example",
            ..Spec::by(2, NOW)
        };
        let r = signed(&[1, 2, 3], &[Spec::by(1, NOW), elsewhere]);
        let f = evaluate(&agent(), &r, &s, 60, NOW).unwrap();
        assert_eq!(
            proofs(&f),
            statuses(&[(1, Valid), (2, Invalid), (3, Absent)])
        );
        assert!(f.skipped.is_empty());
        // A proof created in the future (beyond the clock skew) is invalid.
        let future = Spec {
            created: NOW + 3600,
            expires: NOW + 7200,
            ..Spec::by(2, NOW)
        };
        let r = signed(&[1, 2], &[Spec::by(1, NOW), future]);
        let f = evaluate(&agent(), &r, &s, 60, NOW).unwrap();
        assert_eq!(proofs(&f), statuses(&[(1, Valid), (2, Invalid)]));
        // Expired.
        let expired = Spec {
            created: NOW - 900,
            expires: NOW - 600,
            ..Spec::by(1, NOW)
        };
        let f = evaluate(&agent(), &signed(&[1], &[expired]), &s, 60, NOW).unwrap();
        assert_eq!(proofs(&f), statuses(&[(1, Invalid)]));
        // Two proofs by one key, one bad: the key's proof is invalid.
        let bad = Spec {
            authority: "evil.example",
            ..Spec::by(1, NOW)
        };
        let r = signed(&[1], &[Spec::by(1, NOW), bad]);
        assert_eq!(
            proofs(&evaluate(&agent(), &r, &s, 60, NOW).unwrap()),
            statuses(&[(1, Invalid)])
        );
        // The body does not match the Content-Digest: every signing key's proof is invalid.
        let mut r = signed(&[1, 2], &[Spec::by(1, NOW)]);
        r.body = build_key_set(&[jwk(2), jwk(1)]).unwrap().into_bytes();
        assert_eq!(
            proofs(&evaluate(&agent(), &r, &s, 60, NOW).unwrap()),
            statuses(&[(2, Absent), (1, Invalid)])
        );
        // A proof by a key the directory does not list changes no listed key's status.
        let r = signed(&[1], &[Spec::by(9, NOW)]);
        assert_eq!(
            proofs(&evaluate(&agent(), &r, &s, 60, NOW).unwrap()),
            statuses(&[(1, Absent)])
        );
        // Signature fields that cannot be attributed to a key: no key counts as unsigned.
        let mut r = signed(&[1, 2], &[Spec::by(1, NOW)]);
        for (n, v) in &mut r.headers {
            if n == "signature-input" {
                *v = "(((".into();
            }
        }
        assert_eq!(
            proofs(&evaluate(&agent(), &r, &s, 60, NOW).unwrap()),
            statuses(&[(1, Invalid), (2, Invalid)])
        );
        let anonymous = Spec {
            keyid: None,
            ..Spec::by(1, NOW)
        };
        let r = signed(&[1, 2], &[Spec::by(2, NOW), anonymous]);
        assert_eq!(
            proofs(&evaluate(&agent(), &r, &s, 60, NOW).unwrap()),
            statuses(&[(1, Invalid), (2, Valid)])
        );
    }

    #[test]
    fn require_proof_uses_only_proven_keys() {
        let s = DirectorySettings {
            require_proof: true,
            ..settings()
        };
        let elsewhere = Spec {
            authority: "evil.example",
            ..Spec::by(2, NOW)
        };
        let r = signed(&[1, 2, 3], &[Spec::by(1, NOW), elsewhere]);
        let f = evaluate(&agent(), &r, &s, 60, NOW).unwrap();
        assert_eq!(proofs(&f), statuses(&[(1, Proof::Valid)]));
        assert_eq!(
            f.skipped,
            vec![
                Skipped::Unproven {
                    thumbprint: crate::directory::testing::jwk(2).thumbprint().unwrap(),
                    proof: Proof::Invalid,
                },
                Skipped::Unproven {
                    thumbprint: crate::directory::testing::jwk(3).thumbprint().unwrap(),
                    proof: Proof::Absent,
                },
            ]
        );
        // Unusable keys are skipped too, and counted with them.
        let body = format!(r#"{{"keys":[{{"kty":"XYZ"}},{}]}}"#, jwk(1).to_json());
        let mut r = ok_response(&body);
        r.headers
            .push(("content-digest".into(), content_digest(body.as_bytes())));
        let proofs_1 = proof_headers(&r.headers, &[Spec::by(1, NOW)]);
        r.headers.extend(proofs_1);
        let f = evaluate(&agent(), &r, &s, 60, NOW).unwrap();
        assert_eq!(proofs(&f), statuses(&[(1, Proof::Valid)]));
        assert_eq!(f.skipped.len(), 1);
        // No proven key left: the fetch fails (and the cached keys stay).
        let e = evaluate(&agent(), &signed(&[1, 2], &[]), &s, 60, NOW).unwrap_err();
        assert_eq!(e.kind, FailureKind::BadProof);
        let future = Spec {
            created: NOW + 3600,
            expires: NOW + 7200,
            ..Spec::by(1, NOW)
        };
        let e = evaluate(&agent(), &signed(&[1], &[future]), &s, 60, NOW).unwrap_err();
        assert_eq!(e.kind, FailureKind::BadProof);
        assert!(e.detail.contains("created in the future"), "{}", e.detail);
        // An empty set needs no proof: the agent lists no keys.
        let f = evaluate(&agent(), &ok_response(r#"{"keys":[]}"#), &s, 60, NOW).unwrap();
        assert!(f.keys.is_empty());
    }

    fn jwks_agent(url: &str) -> AgentConfig {
        Config::from_json(
            format!(r#"{{"agents":[{{"name":"j","url":"{url}","cluster":"dir"}}]}}"#).as_bytes(),
        )
        .unwrap()
        .agents[0]
            .clone()
    }

    fn header<'a>(r: &'a FetchRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_key_set_url_keeps_its_query_when_fetched() {
        let agent = jwks_agent("https://J.example/keys.json?v=2#x");
        assert_eq!(agent.url(), "https://j.example/keys.json");
        let r = fetch_request(&agent, &settings()).unwrap();
        assert_eq!(header(&r, ":path"), Some("/keys.json?v=2"));
        assert_eq!(header(&r, ":authority"), Some("j.example"));
        assert_eq!(
            header(&r, "accept"),
            Some("application/jwk-set+json, application/json")
        );
        // The well-known directory, spelled out or as an origin, is the directory.
        for url in [
            "https://j.example",
            "https://j.example/.well-known/http-message-signatures-directory",
        ] {
            let r = fetch_request(&jwks_agent(url), &settings()).unwrap();
            assert_eq!(header(&r, ":path"), Some(crate::agent_url::DIRECTORY_PATH));
            assert_eq!(header(&r, "accept"), Some(DIRECTORY_MEDIA_TYPE));
        }
    }

    #[test]
    fn a_jwk_set_url_is_served_as_a_jwk_set() {
        let jwks = jwks_agent("https://j.example/keys/jwks.json");
        // kid is a label there; the thumbprint is computed.
        let body = format!(
            r#"{{"keys":[{}]}}"#,
            jwk(1).to_json().replacen('{', r#"{"kid":"2026-key","#, 1)
        );
        for media in [
            "application/jwk-set+json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            let mut r = ok_response(&body);
            r.headers[0].1 = media.into();
            let f = evaluate(&jwks, &r, &settings(), 60, NOW).unwrap();
            assert_eq!(f.keys[0].key.thumbprint, jwk(1).thumbprint().unwrap());
            assert!(!f.bare_jwk);
        }
        // The directory's media type belongs to the well-known location only, and the other
        // way round.
        let e = evaluate(&jwks, &ok_response(&body), &settings(), 60, NOW).unwrap_err();
        assert_eq!(e.kind, FailureKind::MediaType);
        let mut r = ok_response(&build_key_set(&[jwk(1)]).unwrap());
        r.headers[0].1 = "application/json".into();
        let e = evaluate(&agent(), &r, &settings(), 60, NOW).unwrap_err();
        assert_eq!(e.kind, FailureKind::MediaType);
        // At the well-known location a label kid breaks the directory.
        let e = evaluate(&agent(), &ok_response(&body), &settings(), 60, NOW).unwrap_err();
        assert_eq!(e.kind, FailureKind::KidMismatch);
    }

    #[test]
    fn a_bare_jwk_is_a_one_key_set() {
        let f = evaluate(
            &agent(),
            &ok_response(&jwk(1).to_json()),
            &settings(),
            60,
            NOW,
        )
        .unwrap();
        assert_eq!(f.keys.len(), 1);
        assert!(f.bare_jwk);
    }

    #[test]
    fn freshness_bounds() {
        let s = settings();
        let h = |v: &str| vec![("cache-control".to_string(), v.to_string())];
        assert_eq!(freshness(&h("public, max-age=600"), NOW, &s), 600);
        assert_eq!(freshness(&h("max-age=5"), NOW, &s), 60);
        assert_eq!(freshness(&h("max-age=999999999"), NOW, &s), 86_400);
        assert_eq!(freshness(&h("no-store"), NOW, &s), 60);
        assert_eq!(freshness(&[], NOW, &s), 3600);
        let exp = vec![(
            "expires".to_string(),
            "Thu, 21 Sep 2028 07:00:00 GMT".to_string(),
        )];
        let at = parse_http_date("Thu, 21 Sep 2028 07:00:00 GMT").unwrap();
        assert_eq!(at, 1_853_132_400);
        assert_eq!(freshness(&exp, at - 7200, &s), 7200);
    }

    #[test]
    fn backoff_is_exponential_bounded_and_respects_retry_after() {
        let s = settings();
        let seq: Vec<i64> = (1..=9).map(|n| backoff(n, None, &s)).collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(1, Some(120), &s), 120);
        assert_eq!(backoff(1, Some(100_000), &s), 300);
        assert_eq!(backoff(u32::MAX, None, &s), 60);
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }
}
