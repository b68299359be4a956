#![allow(clippy::unwrap_used, clippy::panic)]
//! The examples of RFC 9421 (HTTP Message Signatures), signature bases compared byte for byte:
//! Appendix B.2's signatures over the test request and response (B.2.1 to B.2.6), the signature
//! base of section 2.5 (signed in section 3.1), and the component values of section 2 (HTTP
//! fields with `sf`, `key` and `bs`; every derived component; `@signature-params`).
//!
//! The data, copied from the RFC with its RFC 8792 line wrapping undone, is in
//! `tests/data/rfc9421_examples.json`. The base is what is compared whatever the algorithm; the
//! signatures are then verified by the core with the RFC's public keys (RSA-PSS B.2.1 to B.2.3
//! and section 2.5 with `test-key-rsa-pss`, ECDSA B.2.4 with `test-key-ecc-p256`, Ed25519 B.2.6
//! with `test-key-ed25519`), and the HMAC of B.2.5 is recomputed with `test-shared-secret`.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wba_filter::base::{signature_base, BaseError, Message};
use wba_filter::directory::check_content_digest;
use wba_filter::jwk::Key;
use wba_filter::request::{combined, HttpRequest, HttpResponse};
use wba_filter::signature::parse_signature;
use wba_filter::signature_input::parse_signature_input;

const DATA: &str = include_str!("data/rfc9421_examples.json");

fn data() -> Value {
    serde_json::from_str(DATA).unwrap()
}

/// The start line of an RFC example message.
enum Start {
    /// `METHOD TARGET HTTP/1.1`
    Request { method: String, target: String },
    /// `HTTP/1.1 NNN Reason`
    Status(u16),
    /// Section 2.1 shows field lines only.
    Fragment,
}

/// Splits the RFC's message lines into the start line and the field lines. A field value is
/// everything after the first `:`, untrimmed; a line starting with whitespace is an obs-fold
/// continuation of the previous field line and is kept with its CRLF.
fn parse_lines(msg: &Value) -> (Start, Vec<(String, String)>) {
    let lines: Vec<&str> = msg["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let (start, fields) = match lines.first() {
        Some(first) if first.starts_with("HTTP/1.1 ") => {
            let code = first.split(' ').nth(1).unwrap().parse().unwrap();
            (Start::Status(code), &lines[1..])
        }
        Some(first) if first.ends_with(" HTTP/1.1") => {
            let mut parts = first.splitn(3, ' ');
            let method = parts.next().unwrap().to_string();
            let target = parts.next().unwrap().to_string();
            (Start::Request { method, target }, &lines[1..])
        }
        _ => (Start::Fragment, &lines[..]),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in fields {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().unwrap();
            last.1.push_str("\r\n");
            last.1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_string(), value.to_string()));
        }
    }
    (start, headers)
}

/// A request as the filter would see it: the method, the scheme, the authority (the Host field,
/// the authority-form target of CONNECT, or the authority of an absolute-form target) and the
/// request target as received.
fn request(msg: &Value) -> HttpRequest {
    let scheme = msg["scheme"].as_str().unwrap();
    let (start, headers) = parse_lines(msg);
    let (method, target) = match start {
        Start::Request { method, target } => (method, target),
        Start::Fragment => ("GET".to_string(), "/".to_string()),
        Start::Status(_) => panic!("a response is not a request"),
    };
    let host = combined(&headers, "host");
    let (authority, path_and_query) = if method == "CONNECT" {
        (target, String::new())
    } else if target.starts_with('/') || target == "*" {
        // Section 2.1's fragments have no request line, and most no Host field.
        (host.unwrap_or_default(), target)
    } else {
        let after_scheme = target.split_once("://").unwrap().1;
        let authority = after_scheme.split(['/', '?']).next().unwrap().to_string();
        (host.unwrap_or(authority), target)
    };
    HttpRequest::from_parts(&method, scheme, &authority, &path_and_query, headers)
}

fn response(msg: &Value) -> HttpResponse {
    let (start, headers) = parse_lines(msg);
    let Start::Status(status) = start else {
        panic!("not a response");
    };
    HttpResponse { status, headers }
}

fn named_message(name: &str) -> Value {
    data()["messages"][name].clone()
}

