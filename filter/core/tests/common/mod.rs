//! Helpers shared by the integration tests: Ed25519 keys from fixed seeds, the request the
//! interop tests sign, signing with our signer, and checking our core's verdict. The interop
//! tests also use [`interop`], which runs the reference implementations under `tests/interop`.
#![allow(dead_code)]

#[cfg(not(target_arch = "wasm32"))]
pub mod interop;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use wba_filter::agent_url::AgentId;
use wba_filter::config::Config;
use wba_filter::host::RecordingHost;
use wba_filter::jwk::{Jwk, Key};
use wba_filter::key_cache::KeyCache;
use wba_filter::keyring::KeyRing;
use wba_filter::private_key::PrivateKey;
use wba_filter::replay::MemoryReplay;
use wba_filter::request::HttpRequest;
use wba_filter::request_filter::{on_request_headers, Action};
use wba_filter::sign::SignatureKey as _;
use wba_filter::sign::{sign_request, SignOptions};
use wba_filter::verdict::{Outcome, Verdict, Verified};

/// The agent every test signs as.
pub const AGENT: &str = "https://agent.example";

/// The Ed25519 key whose seed is 32 times `seed`.
pub fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The public half of [`signing_key`]`(seed)`.
pub fn public(seed: u8) -> Key {
    public_key(&signing_key(seed))
}

pub fn public_key(key: &SigningKey) -> Key {
    Jwk::from_ed25519(key.verifying_key().as_bytes())
        .to_key()
        .unwrap()
}

/// The public key's `x` (base64url).
pub fn x(key: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes())
}

pub fn public_jwk(key: &SigningKey) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "x": x(key)})
}

/// The public JWK with the private `d`.
pub fn private_jwk(key: &SigningKey) -> Value {
    let mut j = public_jwk(key);
    j["d"] = json!(URL_SAFE_NO_PAD.encode(key.to_bytes()));
    j
}

/// The RFC 7638 thumbprint our core computes (the `keyid`).
pub fn thumbprint(key: &SigningKey) -> String {
    Jwk::from_ed25519(key.verifying_key().as_bytes())
        .thumbprint()
        .unwrap()
        .into()
}

