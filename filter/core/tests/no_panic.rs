//! No input may panic: a panic in the filter kills Envoy's Wasm VM. Property tests feed every
//! parser and the whole request path arbitrary strings, arbitrary bytes (lossily decoded), and
//! strings assembled from structured-field and JSON fragments so that they get past the first
//! syntax check and reach the code behind it.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use common::{public, signing_key};
use wba_filter::agent_url::{AgentId, AgentUrl};
use wba_filter::base::{component_lines, signature_base, Message};
use wba_filter::component::Component;
use wba_filter::config::Config;
use wba_filter::directory::{parse_key_set, verify_directory_response, KidRule};
use wba_filter::fetch::{evaluate, FailureKind, FetchFailure, FetchResponse, Fetched};
use wba_filter::host::RecordingHost;
use wba_filter::jwk::{Jwk, Key};
use wba_filter::key_cache::KeyCache;
use wba_filter::keyring::{AgentKeys, KeyRing};
use wba_filter::policy::Policy;
use wba_filter::private_key::PrivateKey;
use wba_filter::replay::ReplayTable;
use wba_filter::replay_store::StoreAnswer;
use wba_filter::request::{HttpRequest, HttpResponse};
use wba_filter::request_filter::{
    on_request_body, on_request_headers, on_store_answer, request_from_headers, Action, Body,
};
use wba_filter::shared::MemoryStore;
use wba_filter::sign::{sign_request, SignOptions, SignatureKey as _};
use wba_filter::signature::{parse_signature, parse_signature_field, SignatureFieldError};
use wba_filter::signature_agent::parse_signature_agent;
use wba_filter::signature_input::{parse_input_field, parse_signature_input};
use wba_filter::verdict::{Outcome, Verdict};
use wba_filter::verify::{verify_request, verify_traced, Trace};

const NOW: i64 = 1_800_000_000;
/// The RFC 9421 Appendix B.1.4 test key.
const TEST_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
const TEST_TP: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";
const RSA_JWK: &str = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}"#;

/// RFC 9421 Appendix B.1.3 (test-key-ecc-p256).
const P256_X: &str = "qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA";
const P256_Y: &str = "Mc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0";

fn rsa_test_key(name: &str) -> Value {
    serde_json::from_str::<Value>(include_str!("data/rsa_test_keys.json")).unwrap()[name].clone()
}

/// `cases` per property, unless `PROPTEST_CASES` asks for another number (for long runs).
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        // Regressions found here become unit tests next to the fix, not persisted files.
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and key sources.

fn test_key() -> Key {
    Key::from_jwk_json(&format!(
        r#"{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}"}}"#
    ))
    .unwrap()
}

/// Pinned agents of every kind: loaded, unloaded, an RSA key, a key with a window.
fn ring() -> KeyRing {
    let mut r = KeyRing::default();
    r.add(
        "Agent",
        AgentId::parse("https://agent.example").unwrap(),
        vec![public(1)],
    );
    r.add(
        "Vectors",
        AgentId::parse("https://signature-agent.test").unwrap(),
        vec![test_key()],
    );
    r.add(
        "Jwks",
        AgentId::parse("https://a.example/keys.json").unwrap(),
        vec![public(2)],
    );
    r.add(
        "Rsa",
        AgentId::parse("https://rsa.example").unwrap(),
        vec![Key::from_jwk_json(RSA_JWK).unwrap()],
    );
    let windowed = Key::from_jwk_json(&format!(
        r#"{{"kty":"OKP","crv":"Ed25519","x":"{}","nbf":{},"exp":{}}}"#,
        Jwk::from_ed25519(signing_key(3).verifying_key().as_bytes())
            .x
            .unwrap(),
        i64::MIN,
        i64::MAX
    ))
    .unwrap();
    r.add(
        "Windowed",
        AgentId::parse("https://w.example").unwrap(),
        vec![windowed],
    );
    r.agents.push(AgentKeys {
        name: "Unloaded".into(),
        id: AgentId::parse("https://u.example").unwrap(),
        keys: vec![],
        loaded: false,
    });
    r
}

/// A verifying key of each algorithm.
fn algorithm_keys() -> Vec<Key> {
    algorithm_signers()
        .iter()
        .map(|k| Key::from_jwk_json(&k.public_jwk().to_json()).unwrap())
        .collect()
}

fn algorithm_signers() -> Vec<PrivateKey> {
    static KEYS: std::sync::OnceLock<Vec<PrivateKey>> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        vec![
            PrivateKey::Ed25519(signing_key(4)),
            PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[4; 32]).unwrap()),
            PrivateKey::from_jwk(&rsa_test_key("rsa2048")).unwrap(),
        ]
    })
    .clone()
}

fn keyids() -> Vec<String> {
    let mut v: Vec<String> = [1u8, 2, 3]
        .iter()
        .map(|s| public(*s).thumbprint.into())
        .collect();
    v.push(TEST_TP.into());
    v.push(Key::from_jwk_json(RSA_JWK).unwrap().thumbprint.into());
    v.push("x".into());
    v.push(String::new());
    v
}

// ---------------------------------------------------------------------------------------------
// Text strategies.