/// The `signatures` entry for `section` (Appendix B.2.x, or 2.5).
fn signature_example(section: &str) -> Value {
    data()["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["section"] == section)
        .unwrap_or_else(|| panic!("no example {section}"))
        .clone()
}

/// Builds the base of a `signatures` entry from its message and its Signature-Input, checks it
/// byte for byte against the RFC's, and returns it with the signature bytes.
fn check_signature_example(section: &str) -> (Value, String, Vec<u8>) {
    let e = signature_example(section);
    let inputs = parse_signature_input(e["signature_input"].as_str().unwrap()).unwrap();
    assert_eq!(inputs.len(), 1, "{section}");
    let input = &inputs[0];
    assert_eq!(
        input.params.keyid.as_deref(),
        e["keyid"].as_str(),
        "{section}"
    );
    let msg = named_message(e["message"].as_str().unwrap());
    let base = if msg["lines"][0].as_str().unwrap().starts_with("HTTP/") {
        let req = request(&named_message(e["request"].as_str().unwrap()));
        let resp = response(&msg);
        signature_base(
            Message::Response {
                request: &req,
                response: &resp,
            },
            input,
        )
    } else {
        signature_base(Message::Request(&request(&msg)), input)
    }
    .unwrap_or_else(|err| panic!("{section}: {err}"));
    assert_eq!(base, e["expected_base"].as_str().unwrap(), "{section}");
    // The Signature-Input value after the label is the @signature-params value, unchanged.
    let (label, value) = e["signature_input"]
        .as_str()
        .unwrap()
        .split_once('=')
        .unwrap();
    assert_eq!(input.label, label);
    assert_eq!(input.serialized, value, "{section}");
    let sigs = parse_signature(e["signature"].as_str().unwrap()).unwrap();
    assert_eq!(sigs.len(), 1, "{section}");
    assert_eq!(sigs[0].0, label, "{section}");
    let sig = sigs[0].1.clone();
    (e, base, sig)
}

/// Checks every `components` entry of `section`: the covered components are signed as
/// `sig=(covered)`, and the base must be the RFC's lines followed by that `@signature-params`.
/// Returns how many entries were checked.
fn check_components(section: &str) -> usize {
    let d = data();
    let mut n = 0;
    for e in d["components"].as_array().unwrap() {
        if e["section"] != section {
            continue;
        }
        let title = e["title"].as_str().unwrap();
        let covered = e["covered"].as_str().unwrap();
        let inputs = parse_signature_input(&format!("sig=({covered})")).unwrap();
        let msg = &e["message"];
        let base = if msg["lines"][0].as_str().unwrap().starts_with("HTTP/") {
            let req = request(&named_message("test-request"));
            let resp = response(msg);
            signature_base(
                Message::Response {
                    request: &req,
                    response: &resp,
                },
                &inputs[0],
            )
        } else {
            signature_base(Message::Request(&request(msg)), &inputs[0])
        }
        .unwrap_or_else(|err| panic!("{section} {title}: {err}"));
        let mut expected: Vec<&str> = e["expected_lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let params = format!("\"@signature-params\": ({covered})");
        expected.push(&params);
        assert_eq!(base, expected.join("\n"), "{section} {title}");
        n += 1;
    }
    n
}

/// HMAC-SHA256 (RFC 2104), for B.2.5's `hmac-sha256`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn test_key_ed25519() -> Key {
    Key::from_jwk_json(&data()["keys"]["test-key-ed25519"].to_string()).unwrap()
}

// ---- Appendix B.2 ----------------------------------------------------------------------------

#[test]
fn appendix_b_2_test_messages() {
    for name in ["test-request", "test-response"] {
        let msg = named_message(name);
        let (_, headers) = parse_lines(&msg);
        let body = msg["body"].as_str().unwrap().as_bytes();
        let digest = combined(&headers, "content-digest").unwrap();
        assert_eq!(check_content_digest(&digest, body), Ok(()), "{name}");
        let length = combined(&headers, "content-length").unwrap();
        assert_eq!(length, body.len().to_string(), "{name}");
    }
    let req = request(&named_message("test-request"));
    assert_eq!(req.method, "POST");
    assert_eq!(req.authority, "example.com");
    assert_eq!(req.path, "/foo");
    assert_eq!(req.query.as_deref(), Some("param=Value&Pet=dog"));
    assert_eq!(response(&named_message("test-response")).status, 200);
}

