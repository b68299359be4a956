//! Key material fetches: the request the filter sends through Envoy, and what a response
//! means (accepted key set with its freshness, or a failure kind with its backoff).

use std::fmt;

use crate::agent_url::{fetch_target, AgentType};
use crate::config::{AgentConfig, DirectorySettings};
use crate::directory::{
    parse_key_set, verify_directory_response, DirectoryError, DIRECTORY_MEDIA_TYPE,
};
use crate::jwk::Key;
use crate::request::{combined, HttpRequest, HttpResponse};

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
    let (authority, path) = fetch_target(agent.kind, &agent.fetch_url);
    let accept = match agent.kind {
        AgentType::Directory => DIRECTORY_MEDIA_TYPE,
        AgentType::JwksUri | AgentType::Cimd => "application/jwk-set+json, application/json",
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
    /// A directory response signature is present but proves nothing.
    BadProof,
}

impl FailureKind {
    pub const ALL: [FailureKind; 9] = [
        Self::Unreachable,
        Self::Timeout,
        Self::Status,
        Self::MediaType,
        Self::TooLarge,
        Self::Malformed,
        Self::TooManyKeys,
        Self::KidMismatch,
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

/// Whether the directory proved possession of its keys by signing its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proof {
    /// At least one response signature verified with a listed key.
    Valid,
    /// The response was not signed.
    Absent,
    /// A response signature is present but proves nothing.
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
}

/// An accepted key set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub keys: Vec<Key>,
    /// Seconds the set is fresh for (already bounded by the settings).
    pub fresh_for: i64,
    pub proof: Proof,
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

/// Judges a fetch response for `agent`.
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
    let media_ok = match agent.kind {
        AgentType::Directory => media == DIRECTORY_MEDIA_TYPE,
        AgentType::JwksUri | AgentType::Cimd => matches!(
            media.as_str(),
            "application/json" | "application/jwk-set+json"
        ),
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
    let keys = parse_key_set(&response.body, agent.kind, max_keys).map_err(|e| {
        let kind = match e {
            DirectoryError::TooManyKeys { .. } => FailureKind::TooManyKeys,
            DirectoryError::KidMismatch { .. } => FailureKind::KidMismatch,
            _ => FailureKind::Malformed,
        };
        fail(kind, e.to_string())
    })?;
    let proof = if combined(&response.headers, "signature").is_none() {
        Proof::Absent
    } else {
        let (authority, path) = fetch_target(agent.kind, &agent.url);
        let request = HttpRequest::from_parts("GET", "https", &authority, &path, Vec::new());
        let signed = HttpResponse {
            status,
            headers: response.headers.clone(),
        };
        let results = verify_directory_response(
            &request,
            &signed,
            &response.body,
            &keys,
            now,
            clock_skew_seconds,
        );
        match results.iter().find_map(|r| r.as_ref().err()) {
            // Every signature must hold: one bad one means the response is not what was signed.
            Some(e) => return Err(fail(FailureKind::BadProof, e.to_string())),
            None => Proof::Valid,
        }
    };
    Ok(Fetched {
        keys,
        fresh_for: freshness(&response.headers, now, settings),
        proof,
    })
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
    use crate::directory::DIRECTORY_TAG;
    use crate::directory::{build_key_set, content_digest};
    use crate::jwk::Jwk;
    use crate::sign::{sign_response, SignedHeaders};
    use ed25519_dalek::SigningKey;
    use sfv::{BareItem, Key as SfKey, Parameters};
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
        assert_eq!(f.proof, Proof::Absent);
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
        let mut r = ok_response(&body);
        r.status = Some(503);
        r.headers.push(("retry-after".into(), "120".into()));
        let e = evaluate(&agent(), &r, &settings(), 60, NOW).unwrap_err();
        assert_eq!(e.retry_after, Some(120));
    }

    fn proof(request: &HttpRequest, response: &HttpResponse, sk: &SigningKey) -> SignedHeaders {
        let mut params = Parameters::new();
        let mut put = |k: &str, v: BareItem| {
            params.insert(SfKey::from_string(k.into()).unwrap(), v);
        };
        let s = |v: &str| BareItem::String(sfv::String::from_string(v.into()).unwrap());
        put(
            "created",
            BareItem::Integer(sfv::Integer::constant(NOW - 5)),
        );
        put(
            "expires",
            BareItem::Integer(sfv::Integer::constant(NOW + 300)),
        );
        put("keyid", s(&jwk(1).thumbprint().unwrap()));
        put("tag", s(DIRECTORY_TAG));
        let components = [
            "\"@authority\";req".to_string(),
            "content-digest".to_string(),
        ];
        sign_response(request, response, sk, "sig1", &components, params).unwrap()
    }

    #[test]
    fn possession_proof() {
        let sk = SigningKey::from_bytes(&[1; 32]);
        let body = build_key_set(&[jwk(1)]).unwrap();
        let mut r = ok_response(&body);
        r.headers
            .push(("content-digest".into(), content_digest(body.as_bytes())));
        let request = HttpRequest::from_parts(
            "GET",
            "https",
            "agent.example",
            "/.well-known/http-message-signatures-directory",
            Vec::new(),
        );
        let response = HttpResponse {
            status: 200,
            headers: r.headers.clone(),
        };
        let signed = proof(&request, &response, &sk);
        let mut good = r.clone();
        good.headers.extend(signed.pairs());
        let f = evaluate(&agent(), &good, &settings(), 60, NOW).unwrap();
        assert_eq!(f.proof, Proof::Valid);
        // Signed for another authority: the proof fails, and so does the fetch.
        let other = HttpRequest::from_parts("GET", "https", "evil.example", "/", Vec::new());
        let signed = proof(&other, &response, &sk);
        let mut bad = r.clone();
        bad.headers.extend(signed.pairs());
        let e = evaluate(&agent(), &bad, &settings(), 60, NOW).unwrap_err();
        assert_eq!(e.kind, FailureKind::BadProof);
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
