//! Verification outcomes and reasons, one behaviour per test, on requests signed by our signer.
#![allow(clippy::unwrap_used, clippy::panic)]
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;

use ed25519_dalek::SigningKey;

use common::{public, set, sign_into, signing_key, thumbprint, AGENT};
use wba_filter::agent_url::AgentId;
use wba_filter::component::Component;
use wba_filter::jwk::{Jwk, Key};
use wba_filter::keyring::{AgentKeys, KeyRing};
use wba_filter::policy::Policy;
use wba_filter::request::HttpRequest;
use wba_filter::sign::{sign_request, SignOptions};
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::{verify_request, verify_traced, Trace};

const NOW: i64 = 1_800_000_000;

fn ring() -> KeyRing {
    common::ring("Example Agent", &signing_key(1))
}

fn request() -> HttpRequest {
    HttpRequest::from_parts(
        "GET",
        "https",
        "shop.example",
        "/items?id=7",
        vec![
            ("host".into(), "shop.example".into()),
            ("x-extra".into(), "a".into()),
        ],
    )
}

fn signed_with(opts: &SignOptions, seed: u8) -> HttpRequest {
    let mut req = request();
    sign_into(&mut req, &signing_key(seed), opts);
    req
}

fn opts() -> SignOptions {
    SignOptions::web_bot_auth(AGENT, NOW - 10, 300)
}

fn signed() -> HttpRequest {
    signed_with(&opts(), 1)
}

fn verdict(req: &HttpRequest) -> Verdict {
    verify_request(req, &Policy::default(), &ring(), NOW)
}

fn reason(v: &Verdict) -> (&'static str, &'static str) {
    (
        v.outcome().token(),
        v.reason().map(|r| r.token()).unwrap_or("-"),
    )
}

#[test]
fn fresh_signature_is_verified_with_identity() {
    let v = verdict(&signed());
    let Verdict::Verified(v) = v else {
        panic!("{v:?}")
    };
    assert_eq!(v.agent_url, AGENT);
    assert_eq!(v.agent_name, "Example Agent");
    assert_eq!(v.key_id, public(1).thumbprint);
    assert_eq!(v.label, "sig1");
    assert_eq!(
        v.covered,
        r#"("@authority" "@method" "@path" "signature-agent";key="sig1")"#
    );
    assert_eq!(v.expires, NOW + 290);
}

#[test]
fn legacy_signature_agent_is_verified() {
    let mut o = opts();
    o.legacy_agent = true;
    assert_eq!(verdict(&signed_with(&o, 1)).outcome(), Outcome::Verified);
}

#[test]
fn agent_url_is_compared_normalized() {
    let mut o = opts();
    o.agent_url = Some("HTTPS://Agent.Example:443/".into());
    let v = verdict(&signed_with(&o, 1));
    let Verdict::Verified(v) = v else {
        panic!("{v:?}")
    };
    assert_eq!(v.agent_url, AGENT);
}

#[test]
fn no_signature_headers_is_unsigned() {
    assert_eq!(verdict(&request()), Verdict::Unsigned);
}

#[test]
fn other_tags_are_unsigned() {
    let mut o = opts();
    o.tag = Some("something-else".into());
    assert_eq!(verdict(&signed_with(&o, 1)), Verdict::Unsigned);
    o.tag = None;
    assert_eq!(verdict(&signed_with(&o, 1)), Verdict::Unsigned);
}

#[test]
fn garbage_in_each_header_is_malformed() {
    for name in ["signature-input", "signature", "signature-agent"] {
        let mut req = signed();
        set(&mut req, name, "sig1=(((");
        assert_eq!(reason(&verdict(&req)), ("invalid", "malformed"), "{name}");
    }
    let mut req = signed();
    req.remove_header("signature");
    assert_eq!(reason(&verdict(&req)), ("invalid", "malformed"));
    let mut req = signed();
    set(&mut req, "signature", "other=:AAAA:");
    assert_eq!(reason(&verdict(&req)), ("invalid", "malformed"));
}

#[test]
fn tampered_components_are_bad_signatures() {
    let mut req = signed();
    req.authority = "evil.example".into();
    assert_eq!(reason(&verdict(&req)), ("invalid", "bad_signature"));
    let mut req = signed();
    req.path = "/other".into();
    assert_eq!(reason(&verdict(&req)), ("invalid", "bad_signature"));
    let mut req = signed();
    req.method = "POST".into();
    assert_eq!(reason(&verdict(&req)), ("invalid", "bad_signature"));
    let mut o = opts();
    o.components.push("x-extra".into());
    let mut req = signed_with(&o, 1);
    set(&mut req, "x-extra", "b");
    assert_eq!(reason(&verdict(&req)), ("invalid", "bad_signature"));
    // An uncovered part may change.
    let mut req = signed();
    req.query = Some("id=8".into());
    assert_eq!(verdict(&req).outcome(), Outcome::Verified);
}

