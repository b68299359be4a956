//! Interoperability with the reference implementation, the npm `web-bot-auth` package
//! (cloudflare/web-bot-auth, pinned in `tests/interop/node/package.json`), driven through
//! `tests/interop/node/sign.mjs` and `verify.mjs`.
//!
//! Needs `node` (or `WBA_NODE`) and `npm ci` in `tests/interop/node`. Without `node_modules`
//! the tests skip with a message, unless `WBA_REQUIRE_INTEROP=1`, which makes them fail.
//!
//! Documented deviation of the package (0.1.3, with http-message-sig 0.2.0) from RFC 9421:
//! for a covered field with the `key` parameter (`"signature-agent";key="sig1"`) it signs the
//! whole field value (`sig1="https://..."`) instead of the serialized dictionary member
//! (`"https://..."`, RFC 9421 section 2.1.2). So the dictionary form of `Signature-Agent` does
//! not interoperate in either direction; the legacy form (a bare string covered as plain
//! `"signature-agent"`, which is what the package sends by default) does, and so does a
//! dictionary covered as plain `"signature-agent"` (the whole field; the member keyed by the
//! label names the agent). The tests below pin these facts: the first by reconstructing the base
//! the package actually signed.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, SigningKey};
use serde_json::{json, Value};

use common::interop::{node_available as available, run_node, verifier_answer};
use common::{
    assert_tampers_fail, expect_verified, headers_json, now, our_signed, private_jwk, request,
    ring, set, take_signature_headers, tampers, verdict_token, verify_job,
};
use wba_filter::policy::Policy;
use wba_filter::request::HttpRequest;
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::verify_request;

const SEED: [u8; 32] = [
    0x8e, 0x21, 0x5a, 0xc7, 0x03, 0x9f, 0x64, 0xb8, 0x1d, 0xe2, 0x47, 0x70, 0xaa, 0x0c, 0x95, 0x3e,
    0xd6, 0x12, 0x89, 0x5b, 0xf4, 0x2a, 0x60, 0xc1, 0x7e, 0x08, 0xb5, 0x33, 0x9a, 0x4f, 0xe1, 0x76,
];

fn key() -> SigningKey {
    SigningKey::from_bytes(&SEED)
}

/// Signs `request()` with the package; `components: None` lets the package choose.
fn node_signed(agent_header: &str, components: Option<Value>) -> HttpRequest {
    let mut req = request();
    let created = now();
    let mut job = json!({
        "method": req.method,
        "url": req.target_uri(),
        "headers": headers_json(&req),
        "jwk": private_jwk(&key()),
        "created": created,
        "expires": created + 300,
        "signature_agent": agent_header,
        "label": "sig1",
    });
    if let Some(c) = components {
        job["components"] = c;
    }
    let out = run_node("sign.mjs", &job);
    take_signature_headers(&mut req, &out, "the package", &key());
    req
}

fn node_verifies(req: &HttpRequest) -> Result<(), String> {
    verifier_answer(
        "verify.mjs",
        run_node("verify.mjs", &verify_job(req, &key())),
    )
    .map(drop)
}

fn ours(req: &HttpRequest) -> Verdict {
    verify_request(req, &Policy::default(), &ring("Node Agent", &key()), now())
}

fn assert_ours_verified(req: &HttpRequest) {
    expect_verified(ours(req), &key(), "the package's signature");
}

const LEGACY: &str = "\"https://agent.example\"";
const DICT: &str = "sig1=\"https://agent.example\"";

fn full_components() -> Value {
    json!(["@authority", "@method", "@path", "signature-agent"])
}

#[test]
fn node_signature_with_package_defaults_verifies_in_our_core() {
    if !available() {
        return;
    }
    // The package's default: ("@authority" "signature-agent") with the legacy string form.
    let req = node_signed(LEGACY, None);
    assert!(req
        .header("signature-input")
        .unwrap()
        .starts_with("sig1=(\"@authority\" \"signature-agent\");"));
    node_verifies(&req).unwrap();
    assert_ours_verified(&req);
}

