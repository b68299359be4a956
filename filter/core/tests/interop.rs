//! Interoperability with an independent implementation: the crates.io `web-bot-auth` crate
//! (Cloudflare's Rust implementation), both ways, with fresh signatures and a fresh key.
//!
//! - Their signer (current time, their parameters, their `Signature-Agent` coverage) verifies in
//!   our core.
//! - Our signer's output verifies with their `WebBotAuthVerifier`.
//! - A one-byte change to a covered component, to the agent member, or to the signature fails
//!   in both.
//! - Both `Signature-Agent` forms: the dictionary with `"signature-agent";key="<member>"` and the
//!   legacy bare string with plain `"signature-agent"`.
//!
//! Their crate asks the application for every component value, so the component values given
//! to it here are derived by this file's own code (RFC 9421 sections 2.1, 2.1.2 and 2.2), not by
//! our core's `base` module: a shared mistake in the two would not go unnoticed.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/theirs.rs"]
mod theirs;

use std::time::Duration;

use ed25519_dalek::SigningKey;
use web_bot_auth::components::HTTPFieldParametersSet;
use web_bot_auth::components::{
    CoveredComponent, DerivedComponent, HTTPField, HTTPFieldParameters,
};
use web_bot_auth::keyring::{Algorithm, KeyRing as TheirKeyRing, Thumbprintable};
use web_bot_auth::message_signatures::MessageSigner;
use web_bot_auth::{SignatureAgentLink, WebBotAuthVerifier};

use common::{
    expect_verified, now, our_signed, request as base_request, ring, set, tampers, thumbprint,
    verdict_token, AGENT,
};
use theirs::Theirs;
use wba_filter::agent_url::AgentId;
use wba_filter::keyring::KeyRing;
use wba_filter::policy::Policy;
use wba_filter::request::HttpRequest;
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::{verify_traced, Trace};

/// A fresh Ed25519 key (fixed random-looking bytes; not an RFC 9421 test key).
const SEED: [u8; 32] = [
    0x3b, 0xd1, 0x72, 0x0e, 0x9a, 0x55, 0xc4, 0x18, 0xe7, 0x2f, 0x80, 0x6d, 0xb3, 0x41, 0x9c, 0x07,
    0x5e, 0xfa, 0x26, 0x8b, 0xd0, 0x13, 0x6f, 0xa4, 0x39, 0xc2, 0x75, 0x0b, 0xee, 0x58, 0x91, 0x4d,
];

fn key() -> SigningKey {
    SigningKey::from_bytes(&SEED)
}

/// The public key as their crate takes it.
fn their_jwk() -> Thumbprintable {
    Thumbprintable::OKP {
        crv: "Ed25519".into(),
        x: common::x(&key()),
    }
}

/// The key's thumbprint as their crate computes it.
fn their_thumbprint() -> String {
    their_jwk().b64_thumbprint()
}

fn our_ring() -> KeyRing {
    let r = ring("Interop Agent", &key());
    assert!(!r.agents[0].keys[0].is_test_key());
    r
}

fn their_ring() -> TheirKeyRing {
    let mut r = TheirKeyRing::default();
    r.try_import_jwk(&their_jwk()).unwrap();
    r
}

fn derived(d: DerivedComponent) -> CoveredComponent {
    CoveredComponent::Derived(d)
}

fn agent_component(key: Option<&str>) -> CoveredComponent {
    CoveredComponent::HTTP(HTTPField {
        name: "signature-agent".into(),
        parameters: HTTPFieldParametersSet(
            key.map(|k| vec![HTTPFieldParameters::Key(k.into())])
                .unwrap_or_default(),
        ),
    })
}