/// Fragments of Signature-Input / Signature / Signature-Agent values and of URLs.
const SF_PIECES: &[&str] = &[
    "sig1",
    "sig2",
    "agent2",
    "a",
    "x",
    "*",
    "=",
    "(",
    ")",
    " ",
    ",",
    ", ",
    ";",
    "\"",
    ":",
    "?1",
    "?0",
    "1.5",
    "-0.001",
    "@",
    "%",
    "%2",
    "%41",
    "%zz",
    "\\",
    "\\\"",
    "é",
    "\u{0}",
    "\u{7f}",
    "\t",
    "\r\n",
    "\n ",
    "\"@authority\"",
    "\"@method\"",
    "\"@path\"",
    "\"@query\"",
    "\"@target-uri\"",
    "\"@scheme\"",
    "\"@request-target\"",
    "\"@status\"",
    "\"@query-param\"",
    "\"@query-param\";name=\"a\"",
    "\"@query-param\";name=\"%zz\"",
    "\"@authority\";req",
    "\"signature-agent\"",
    "\"signature-agent\";key=\"a\"",
    "\"signature-agent\";key=\"sig1\"",
    "\"signature-agent\";key=\"agent2\"",
    "\"host\"",
    "\"x-a\"",
    "\"x-a\";sf",
    "\"x-a\";bs",
    "\"x-a\";key=\"a\"",
    "\"x-a\";req",
    "\"x-a\";tr",
    "\"content-digest\"",
    "\"signature-input\";sf",
    "\"accept-ch\";sf",
    "\"example-integer\";sf",
    ";created=",
    ";created=1",
    ";expires=",
    ";expires=1800000300",
    "1800000000",
    "999999999999999",
    "-999999999999999",
    "9223372036854775807",
    "0",
    "-1",
    ";keyid=\"x\"",
    ";keyid=\"poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U\"",
    ";keyid=",
    ";alg=\"ed25519\"",
    ";alg=\"rsa\"",
    ";nonce=\"n\"",
    ";tag=\"web-bot-auth\"",
    ";tag=",
    ":AAAA:",
    ":AA==:",
    "=:",
    "\"https://agent.example\"",
    "\"https://signature-agent.test\"",
    "\"https://a.example/keys.json\"",
    "\"https://[::1]:99999\"",
    "\"https://[\"",
    "\"https://a@b\"",
    "\"https://a.example/./../%2e%2E/x\"",
    ";type=jwks_uri",
    ";type=directory",
    ";type=cimd",
    ";type=\"jwks_uri\"",
    ";type=1",
    "https://",
    "[::1]",
    ":443",
    ":80",
];

fn sf_soup() -> impl Strategy<Value = String> {
    vec(select(SF_PIECES), 0..40).prop_map(|v| v.concat())
}

fn lossy() -> impl Strategy<Value = String> {
    vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Valid values of the three signature headers, from the published vectors and our signer.
const VALID: &[&str] = &[
    r#"sig2=("@authority" "signature-agent";key="agent2");created=1735689600;keyid="poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";alg="ed25519";expires=4889289600;nonce="n9p433xm+NJ3ph3upfBIGmsuwHw387YV7Q/F+6BSpGCVjYCqQw6rznNA8PVVLySrAWsv0hQtFioQb6E1YsauiA==";tag="web-bot-auth""#,
    r#"sig2=("@authority" "signature-agent");created=1735689600;keyid="poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";alg="ed25519";expires=1735693200;nonce="e8N7S2MFd/qrd6T2R3tdfAuuANngKI7LFtKYI/vowzk4lAZYadIX6wW25MwG7DCT9RUKAJ0qVkU0mEeLElW1qg==";tag="web-bot-auth""#,
    r#"sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519""#,
    r#"sig1=("@authority" "@method" "@path" "@query" "@target-uri" "@request-target" "@scheme" "@query-param";name="a" "x-a";sf "x-a";bs "x-a";key="a" "signature-agent";key="sig1");created=1;expires=2;keyid="x";tag="web-bot-auth", b=("x")"#,
    "sig2=:RdNFx5Bj6au3YgAMQL/RzmUlZE8QZLIaXGRpw985hWnwPfMxT228NMk6ehRS1PSl4e8PhbNZACSanGdhEwYCCg==:",
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:, b=:AA==:",
    r#"agent2="https://signature-agent.test""#,
    r#""https://signature-agent.test""#,
    r#"sig1="https://agent.example", j="https://a.example/keys.json";type=jwks_uri, c="https://c.example";type=cimd"#,
];

/// One edit of a string, at a byte position taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (
            any::<usize>(),
            prop_oneof![
                select(SF_PIECES).prop_map(str::to_string),
                any::<char>().prop_map(String::from)
            ]
        )
            .prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1..8usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Moves `i` back to a char boundary of `s`.
fn boundary(s: &str, i: usize) -> usize {
    let mut i = i % (s.len() + 1);
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply_edits(mut s: String, edits: &[Edit]) -> String {
    for e in edits {
        match e {
            Edit::Insert(i, t) => {
                let i = boundary(&s, *i);
                s.insert_str(i, t);
            }
            Edit::Delete(i, n) => {
                let a = boundary(&s, *i);
                let b = boundary(&s, a.saturating_add(*n).min(s.len()));
                s.replace_range(a..b.max(a), "");
            }
            Edit::Truncate(i) => {
                let i = boundary(&s, *i);
                s.truncate(i);
            }
        }
    }
    s
}

/// A valid header value with a few random edits.
fn mutated() -> impl Strategy<Value = String> {
    (select(VALID), vec(edit(), 0..4)).prop_map(|(s, e)| apply_edits(s.to_string(), &e))
}

/// Any text: arbitrary strings, lossy bytes, structured-field soup, edited valid values.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        2 => lossy(),
        3 => sf_soup(),
        3 => mutated(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Structured header values.

const LABELS: &[&str] = &["sig1", "sig2", "a", "agent2", "*x"];
const COMPONENTS: &[&str] = &[
    "\"@authority\"",
    "\"@target-uri\"",
    "\"@method\"",
    "\"@path\"",
    "\"@query\"",
    "\"@scheme\"",
    "\"@request-target\"",
    "\"@status\"",
    "\"@query-param\";name=\"a\"",
    "\"@query-param\";name=\"b+c\"",
    "\"@authority\";req",
    "\"signature-agent\"",
    "\"signature-agent\";key=\"sig1\"",
    "\"signature-agent\";key=\"a\"",
    "\"signature-agent\";key=\"agent2\"",
    "\"signature-agent\";sf",
    "\"host\"",
    "\"x-a\"",
    "\"x-a\";sf",
    "\"x-a\";bs",
    "\"x-a\";key=\"a\"",
    "\"x-a\";tr",
    "\"content-digest\";sf",
    "\"missing\"",
];

fn time() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => NOW - 1_000..NOW + 1_000,
        2 => -999_999_999_999_999i64..=999_999_999_999_999,
        1 => select(vec![0i64, -1, 1, 999_999_999_999_999, -999_999_999_999_999]),
    ]
}