#[test]
fn a_removed_covered_header_is_missing_component() {
    let mut o = opts();
    o.components.push("x-extra".into());
    let mut req = signed_with(&o, 1);
    req.remove_header("x-extra");
    assert_eq!(reason(&verdict(&req)), ("invalid", "missing_component"));
}

#[test]
fn freshness() {
    let mut o = opts();
    o.created = NOW - 1000;
    o.expires = NOW - 100;
    assert_eq!(
        reason(&verdict(&signed_with(&o, 1))),
        ("invalid", "expired")
    );
    // Within the skew: still accepted.
    o.expires = NOW - 30;
    assert_eq!(verdict(&signed_with(&o, 1)).outcome(), Outcome::Verified);
    o.created = NOW + 100;
    o.expires = NOW + 200;
    assert_eq!(
        reason(&verdict(&signed_with(&o, 1))),
        ("invalid", "created_in_future")
    );
    o.created = NOW + 30;
    assert_eq!(verdict(&signed_with(&o, 1)).outcome(), Outcome::Verified);
    o.created = NOW - 10;
    o.expires = NOW + 100_000;
    assert_eq!(
        reason(&verdict(&signed_with(&o, 1))),
        ("invalid", "validity_too_long")
    );
}

#[test]
fn missing_parameters() {
    let mut req = signed();
    let input = req.header("signature-input").unwrap();
    let stripped = input.replace(&format!(";expires={}", NOW + 290), "");
    set(&mut req, "signature-input", &stripped);
    assert_eq!(reason(&verdict(&req)), ("invalid", "missing_parameter"));
    let mut o = opts();
    o.keyid = None;
    let req = signed_with(&o, 1);
    let input = req.header("signature-input").unwrap();
    let start = input.find(";keyid=").unwrap();
    let end = input[start + 1..].find(';').unwrap() + start + 1;
    let mut req = req;
    set(
        &mut req,
        "signature-input",
        &format!("{}{}", &input[..start], &input[end..]),
    );
    assert_eq!(reason(&verdict(&req)), ("invalid", "missing_parameter"));
}

#[test]
fn missing_required_coverage() {
    let mut o = opts();
    o.components = vec!["@method".into(), "@path".into()];
    assert_eq!(
        reason(&verdict(&signed_with(&o, 1))),
        ("invalid", "missing_component")
    );
    // @target-uri is an accepted alternative to @authority.
    o.components = vec!["@target-uri".into()];
    assert_eq!(verdict(&signed_with(&o, 1)).outcome(), Outcome::Verified);
    // Signature-Agent must be covered.
    let mut req = signed();
    let input = req
        .header("signature-input")
        .unwrap()
        .replace("key=\"sig1\"", "key=\"other\"");
    set(&mut req, "signature-input", &input);
    assert_eq!(reason(&verdict(&req)), ("invalid", "missing_component"));
    // The operator's required components.
    let policy = Policy {
        required_components: vec![Component::parse("@query").unwrap()],
        ..Policy::default()
    };
    let v = verify_request(&signed(), &policy, &ring(), NOW);
    assert_eq!(reason(&v), ("invalid", "missing_component"));
}

/// Issue 10: without the header there is no URL to look the key up at, which is a lack of
/// information (unverified), not evidence against the signature (it was `missing_component`).
#[test]
fn signature_agent_header_absent() {
    let mut req = signed();
    req.remove_header("signature-agent");
    assert_eq!(reason(&verdict(&req)), ("unverified", "unknown_agent"));
}

