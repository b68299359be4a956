//! The three algorithms end to end in the core: ed25519, ecdsa-p256-sha256 (r || s, DER
//! refused, either S) and rsa-pss-sha512 (2048 to 8192 bits), signed by our signer, listed in
//! one directory, used for the directory's own possession proofs, and refused when an `alg`
//! contradicts the key.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use sfv::{BareItem, Key as SfKey, Parameters};

use common::{set, AGENT};
use wba_filter::agent_url::AgentId;
use wba_filter::algorithm::Algorithm;
use wba_filter::directory::{
    build_key_set, content_digest, parse_key_set, verify_directory_response, KidRule, DIRECTORY_TAG,
};
use wba_filter::jwk::{Jwk, JwkError};
use wba_filter::keyring::KeyRing;
use wba_filter::policy::Policy;
use wba_filter::private_key::PrivateKey;
use wba_filter::request::{HttpRequest, HttpResponse};
use wba_filter::sign::{sign_request, sign_response, SignOptions, SignatureKey as _};
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::verify_request;

const NOW: i64 = 1_800_000_000;
const RSA_KEYS: &str = include_str!("data/rsa_test_keys.json");

fn rsa_jwk(name: &str) -> Value {
    serde_json::from_str::<Value>(RSA_KEYS).unwrap()[name].clone()
}

fn keys() -> Vec<PrivateKey> {
    vec![
        PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[1; 32])),
        PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[2; 32]).unwrap()),
        PrivateKey::from_jwk(&rsa_jwk("rsa2048")).unwrap(),
    ]
}

/// A directory body listing every key of [`keys`], plus a 1024-bit RSA key.
fn mixed_directory() -> Vec<u8> {
    let mut jwks: Vec<Jwk> = keys().iter().map(|k| k.public_jwk()).collect();
    let mut short = rsa_jwk("rsa1024");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        short.as_object_mut().unwrap().remove(private);
    }
    jwks.push(Jwk::from_value(&short).unwrap());
    build_key_set(&jwks).unwrap().into_bytes()
}

fn ring() -> KeyRing {
    let set = parse_key_set(&mixed_directory(), KidRule::Thumbprint, 16).unwrap();
    let mut r = KeyRing::default();
    r.add("Mixed", AgentId::parse(AGENT).unwrap(), set.keys);
    r
}

fn request() -> HttpRequest {
    HttpRequest::from_parts(
        "POST",
        "https",
        "shop.example",
        "/cart?item=7",
        vec![("host".into(), "shop.example".into())],
    )
}

fn signed(key: &PrivateKey, opts: &SignOptions) -> HttpRequest {
    let mut req = request();
    for (n, v) in sign_request(&req, key, opts).unwrap().pairs() {
        set(&mut req, &n, &v);
    }
    req
}

fn opts() -> SignOptions {
    SignOptions::web_bot_auth(AGENT, NOW - 5, 300)
}

fn verdict(req: &HttpRequest) -> Verdict {
    verify_request(req, &Policy::default(), &ring(), NOW)
}

fn tokens(v: &Verdict) -> (&'static str, Option<&'static str>) {
    (v.outcome().token(), v.reason().map(|r| r.token()))
}

/// The request's signature bytes, and the request with them replaced.
fn signature_of(req: &HttpRequest) -> Vec<u8> {
    let field = req.header("signature").unwrap();
    let b64 = field.split(":").nth(1).unwrap();
    STANDARD.decode(b64).unwrap()
}

fn with_signature(req: &HttpRequest, sig: &[u8]) -> HttpRequest {
    let mut r = req.clone();
    set(
        &mut r,
        "signature",
        &format!("sig1=:{}:", STANDARD.encode(sig)),
    );
    r
}

#[test]
fn a_mixed_directory_lists_three_usable_keys_and_skips_a_short_rsa_key() {
    let set = parse_key_set(&mixed_directory(), KidRule::Thumbprint, 16).unwrap();
    let algs: Vec<_> = set.keys.iter().map(|k| k.alg()).collect();
    assert_eq!(
        algs,
        vec![
            Some(Algorithm::Ed25519),
            Some(Algorithm::EcdsaP256Sha256),
            Some(Algorithm::RsaPssSha512)
        ]
    );
    assert_eq!(set.skipped.len(), 1);
    assert_eq!(set.skipped[0].index, 3);
    assert_eq!(set.skipped[0].error, JwkError::RsaKeySize(1024));
}