fn now() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => Just(NOW),
        2 => NOW - 100_000..NOW + 100_000,
        2 => any::<i64>(),
        1 => select(vec![i64::MIN, i64::MAX, 0, -1]),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    let secs = |default: i64| {
        prop_oneof![
            6 => Just(default),
            1 => select(vec![0i64, 60, 86_400]),
            1 => any::<i64>(),
            1 => select(vec![i64::MAX, i64::MIN, -1]),
        ]
    };
    (
        secs(60),
        secs(86_400),
        prop_oneof![7 => Just(vec![]), 1 => vec(select(COMPONENTS), 1..3)],
        any::<bool>(),
        proptest::bool::weighted(0.1),
        max_signatures(),
        any::<bool>(),
    )
        .prop_map(
            |(skew, validity, required, test_keys, nonce, max, replay)| Policy {
                clock_skew_seconds: skew,
                max_validity_seconds: validity,
                required_components: required
                    .iter()
                    .filter_map(|c| Component::parse(c).ok())
                    .collect(),
                allow_test_keys: test_keys,
                require_nonce: nonce,
                max_signatures: max,
                replay_protection: replay,
            },
        )
}

/// The bound on signatures verified per request: the default, small ones (0 only here: the
/// configuration refuses it; verification reads it as 1), and none.
fn max_signatures() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(3usize), 2 => 0usize..5, 1 => Just(usize::MAX)]
}

/// The label placeholder of the templates below, replaced by one label per request.
const L: &str = "LABEL";

/// A Signature-Input member template that is usually well formed, covering what the profile
/// requires, with parameters that exercise freshness, key lookup and base building.
fn signature_input_template() -> impl Strategy<Value = String> {
    let agent = prop_oneof![
        6 => Just("\"signature-agent\";key=\"LABEL\""),
        1 => Just("\"signature-agent\""),
        1 => Just("\"signature-agent\";key=\"a\""),
    ];
    // `expires` as an offset from `created` (usually a short validity) or on its own.
    let expires = prop_oneof![
        4 => (1i64..400).prop_map(Ok),
        1 => time().prop_map(Err),
    ];
    (
        (
            proptest::bool::weighted(0.9),
            proptest::option::weighted(0.9, agent),
            vec(select(COMPONENTS), 0..4),
        ),
        proptest::option::weighted(0.95, prop_oneof![2 => NOW - 400..NOW + 30, 1 => time()]),
        proptest::option::weighted(0.95, expires),
        proptest::option::weighted(
            0.95,
            prop_oneof![3 => Just(KEYID.to_string()), 1 => select(keyids())],
        ),
        proptest::option::weighted(0.2, select(vec!["ed25519", "rsa-pss-sha512"])),
        proptest::option::of(Just("n")),
        proptest::option::weighted(
            0.95,
            prop_oneof![9 => Just("web-bot-auth"), 1 => Just("other")],
        ),
        proptest::option::weighted(0.05, sf_soup()),
    )
        .prop_map(
            |((authority, agent, extra), created, expires, keyid, alg, nonce, tag, soup)| {
                let mut comps: Vec<&str> = Vec::new();
                if authority {
                    comps.push("\"@authority\"");
                }
                comps.extend(extra);
                comps.extend(agent);
                // Duplicates are refused up front; the free-form headers still send some.
                let mut seen = Vec::new();
                comps.retain(|c| {
                    let new = !seen.contains(c);
                    seen.push(*c);
                    new
                });
                let mut s = format!("{L}=({})", comps.join(" "));
                if let Some(c) = created {
                    s.push_str(&format!(";created={c}"));
                }
                let expires = match expires {
                    Some(Ok(validity)) => Some(
                        created
                            .unwrap_or(NOW)
                            .saturating_add(validity)
                            .min(999_999_999_999_999),
                    ),
                    Some(Err(e)) => Some(e),
                    None => None,
                };
                if let Some(e) = expires {
                    s.push_str(&format!(";expires={e}"));
                }
                if let Some(k) = keyid {
                    s.push_str(&format!(";keyid=\"{k}\""));
                }
                if let Some(a) = alg {
                    s.push_str(&format!(";alg=\"{a}\""));
                }
                if let Some(n) = nonce {
                    s.push_str(&format!(";nonce=\"{n}\""));
                }
                if let Some(t) = tag {
                    s.push_str(&format!(";tag=\"{t}\""));
                }
                if let Some(x) = soup {
                    s.push_str(&x);
                }
                s
            },
        )
}

/// A Signature member template: 64 bytes (the Ed25519 length) or any other length.
fn signature_template() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(any::<u8>(), 64..=64),
        1 => vec(any::<u8>(), 0..80),
    ]
    .prop_map(|b| format!("{L}=:{}:", STANDARD.encode(b)))
}

/// A Signature-Agent template: a dictionary member or the legacy string, for URLs of every
/// kind the key ring knows and some it refuses.
fn agent_template() -> impl Strategy<Value = String> {
    let url = select(vec![
        "https://agent.example",
        "https://Agent.Example:443/",
        "https://signature-agent.test",
        "https://a.example/keys.json",
        "https://rsa.example",
        "https://w.example",
        "https://u.example",
        "https://unknown.example",
        "http://agent.example",
        "https://[::1",
        "https://[::1]:99999",
        "https://agent.example/path",
    ]);
    let kind = prop_oneof![
        6 => Just(""),
        2 => Just(";type=jwks_uri"),
        1 => select(vec![";type=cimd", ";type=x", ";type=1", ";type=directory", ";v=1", ";type=directory;x"]),
    ];
    let url = prop_oneof![3 => Just(AGENT_URL), 1 => url];
    (url, kind, proptest::bool::weighted(0.2)).prop_map(|(u, k, legacy)| {
        let k = if u == AGENT_URL { AGENT_KIND } else { k };
        if legacy {
            format!("\"{u}\"{k}")
        } else {
            format!("{L}=\"{u}\"{k}")
        }
    })
}

const KEYID: &str = "KEYID";
const AGENT_URL: &str = "AGENTURL";
const AGENT_KIND: &str = "AGENTKIND";

/// An agent the key ring knows, with its type parameter and one of its keys, or not.
type Identity = (&'static str, &'static str, String);

