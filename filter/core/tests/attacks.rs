//! Round 2 of the attack suite (issue 17), on the finished build: findings best shown without
//! Envoy, each a test of the safe behaviour (each failed on the build it was found on).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::panic, clippy::expect_used)]

mod common;

use common::{ed25519_key as ed25519, pinned_config as config};

use wba_filter::config::Config;
use wba_filter::host::RecordingHost;
use wba_filter::key_cache::KeyCache;
use wba_filter::private_key::PrivateKey;
use wba_filter::replay::MemoryReplay;
use wba_filter::request::HttpRequest;
use wba_filter::request_filter::{on_request_headers, request_from_headers, Action};
use wba_filter::sign::{sign_request, SignOptions, SignatureKey as _, SignedHeaders};
use wba_filter::verify::{verify_traced, Trace};

const NOW: i64 = 1_800_000_000;
const AGENT: &str = "https://agent.example";

fn head(path: &str) -> Vec<(String, String)> {
    [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "shop.example"),
        (":path", path),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

fn opts(label: &str, nonce: Option<&str>) -> SignOptions {
    SignOptions {
        label: label.into(),
        nonce: nonce.map(str::to_string),
        ..SignOptions::web_bot_auth(AGENT, NOW - 5, 300)
    }
}

fn sign(headers: &[(String, String)], key: &PrivateKey, o: &SignOptions) -> SignedHeaders {
    sign_request(&request_from_headers(headers, "x-web-bot-auth-"), key, o).unwrap()
}

/// `headers` plus several signatures' fields, joined on one line each.
fn carrying(mut headers: Vec<(String, String)>, sigs: &[&SignedHeaders]) -> Vec<(String, String)> {
    let join = |f: &dyn Fn(&SignedHeaders) -> Option<String>| {
        sigs.iter()
            .filter_map(|s| f(s))
            .collect::<Vec<_>>()
            .join(", ")
    };
    headers.push((
        "signature-agent".into(),
        join(&|s| s.signature_agent.clone()),
    ));
    headers.push((
        "signature-input".into(),
        join(&|s| Some(s.signature_input.clone())),
    ));
    headers.push(("signature".into(), join(&|s| Some(s.signature.clone()))));
    headers
}

/// One request through the filter at [`NOW`].
fn send(config: &Config, replay: &MemoryReplay, headers: Vec<(String, String)>) -> (u16, String) {
    common::through_filter(config, replay, headers, NOW)
}

fn table() -> MemoryReplay {
    common::replay_table()
}

fn bytes_of(headers: &[(String, String)]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum()
}

// ------------------------------------------------------------------------ 1. work per request

/// Covered component identifiers that each read the same thing: the boolean parameters `sf`,
/// `bs`, `req`, `tr` set to false (`?0`) change an identifier's serialization, not what it
/// reads, and their orders are distinct identifiers again. `base` is the identifier without
/// parameters (`"x"`, or `"@query-param";name="q"`): 65 for four flags.
fn equivalent_identifiers(base: &str, flags: &[&str]) -> Vec<String> {
    let mut out = vec![base.to_string()];
    // Every ordered selection of the flags, each `=?0`.
    fn extend(prefix: String, left: &[&str], out: &mut Vec<String>) {
        for (i, f) in left.iter().enumerate() {
            let id = format!("{prefix};{f}=?0");
            out.push(id.clone());
            let rest: Vec<&str> = left
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, f)| *f)
                .collect();
            extend(id, &rest, out);
        }
    }
    extend(base.to_string(), flags, &mut out);
    out
}

/// A forged request an attacker without any key sends: `labels` Web Bot Auth signatures, each
/// naming the agent's published key id and covering `@authority`, its `Signature-Agent`
/// member and `components`, with 64 bytes of zeros as the signature. Every cheap check passes
/// (the agent is trusted, the key known, the window fresh), so each is built and verified.
fn forged(
    mut headers: Vec<(String, String)>,
    key: &PrivateKey,
    components: &[String],
    labels: usize,
) -> Vec<(String, String)> {
    let keyid = key.public_jwk().thumbprint().unwrap().to_string();
    let mut agent = Vec::new();
    let mut inputs = Vec::new();
    let mut sigs = Vec::new();
    for l in 0..labels {
        let label = format!("s{l}");
        let mut covered = vec![
            "\"@authority\"".to_string(),
            format!("\"signature-agent\";key=\"{label}\""),
        ];
        covered.extend(components.iter().cloned());
        agent.push(format!("{label}=\"{AGENT}\""));
        inputs.push(format!(
            "{label}=({});created={};expires={};keyid=\"{keyid}\";tag=\"web-bot-auth\"",
            covered.join(" "),
            NOW - 5,
            NOW + 300
        ));
        sigs.push(format!("{label}=:{}:", "A".repeat(86) + "=="));
    }
    headers.push(("signature-agent".into(), agent.join(", ")));
    headers.push(("signature-input".into(), inputs.join(", ")));
    headers.push(("signature".into(), sigs.join(", ")));
    headers
}