#[test]
fn unsupported_algorithm() {
    // HMAC (RFC 9421 B.2.5) and names this verifier does not know, whatever the key.
    for alg in [
        "hmac-sha256",
        "rsa-v1_5-sha256",
        "ecdsa-p384-sha384",
        "ED25519",
    ] {
        let mut o = opts();
        o.alg = Some(alg.into());
        assert_eq!(
            reason(&verdict(&signed_with(&o, 1))),
            ("invalid", "unsupported_algorithm"),
            "{alg}"
        );
    }
    // A key of a type with no algorithm here (EC P-384): its signatures cannot be checked.
    let mut r = KeyRing::default();
    let p384 = Jwk::from_json(r#"{"kty":"EC","crv":"P-384","x":"AQAB","y":"AQAB"}"#)
        .unwrap()
        .to_key()
        .unwrap();
    let mut o = opts();
    o.keyid = Some(p384.thumbprint.to_string());
    o.omit_alg = true;
    r.add("p384", AgentId::parse(AGENT).unwrap(), vec![p384]);
    let v = verify_request(&signed_with(&o, 1), &Policy::default(), &r, NOW);
    assert_eq!(reason(&v), ("invalid", "unsupported_algorithm"));
}

/// An `alg` that names another of the three algorithms than the key's: the signature cannot be
/// this key's, whatever its bytes (`bad_signature`, found before any cryptography).
#[test]
fn alg_contradicting_the_key_is_a_bad_signature() {
    for alg in ["ecdsa-p256-sha256", "rsa-pss-sha512"] {
        let mut o = opts();
        o.alg = Some(alg.into());
        let mut trace = Trace::default();
        let v = verify_traced(
            &signed_with(&o, 1),
            &Policy::default(),
            &ring(),
            NOW,
            Some(&mut trace),
        );
        assert_eq!(reason(&v), ("invalid", "bad_signature"), "{alg}");
        let Verdict::Failed(f) = v else { panic!() };
        assert!(f.detail.contains("contradicts the key"), "{}", f.detail);
        assert!(trace.bases.is_empty(), "no signature base was built");
    }
    // Without alg the key decides; with the key's own name it verifies.
    let mut o = opts();
    o.omit_alg = true;
    assert_eq!(verdict(&signed_with(&o, 1)).outcome(), Outcome::Verified);
    o.omit_alg = false;
    o.alg = Some("ed25519".into());
    assert_eq!(verdict(&signed_with(&o, 1)).outcome(), Outcome::Verified);
}

#[test]
fn unknown_agent_key_and_unavailable_directory() {
    let mut o = opts();
    o.agent_url = Some("https://stranger.example".into());
    assert_eq!(
        reason(&verdict(&signed_with(&o, 1))),
        ("unverified", "unknown_agent")
    );
    assert_eq!(
        reason(&verdict(&signed_with(&opts(), 2))),
        ("unverified", "unknown_key")
    );
    let mut r = KeyRing::default();
    r.agents.push(AgentKeys {
        name: "x".into(),
        id: AgentId::parse(AGENT).unwrap(),
        keys: vec![],
        loaded: false,
    });
    let v = verify_request(&signed(), &Policy::default(), &r, NOW);
    assert_eq!(reason(&v), ("unverified", "directory_unavailable"));
    let Verdict::Failed(f) = v else { panic!() };
    assert_eq!(f.agent.as_deref(), Some(AGENT));
    // A type the verifier does not know is ignored, never guessed.
    let mut req = signed();
    set(
        &mut req,
        "signature-agent",
        "sig1=\"https://agent.example\";type=mystery",
    );
    assert_eq!(reason(&verdict(&req)), ("unverified", "unknown_agent"));
}

#[test]
fn keys_are_looked_up_by_agent_and_keyid_together() {
    // Agent B trusts key 2. A request claiming agent A but signed with B's key must not verify.
    let mut r = ring();
    r.add(
        "B",
        AgentId::parse("https://b.example").unwrap(),
        vec![public(2)],
    );
    let v = verify_request(&signed_with(&opts(), 2), &Policy::default(), &r, NOW);
    assert_eq!(reason(&v), ("unverified", "unknown_key"));
    let mut o = opts();
    o.agent_url = Some("https://b.example".into());
    let v = verify_request(&signed_with(&o, 2), &Policy::default(), &r, NOW);
    let Verdict::Verified(v) = v else {
        panic!("{v:?}")
    };
    assert_eq!(v.agent_name, "B");
}

#[test]
fn nonce_policy() {
    let policy = Policy {
        require_nonce: true,
        ..Policy::default()
    };
    let v = verify_request(&signed(), &policy, &ring(), NOW);
    assert_eq!(reason(&v), ("invalid", "nonce_required"));
    let mut o = opts();
    o.nonce = Some("abc".into());
    let v = verify_request(&signed_with(&o, 1), &policy, &ring(), NOW);
    let Verdict::Verified(v) = v else {
        panic!("{v:?}")
    };
    assert_eq!(
        v.replay_key,
        wba_filter::verdict::ReplayKey::Nonce("abc".into())
    );
}

#[test]
fn test_keys_need_permission() {
    // The RFC 9421 B.1.4 key, as a pinned key of the agent.
    let test = Key::from_jwk_json(
        r#"{"kty":"OKP","crv":"Ed25519","x":"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}"#,
    )
    .unwrap();
    let sk = SigningKey::from_bytes(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU",
        )
        .unwrap()
        .try_into()
        .unwrap(),
    );
    let mut r = KeyRing::default();
    r.add("t", AgentId::parse(AGENT).unwrap(), vec![test]);
    let mut req = request();
    for (n, v) in sign_request(&req.clone(), &sk, &opts()).unwrap().pairs() {
        req.add_header(&n, &v);
    }
    assert_eq!(
        reason(&verify_request(&req, &Policy::default(), &r, NOW)),
        ("invalid", "test_key")
    );
    let allow = Policy {
        allow_test_keys: true,
        ..Policy::default()
    };
    assert_eq!(
        verify_request(&req, &allow, &r, NOW).outcome(),
        Outcome::Verified
    );
}