fn identities() -> Vec<Identity> {
    let tp = |seed| String::from(public(seed).thumbprint);
    vec![
        ("https://agent.example", "", tp(1)),
        ("https://Agent.Example:443/", ";type=directory", tp(1)),
        ("https://signature-agent.test", "", TEST_TP.into()),
        ("https://a.example/keys.json", ";type=jwks_uri", tp(2)),
        (
            "https://rsa.example",
            "",
            Key::from_jwk_json(RSA_JWK).unwrap().thumbprint.into(),
        ),
        ("https://w.example", "", tp(3)),
        ("https://u.example", "", tp(1)),
        ("https://agent.example", "", tp(2)),
        ("https://a.example/keys.json", "", tp(2)),
        (
            "https://agent.example/.well-known/http-message-signatures-directory",
            "",
            tp(1),
        ),
    ]
}

/// Fills a template's label and identity placeholders.
fn fill(template: String, label: &str, id: &Identity) -> String {
    template
        .replace(L, label)
        .replace(KEYID, &id.2)
        .replace(AGENT_URL, id.0)
        .replace(AGENT_KIND, id.1)
}

fn with_label(template: String, label: &str) -> String {
    fill(template, label, &identities()[0])
}

fn signature_input() -> impl Strategy<Value = String> {
    (signature_input_template(), select(LABELS)).prop_map(|(t, l)| with_label(t, l))
}

fn signature_value() -> impl Strategy<Value = String> {
    (signature_template(), select(LABELS)).prop_map(|(t, l)| with_label(t, l))
}

fn agent_value() -> impl Strategy<Value = String> {
    (agent_template(), select(LABELS)).prop_map(|(t, l)| with_label(t, l))
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "signature-input",
            "signature",
            "signature-agent",
            "Signature-Input",
            "host",
            "x-a",
            "content-digest",
            "x-web-bot-auth-result",
            "X-Web-Bot-Auth-Agent",
            "x-bot-anything",
        ])
        .prop_map(str::to_string),
        1 => any::<String>(),
        1 => "[a-z-]{0,12}",
    ]
}

/// Values for the fields signatures cover, structured or not.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(vec![
            "a=1, b=(2 3);x, c=:AA==:",
            "1, 2;a=?0",
            "a=\"x\"",
            " padded\r\n  folded ",
            "",
            "sha-256=:AAAA:",
        ])
        .prop_map(str::to_string),
        3 => text(),
    ]
}

/// The three signature headers for one label, usually consistent with one another, plus a few
/// other lines (some of them repeated signature headers or free text).
fn wba_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        select(LABELS),
        proptest::option::weighted(0.1, select(LABELS)),
        proptest::option::weighted(0.97, signature_input_template()),
        proptest::option::weighted(0.95, signature_template()),
        proptest::option::weighted(0.95, agent_template()),
        vec(
            prop_oneof![
                4 => (select(vec!["host", "x-a", "content-digest", "X-A"]).prop_map(str::to_string), field_value()),
                1 => (header_name(), text()),
            ],
            0..3,
        ),
        proptest::bool::weighted(0.8),
        select(identities()),
    )
        .prop_map(|(label, other, input, sig, agent, extra, plain, id)| {
            let other = other.unwrap_or(label);
            let mut h = extra;
            if let Some(a) = agent {
                h.insert(0, ("signature-agent".into(), fill(a, label, &id)));
            }
            if let Some(i) = input {
                // A legacy Signature-Agent is covered as the plain field.
                let i = match &h.first() {
                    Some((_, a)) if a.starts_with('"') && plain => {
                        i.replace("\"signature-agent\";key=\"LABEL\"", "\"signature-agent\"")
                    }
                    _ => i,
                };
                h.push(("signature-input".into(), fill(i, label, &id)));
            }
            if let Some(s) = sig {
                h.push(("signature".into(), with_label(s, other)));
            }
            h
        })
}

/// Members of another profile's signature that a Web Bot Auth verifier must not look into:
/// an unknown component parameter, badly typed parameters, a value that is not a byte sequence.
const ODD_MEMBERS: &[(&str, &str)] = &[
    (
        "other=(\"@method\" \"x\";unknown);tag=\"other\"",
        "other=:AAAA:",
    ),
    ("other=(\"@Method\");created=\"x\";tag=\"x\"", "other=(1 2)"),
    ("other=1", "other=?1"),
    ("other=(\"@method\")", "other=\"text\""),
];

/// Several labels, each with its three members (usually consistent; sometimes a label repeated,
/// left without its Signature, or next to an odd member of another profile), each field as one
/// line or as one line per label.
fn several_signatures() -> impl Strategy<Value = Vec<(String, String)>> {
    // Half the labels pass every cheap check (at `NOW`, with a known key): the bound is reached.
    let passing = format!(
        "{L}=(\"@authority\" \"signature-agent\";key=\"{L}\");created={};expires={};keyid=\"{KEYID}\";tag=\"web-bot-auth\"",
        NOW - 10,
        NOW + 100
    );
    let one = (
        proptest::option::weighted(0.1, select(LABELS)),
        prop_oneof![signature_input_template(), Just(passing)],
        proptest::option::weighted(0.95, signature_template()),
        agent_template(),
        select(identities()),
    );
    (
        vec(one, 0..8),
        vec(select(ODD_MEMBERS), 0..2),
        any::<bool>(),
    )
        .prop_map(|(sigs, odd, split)| {
            let (mut agents, mut inputs, mut signatures) = (vec![], vec![], vec![]);
            for (i, (fixed, input, sig, agent, id)) in sigs.into_iter().enumerate() {
                let label = fixed.map_or_else(|| format!("l{i}"), str::to_string);
                // One legacy string among dictionary members makes the field unparsable: keep
                // the dictionary form, so that most requests reach the per-label checks.
                let agent = fill(agent, &label, &id);
                agents.push(if agent.starts_with('"') {
                    format!("{label}={agent}")
                } else {
                    agent
                });
                inputs.push(fill(input, &label, &id));
                signatures.extend(sig.map(|s| with_label(s, &label)));
            }
            for (input, sig) in odd {
                inputs.push(input.to_string());
                signatures.push(sig.to_string());
            }
            let lines = |name: &str, values: Vec<String>| -> Vec<(String, String)> {
                if split {
                    values.into_iter().map(|v| (name.to_string(), v)).collect()
                } else if values.is_empty() {
                    vec![]
                } else {
                    vec![(name.to_string(), values.join(", "))]
                }
            };
            let mut h = lines("signature-agent", agents);
            h.extend(lines("signature-input", inputs));
            h.extend(lines("signature", signatures));
            h
        })
}