#[test]
fn appendix_b_2_1_minimal_signature_using_rsa_pss_sha512() {
    let (e, base, sig) = check_signature_example("B.2.1");
    assert_eq!(e["alg"], "rsa-pss-sha512");
    assert!(!base.contains('\n'), "no covered component, one line");
    assert_eq!(sig.len(), 256, "a 2048-bit RSA signature");
    assert_verifies_with("test-key-rsa-pss", "rsa-pss-sha512", &base, &sig);
}

/// The RFC's public key `name` verifies `sig` over `base`, has the algorithm `alg`, is one of
/// the published test keys, and refuses the base with one bit changed.
fn assert_verifies_with(name: &str, alg: &str, base: &str, sig: &[u8]) {
    let key = Key::from_jwk_json(&data()["keys"][name].to_string()).unwrap();
    assert_eq!(key.algorithm(), Some(alg), "{name}");
    assert!(
        key.is_test_key(),
        "{name} is one of the RFC's published test keys"
    );
    assert_eq!(key.verify(base.as_bytes(), sig), Ok(()), "{name}");
    let mut tampered = base.as_bytes().to_vec();
    tampered[0] ^= 1;
    assert!(key.verify(&tampered, sig).is_err(), "{name}");
}

#[test]
fn appendix_b_1_1_test_key_rsa_is_a_test_key() {
    let key = Key::from_jwk_json(&data()["keys"]["test-key-rsa"].to_string()).unwrap();
    assert!(key.is_test_key());
}

#[test]
fn appendix_b_2_2_selective_covered_components_using_rsa_pss_sha512() {
    let (e, base, sig) = check_signature_example("B.2.2");
    assert_eq!(e["alg"], "rsa-pss-sha512");
    assert_eq!(sig.len(), 256);
    assert_verifies_with("test-key-rsa-pss", "rsa-pss-sha512", &base, &sig);
}

#[test]
fn appendix_b_2_3_full_coverage_using_rsa_pss_sha512() {
    let (e, base, sig) = check_signature_example("B.2.3");
    assert_eq!(e["alg"], "rsa-pss-sha512");
    assert_eq!(sig.len(), 256);
    assert_verifies_with("test-key-rsa-pss", "rsa-pss-sha512", &base, &sig);
}

#[test]
fn appendix_b_2_4_signing_a_response_using_ecdsa_p256_sha256() {
    let (e, base, sig) = check_signature_example("B.2.4");
    assert_eq!(e["alg"], "ecdsa-p256-sha256");
    assert_eq!(sig.len(), 64, "r || s");
    assert_verifies_with("test-key-ecc-p256", "ecdsa-p256-sha256", &base, &sig);
    // "@status" exists only for responses: over the request the base cannot be built.
    let req = request(&named_message("test-request"));
    let inputs = parse_signature_input(e["signature_input"].as_str().unwrap()).unwrap();
    assert!(matches!(
        signature_base(Message::Request(&req), &inputs[0]),
        Err(BaseError::ResponseOnly(_))
    ));
}

#[test]
fn appendix_b_2_5_signing_a_request_using_hmac_sha256() {
    let (e, base, sig) = check_signature_example("B.2.5");
    assert_eq!(e["alg"], "hmac-sha256");
    let secret = STANDARD
        .decode(data()["keys"]["test-shared-secret"].as_str().unwrap())
        .unwrap();
    assert_eq!(secret.len(), 64);
    assert_eq!(hmac_sha256(&secret, base.as_bytes()).as_slice(), sig);
    let mut tampered = base.into_bytes();
    tampered[1] ^= 1;
    assert_ne!(hmac_sha256(&secret, &tampered).as_slice(), sig);
}

#[test]
fn appendix_b_2_6_signing_a_request_using_ed25519() {
    let (e, base, sig) = check_signature_example("B.2.6");
    assert_eq!(e["alg"], "ed25519");
    let key = test_key_ed25519();
    assert_eq!(key.algorithm(), Some("ed25519"));
    assert!(
        key.is_test_key(),
        "B.1.4 is one of the RFC's published test keys"
    );
    assert_eq!(key.verify(base.as_bytes(), &sig), Ok(()));
    let mut tampered = base.into_bytes();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(key.verify(&tampered, &sig).is_err());
}

