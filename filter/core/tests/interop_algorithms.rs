//! Interoperability for ecdsa-p256-sha256 and rsa-pss-sha512, both ways: the PyPI
//! `http-message-signatures` package (tests/interop/python, ECDSA P-256 and RSA-PSS) and the npm
//! `web-bot-auth` package (tests/interop/node, RSA-PSS: the package has no ECDSA signer) sign,
//! our core verifies; our signer signs, they verify. A one-byte change fails in both.
//!
//! Skips like the other interop tests when the packages are missing, unless
//! `WBA_REQUIRE_INTEROP=1`. The npm package signs a covered dictionary member's whole field, so
//! its requests use the legacy `Signature-Agent` form (see tests/interop_node.rs).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use serde_json::{json, Value};

use common::interop::{node_available, python_available, run_node, run_python, verifier_answer};
use common::{headers_json, now, request, set, AGENT};
use wba_filter::agent_url::AgentId;
use wba_filter::jwk::Key;
use wba_filter::keyring::KeyRing;
use wba_filter::policy::Policy;
use wba_filter::private_key::PrivateKey;
use wba_filter::request::HttpRequest;
use wba_filter::sign::{sign_request, SignOptions, SignatureKey as _};
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::verify_request;

fn ec_key() -> PrivateKey {
    PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[0x5a; 32]).unwrap())
}

fn rsa_key() -> PrivateKey {
    let keys: Value = serde_json::from_str(include_str!("data/rsa_test_keys.json")).unwrap();
    PrivateKey::from_jwk(&keys["rsa2048"]).unwrap()
}

fn public_jwk(key: &PrivateKey) -> Value {
    serde_json::from_str(&key.public_jwk().to_json()).unwrap()
}

fn ours(req: &HttpRequest, key: &PrivateKey) -> Verdict {
    let mut ring = KeyRing::default();
    let public = Key::from_jwk_json(&key.public_jwk().to_json()).unwrap();
    ring.add("Agent", AgentId::parse(AGENT).unwrap(), vec![public]);
    verify_request(req, &Policy::default(), &ring, now())
}

fn assert_verified(req: &HttpRequest, key: &PrivateKey, who: &str) {
    match ours(req, key) {
        Verdict::Verified(v) => {
            assert_eq!(v.key_id, key.public_jwk().thumbprint().unwrap(), "{who}")
        }
        other => panic!("{who}: {other:?}\n{:?}", req.headers),
    }
}

/// Sets the three headers a reference signer printed.
fn take_headers(req: &mut HttpRequest, out: &Value) {
    for name in ["Signature-Agent", "Signature-Input", "Signature"] {
        let v = out[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name}: {out}"));
        set(req, &name.to_ascii_lowercase(), v);
    }
}

fn jwk_file(key: &PrivateKey, name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("interop-alg-{name}-{}.jwk", std::process::id()));
    std::fs::write(&p, key.to_jwk().to_string()).unwrap();
    p
}

fn python_signed(key: &PrivateKey, name: &str) -> HttpRequest {
    let mut req = request();
    let url = req.target_uri();
    let file = jwk_file(key, name);
    let out = run_python(
        &[
            "wba_sign.py",
            "--url",
            &url,
            "--jwk",
            file.to_str().unwrap(),
            "--agent",
            AGENT,
            "--header",
            "Accept: text/html",
        ],
        None,
    );
    take_headers(&mut req, &out);
    req
}

fn job(req: &HttpRequest, key: &PrivateKey) -> Value {
    json!({
        "method": req.method,
        "url": req.target_uri(),
        "headers": headers_json(req),
        "jwk": public_jwk(key),
    })
}

fn python_verifies(req: &HttpRequest, key: &PrivateKey) -> Result<Value, String> {
    verifier_answer(
        "wba_verify.py",
        run_python(&["wba_verify.py"], Some(&job(req, key))),
    )
}

fn node_verifies(req: &HttpRequest, key: &PrivateKey) -> Result<Value, String> {
    verifier_answer("verify.mjs", run_node("verify.mjs", &job(req, key)))
}

fn our_signed(key: &PrivateKey, legacy: bool) -> HttpRequest {
    let mut req = request();
    let mut o = SignOptions::web_bot_auth(AGENT, now(), 300);
    o.legacy_agent = legacy;
    for (n, v) in sign_request(&req, key, &o).unwrap().pairs() {
        set(&mut req, &n, &v);
    }
    req
}

/// A one-byte change of the signature: refused by both.
fn tampered(req: &HttpRequest) -> HttpRequest {
    let mut t = req.clone();
    let sig = t.header("signature").unwrap();
    // Change a base64 character inside the byte sequence (after "sig1=:").
    let mut chars: Vec<char> = sig.chars().collect();
    let i = 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    set(&mut t, "signature", &chars.into_iter().collect::<String>());
    t
}

#[test]
fn python_ecdsa_and_rsa_pss_signatures_verify_in_our_core() {
    if !python_available() {
        return;
    }
    for (key, alg) in [
        (ec_key(), "ecdsa-p256-sha256"),
        (rsa_key(), "rsa-pss-sha512"),
    ] {
        let req = python_signed(&key, alg);
        assert!(
            req.header("signature-input")
                .unwrap()
                .contains(&format!("alg=\"{alg}\"")),
            "{alg}"
        );
        python_verifies(&req, &key).unwrap();
        assert_verified(&req, &key, alg);
        let t = tampered(&req);
        assert!(python_verifies(&t, &key).is_err(), "{alg}");
        assert_eq!(ours(&t, &key).outcome(), Outcome::Invalid, "{alg}");
    }
}

#[test]
fn our_ecdsa_and_rsa_pss_signatures_verify_with_python() {
    if !python_available() {
        return;
    }
    for key in [ec_key(), rsa_key()] {
        for legacy in [false, true] {
            let req = our_signed(&key, legacy);
            let out = python_verifies(&req, &key).unwrap();
            assert_eq!(out["parameters"]["alg"], json!(key.algorithm().name()));
            assert!(python_verifies(&tampered(&req), &key).is_err());
        }
    }
}

#[test]
fn npm_rsa_pss_signatures_verify_in_our_core_and_ours_in_npm() {
    if !node_available() {
        return;
    }
    let key = rsa_key();
    // The package's RSA-PSS signer is chosen by the JWK's alg, PS512 (which ours writes).
    assert_eq!(key.to_jwk()["alg"], "PS512");
    let mut req = request();
    let created = now();
    let out = run_node(
        "sign.mjs",
        &json!({
            "method": req.method,
            "url": req.target_uri(),
            "headers": headers_json(&req),
            "jwk": key.to_jwk(),
            "created": created,
            "expires": created + 300,
            "signature_agent": format!("\"{AGENT}\""),
        }),
    );
    take_headers(&mut req, &out);
    assert!(req
        .header("signature-input")
        .unwrap()
        .contains("alg=\"rsa-pss-sha512\""));
    node_verifies(&req, &key).unwrap();
    assert_verified(&req, &key, "npm");
    assert_eq!(ours(&tampered(&req), &key).outcome(), Outcome::Invalid);

    let ours_signed = our_signed(&key, true);
    node_verifies(&ours_signed, &key).unwrap();
    assert!(node_verifies(&tampered(&ours_signed), &key).is_err());
}
