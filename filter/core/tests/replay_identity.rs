//! Replay identity by content, over the whole request path: a signature is a replay when what
//! it signed was accepted before, whatever its encoding (ECDSA's `s` or `n - s`, RSA-PSS's
//! random salt), and every Web Bot Auth signature of an accepted request is recorded.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::{ed25519_key as ed25519, pinned_config as config};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use wba_filter::config::Config;
use wba_filter::private_key::PrivateKey;
use wba_filter::replay::MemoryReplay;
use wba_filter::request::HttpRequest;
use wba_filter::request_filter::request_from_headers;
use wba_filter::sign::{sign_request, SignOptions, SignatureKey as _, SignedHeaders};

const NOW: i64 = 1_800_000_000;
const AGENT: &str = "https://agent.example";
const RSA_KEYS: &str = include_str!("data/rsa_test_keys.json");

fn ecdsa() -> PrivateKey {
    PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[2; 32]).unwrap())
}

fn rsa() -> PrivateKey {
    let jwk = serde_json::from_str::<Value>(RSA_KEYS).unwrap()["rsa2048"].clone();
    PrivateKey::from_jwk(&jwk).unwrap()
}

fn head() -> Vec<(String, String)> {
    [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "shop.example"),
        (":path", "/items/42"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

fn request() -> HttpRequest {
    request_from_headers(&head(), "x-web-bot-auth-")
}

fn opts(label: &str, nonce: Option<&str>) -> SignOptions {
    SignOptions {
        label: label.into(),
        nonce: nonce.map(str::to_string),
        ..SignOptions::web_bot_auth(AGENT, NOW - 5, 300)
    }
}

fn sign(key: &PrivateKey, label: &str, nonce: Option<&str>) -> SignedHeaders {
    sign_request(&request(), key, &opts(label, nonce)).unwrap()
}

/// Joins several signatures' fields, one line each.
fn carrying(sigs: &[&SignedHeaders]) -> Vec<(String, String)> {
    let join = |f: &dyn Fn(&SignedHeaders) -> Option<String>| {
        sigs.iter()
            .filter_map(|s| f(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut h = head();
    h.push((
        "signature-agent".into(),
        join(&|s| s.signature_agent.clone()),
    ));
    h.push((
        "signature-input".into(),
        join(&|s| Some(s.signature_input.clone())),
    ));
    h.push(("signature".into(), join(&|s| Some(s.signature.clone()))));
    h
}

/// One request through the filter at [`NOW`].
fn send(config: &Config, replay: &MemoryReplay, headers: Vec<(String, String)>) -> (u16, String) {
    common::through_filter(config, replay, headers, NOW)
}

fn table() -> MemoryReplay {
    common::replay_table()
}

/// The signature bytes of a one-signature `Signature` field, replaced by `f` of them.
fn with_signature(
    headers: &[(String, String)],
    f: impl Fn(Vec<u8>) -> Vec<u8>,
) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            if n != "signature" {
                return (n.clone(), v.clone());
            }
            let (label, rest) = v.split_once('=').unwrap();
            let bytes = STANDARD.decode(rest.trim_matches(':')).unwrap();
            (
                n.clone(),
                format!("{label}=:{}:", STANDARD.encode(f(bytes))),
            )
        })
        .collect()
}

/// `n - s`: the other valid encoding of an ECDSA P-256 signature `r || s`.
fn negate_s(sig: Vec<u8>) -> Vec<u8> {
    let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
    let (r, s) = parsed.split_scalars();
    let flipped = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    flipped.to_bytes().to_vec()
}

#[test]
fn an_ecdsa_signature_with_n_minus_s_is_a_replay() {
    let key = ecdsa();
    let c = config(&[&key], "");
    let original = carrying(&[&sign(&key, "sig1", None)]);
    let malleated = with_signature(&original, negate_s);
    assert_ne!(original, malleated);
    // The malleated signature is valid on its own (a fresh table accepts it)...
    assert_eq!(send(&c, &table(), malleated.clone()).0, 200);
    // ...and, after the original, it is the same signature again.
    let replay = table();
    assert_eq!(
        send(&c, &replay, original.clone()),
        (200, "verified".into())
    );
    assert_eq!(send(&c, &replay, malleated), (429, "replayed".into()));
    assert_eq!(send(&c, &replay, original), (429, "replayed".into()));
}

#[test]
fn an_rsa_pss_signature_over_the_same_content_is_a_replay() {
    let key = rsa();
    let c = config(&[&key], "");
    let (first, second) = (sign(&key, "sig1", None), sign(&key, "sig1", None));
    // PSS is randomized: two signatures of one base differ.
    assert_ne!(first.signature, second.signature);
    let replay = table();
    assert_eq!(send(&c, &replay, carrying(&[&first])).0, 200);
    assert_eq!(
        send(&c, &replay, carrying(&[&second])),
        (429, "replayed".into())
    );
}

#[test]
fn content_of_another_request_is_not_a_replay() {
    let key = ed25519(1);
    let c = config(&[&key], "");
    let replay = table();
    assert_eq!(
        send(&c, &replay, carrying(&[&sign(&key, "sig1", None)])).0,
        200
    );
    // Signed a second later: another signature base, another signature.
    let mut o = opts("sig2", None);
    o.created += 1;
    let later = sign_request(&request(), &key, &o).unwrap();
    assert_eq!(send(&c, &replay, carrying(&[&later])).0, 200);
}

#[test]
fn every_signature_of_an_accepted_request_is_recorded() {
    let (k1, k2) = (ed25519(1), ed25519(2));
    let c = config(&[&k1, &k2], "");
    // With nonces and without (then what each signed is its identity).
    for (n1, n2, n3) in [
        (Some("nonce-one"), Some("nonce-two"), Some("nonce-three")),
        (None, None, None),
    ] {
        let replay = table();
        let s1 = sign(&k1, "sig1", n1);
        let s2 = sign(&k2, "sig2", n2);
        assert_eq!(
            send(&c, &replay, carrying(&[&s1, &s2])),
            (200, "verified".into())
        );
        // Each alone, and both again, were used.
        assert_eq!(
            send(&c, &replay, carrying(&[&s2])),
            (429, "replayed".into())
        );
        assert_eq!(
            send(&c, &replay, carrying(&[&s1])),
            (429, "replayed".into())
        );
        assert_eq!(
            send(&c, &replay, carrying(&[&s1, &s2])),
            (429, "replayed".into())
        );
        // A request refused as a replay records nothing of its own: a fresh signature sent
        // with a used one is still fresh alone.
        let s3 = sign(&k2, "sig3", n3);
        assert_eq!(
            send(&c, &replay, carrying(&[&s1, &s3])),
            (429, "replayed".into())
        );
        assert_eq!(
            send(&c, &replay, carrying(&[&s3])),
            (200, "verified".into())
        );
    }
}

#[test]
fn a_second_signature_that_does_not_verify_is_not_recorded() {
    let (mine, victims) = (ed25519(1), ed25519(2));
    let c = config(&[&mine, &victims], "");
    let replay = table();
    // A signature naming the victim's key and nonce, made with another key: bad_signature,
    // never valid, so not recorded beside the valid one (no one burns another's nonce).
    let mut forged = opts("sig2", Some("victims-nonce"));
    forged.keyid = Some(victims.public_jwk().thumbprint().unwrap().to_string());
    let forged = sign_request(&request(), &ed25519(9), &forged).unwrap();
    let both = carrying(&[&sign(&mine, "sig1", Some("mine")), &forged]);
    assert_eq!(send(&c, &replay, both), (200, "verified".into()));
    let own = carrying(&[&sign(&victims, "sig1", Some("victims-nonce"))]);
    assert_eq!(send(&c, &replay, own), (200, "verified".into()));
}

#[test]
fn a_second_signature_that_could_verify_later_keeps_the_request_from_being_accepted() {
    let (known, new) = (ed25519(1), ed25519(2));
    let c = config(&[&known], "");
    let replay = table();
    // Signed with a key this verifier does not know yet (an agent rotating keys): accepting
    // the request would leave that signature unrecorded, replayable once the key is known.
    let both = carrying(&[&sign(&known, "sig1", None), &sign(&new, "sig2", None)]);
    assert_eq!(send(&c, &replay, both.clone()), (200, "unknown_key".into()));
    // Once the key is known, both verify and both are recorded.
    let c = config(&[&known, &new], "");
    assert_eq!(send(&c, &replay, both), (200, "verified".into()));
    let second = carrying(&[&sign(&new, "sig2", None)]);
    assert_eq!(send(&c, &replay, second), (429, "replayed".into()));
}
