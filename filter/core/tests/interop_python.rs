//! Interoperability with the PyPI `http-message-signatures` package (pinned in
//! `tests/interop/python/requirements.txt`), through `tests/interop/python/wba_sign.py` (the
//! signer the end-to-end tests use) and `wba_verify.py`.
//!
//! The interpreter is `WBA_PYTHON`, else `<repo>/.venv/bin/python` when present, else `python3`.
//! When it cannot import the package the tests skip with a message, unless
//! `WBA_REQUIRE_INTEROP=1`, which makes them fail.
//!
//! The package implements the `key` parameter per RFC 9421 section 2.1.2, so both
//! `Signature-Agent` forms interoperate both ways.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use common::interop::{python_available as available, run_python, verifier_answer};
use common::{
    assert_tampers_fail, expect_verified, now, our_signed, private_jwk, request, ring, set,
    take_signature_headers, tampers, thumbprint, verdict_token, verify_job, AGENT,
};
use wba_filter::policy::Policy;
use wba_filter::request::HttpRequest;
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::verify_request;

const SEED: [u8; 32] = [
    0x5c, 0x0f, 0xa3, 0x71, 0xe8, 0x26, 0x9d, 0x44, 0xbb, 0x12, 0x6e, 0xf5, 0x30, 0x87, 0xc9, 0x1a,
    0x62, 0xd4, 0x0b, 0x9e, 0x37, 0xa8, 0x55, 0xf0, 0x2c, 0x81, 0x4b, 0xe6, 0x19, 0x7d, 0xc3, 0x08,
];

fn key() -> SigningKey {
    SigningKey::from_bytes(&SEED)
}

/// A private JWK file for `wba_sign.py --jwk`.
fn jwk_file() -> PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("interop-python-{}.jwk", std::process::id()));
        std::fs::write(&p, private_jwk(&key()).to_string()).unwrap();
        p
    })
    .clone()
}

/// Signs `request()` with `wba_sign.py` through its CLI, with extra CLI arguments.
fn python_signed(extra: &[&str]) -> HttpRequest {
    let mut req = request();
    let url = req.target_uri();
    let jwk = jwk_file();
    let mut args = vec![
        "wba_sign.py",
        "--method",
        "GET",
        "--url",
        &url,
        "--jwk",
        jwk.to_str().unwrap(),
        "--agent",
        AGENT,
        "--header",
        "Accept: text/html",
    ];
    args.extend_from_slice(extra);
    let out = run_python(&args, None);
    take_signature_headers(&mut req, &out, "wba_sign.py", &key());
    req
}

fn python_verifies(req: &HttpRequest) -> Result<Value, String> {
    let out = run_python(&["wba_verify.py"], Some(&verify_job(req, &key())));
    verifier_answer("wba_verify.py", out)
}

fn ours(req: &HttpRequest) -> Verdict {
    verify_request(
        req,
        &Policy::default(),
        &ring("Python Agent", &key()),
        now(),
    )
}

fn assert_ours_verified(req: &HttpRequest, label: &str, covered: &str) {
    let v = expect_verified(ours(req), &key(), "wba_sign.py's signature");
    assert_eq!(v.label, label);
    assert_eq!(v.covered, covered);
}

#[test]
fn python_dictionary_form_verifies_in_our_core() {
    if !available() {
        return;
    }
    let req = python_signed(&[]);
    assert_eq!(
        req.header("signature-agent").as_deref(),
        Some("sig1=\"https://agent.example\"")
    );
    python_verifies(&req).unwrap();
    assert_ours_verified(
        &req,
        "sig1",
        r#"("@authority" "@method" "@path" "signature-agent";key="sig1")"#,
    );
}

#[test]
fn python_legacy_form_verifies_in_our_core() {
    if !available() {
        return;
    }
    let req = python_signed(&["--legacy", "--components", "@authority"]);
    assert_eq!(
        req.header("signature-agent").as_deref(),
        Some("\"https://agent.example\"")
    );
    python_verifies(&req).unwrap();
    assert_ours_verified(&req, "sig1", r#"("@authority" "signature-agent")"#);
}

#[test]
fn python_explicit_times_label_nonce_and_field() {
    if !available() {
        return;
    }
    let created = (now() - 5).to_string();
    let expires = (now() + 60).to_string();
    let req = python_signed(&[
        "--label",
        "bot-a",
        "--created",
        &created,
        "--expires",
        &expires,
        "--nonce",
        "bm9uY2UtMQ",
        "--components",
        "@authority,@target-uri,accept",
    ]);
    python_verifies(&req).unwrap();
    match ours(&req) {
        Verdict::Verified(v) => {
            assert_eq!(v.label, "bot-a");
            assert_eq!(v.created.to_string(), created);
            assert_eq!(v.expires.to_string(), expires);
            assert_eq!(
                v.replay_key,
                wba_filter::verdict::ReplayKey::Nonce("bm9uY2UtMQ".into())
            );
        }
        other => panic!("{other:?}"),
    }
    // A covered ordinary field, one byte changed.
    let mut t = req.clone();
    set(&mut t, "accept", "text/htmm");
    assert!(python_verifies(&t).is_err());
    assert_eq!(
        verdict_token(&ours(&t)),
        (Outcome::Invalid, Some("bad_signature"))
    );
}

#[test]
fn our_signatures_verify_with_python() {
    if !available() {
        return;
    }
    let req = our_signed(&key(), false);
    let out = python_verifies(&req).unwrap();
    assert_eq!(
        out["covered"],
        json!([
            "\"@authority\"",
            "\"@method\"",
            "\"@path\"",
            "\"signature-agent\";key=\"sig1\""
        ])
    );
    assert_eq!(out["parameters"]["keyid"], json!(thumbprint(&key())));
    let req = our_signed(&key(), true);
    python_verifies(&req).unwrap();
}

#[test]
fn one_byte_tampers_fail_in_both() {
    if !available() {
        return;
    }
    for (origin, req) in [
        ("python/dictionary", python_signed(&[])),
        (
            "python/legacy",
            python_signed(&["--legacy", "--components", "@authority,@method,@path"]),
        ),
        ("ours/dictionary", our_signed(&key(), false)),
        ("ours/legacy", our_signed(&key(), true)),
    ] {
        assert_tampers_fail(
            origin,
            &req,
            tampers(Some("PUT"), 33, 0x80),
            python_verifies,
            ours,
        );
        let mut t = req.clone();
        let agent = t.header("signature-agent").unwrap();
        set(
            &mut t,
            "signature-agent",
            &agent.replacen("agent.", "agenu.", 1),
        );
        assert!(python_verifies(&t).is_err(), "{origin}/agent");
        assert_ne!(ours(&t).outcome(), Outcome::Verified, "{origin}/agent");
    }
}