#[test]
fn one_valid_signature_among_several_is_enough() {
    let mut req = signed();
    // Add a second, invalid label (naming the agent's key, signed by another: a bad
    // signature) and a non-Web-Bot-Auth label.
    let mut o2 = opts();
    o2.label = "sig2".into();
    o2.keyid = Some(thumbprint(&signing_key(1)));
    let h2 = sign_request(&request(), &signing_key(3), &o2).unwrap();
    let input = format!(
        "{}, {}, other=(\"@method\");created=1;keyid=\"x\"",
        req.header("signature-input").unwrap(),
        h2.signature_input
    );
    let sig = format!(
        "{}, {}, other=:AAAA:",
        req.header("signature").unwrap(),
        h2.signature
    );
    let agent = format!(
        "{}, sig2=\"{AGENT}\"",
        req.header("signature-agent").unwrap()
    );
    set(&mut req, "signature-input", &input);
    set(&mut req, "signature", &sig);
    set(&mut req, "signature-agent", &agent);
    let v = verdict(&req);
    let Verdict::Verified(v) = v else {
        panic!("{v:?}")
    };
    assert_eq!(v.label, "sig1");
}

#[test]
fn invalid_outranks_unverified_across_labels() {
    // sig1 from an unknown agent (unverified), sig2 tampered (invalid): the request is invalid.
    let mut o1 = opts();
    o1.agent_url = Some("https://stranger.example".into());
    let base = request();
    let h1 = sign_request(&base, &signing_key(1), &o1).unwrap();
    let mut o2 = opts();
    o2.label = "sig2".into();
    o2.created = NOW - 1000;
    o2.expires = NOW - 500;
    let h2 = sign_request(&base, &signing_key(1), &o2).unwrap();
    let mut req = base;
    req.add_header(
        "signature-input",
        &format!("{}, {}", h1.signature_input, h2.signature_input),
    );
    req.add_header("signature", &format!("{}, {}", h1.signature, h2.signature));
    req.add_header(
        "signature-agent",
        &format!(
            "{}, {}",
            h1.signature_agent.unwrap(),
            h2.signature_agent.unwrap()
        ),
    );
    let v = verdict(&req);
    assert_eq!(reason(&v), ("invalid", "expired"));
    let Verdict::Failed(f) = v else { panic!() };
    assert_eq!(f.label.as_deref(), Some("sig2"));
}

#[test]
fn split_header_lines_are_combined() {
    let req = signed();
    let mut split = req.clone();
    let agent = req.header("signature-agent").unwrap();
    split.remove_header("signature-agent");
    split.add_header("Signature-Agent", "other=\"https://x.example\"");
    split.add_header("SIGNATURE-AGENT", &agent);
    // The covered member is the same, so the signature still verifies.
    assert_eq!(verdict(&split).outcome(), Outcome::Verified);
}

#[test]
fn trace_records_each_check_and_the_base() {
    let mut trace = Trace::default();
    let mut req = signed();
    req.path = "/tampered".into();
    let v = verify_traced(&req, &Policy::default(), &ring(), NOW, Some(&mut trace));
    assert_eq!(reason(&v), ("invalid", "bad_signature"));
    let names: Vec<_> = trace.checks.iter().map(|c| (c.name, c.passed)).collect();
    assert_eq!(names.last(), Some(&("ed25519 signature", false)));
    assert!(names.contains(&("freshness", true)));
    assert_eq!(trace.bases.len(), 1);
    assert!(trace.bases[0].1.contains("\"@path\": /tampered\n"));
}