#[test]
fn section_2_5_creating_the_signature_base() {
    // The example base of section 2.5; section 3.1 signs it with test-key-rsa-pss.
    let (e, base, sig) = check_signature_example("2.5");
    assert_eq!(e["alg"], "rsa-pss-sha512");
    assert_eq!(sig.len(), 256);
    assert_verifies_with("test-key-rsa-pss", "rsa-pss-sha512", &base, &sig);
}

// ---- Section 2.1: HTTP fields ----------------------------------------------------------------

#[test]
fn section_2_1_http_fields() {
    // Leading/trailing whitespace, obs-fold, two Cache-Control lines, and an empty field.
    assert_eq!(check_components("2.1"), 2);
}

#[test]
fn section_2_1_1_strict_serialization_of_structured_fields() {
    assert_eq!(check_components("2.1.1"), 1);
}

#[test]
fn section_2_1_2_dictionary_structured_field_members() {
    assert_eq!(check_components("2.1.2"), 1);
}

#[test]
fn section_2_1_3_binary_wrapped_http_fields() {
    assert_eq!(check_components("2.1.3"), 2);
}

// ---- Section 2.2: derived components ---------------------------------------------------------

#[test]
fn section_2_2_1_method() {
    assert_eq!(check_components("2.2.1"), 1);
}

#[test]
fn section_2_2_2_target_uri() {
    assert_eq!(check_components("2.2.2"), 1);
}

#[test]
fn section_2_2_3_authority() {
    assert_eq!(check_components("2.2.3"), 1);
}

#[test]
fn section_2_2_4_scheme() {
    assert_eq!(check_components("2.2.4"), 1);
}

#[test]
fn section_2_2_5_request_target() {
    // origin-form, absolute-form, authority-form (CONNECT) and asterisk-form.
    assert_eq!(check_components("2.2.5"), 4);
}

#[test]
fn section_2_2_6_path() {
    assert_eq!(check_components("2.2.6"), 1);
}

#[test]
fn section_2_2_7_query() {
    assert_eq!(check_components("2.2.7"), 3);
}

#[test]
fn section_2_2_8_query_parameters() {
    assert_eq!(check_components("2.2.8"), 2);
}

#[test]
fn section_2_2_9_status_code() {
    assert_eq!(check_components("2.2.9"), 1);
}

// ---- Section 2.3: signature parameters -------------------------------------------------------

#[test]
fn section_2_3_signature_parameters() {
    let d = data();
    let e = &d["signature_params"][0];
    assert_eq!(e["section"], "2.3");
    let value = e["value"].as_str().unwrap();
    let inputs = parse_signature_input(&format!("sig={value}")).unwrap();
    let input = &inputs[0];
    // Serialized back exactly: component order and parameter order are kept.
    assert_eq!(input.serialized, value);
    assert_eq!(
        input.covered,
        r#"("@target-uri" "@authority" "date" "cache-control")"#
    );
    assert_eq!(input.params.keyid.as_deref(), Some("test-key-rsa-pss"));
    assert_eq!(input.params.alg.as_deref(), Some("rsa-pss-sha512"));
    assert_eq!(input.params.created, Some(1_618_884_475));
    assert_eq!(input.params.expires, Some(1_618_884_775));
}

// ---- The data file ---------------------------------------------------------------------------

#[test]
fn every_example_in_the_data_file_has_its_test() {
    let d = data();
    let mut sections = BTreeSet::new();
    for list in ["signatures", "components", "signature_params"] {
        for e in d[list].as_array().unwrap() {
            sections.insert(format!("{list} {}", e["section"].as_str().unwrap()));
        }
    }
    let tested: BTreeSet<String> = [
        "signatures B.2.1",
        "signatures B.2.2",
        "signatures B.2.3",
        "signatures B.2.4",
        "signatures B.2.5",
        "signatures B.2.6",
        "signatures 2.5",
        "components 2.1",
        "components 2.1.1",
        "components 2.1.2",
        "components 2.1.3",
        "components 2.2.1",
        "components 2.2.2",
        "components 2.2.3",
        "components 2.2.4",
        "components 2.2.5",
        "components 2.2.6",
        "components 2.2.7",
        "components 2.2.8",
        "components 2.2.9",
        "signature_params 2.3",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(sections, tested);
}
