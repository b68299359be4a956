#![allow(clippy::unwrap_used, clippy::panic)]
//! Every case of the independently checked vectors (`../shared/vectors/web-bot-auth.json`,
//! copied to `tests/data/`), signature bases compared byte for byte.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::Value;
use wba_filter::agent_url::AgentId;
use wba_filter::base::{signature_base, Message};
use wba_filter::directory::{
    parse_key_set, verify_directory_response, KidRule, ProofCheck, ProofError,
};
use wba_filter::jwk::Key;
use wba_filter::keyring::KeyRing;
use wba_filter::policy::Policy;
use wba_filter::request::{HttpRequest, HttpResponse};
use wba_filter::signature::parse_signature;
use wba_filter::signature_input::parse_signature_input;
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::verify_request;

const VECTORS: &str = include_str!("data/web-bot-auth.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn headers(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn request(v: &Value) -> HttpRequest {
    HttpRequest {
        method: v["method"].as_str().unwrap().into(),
        scheme: v["scheme"].as_str().unwrap_or("https").into(),
        authority: v["authority"].as_str().unwrap().into(),
        path: v["path"].as_str().unwrap().into(),
        query: v["query"].as_str().map(str::to_string),
        headers: headers(&v["headers"]),
    }
}

fn test_key() -> Key {
    let v = vectors();
    Key::from_jwk_json(&v["keys"]["test-key-ed25519"]["public_jwk"].to_string()).unwrap()
}

/// Each case with its derivation applied: (case, request, now).
fn cases() -> Vec<(Value, HttpRequest, i64)> {
    let v = vectors();
    let all = v["cases"].as_array().unwrap().clone();
    all.iter()
        .map(|c| {
            let parent = match c["derived_from"].as_str() {
                Some(p) => all.iter().find(|x| x["name"] == p).unwrap().clone(),
                None => c.clone(),
            };
            let mut req = request(&parent["request"]);
            if let Some(a) = c["authority"].as_str() {
                req.authority = a.into();
                req.remove_header("host");
                req.add_header("host", a);
            }
            if let Some(a) = c["signature_agent"].as_str() {
                req.remove_header("signature-agent");
                req.add_header("signature-agent", a);
            }
            let now = c["now"].as_i64().or(parent["now"].as_i64()).unwrap();
            (c.clone(), req, now)
        })
        .collect()
}

/// The request and clock of the named vector case.
fn case(name: &str) -> (HttpRequest, i64) {
    let (_, req, now) = cases()
        .into_iter()
        .find(|(c, _, _)| c["name"] == name)
        .unwrap();
    (req, now)
}

/// The vectors' agent, `https://signature-agent.test`, trusted with `keys`.
fn vector_ring(keys: Vec<Key>) -> KeyRing {
    let mut ring = KeyRing::default();
    ring.add(
        "vector agent",
        AgentId::parse("https://signature-agent.test").unwrap(),
        keys,
    );
    ring
}

#[test]
fn signature_bases_match_byte_for_byte() {
    let mut n = 0;
    for (case, req, _) in cases() {
        let Some(expected) = case["expected_signature_base"].as_str() else {
            continue;
        };
        let inputs = parse_signature_input(&req.header("signature-input").unwrap()).unwrap();
        let base = signature_base(Message::Request(&req), &inputs[0]).unwrap();
        assert_eq!(base, expected, "case {}", case["name"]);
        n += 1;
    }
    assert_eq!(n, 3);
}

#[test]
fn rfc9421_b26_signature_verifies_but_is_not_web_bot_auth() {
    let (req, now) = case("rfc9421-b26-ed25519");
    let inputs = parse_signature_input(&req.header("signature-input").unwrap()).unwrap();
    let sigs = parse_signature(&req.header("signature").unwrap()).unwrap();
    let base = signature_base(Message::Request(&req), &inputs[0]).unwrap();
    assert_eq!(test_key().verify(base.as_bytes(), &sigs[0].1), Ok(()));
    let mut tampered = base.into_bytes();
    tampered[0] ^= 1;
    assert!(test_key().verify(&tampered, &sigs[0].1).is_err());
    let ring = vector_ring(vec![test_key()]);
    let policy = Policy {
        allow_test_keys: true,
        ..Policy::default()
    };
    assert_eq!(verify_request(&req, &policy, &ring, now), Verdict::Unsigned);
}

#[test]
fn web_bot_auth_cases_have_their_expected_verdict() {
    let mut n = 0;
    for (case, req, now) in cases() {
        if case["name"] == "rfc9421-b26-ed25519" {
            continue;
        }
        let keys = if case["name"] == "wba-dictionary-unknown-key" {
            vec![]
        } else {
            vec![test_key()]
        };
        let mut ring = vector_ring(keys);
        if case["name"] == "wba-dictionary-agent-changed" {
            // bad_signature is only reachable when the verifier holds this key for the substituted
            // URL too (keys are found by (agent, keyid), never keyid alone): the case shows that
            // the Signature-Agent member is bound into the signature. With the key held for
            // signature-agent.test alone the answer is unknown_agent (see the next test).
            ring.add(
                "other agent",
                AgentId::parse("https://evil.test").unwrap(),
                vec![test_key()],
            );
        }
        // The dictionary vector is valid until 2124: its window needs a generous maximum.
        let policy = Policy {
            allow_test_keys: true,
            max_validity_seconds: 4_000_000_000,
            ..Policy::default()
        };
        let verdict = verify_request(&req, &policy, &ring, now);
        let name = case["name"].as_str().unwrap();
        assert_eq!(
            verdict.outcome().token(),
            case["expected"].as_str().unwrap(),
            "{name}: {verdict:?}"
        );
        match &verdict {
            Verdict::Verified(v) => {
                assert_eq!(
                    v.agent_url,
                    case["expected_agent"].as_str().unwrap(),
                    "{name}"
                );
                assert_eq!(v.key_id, "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U");
                assert_eq!(v.label, "sig2");
            }
            Verdict::Failed(f) => {
                assert_eq!(
                    f.reason.token(),
                    case["expected_reason"].as_str().unwrap(),
                    "{name}"
                );
            }
            Verdict::Unsigned => panic!("{name}: unsigned"),
        }
        n += 1;
    }
    assert_eq!(n, 7);
}