#[test]
fn each_algorithm_verifies_with_its_own_alg_and_without_one() {
    for key in keys() {
        let alg = key.algorithm();
        let req = signed(&key, &opts());
        assert!(
            req.header("signature-input")
                .unwrap()
                .contains(&format!("alg=\"{alg}\"")),
            "{alg}"
        );
        let v = verdict(&req);
        let Verdict::Verified(v) = v else {
            panic!("{alg}: {v:?}")
        };
        assert_eq!(v.key_id, key.public_jwk().thumbprint().unwrap());
        let mut o = opts();
        o.omit_alg = true;
        assert_eq!(
            verdict(&signed(&key, &o)).outcome(),
            Outcome::Verified,
            "{alg}"
        );
        // Tampered after signing: bad_signature for each.
        let mut t = req.clone();
        t.path = "/carts".into();
        assert_eq!(
            tokens(&verdict(&t)),
            ("invalid", Some("bad_signature")),
            "{alg}"
        );
    }
}

#[test]
fn an_alg_naming_another_algorithm_than_the_keys_fails() {
    for key in keys() {
        for other in Algorithm::ALL.into_iter().filter(|a| *a != key.algorithm()) {
            let mut o = opts();
            o.alg = Some(other.name().into());
            let v = verdict(&signed(&key, &o));
            assert_eq!(
                tokens(&v),
                ("invalid", Some("bad_signature")),
                "{} key, alg {other}",
                key.algorithm()
            );
        }
        let mut o = opts();
        o.alg = Some("hmac-sha256".into());
        assert_eq!(
            tokens(&verdict(&signed(&key, &o))),
            ("invalid", Some("unsupported_algorithm"))
        );
    }
}

#[test]
fn ecdsa_der_signatures_are_refused_and_high_s_is_accepted() {
    let key = &keys()[1];
    let req = signed(key, &opts());
    let raw = signature_of(&req);
    assert_eq!(raw.len(), 64);
    let sig = p256::ecdsa::Signature::from_slice(&raw).unwrap();
    // The same signature in DER (what many libraries emit by default): refused.
    let der = sig.to_der();
    assert_eq!(
        tokens(&verdict(&with_signature(&req, der.as_bytes()))),
        ("invalid", Some("bad_signature"))
    );
    // s replaced by n - s: an equally valid signature (no low-S rule in RFC 9421).
    let (r, s) = sig.split_scalars();
    let high = p256::ecdsa::Signature::from_scalars(r, -*s.as_ref()).unwrap();
    assert_eq!(
        verdict(&with_signature(&req, &high.to_bytes())).outcome(),
        Outcome::Verified
    );
    // Any other length: refused, never a panic.
    for len in [0, 1, 63, 65, 128] {
        assert_eq!(
            tokens(&verdict(&with_signature(&req, &vec![7; len]))),
            ("invalid", Some("bad_signature")),
            "{len}"
        );
    }
}

#[test]
fn rsa_signatures_of_the_wrong_length_or_salt_are_refused() {
    let key = &keys()[2];
    let req = signed(key, &opts());
    let sig = signature_of(&req);
    assert_eq!(sig.len(), 256);
    for bad in [
        &sig[1..],
        &[sig.clone(), vec![0]].concat()[..],
        &[0xff; 256][..],
    ] {
        assert_eq!(
            tokens(&verdict(&with_signature(&req, bad))),
            ("invalid", Some("bad_signature"))
        );
    }
    // RSA-PSS with a 32-byte salt (not rsa-pss-sha512's 64): refused.
    let PrivateKey::RsaPss(k) = key else { panic!() };
    use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
    let mut o = opts();
    o.keyid = Some(key.public_jwk().thumbprint().unwrap().into());
    let base = sign_request(&request(), key, &o).unwrap().base;
    let short_salt =
        rsa::pss::BlindedSigningKey::<sha2::Sha512>::new_with_salt_len((**k).clone(), 32)
            .sign_with_rng(&mut rand_core::OsRng, base.as_bytes())
            .to_vec();
    assert_eq!(
        tokens(&verdict(&with_signature(&req, &short_salt))),
        ("invalid", Some("bad_signature"))
    );
}