/// Free-form header lines: signature headers in any number and order, arbitrary fields.
fn free_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let line = prop_oneof![
        2 => signature_input().prop_map(|v| ("signature-input".to_string(), v)),
        2 => signature_value().prop_map(|v| ("signature".to_string(), v)),
        2 => agent_value().prop_map(|v| ("signature-agent".to_string(), v)),
        2 => (header_name(), text()),
        1 => field_value().prop_map(|v| ("x-a".to_string(), v)),
    ];
    vec(line, 0..8)
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop_oneof![5 => wba_headers(), 1 => free_headers()]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["GET", "POST", "CONNECT", "connect", ""]).prop_map(str::to_string),
        any::<String>(),
    ]
}

fn scheme() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec!["https", "http", "HTTPS", ""]).prop_map(str::to_string),
        any::<String>(),
    ]
}

fn authority() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "example.com",
            "shop.example:443",
            "[::1]:443",
            ":443",
            ":80",
            "",
            "É.example:443",
        ])
        .prop_map(str::to_string),
        any::<String>(),
    ]
}

fn path_and_query() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "/",
            "",
            "*",
            "/foo?param=Value&Pet=dog",
            "/x?a=1&a=2&b+c=%zz&%",
            "/x?",
            "?",
            "/%E2%82%AC?a=%",
            "/?a=%4",
            "/?=&&a",
        ])
        .prop_map(str::to_string),
        any::<String>(),
        lossy(),
    ]
}

fn request() -> impl Strategy<Value = HttpRequest> {
    (method(), scheme(), authority(), path_and_query(), headers())
        .prop_map(|(m, s, a, p, h)| HttpRequest::from_parts(&m, &s, &a, &p, h))
}

// ---------------------------------------------------------------------------------------------
// JSON strategies.

const JWK_MEMBERS: &[&str] = &[
    "kty", "crv", "x", "y", "n", "e", "kid", "alg", "use", "nbf", "exp", "d",
];

const JSON_KEYS: &[&str] = &[
    "kty",
    "crv",
    "x",
    "kid",
    "nbf",
    "d",
    "keys",
    "mode",
    "header_prefix",
    "clock_skew_seconds",
    "max_validity_seconds",
    "require_nonce",
    "replay_protection",
    "required_components",
    "allow_test_keys",
    "agents",
    "directory",
    "name",
    "url",
    "type",
    "cluster",
    "timeout_ms",
    "max_bytes",
    "max_keys",
    "min_refresh_seconds",
    "max_cache_seconds",
    "negative_cache_seconds",
];

const JSON_STRINGS: &[&str] = &[
    "OKP",
    "EC",
    "RSA",
    "oct",
    "Ed25519",
    "P-256",
    "P-384",
    "ES256",
    "PS512",
    "RS256",
    "AQAB",
    "AAEAAQ",
    P256_X,
    P256_Y,
    TEST_X,
    TEST_TP,
    "AAAA",
    "",
    "EdDSA",
    "sig",
    "enc",
    "observe",
    "enforce",
    "require",
    "x-bot-",
    "X-Web-Bot-Auth-",
    "sig",
    "@authority",
    "@query-param;name=\"q\"",
    "\"@query-param\";name=\"q\"",
    "@nope",
    "https://agent.example",
    "https://a.example/keys.json",
    "https://[::1]:8443",
    "https://a.example:99999",
    "http://a.example",
    "directory",
    "jwks_uri",
    "cimd",
    "c",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        select(vec![0u64, 1, 60, 300, 301, u64::MAX, i64::MAX as u64 + 1]).prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(JSON_STRINGS).prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((select(JSON_KEYS), inner), 0..8).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

fn json_member_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => select(JSON_STRINGS).prop_map(Value::from),
        1 => json_value(),
    ]
}

/// Sets (or, for `None`, removes) members of `v` when it is an object.
fn perturb(mut v: Value, changes: Vec<(&'static str, Option<Value>)>) -> Value {
    if let Some(obj) = v.as_object_mut() {
        for (k, val) in changes {
            match val {
                Some(val) => obj.insert(k.to_string(), val),
                None => obj.remove(k),
            };
        }
    }
    v
}

fn changes(
    keys: &'static [&'static str],
    n: usize,
) -> impl Strategy<Value = Vec<(&'static str, Option<Value>)>> {
    vec(
        (
            select(keys),
            proptest::option::weighted(0.7, json_member_value()),
        ),
        0..n,
    )
}

fn valid_jwks() -> Vec<Value> {
    [
        format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}"}}"#),
        format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}","kid":"{TEST_TP}","alg":"EdDSA","use":"sig","nbf":1,"exp":2000000000}}"#),
        public(1).jwk.to_json(),
        RSA_JWK.to_string(),
        r#"{"kty":"EC","crv":"P-256","x":"a","y":"b"}"#.to_string(),
        format!(r#"{{"kty":"EC","crv":"P-256","x":"{P256_X}","y":"{P256_Y}","alg":"ES256"}}"#),
        format!(
            r#"{{"kty":"RSA","n":"{}","e":"AQAB","alg":"PS512"}}"#,
            rsa_test_key("rsa1024")["n"].as_str().unwrap()
        ),
        format!(
            r#"{{"kty":"RSA","n":"{}","e":"AQAB","alg":"PS512"}}"#,
            rsa_test_key("rsa2048")["n"].as_str().unwrap()
        ),
    ]
    .iter()
    .map(|s| serde_json::from_str(s).unwrap())
    .collect()
}

/// A JWK-shaped object: a valid key with some members changed or removed, or members drawn
/// from scratch.
fn jwk_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (select(valid_jwks()), changes(JWK_MEMBERS, 4)).prop_map(|(v, c)| perturb(v, c)),
        1 => vec((select(JWK_MEMBERS), json_member_value()), 0..8).prop_map(|kv| {
            Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }),
    ]
}

const CONFIG_MEMBERS: &[&str] = &[
    "mode",
    "header_prefix",
    "clock_skew_seconds",
    "max_validity_seconds",
    "require_nonce",
    "replay_protection",
    "required_components",
    "allow_test_keys",
    "agents",
    "directory",
    "bogus",
];
const AGENT_MEMBERS: &[&str] = &["name", "url", "type", "cluster", "keys", "bogus"];
const DIRECTORY_MEMBERS: &[&str] = &[
    "timeout_ms",
    "max_bytes",
    "max_keys",
    "min_refresh_seconds",
    "max_cache_seconds",
    "negative_cache_seconds",
    "bogus",
];