/// A key ring pinning `key` for [`AGENT`] under `name`.
pub fn ring(name: &str, key: &SigningKey) -> KeyRing {
    let mut r = KeyRing::default();
    r.add(name, AgentId::parse(AGENT).unwrap(), vec![public_key(key)]);
    r
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The request the interop tests start from.
pub fn request() -> HttpRequest {
    HttpRequest::from_parts(
        "GET",
        "https",
        "shop.example",
        "/items/42?color=blue",
        vec![
            ("host".into(), "shop.example".into()),
            ("accept".into(), "text/html".into()),
        ],
    )
}

/// Replaces every line of a header with one.
pub fn set(req: &mut HttpRequest, name: &str, value: &str) {
    req.remove_header(name);
    req.add_header(name, value);
}

/// Signs `req` with our signer and sets the signature headers on it.
pub fn sign_into(req: &mut HttpRequest, key: &SigningKey, opts: &SignOptions) {
    let h = sign_request(req, key, opts).unwrap();
    for (n, v) in h.pairs() {
        set(req, &n, &v);
    }
}

/// [`request`] signed by our signer as [`AGENT`] now, valid for 300 s, with the legacy
/// `Signature-Agent` form (a bare string) or the dictionary form.
pub fn our_signed(key: &SigningKey, legacy: bool) -> HttpRequest {
    let mut req = request();
    let mut o = SignOptions::web_bot_auth(AGENT, now(), 300);
    o.legacy_agent = legacy;
    sign_into(&mut req, key, &o);
    req
}

/// The request's headers as a JSON object (the jobs the reference scripts read).
pub fn headers_json(req: &HttpRequest) -> Value {
    Value::Object(
        req.headers
            .iter()
            .map(|(n, v)| (n.clone(), json!(v)))
            .collect(),
    )
}

/// The job a reference verifier script reads: the request and `key`'s public JWK.
pub fn verify_job(req: &HttpRequest, key: &SigningKey) -> Value {
    json!({
        "method": req.method,
        "url": req.target_uri(),
        "headers": headers_json(req),
        "jwk": public_jwk(key),
    })
}

/// Sets the `Signature-Agent`, `Signature-Input` and `Signature` that a reference signer
/// printed (a JSON object) on `req`, and checks that `signer` used `key`'s thumbprint and the
/// `web-bot-auth` tag.
pub fn take_signature_headers(req: &mut HttpRequest, out: &Value, signer: &str, key: &SigningKey) {
    for name in ["Signature-Agent", "Signature-Input", "Signature"] {
        let v = out[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name}: {out}"));
        set(req, &name.to_ascii_lowercase(), v);
    }
    let input = req.header("signature-input").unwrap();
    assert!(
        input.contains(&format!("keyid=\"{}\"", thumbprint(key))),
        "{signer} computed another thumbprint: {input}"
    );
    assert!(input.contains("tag=\"web-bot-auth\""), "{input}");
}

/// A verdict's outcome and reason token.
pub fn verdict_token(v: &Verdict) -> (Outcome, Option<&'static str>) {
    (v.outcome(), v.reason().map(|r| r.token()))
}

/// The verified signature, attributed to [`AGENT`] with `key`'s thumbprint; panics saying our
/// core refused `what` otherwise.
pub fn expect_verified(v: Verdict, key: &SigningKey, what: &str) -> Verified {
    match v {
        Verdict::Verified(v) => {
            assert_eq!(v.agent_url, AGENT);
            assert_eq!(v.key_id, thumbprint(key));
            *v
        }
        other => panic!("our core refused {what}: {other:?}"),
    }
}

/// A named one-byte change to a signed request.
pub type Tamper = (&'static str, Box<dyn Fn(&mut HttpRequest)>);

/// One-byte changes to a signed request, each of which must fail verification: to the path,
/// to the authority, to the method when `method` names another one, and to the signature (its
/// byte `signature_byte` XORed with `mask`).
pub fn tampers(method: Option<&'static str>, signature_byte: usize, mask: u8) -> Vec<Tamper> {
    let mut t: Vec<Tamper> = vec![
        (
            "path",
            Box::new(|r: &mut HttpRequest| r.path = r.path.replacen("42", "43", 1)),
        ),
        (
            "authority",
            Box::new(|r: &mut HttpRequest| r.authority = r.authority.replacen("shop", "shoq", 1)),
        ),
    ];
    if let Some(m) = method {
        t.push((
            "method",
            Box::new(move |r: &mut HttpRequest| r.method = m.into()),
        ));
    }
    t.push((
        "signature",
        Box::new(move |r: &mut HttpRequest| {
            let sig = r.header("signature").unwrap();
            let (label, rest) = sig.split_once('=').unwrap();
            let mut bytes = STANDARD.decode(rest.trim_matches(':')).unwrap();
            bytes[signature_byte] ^= mask;
            set(
                r,
                "signature",
                &format!("{label}=:{}:", STANDARD.encode(bytes)),
            );
        }),
    ));
    t
}

/// `req` verifies with a reference implementation (`theirs`) and with our core (`ours`); then
/// each tamper, applied to a copy of it, is refused by the reference and is a bad signature for
/// our core.
pub fn assert_tampers_fail<T>(
    origin: &str,
    req: &HttpRequest,
    tampers: Vec<Tamper>,
    theirs: impl Fn(&HttpRequest) -> Result<T, String>,
    ours: impl Fn(&HttpRequest) -> Verdict,
) {
    if let Err(e) = theirs(req) {
        panic!("{origin}: untampered: {e}");
    }
    assert_eq!(ours(req).outcome(), Outcome::Verified, "{origin}");
    for (what, tamper) in tampers {
        let mut t = req.clone();
        tamper(&mut t);
        assert!(
            theirs(&t).is_err(),
            "{origin}/{what}: the package accepted it"
        );
        assert_eq!(
            verdict_token(&ours(&t)),
            (Outcome::Invalid, Some("bad_signature")),
            "{origin}/{what}"
        );
    }
}

/// The Ed25519 private key of `seed`, as the signer takes any key.
pub fn ed25519_key(seed: u8) -> PrivateKey {
    PrivateKey::Ed25519(signing_key(seed))
}

/// The filter pinning `keys` for [`AGENT`], in enforce mode with replay protection; `extra` is
/// more of the configuration's members, each followed by a comma.
pub fn pinned_config(keys: &[&PrivateKey], extra: &str) -> Config {
    let jwks: Vec<String> = keys.iter().map(|k| k.public_jwk().to_json()).collect();
    Config::from_json(
        format!(
            r#"{{"mode":"enforce",{extra}"agents":[{{"name":"A","url":"{AGENT}","keys":[{}]}}]}}"#,
            jwks.join(",")
        )
        .as_bytes(),
    )
    .unwrap()
}

/// A replay table for [`through_filter`].
pub fn replay_table() -> MemoryReplay {
    MemoryReplay::new(4096, [3; 32])
}

/// One request through the filter's request path at `now`, with the keys of `config` and the
/// replay table `replay`: its status (200 when passed on) and the reason it got (or its result
/// when it has none).
pub fn through_filter(
    config: &Config,
    replay: &MemoryReplay,
    headers: Vec<(String, String)>,
    now: i64,
) -> (u16, String) {
    let mut host = RecordingHost::new(headers, now);
    let action = on_request_headers(
        &mut host,
        config,
        &mut KeyCache::new(config),
        &mut &*replay,
        true,
    );
    let status = match action {
        Action::Continue => 200,
        Action::Stop => host.sent.as_ref().map_or(0, |s| s.status),
        other => panic!("{other:?}"),
    };
    let reason = host
        .header_values("x-web-bot-auth-reason")
        .first()
        .map_or_else(
            || host.header_values("x-web-bot-auth-result")[0].to_string(),
            |r| r.to_string(),
        );
    (status, reason)
}