/// The `Signature-Agent` form under test.
#[derive(Clone, Copy, Debug)]
enum Form {
    /// `<member>="https://..."`, covered as `"signature-agent";key="<member>"`.
    Dictionary(&'static str),
    /// `"https://..."`, covered as plain `"signature-agent"`.
    Legacy,
}

impl Form {
    fn header(self) -> String {
        match self {
            Form::Dictionary(m) => format!("{m}=\"{AGENT}\""),
            Form::Legacy => format!("\"{AGENT}\""),
        }
    }
}

/// Signs `base_request()` with their `MessageSigner` (which stamps `created` with the current
/// time), covering `@authority`, `@method`, `@path` and the agent member.
fn their_signed(form: Form, label: &str) -> HttpRequest {
    let mut req = base_request();
    set(&mut req, "signature-agent", &form.header());
    let cover = vec![
        derived(DerivedComponent::Authority { req: false }),
        derived(DerivedComponent::Method { req: false }),
        derived(DerivedComponent::Path { req: false }),
        agent_component(match form {
            Form::Dictionary(m) => Some(m),
            Form::Legacy => None,
        }),
    ];
    let mut msg = Theirs {
        req: &req,
        cover,
        label,
        registered: None,
    };
    MessageSigner {
        keyid: their_thumbprint(),
        nonce: "aW50ZXJvcC1ub25jZS0x".into(),
        tag: "web-bot-auth".into(),
    }
    .generate_signature_headers_content(
        &mut msg,
        Duration::from_secs(300),
        Algorithm::Ed25519,
        &SEED,
    )
    .unwrap();
    let (input, sig) = msg.registered.unwrap();
    set(&mut req, "signature-input", &input);
    set(&mut req, "signature", &sig);
    req
}

/// Signs `base_request()` with our signer, current time.
fn our_signed_as(form: Form) -> HttpRequest {
    let req = our_signed(&key(), matches!(form, Form::Legacy));
    assert_eq!(
        req.header("signature-agent").as_deref(),
        Some(form.header().as_str())
    );
    req
}

fn ours(req: &HttpRequest) -> Verdict {
    let mut trace = Trace::default();
    let v = verify_traced(
        req,
        &Policy::default(),
        &our_ring(),
        now(),
        Some(&mut trace),
    );
    if v.outcome() != Outcome::Verified {
        eprintln!("our verifier: {v:?}\nbases: {:?}", trace.bases);
    }
    v
}

/// Their verifier's answer: parse (label selection, `Signature-Agent` handling) then verify.
fn theirs(req: &HttpRequest) -> Result<Vec<SignatureAgentLink>, String> {
    let msg = Theirs {
        req,
        cover: vec![],
        label: "",
        registered: None,
    };
    let v = WebBotAuthVerifier::parse(&msg).map_err(|e| format!("parse: {e}"))?;
    let advisory = v
        .get_parsed_label()
        .base
        .parameters
        .details
        .possibly_insecure(|_| false);
    if advisory.is_expired != Some(false) {
        return Err("expired or no expires".into());
    }
    let agents = v.get_signature_agents().clone();
    v.verify(&their_ring(), None)
        .map_err(|e| format!("verify: {e}"))?;
    Ok(agents)
}

fn assert_ours_verified(req: &HttpRequest, label: &str) {
    let v = expect_verified(ours(req), &key(), "a valid signature");
    assert_eq!(v.agent_name, "Interop Agent");
    assert_eq!(v.key_id, their_thumbprint());
    assert_eq!(v.label, label);
}

fn assert_ours_bad_signature(req: &HttpRequest, what: &str) {
    let v = ours(req);
    assert_eq!(
        verdict_token(&v),
        (Outcome::Invalid, Some("bad_signature")),
        "{what}: {v:?}"
    );
}

fn one_byte_agent_tamper(r: &mut HttpRequest) {
    let a = r.header("signature-agent").unwrap();
    set(r, "signature-agent", &a.replacen("agent", "agenu", 1));
}

#[test]
fn thumbprints_agree() {
    assert_eq!(thumbprint(&key()), their_thumbprint());
}

#[test]
fn their_signature_verifies_in_our_core_dictionary_form() {
    let req = their_signed(Form::Dictionary("sig1"), "sig1");
    // Their own verifier accepts it and resolves their reading of Signature-Agent.
    assert_eq!(
        theirs(&req).unwrap(),
        vec![SignatureAgentLink::External(AGENT.into())]
    );
    assert_ours_verified(&req, "sig1");
}

#[test]
fn their_signature_verifies_in_our_core_legacy_form() {
    let req = their_signed(Form::Legacy, "sig1");
    assert_eq!(
        theirs(&req).unwrap(),
        vec![SignatureAgentLink::External(AGENT.into())]
    );
    assert_ours_verified(&req, "sig1");
}

#[test]
fn their_signature_with_a_member_not_named_after_the_label() {
    // As in the draft's own vector (label sig2, member agent2): both take the covered member.
    let req = their_signed(Form::Dictionary("agent2"), "sig2");
    assert_eq!(
        theirs(&req).unwrap(),
        vec![SignatureAgentLink::External(AGENT.into())]
    );
    assert_ours_verified(&req, "sig2");
}

#[test]
fn our_signature_verifies_with_theirs_dictionary_form() {
    let req = our_signed_as(Form::Dictionary("sig1"));
    assert!(req
        .header("signature-input")
        .unwrap()
        .contains("\"signature-agent\";key=\"sig1\""));
    assert_eq!(
        theirs(&req).unwrap(),
        vec![SignatureAgentLink::External(AGENT.into())]
    );
    assert_ours_verified(&req, "sig1");
}

#[test]
fn our_signature_verifies_with_theirs_legacy_form() {
    let req = our_signed_as(Form::Legacy);
    assert_eq!(
        theirs(&req).unwrap(),
        vec![SignatureAgentLink::External(AGENT.into())]
    );
    assert_ours_verified(&req, "sig1");
}

#[test]
fn one_byte_tampers_fail_in_both_directions() {
    let signed: Vec<(&str, HttpRequest)> = vec![
        (
            "theirs/dictionary",
            their_signed(Form::Dictionary("sig1"), "sig1"),
        ),
        ("theirs/legacy", their_signed(Form::Legacy, "sig1")),
        ("ours/dictionary", our_signed_as(Form::Dictionary("sig1"))),
        ("ours/legacy", our_signed_as(Form::Legacy)),
    ];
    for (origin, req) in &signed {
        assert!(theirs(req).is_ok(), "{origin}: untampered must verify");
        assert_eq!(ours(req).outcome(), Outcome::Verified, "{origin}");
        // The ways to spoil a signed request by one byte, each of which must fail in both
        // verifiers.
        for (what, tamper) in tampers(Some("GEt"), 10, 0x01) {
            let mut t = req.clone();
            tamper(&mut t);
            assert_ne!(&t, req, "{origin}/{what}: the tamper changed nothing");
            assert!(
                theirs(&t).is_err(),
                "{origin}/{what}: their verifier accepted it"
            );
            assert_ours_bad_signature(&t, &format!("{origin}/{what}"));
        }
        // The agent URL, one byte off: their verifier sees a different signed value; ours
        // never attributes the request to the new URL (it is not a trusted agent here).
        let mut t = req.clone();
        one_byte_agent_tamper(&mut t);
        assert!(
            theirs(&t).is_err(),
            "{origin}/agent: their verifier accepted it"
        );
        let v = ours(&t);
        assert_ne!(v.outcome(), Outcome::Verified, "{origin}/agent: {v:?}");
        // With the tampered URL trusted under the same key, it is the signature that fails.
        let mut ring = our_ring();
        ring.add(
            "Other",
            AgentId::parse("https://agenu.example").unwrap(),
            ring.agents[0].keys.clone(),
        );
        let v = wba_filter::verify::verify_request(&t, &Policy::default(), &ring, now());
        assert_eq!(
            verdict_token(&v),
            (Outcome::Invalid, Some("bad_signature")),
            "{origin}/agent: {v:?}"
        );
    }
}