/// A valid full configuration with members of the top level, of an agent and of `directory`
/// changed or removed.
fn config_value() -> impl Strategy<Value = Value> {
    let base: Value = serde_json::from_str(&format!(
        r#"{{"mode":"require","header_prefix":"X-Bot-","clock_skew_seconds":60,
        "max_validity_seconds":300,"require_nonce":false,"replay_protection":true,
        "required_components":["@method","\"@query-param\";name=\"q\""],"allow_test_keys":true,
        "directory":{{"timeout_ms":500,"max_bytes":1000,"max_keys":4,"min_refresh_seconds":1,
        "max_cache_seconds":10,"negative_cache_seconds":5}},
        "agents":[{{"name":"a","url":"https://Agent.Example/","cluster":"c","keys":[{}]}},
                  {{"name":"j","url":"https://j.example/k.json","cluster":"j"}}]}}"#,
        public(1).jwk.to_json()
    ))
    .unwrap();
    (
        changes(CONFIG_MEMBERS, 3),
        changes(AGENT_MEMBERS, 3),
        changes(DIRECTORY_MEMBERS, 3),
        vec(jwk_value(), 0..3),
    )
        .prop_map(move |(top, agent, dir, keys)| {
            let mut v = base.clone();
            if let Some(a) = v["agents"].get_mut(1) {
                *a = perturb(a.take(), agent);
                if !keys.is_empty() {
                    a["keys"] = Value::Array(keys);
                }
            }
            v["directory"] = perturb(v["directory"].take(), dir);
            perturb(v, top)
        })
}

fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string()),
        3 => jwk_value().prop_map(|v| v.to_string()),
        3 => config_value().prop_map(|v| v.to_string()),
        2 => vec(prop_oneof![4 => jwk_value(), 1 => json_value()], 0..5)
            .prop_map(|keys| serde_json::json!({ "keys": keys }).to_string()),
        1 => text(),
    ]
}

fn filter_config() -> impl Strategy<Value = Config> {
    let agents = format!(
        r#"[{{"name":"Agent","url":"https://agent.example","keys":[{}]}},
            {{"name":"Vectors","url":"https://signature-agent.test","keys":[{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}"}}]}},
            {{"name":"Jwks","url":"https://a.example/keys.json","keys":[{RSA_JWK}]}},
            {{"name":"Remote","url":"https://u.example","cluster":"u"}}]"#,
        public(1).jwk.to_json()
    );
    (
        select(vec!["observe", "enforce", "require"]),
        select(vec!["x-web-bot-auth-", "X-Bot-", "x"]),
        policy(),
        select(vec![
            "",
            r#","replay_store":{"cluster":"r"}"#,
            r#","replay_store":{"cluster":"r","on_error":"accept"}"#,
        ]),
    )
        .prop_map(move |(mode, prefix, policy, store)| {
            let mut c = Config::from_json(
                format!(
                    r#"{{"mode":"{mode}","header_prefix":"{prefix}","agents":{agents}{store}}}"#
                )
                .as_bytes(),
            )
            .unwrap();
            c.policy = policy;
            c
        })
}

/// The headers Envoy hands the filter: pseudo-headers (sometimes missing or repeated) and the
/// request's fields.
fn host_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        vec(
            (
                select(vec![":method", ":scheme", ":authority", ":path", ":x"]),
                prop_oneof![
                    select(vec!["GET", "https", "agent.example", "/", "/a?b=c"])
                        .prop_map(str::to_string),
                    text(),
                ],
            )
                .prop_map(|(n, v)| (n.to_string(), v)),
            0..6,
        ),
        headers(),
    )
        .prop_map(|(mut pseudo, fields)| {
            pseudo.extend(fields);
            pseudo
        })
}