#[test]
fn substituted_agent_without_keys_is_unknown_agent() {
    let (req, now) = case("wba-dictionary-agent-changed");
    let ring = vector_ring(vec![test_key()]);
    let policy = Policy {
        allow_test_keys: true,
        max_validity_seconds: 4_000_000_000,
        ..Policy::default()
    };
    let verdict = verify_request(&req, &policy, &ring, now);
    assert_eq!(verdict.outcome(), Outcome::Unverified);
    assert_eq!(verdict.reason().map(|r| r.token()), Some("unknown_agent"));
}

#[test]
fn vector_key_is_refused_as_a_test_key_by_default() {
    let (req, now) = case("wba-legacy-string-agent");
    let ring = vector_ring(vec![test_key()]);
    let verdict = verify_request(&req, &Policy::default(), &ring, now);
    assert_eq!(verdict.outcome(), Outcome::Invalid);
    assert_eq!(verdict.reason().map(|r| r.token()), Some("test_key"));
}

#[test]
fn dictionary_vector_exceeds_default_max_validity() {
    let (req, now) = case("wba-dictionary-agent");
    let ring = vector_ring(vec![test_key()]);
    let policy = Policy {
        allow_test_keys: true,
        ..Policy::default()
    };
    let verdict = verify_request(&req, &policy, &ring, now);
    assert_eq!(
        verdict.reason().map(|r| r.token()),
        Some("validity_too_long")
    );
}

fn directory_parts() -> (HttpRequest, HttpResponse, Vec<u8>, i64, String) {
    let v = vectors();
    let d = &v["directory_response"];
    let mut r = d["request"].clone();
    r["scheme"] = "https".into();
    let req = request(&r);
    let resp = HttpResponse {
        status: 200,
        headers: headers(&d["response_headers"]),
    };
    let body = d["response_body"].as_str().unwrap().as_bytes().to_vec();
    (
        req,
        resp,
        body,
        d["now"].as_i64().unwrap(),
        d["expected_signature_base"].as_str().unwrap().to_string(),
    )
}

/// The thumbprint of the key that signs the `directory_response` vector.
const VECTOR_KEY: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";

/// The vector's one proof (it names [`VECTOR_KEY`]) with this result.
fn proof(result: Result<(), ProofError>) -> ProofCheck {
    ProofCheck {
        keyid: Some(VECTOR_KEY.into()),
        result,
    }
}

#[test]
fn directory_response_possession_proof() {
    let (req, resp, body, now, expected_base) = directory_parts();
    let inputs = parse_signature_input(&resp.header("signature-input").unwrap()).unwrap();
    let base = signature_base(
        Message::Response {
            request: &req,
            response: &resp,
        },
        &inputs[0],
    )
    .unwrap();
    assert_eq!(base, expected_base);
    let keys = parse_key_set(&body, KidRule::Thumbprint, 32).unwrap().keys;
    assert_eq!(
        verify_directory_response(&req, &resp, &body, &keys, now, 60),
        vec![proof(Ok(()))]
    );
}

#[test]
fn directory_response_proof_failures() {
    let (req, resp, body, now, _) = directory_parts();
    let keys = parse_key_set(&body, KidRule::Thumbprint, 32).unwrap().keys;
    // One byte of the body changed: the content-digest no longer matches.
    let mut tampered = body.clone();
    tampered[2] = b'K';
    assert_eq!(
        verify_directory_response(&req, &resp, &tampered, &keys, now, 60),
        vec![proof(Err(ProofError::DigestMismatch))]
    );
    // A verifier clock an hour before created: the proof is created in the future.
    assert_eq!(
        verify_directory_response(&req, &resp, &body, &keys, now - 3600, 60),
        vec![proof(Err(ProofError::CreatedInFuture))]
    );
    // Another authority: the signature no longer matches.
    let mut other = req.clone();
    other.authority = "other.test".into();
    assert_eq!(
        verify_directory_response(&other, &resp, &body, &keys, now, 60),
        vec![proof(Err(ProofError::BadSignature))]
    );
    // A directory that does not list the signing key.
    assert_eq!(
        verify_directory_response(&req, &resp, &body, &[], now, 60),
        vec![proof(Err(ProofError::UnknownKey(VECTOR_KEY.into())))]
    );
}

#[test]
fn vectors_copy_matches_shared_when_present() {
    #[cfg(not(target_arch = "wasm32"))]
    if let Ok(shared) = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/vectors/web-bot-auth.json"
    )) {
        assert_eq!(
            shared, VECTORS,
            "tests/data/web-bot-auth.json is out of date"
        );
    }
}