/// The bytes of every signature base verification built for `headers`, and how long it took.
fn base_bytes(config: &Config, headers: &[(String, String)]) -> usize {
    let req: HttpRequest = request_from_headers(headers, "x-web-bot-auth-");
    let cache = KeyCache::new(config);
    let mut trace = Trace::default();
    let _ = verify_traced(&req, &config.policy, &cache, NOW, Some(&mut trace));
    trace.bases.iter().map(|(_, b)| b.len()).sum()
}

/// The most signature-base bytes a request may make the verifier build and hash, per byte of
/// the request: each of at most `max_signatures` (3) bases reads each covered field once, plus
/// its identifiers, so a few times the request's size. Any more is work an unsigned request
/// buys for free.
const BASE_BYTES_PER_REQUEST_BYTE: usize = 8;

#[test]
fn a_field_covered_under_equivalent_identifiers_is_read_into_the_base_once() {
    let key = ed25519(1);
    let c = config(&[&key], "");
    let ids = equivalent_identifiers("\"x-pad\"", &["sf", "bs", "req", "tr"]);
    let ids: Vec<String> = ids.into_iter().take(62).collect();
    let mut h = head("/");
    h.push(("x-pad".into(), "p".repeat(4 * 1024)));
    let h = forged(h, &key, &ids, 3);
    let size = bytes_of(&h);
    assert!(
        size < 60 * 1024,
        "{size}: within Envoy's default header limit"
    );
    let built = base_bytes(&c, &h);
    eprintln!("field x 62: request {size} bytes, bases {built} bytes");
    assert!(
        built <= BASE_BYTES_PER_REQUEST_BYTE * size,
        "a {size}-byte unsigned request made the verifier build {built} bytes of signature bases"
    );
}

#[test]
fn a_query_parameter_named_under_equivalent_identifiers_is_read_into_the_base_once() {
    let key = ed25519(1);
    let c = config(&[&key], "");
    // The flags set to false are accepted on a derived component too (only a true one is
    // refused there), and `name="a"`, `name="%61"` name the same parameter.
    let ids: Vec<String> =
        equivalent_identifiers("\"@query-param\";name=\"a\"", &["sf", "bs", "req", "tr"])
            .into_iter()
            .take(61)
            .chain(std::iter::once("\"@query-param\";name=\"%61\"".to_string()))
            .collect();
    let query = "a&".repeat(2 * 1024);
    let h = forged(head(&format!("/?{query}")), &key, &ids, 3);
    let size = bytes_of(&h);
    assert!(size < 60 * 1024, "{size}");
    let built = base_bytes(&c, &h);
    eprintln!(
        "query x {}: request {size} bytes, bases {built} bytes",
        ids.len()
    );
    assert!(
        built <= BASE_BYTES_PER_REQUEST_BYTE * size,
        "a {size}-byte unsigned request made the verifier build {built} bytes of signature bases"
    );
}

// ------------------------------------------------------------------------ 2. replay identity

#[test]
fn two_signatures_of_one_request_with_one_nonce_are_not_a_replay_of_each_other() {
    let (old, new) = (ed25519(1), ed25519(2));
    let c = config(&[&old, &new], "");
    let h = head("/orders/7");
    let s1 = sign(&h, &old, &opts("old", Some("n-7f3a")));
    let s2 = sign(&h, &new, &opts("new", Some("n-7f3a")));
    let replay = table();
    // Never seen before: both signatures verify, and nothing was used.
    assert_eq!(
        send(&c, &replay, carrying(h.clone(), &[&s1, &s2])),
        (200, "verified".into())
    );
    // ...and once accepted, each is a replay.
    assert_eq!(
        send(&c, &replay, carrying(h.clone(), &[&s2])),
        (429, "replayed".into())
    );
}

// ------------------------------------------------------------------------ 3. the fleet's store

#[test]
fn a_request_refused_because_the_store_failed_leaves_no_local_record() {
    use wba_filter::replay_store::StoreAnswer;
    use wba_filter::request_filter::on_store_answer;
    let key = ed25519(1);
    let c = config(
        &[&key],
        r#""replay_store":{"cluster":"wba_replay","on_error":"reject"},"#,
    );
    let h = head("/checkout");
    let request = carrying(h.clone(), &[&sign(&h, &key, &opts("sig1", Some("n-1")))]);
    let replay = table();
    let ask = |replay: &MemoryReplay| {
        let mut host = RecordingHost::new(request.clone(), NOW);
        let action = on_request_headers(&mut host, &c, &mut KeyCache::new(&c), &mut &*replay, true);
        (host, action)
    };
    // The store does not answer: 503, fails closed.
    let (mut host, action) = ask(&replay);
    let Action::AskStore(query) = action else {
        panic!("{action:?}")
    };
    let failed = StoreAnswer::Failed("the replay store did not answer".into());
    assert_eq!(
        on_store_answer(&mut host, &c, &mut &replay, &query, &failed),
        Action::Stop
    );
    assert_eq!(host.sent.as_ref().map(|s| s.status), Some(503));
    // The retry (the store is back) must be asked about, not refused as a replay here.
    let (host, action) = ask(&replay);
    assert!(
        matches!(action, Action::AskStore(_)),
        "{action:?}: {:?}",
        host.sent.map(|s| (s.status, s.body))
    );
}