#[test]
fn node_signature_covering_method_and_path_verifies_in_our_core() {
    if !available() {
        return;
    }
    let req = node_signed(LEGACY, Some(full_components()));
    node_verifies(&req).unwrap();
    assert_ours_verified(&req);
}

#[test]
fn our_legacy_signature_verifies_with_node() {
    if !available() {
        return;
    }
    let req = our_signed(&key(), true);
    assert_eq!(
        verdict_token(&ours(&req)),
        (Outcome::Verified, None),
        "our own signature"
    );
    node_verifies(&req).unwrap();
}

#[test]
fn one_byte_tampers_fail_in_both() {
    if !available() {
        return;
    }
    for (origin, req) in [
        ("node", node_signed(LEGACY, Some(full_components()))),
        ("ours", our_signed(&key(), true)),
    ] {
        assert_tampers_fail(origin, &req, tampers(None, 7, 0x01), node_verifies, ours);
        // The agent URL one byte off: the package's base changes; ours never attributes it.
        let mut t = req.clone();
        set(&mut t, "signature-agent", "\"https://agenu.example\"");
        assert!(node_verifies(&t).is_err(), "{origin}/agent");
        assert_ne!(ours(&t).outcome(), Outcome::Verified, "{origin}/agent");
    }
}

/// Deviation: with `;key=` the package signs the whole field, not the member. Shown by
/// rebuilding the two candidate bases and checking which one the signature is over.
#[test]
fn deviation_node_signs_the_whole_field_for_key_parameter() {
    if !available() {
        return;
    }
    let components = json!([
        "@authority",
        {"name": "signature-agent", "parameters": {"key": "sig1"}}
    ]);
    let req = node_signed(DICT, Some(components));
    let input = req.header("signature-input").unwrap();
    let params = input.strip_prefix("sig1=").unwrap();
    assert!(params.starts_with("(\"@authority\" \"signature-agent\";key=\"sig1\");"));
    let sig = req.header("signature").unwrap();
    let sig = STANDARD
        .decode(sig.strip_prefix("sig1=:").unwrap().trim_end_matches(':'))
        .unwrap();
    let sig = Signature::from_slice(&sig).unwrap();
    let base = |agent_value: &str| {
        format!(
            "\"@authority\": shop.example\n\"signature-agent\";key=\"sig1\": {agent_value}\n\"@signature-params\": {params}"
        )
    };
    let vk = key().verifying_key();
    // What RFC 9421 section 2.1.2 says the line holds: the member's serialized value.
    assert!(vk.verify_strict(base(LEGACY).as_bytes(), &sig).is_err());
    // What the package signed: the whole Signature-Agent field.
    assert!(vk.verify_strict(base(DICT).as_bytes(), &sig).is_ok());
    // So our core (RFC-conformant) rejects it, and the package accepts its own signature.
    assert_eq!(
        verdict_token(&ours(&req)),
        (Outcome::Invalid, Some("bad_signature"))
    );
    node_verifies(&req).unwrap();
    // And the other way: our RFC-conformant dictionary-form signature fails with the package.
    let ours_dict = our_signed(&key(), false);
    assert_eq!(ours(&ours_dict).outcome(), Outcome::Verified);
    assert_eq!(
        node_verifies(&ours_dict),
        Err("invalid signature".to_string())
    );
}

/// A dictionary-form header covered as plain `"signature-agent"` (what the package does when
/// given a dictionary header and left to its defaults) signs the whole field, which is valid
/// RFC 9421 and covers every member: our core attributes the request to the member keyed by the
/// signature's label.
#[test]
fn dictionary_header_with_plain_coverage_verifies_with_the_labels_member() {
    if !available() {
        return;
    }
    let req = node_signed(DICT, None);
    node_verifies(&req).unwrap();
    assert_ours_verified(&req);
}