// ---------------------------------------------------------------------------------------------
// Properties.

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn signature_input_never_panics(s in text()) {
        if let Ok(inputs) = parse_signature_input(&s) {
            for i in &inputs {
                // The serialization parses back.
                prop_assert!(parse_signature_input(&format!("l={}", i.serialized)).is_ok(), "{}", i.serialized);
                let _ = i.is_web_bot_auth();
            }
        }
    }

    #[test]
    fn header_map_decoding_never_panics(
        bytes in prop_oneof![
            vec(any::<u8>(), 0..64),
            // A plausible count and lengths in front of arbitrary bytes.
            (0u32..4, vec((0u32..8, 0u32..8), 0..4), vec(any::<u8>(), 0..64)).prop_map(
                |(n, lens, rest)| {
                    let mut b = n.to_le_bytes().to_vec();
                    for (k, v) in lens {
                        b.extend(k.to_le_bytes());
                        b.extend(v.to_le_bytes());
                    }
                    b.extend(rest);
                    b
                }
            ),
        ]
    ) {
        let _ = wba_filter::header_map::decode_header_map(&bytes);
    }

    /// A label defined twice is refused, within a line or across lines; otherwise the lenient
    /// and strict readings agree on the labels.
    #[test]
    fn repeated_labels_are_refused(
        members in vec((select(LABELS), signature_input_template(), signature_template()), 1..6),
    ) {
        let labels: Vec<&str> = members.iter().map(|(l, _, _)| *l).collect();
        let repeated = labels.iter().enumerate().any(|(i, l)| labels[..i].contains(l));
        let input = members.iter().map(|(l, t, _)| with_label(t.clone(), l)).collect::<Vec<_>>().join(", ");
        let sig = members.iter().map(|(l, _, t)| with_label(t.clone(), l)).collect::<Vec<_>>().join(", ");
        let field = parse_input_field(&input);
        let strict = parse_signature_input(&input);
        match &field {
            Ok(f) => {
                prop_assert!(!repeated);
                prop_assert_eq!(f.labels().collect::<Vec<_>>(), labels.clone());
                if let Ok(all) = &strict {
                    prop_assert_eq!(all.len(), f.len());
                }
                for (label, _) in f.tagged("web-bot-auth") {
                    prop_assert!(f.contains(label));
                }
            }
            Err(_) => prop_assert!(strict.is_err()),
        }
        if repeated {
            prop_assert!(field.is_err());
        }
        match parse_signature_field(&sig) {
            Ok(f) => {
                prop_assert!(!repeated);
                prop_assert_eq!(f.labels().collect::<Vec<_>>(), labels);
            }
            Err(e) => prop_assert!(!matches!(e, SignatureFieldError::Syntax) && repeated, "{}", e),
        }
    }

    #[test]
    fn structured_signature_input_never_panics(s in signature_input()) {
        let _ = parse_signature_input(&s);
    }

    #[test]
    fn signature_never_panics(s in prop_oneof![text(), signature_value()]) {
        let _ = parse_signature(&s);
    }

    #[test]
    fn signature_agent_never_panics(s in prop_oneof![text(), agent_value()]) {
        if let Ok(a) = parse_signature_agent(&s) {
            for c in ["signature-agent", "signature-agent;key=\"a\"", "signature-agent;key=\"sig1\""] {
                for label in ["sig1", "a", ""] {
                    let _ = a.member_for(&Component::parse(c).unwrap(), label);
                }
            }
        }
    }

    #[test]
    fn component_parse_never_panics(s in prop_oneof![text(), select(COMPONENTS).prop_map(str::to_string)]) {
        if let Ok(c) = Component::parse(&s) {
            let _ = c.name_str();
            let _ = c.to_string();
        }
    }

    #[test]
    fn agent_url_never_panics(s in prop_oneof![text(), agent_value()]) {
        let _ = AgentUrl::parse(&s);
        // The fetch URL keeps the query, and its target is always one a request can carry.
        if let Ok(u) = AgentUrl::parse(&format!("https://{s}")) {
            let (authority, path) = u.fetch_target();
            prop_assert!(path.starts_with('/'), "{path:?}");
            prop_assert!(path.bytes().all(|b| b.is_ascii_graphic()), "{path:?}");
            prop_assert!(!authority.is_empty());
            let _ = u.id().shown();
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn signature_base_never_panics(
        input in prop_oneof![text(), signature_input()],
        components in vec(prop_oneof![text(), select(COMPONENTS).prop_map(str::to_string)], 0..4),
        req in request(),
        status in any::<u16>(),
    ) {
        let response = HttpResponse { status, headers: req.headers.clone() };
        let messages = [
            Message::Request(&req),
            Message::Response { request: &req, response: &response },
        ];
        if let Ok(inputs) = parse_signature_input(&input) {
            for i in &inputs {
                for m in messages {
                    let _ = signature_base(m, i);
                }
            }
        }
        for c in components.iter().filter_map(|c| Component::parse(c).ok()) {
            for m in messages {
                let _ = component_lines(m, &c, &mut String::new());
            }
        }
        let _ = req.target_uri();
        let _ = req.request_target();
    }

    #[test]
    fn jwk_never_panics(s in json_text()) {
        if let Ok(jwk) = Jwk::from_json(&s) {
            if let Ok(key) = jwk.to_key() {
                let _ = key.verify(b"m", &[0; 64]);
                let _ = key.valid_at(NOW);
                prop_assert_eq!(Key::from_jwk_json(&jwk.to_json()).ok(), Some(key));
            }
        }
    }

    #[test]
    fn key_set_never_panics(
        s in prop_oneof![json_text(), lossy()],
        kid in select(vec![KidRule::Thumbprint, KidRule::Label]),
        max in prop_oneof![0..8usize, Just(usize::MAX)],
    ) {
        let _ = parse_key_set(s.as_bytes(), kid, max);
    }

    #[test]
    fn config_never_panics(s in prop_oneof![json_text(), lossy()]) {
        if let Ok(c) = Config::from_json(s.as_bytes()) {
            let _ = wba_filter::key_cache::KeyCache::new(&c);
        }
    }

    #[test]
    fn config_bytes_never_panic(b in vec(any::<u8>(), 0..300)) {
        let _ = Config::from_json(&b);
    }
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn verify_request_never_panics(
        req in request(),
        policy in policy(),
        now in now(),
    ) {
        let ring = ring();
        let v = verify_request(&req, &policy, &ring, now);
        let mut trace = Trace::default();
        let traced = verify_traced(&req, &policy, &ring, now, Some(&mut trace));
        prop_assert_eq!(v, traced);
    }

    /// However many labels, at most `max_signatures` reach the costly checks; a failure that
    /// left some untried is a verdict on the ones tried (all of them invalid).
    #[test]
    fn several_signatures_are_bounded(
        headers in several_signatures(),
        max in max_signatures(),
        now in prop_oneof![4 => Just(NOW), 1 => now()],
    ) {
        let req = HttpRequest::from_parts("GET", "https", "agent.example", "/a?b=c", headers);
        let policy = Policy { max_signatures: max, ..Policy::default() };
        let ring = ring();
        let mut trace = Trace::default();
        let v = verify_traced(&req, &policy, &ring, now, Some(&mut trace));
        // A bound of 0 (refused by the configuration) counts as 1.
        let bound = max.max(1);
        let costly = trace.checks.iter().filter(|c| c.name == "signature base").count();
        prop_assert!(costly <= bound, "{} > {}", costly, bound);
        if let Verdict::Failed(f) = &v {
            if f.not_tried > 0 {
                prop_assert_eq!(costly, bound);
                prop_assert_eq!(f.outcome(), Outcome::Invalid);
            }
        }
        prop_assert_eq!(v, verify_request(&req, &policy, &ring, now));
    }

    #[test]
    fn directory_response_never_panics(
        req in request(),
        status in any::<u16>(),
        body in vec(any::<u8>(), 0..16),
        now in now(),
        skew in any::<i64>(),
    ) {
        let response = HttpResponse { status, headers: req.headers.clone() };
        let _ = verify_directory_response(&req, &response, &body, &[test_key(), public(1)], now, skew);
    }

    /// A whole fetch response judged, with arbitrary fields (signature fields among them) and
    /// a body that is sometimes a key set, with or without `require_proof`.
    #[test]
    fn fetch_evaluation_never_panics(
        req in request(),
        body in prop_oneof![json_text(), lossy()],
        kind in select(vec!["directory", "jwks_uri"]),
        require_proof in any::<bool>(),
        max_keys in 1..4u64,
        now in now(),
        skew in any::<i64>(),
    ) {
        let url = if kind == "directory" { "https://agent.example" } else { "https://agent.example/k?v=1" };
        let cfg = Config::from_json(
            format!(
                r#"{{"directory":{{"require_proof":{require_proof},"max_keys":{max_keys}}},"agents":[{{"name":"a","url":"{url}","cluster":"c"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let mut headers = req.headers.clone();
        headers.push((
            "content-type".into(),
            if kind == "directory" {
                "application/http-message-signatures-directory+json".into()
            } else {
                "application/json".into()
            },
        ));
        let response = FetchResponse { status: Some(200), headers, body: body.into_bytes(), too_large: false };
        if let Ok(f) = evaluate(&cfg.agents[0], &response, &cfg.directory, skew, now) {
            prop_assert!(f.keys.len() <= max_keys as usize);
            prop_assert!(!require_proof || f.keys.iter().all(|k| k.proof == wba_filter::fetch::Proof::Valid));
        }
    }
}

proptest! {
    // Each case signs and verifies (Ed25519 in a debug build): fewer cases.
    #![proptest_config(config(512))]

    /// Correctly signed requests, then perturbed: clock, policy, one header edited.
    #[test]
    fn signed_requests_never_panic(
        req in request(),
        created in time(),
        validity in prop_oneof![Just(300i64), any::<i64>()],
        legacy in any::<bool>(),
        policy in policy(),
        now in now(),
        tamper in proptest::option::of((select(vec!["signature-input", "signature", "signature-agent"]), vec(edit(), 1..3))),
    ) {
        let mut req = req;
        for n in ["signature-input", "signature", "signature-agent"] {
            req.remove_header(n);
        }
        let mut opts = SignOptions::web_bot_auth("https://agent.example", created, validity);
        opts.legacy_agent = legacy;
        let Ok(signed) = sign_request(&req, &signing_key(1), &opts) else {
            return Ok(());
        };
        for (n, v) in signed.pairs() {
            let v = match &tamper {
                Some((name, edits)) if *name == n => apply_edits(v, edits),
                _ => v,
            };
            req.add_header(&n, &v);
        }
        let _ = verify_request(&req, &policy, &ring(), now);
    }

    /// The filter's request path, twice over one shared store (the second time without
    /// waiting, as after a key fetch): strip, verify, key cache, replay check, annotate,
    /// reject. The fetched agent's keys are sometimes recorded first, fetched or failed, with
    /// any freshness or Retry-After.
    #[test]
    fn request_filter_never_panics(
        config in filter_config(),
        headers in host_headers(),
        signed in proptest::option::of(select(vec!["https://agent.example", "https://u.example"])),
        now in now(),
        fetch in proptest::option::of((
            any::<bool>(),
            prop_oneof![Just(600i64), any::<i64>()],
            proptest::option::of(any::<i64>()),
            now(),
        )),
    ) {
        let mut headers = headers;
        if let Some(agent) = signed {
            let req = request_from_headers(&headers, &config.header_prefix);
            let opts = SignOptions::web_bot_auth(agent, now.saturating_sub(10), 60);
            if let Ok(h) = sign_request(&req, &signing_key(1), &opts) {
                headers.retain(|(n, _)| !n.to_ascii_lowercase().starts_with("signature"));
                headers.extend(h.pairs());
            }
        }
        let mut keys = KeyCache::new(&config);
        let mut store = MemoryStore::default();
        keys.prepare(&mut store).unwrap();
        // A small table: creating the default 4,096 buckets per case would dominate the run.
        let replay = ReplayTable::open(&mut store, 64, [3; 32]).unwrap();
        if let Some((ok, fresh_for, retry_after, at)) = fetch {
            let result = if ok {
                Ok(Fetched::unproven(vec![public(1), test_key()], fresh_for))
            } else {
                Err(FetchFailure { kind: FailureKind::Status, detail: "500".into(), retry_after })
            };
            keys.record(&mut store, "https://u.example", &result, &config.directory, at);
        }
        for may_wait in [true, false] {
            let mut host = RecordingHost::new(headers.clone(), now);
            let mut action =
                on_request_headers(&mut host, &config, &mut keys, &mut replay.guard(&mut store), may_wait);
            if let Action::NeedBody(pending) = &action {
                prop_assert!(host.sent.is_none() && host.counters.is_empty());
                let body = Body::Complete(b"{}");
                action = on_request_body(&mut host, &config, &mut replay.guard(&mut store), pending, body);
            }
            if let Action::AskStore(query) = &action {
                action = on_store_answer(&mut host, &config, &mut replay.guard(&mut store), query, &StoreAnswer::Fresh);
            }
            prop_assert!(!host.counters.is_empty());
            if let Some(sent) = &host.sent {
                prop_assert!(serde_json::from_str::<Value>(&sent.body).is_ok(), "{}", sent.body);
            }
            if matches!(action, Action::Wait(_)) {
                prop_assert!(may_wait);
                continue;
            }
            let result = format!("{}result", config.header_prefix);
            prop_assert_eq!(
                host.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(&result)).count(),
                1
            );
            prop_assert_eq!(action == Action::Stop, host.sent.is_some());
        }
    }
}

// Signing and RSA arithmetic are slow in debug builds: fewer cases.
proptest! {
    #![proptest_config(config(48))]

    /// Any bytes as a signature, with a key of each algorithm: refused (a random value is no
    /// signature), never a panic, whatever the length; a valid signature with one byte changed
    /// is refused too.
    #[test]
    fn signature_bytes_of_any_length_never_panic(
        bytes in prop_oneof![vec(any::<u8>(), 0..80), vec(any::<u8>(), 250..260), vec(any::<u8>(), 0..1100)],
        message in vec(any::<u8>(), 0..64),
        flip in any::<prop::sample::Index>(),
    ) {
        for key in algorithm_keys() {
            prop_assert!(key.verify(&message, &bytes).is_err());
        }
        for private in algorithm_signers() {
            let key = Key::from_jwk_json(&private.public_jwk().to_json()).unwrap();
            let mut sig = private.sign_message(&message).unwrap();
            prop_assert_eq!(key.verify(&message, &sig), Ok(()));
            let i = flip.index(sig.len());
            sig[i] ^= 0x01;
            prop_assert!(key.verify(&message, &sig).is_err());
        }
    }
}