#[test]
fn a_signature_by_the_short_rsa_key_finds_no_key() {
    // The 1024-bit key is skipped from the directory: its keyid names no listed key.
    let mut short = rsa_jwk("rsa1024");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        short.as_object_mut().unwrap().remove(private);
    }
    let keyid: String = Jwk::from_value(&short)
        .unwrap()
        .thumbprint()
        .unwrap()
        .into();
    let mut o = opts();
    o.keyid = Some(keyid);
    // Signed with the 2048-bit key under the short key's keyid: the lookup fails first.
    let v = verdict(&signed(&keys()[2], &o));
    assert_eq!(tokens(&v), ("unverified", Some("unknown_key")));
}

/// A directory signed by each key: every proof verifies with the key the directory lists.
#[test]
fn directory_proofs_by_each_key_type_verify() {
    let body = mixed_directory();
    let listed = parse_key_set(&body, KidRule::Thumbprint, 16).unwrap().keys;
    let headers = vec![("content-digest".to_string(), content_digest(&body))];
    let response = HttpResponse {
        status: 200,
        headers: headers.clone(),
    };
    let request = HttpRequest::from_parts(
        "GET",
        "https",
        "agent.example",
        "/.well-known/http-message-signatures-directory",
        vec![],
    );
    let components = [
        "\"@authority\";req".to_string(),
        "content-digest".to_string(),
    ];
    let sign_all = |alg: &dyn Fn(&PrivateKey) -> Option<String>| {
        let (mut inputs, mut sigs) = (Vec::new(), Vec::new());
        for (i, key) in keys().iter().enumerate() {
            let mut params = Parameters::new();
            let mut put = |k: &str, v: BareItem| {
                params.insert(SfKey::from_string(k.into()).unwrap(), v);
            };
            put("created", BareItem::Integer((NOW - 5).try_into().unwrap()));
            put(
                "expires",
                BareItem::Integer((NOW + 300).try_into().unwrap()),
            );
            let keyid: String = key.public_jwk().thumbprint().unwrap().into();
            put(
                "keyid",
                BareItem::String(sfv::String::from_string(keyid).unwrap()),
            );
            put(
                "tag",
                BareItem::String(sfv::String::from_string(DIRECTORY_TAG.into()).unwrap()),
            );
            if let Some(a) = alg(key) {
                put(
                    "alg",
                    BareItem::String(sfv::String::from_string(a).unwrap()),
                );
            }
            let s = sign_response(
                &request,
                &response,
                key,
                &format!("p{i}"),
                &components,
                params,
            )
            .unwrap();
            inputs.push(s.signature_input);
            sigs.push(s.signature);
        }
        let mut signed = response.clone();
        signed
            .headers
            .push(("signature-input".into(), inputs.join(", ")));
        signed.headers.push(("signature".into(), sigs.join(", ")));
        signed
    };
    // With the key's own alg, or none.
    for alg in [
        &(|k: &PrivateKey| Some(k.algorithm().name().to_string()))
            as &dyn Fn(&PrivateKey) -> Option<String>,
        &|_: &PrivateKey| None,
    ] {
        let signed = sign_all(alg);
        let checks = verify_directory_response(&request, &signed, &body, &listed, NOW, 60);
        assert_eq!(checks.len(), 3);
        assert!(checks.iter().all(|c| c.result.is_ok()), "{checks:?}");
    }
    // An alg naming another algorithm than the key's: no proof.
    let wrong = sign_all(&|k: &PrivateKey| {
        Algorithm::ALL
            .into_iter()
            .find(|a| *a != k.algorithm())
            .map(|a| a.name().to_string())
    });
    let checks = verify_directory_response(&request, &wrong, &body, &listed, NOW, 60);
    assert_eq!(checks.len(), 3);
    assert!(
        checks
            .iter()
            .all(|c| c.result == Err(wba_filter::directory::ProofError::BadSignature)),
        "{checks:?}"
    );
    let signed = sign_all(&|_: &PrivateKey| None);
    let checks = verify_directory_response(&request, &signed, &body, &listed, NOW, 60);
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c.result.is_ok()), "{checks:?}");
    // Bound to the authority: the same proofs for another one fail, for each algorithm.
    let other = HttpRequest::from_parts("GET", "https", "evil.example", "/", vec![]);
    let checks = verify_directory_response(&other, &signed, &body, &listed, NOW, 60);
    assert!(checks.iter().all(|c| c.result.is_err()), "{checks:?}");
}
