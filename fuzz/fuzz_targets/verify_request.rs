//! Whole-request verification, and the filter's request path around it (strip, verify, replay
//! check, plan, reject) over a recording host and an in-memory shared store.
//!
//! Input: optional settings lines, then a request in the text form of `wba_filter_fuzz`:
//!
//! ```text
//! @now 1735689600
//! @skew 60
//! @validity 86400
//! @nonce
//! @max 2
//! @mode require
//! @fetched 600
//! @fetch-failed 30
//! POST https example.com /foo
//! signature-input: ...
//! ```
//!
//! The configuration pins the RFC 9421 test key for `https://signature-agent.test` (so the
//! published vectors verify) and for a JWKS agent, and lists `https://remote.example`, whose keys
//! are fetched: `@fetched <fresh_for>` records the test key as fetched for it, `@fetch-failed
//! [retry_after]` a failed fetch.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wba_filter::config::{Config, Mode};
use wba_filter::fetch::{FailureKind, FetchFailure, Fetched};
use wba_filter::host::RecordingHost;
use wba_filter::jwk::Key;
use wba_filter::key_cache::KeyCache;
use wba_filter::replay::ReplayTable;
use wba_filter::replay_store::StoreAnswer;
use wba_filter::request_filter::{
    on_request_body, on_request_headers, on_store_answer, Action, Body,
};
use wba_filter::shared::MemoryStore;
use wba_filter::verify::{verify_traced, Trace};

const TEST_KEY: &str =
    r#"{"kty":"OKP","crv":"Ed25519","x":"JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs"}"#;

/// The configuration (with the fleet's replay store, or without), loaded once.
fn config(store: bool) -> Option<&'static Config> {
    static CONFIGS: OnceLock<[Option<Config>; 2]> = OnceLock::new();
    CONFIGS.get_or_init(|| [load(""), load(r#""replay_store":{"cluster":"r"},"#)])
        [usize::from(store)]
    .as_ref()
}

fn load(store: &str) -> Option<Config> {
    Config::from_json(
        format!(
            r#"{{"allow_test_keys":true,{store}"agents":[
                    {{"name":"vectors","url":"https://signature-agent.test","keys":[{TEST_KEY}]}},
                    {{"name":"jwks","url":"https://jwks.example/keys.json","keys":[{TEST_KEY}]}},
                    {{"name":"remote","url":"https://remote.example","cluster":"remote"}}]}}"#
        )
        .as_bytes(),
    )
    .ok()
}

fn test_key() -> Option<Key> {
    Key::from_jwk_json(TEST_KEY).ok()
}

fuzz_target!(|data: &[u8]| {
    // The whole input is the unit: it builds its own keys, store and replay table, so running
    // it again does the same work.
    wba_filter_fuzz::bounded("request path", || run(data));
});

fn run(data: &[u8]) {
    let Some(base) = config(data.first().is_some_and(|b| b & 1 == 1)) else {
        return;
    };
    let text = wba_filter_fuzz::text(data);
    let mut lines = text.split('\n').peekable();
    let mut config = base.clone();
    config.policy.max_validity_seconds = i64::MAX;
    let mut now: i64 = 1_735_689_600;
    let mut fetch = None;
    while let Some(setting) = lines.peek().and_then(|l| l.strip_prefix('@')) {
        let (name, value) = setting.split_once(' ').unwrap_or((setting, ""));
        let number = value.trim().parse::<i64>().ok();
        match (name, number) {
            ("now", Some(n)) => now = n,
            ("skew", Some(n)) => config.policy.clock_skew_seconds = n,
            ("validity", Some(n)) => config.policy.max_validity_seconds = n,
            ("nonce", _) => config.policy.require_nonce = true,
            ("max", Some(n)) => config.policy.max_signatures = usize::try_from(n).unwrap_or(0),
            ("fetched", Some(n)) => {
                fetch = test_key().map(|key| Ok(Fetched::unproven(vec![key], n)))
            }
            ("fetch-failed", n) => {
                fetch = Some(Err(FetchFailure {
                    kind: FailureKind::Status,
                    detail: "status 500".into(),
                    retry_after: n,
                }))
            }
            ("mode", _) => {
                config.mode = match value.trim() {
                    "observe" => Mode::Observe,
                    "require" => Mode::Require,
                    _ => Mode::Enforce,
                }
            }
            _ => {}
        }
        lines.next();
    }
    let (method, scheme, authority, path) =
        wba_filter_fuzz::request_line(lines.next().unwrap_or_default());
    let fields = wba_filter_fuzz::header_lines(lines);

    let mut keys = KeyCache::new(&config);
    let mut store = MemoryStore::default();
    let _ = keys.prepare(&mut store);
    // A small table: creating the default 4,096 buckets per input would dominate the run.
    let Ok(replay) = ReplayTable::open(&mut store, 64, [3; 32]) else {
        return;
    };
    if let Some(result) = fetch {
        keys.record(
            &mut store,
            "https://remote.example",
            &result,
            &config.directory,
            now,
        );
    }
    let request = wba_filter::request::HttpRequest::from_parts(
        method,
        scheme,
        authority,
        path,
        fields.clone(),
    );
    let mut trace = Trace::default();
    let _ = verify_traced(&request, &config.policy, &keys, now, Some(&mut trace));
    // The bound on costly checks holds whatever the request.
    let costly = trace
        .checks
        .iter()
        .filter(|c| c.name == "signature base")
        .count();
    assert!(
        costly <= config.policy.max_signatures.max(1),
        "{costly} signatures checked"
    );

    let mut headers = vec![
        (":method".to_string(), method.to_string()),
        (":scheme".to_string(), scheme.to_string()),
        (":authority".to_string(), authority.to_string()),
        (":path".to_string(), path.to_string()),
    ];
    headers.extend(fields);
    let first = headers.clone();
    let mut host = RecordingHost::new(headers, now);
    // Twice over one store, the second time as after a key fetch: a verified signature is then
    // a replay.
    let _ = on_request_headers(
        &mut host,
        &config,
        &mut keys,
        &mut replay.guard(&mut store),
        true,
    );
    host.headers = first;
    let action = on_request_headers(
        &mut host,
        &config,
        &mut keys,
        &mut replay.guard(&mut store),
        false,
    );
    if let Action::NeedBody(pending) = &action {
        // The request's own header text stands in for a body.
        let body = Body::Complete(data);
        let _ = on_request_body(
            &mut host,
            &config,
            &mut replay.guard(&mut store),
            pending,
            body,
        );
        let _ = on_request_body(
            &mut host,
            &config,
            &mut replay.guard(&mut store),
            pending,
            Body::TooLarge(1),
        );
    }
    if let Action::AskStore(query) = action {
        for answer in [
            StoreAnswer::Fresh,
            StoreAnswer::Replayed,
            StoreAnswer::from_response(Some(503), data),
        ] {
            let _ = on_store_answer(
                &mut host,
                &config,
                &mut replay.guard(&mut store),
                &query,
                &answer,
            );
        }
    }
}
