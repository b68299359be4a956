//! Property tests: arbitrary requests (headers, body frames, trailers) and arbitrary key
//! directory answers through the module's hooks, as Envoy calls them. No hook may panic (a
//! caught panic logs "internal error (panic)"), a stream is answered at most once, no trailer
//! of ours goes on with a request, and the fake Envoy sees no misuse of its ABI (filter state
//! set twice, a deleted scheduler used, a callback on a destroyed stream).

use proptest::prelude::*;
use wba_filter::content_digest;
use wba_filter::plan::is_owned_header;

use crate::abi::fake::{self, Config};
use crate::abi::{BodyStatus, CalloutResult, HeadersStatus};
use crate::fetcher::EVENT_WAKE;
use crate::stream::tests::{pinned, request};

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("signature".to_string()),
        Just("signature-input".to_string()),
        Just("signature-agent".to_string()),
        Just("content-digest".to_string()),
        Just("x-web-bot-auth-result".to_string()),
        Just("X_Web_Bot_Auth_Agent".to_string()),
        "[a-zA-Z_-]{1,12}",
    ]
}

/// Request trailers: none (`None`), or some, ours forged among them.
type Trailers = Option<Vec<(String, String)>>;

fn trailers() -> impl Strategy<Value = Trailers> {
    prop::option::of(prop::collection::vec((header_name(), header_value()), 0..4))
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"sig1=("@authority" "signature-agent";key="agent");created=1;keyid="x";tag="web-bot-auth""#.to_string()),
        Just("sig1=:AAAA:".to_string()),
        Just(r#"agent="https://a.example""#.to_string()),
        Just("sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:".to_string()),
        any::<String>(),
    ]
}

/// A request: its headers, body frames, the trailers that end it. A signed one may cover a
/// `Content-Digest` (of its body, or of another), so the body is held and checked.
fn exchange() -> impl Strategy<Value = (Vec<(String, String)>, Vec<Vec<u8>>, Trailers)> {
    (
        any::<bool>(),
        0..3usize,
        prop::collection::vec((header_name(), header_value()), 0..6),
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..4),
        trailers(),
    )
        .prop_map(|(signed, digest, extra, body, trailers)| {
            let whole: Vec<u8> = body.concat();
            let field = match digest {
                0 => None,
                1 => Some(content_digest::sha256(&whole)),
                _ => Some(content_digest::sha256(b"another body")),
            };
            let covered: Vec<(&str, &str)> = field
                .iter()
                .map(|f| ("content-digest", f.as_str()))
                .collect();
            let mut h = request(signed, &covered);
            // After signing: mutations, duplicates, forgeries.
            h.extend(extra);
            (h, body, trailers)
        })
}

fn drive(config: &Config, headers: &[(String, String)], body: &[Vec<u8>], trailers: &Trailers) {
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let s = config.stream(&refs);
    let no_body = body.is_empty() && trailers.is_none();
    let status = s.headers(no_body);
    assert!(status == HeadersStatus::CONTINUE || status == HeadersStatus::STOP_ITERATION);
    for (i, chunk) in body.iter().enumerate() {
        let last = i + 1 == body.len() && trailers.is_none();
        let r = s.body(chunk, last);
        assert!(r != BodyStatus(2), "never watermark");
    }
    send_trailers(&s, trailers);
    config.scheduled(EVENT_WAKE);
    s.run_events();
    let done = s.complete();
    assert!(done.sent.len() <= 1, "answered twice: {:?}", done.sent);
    assert!(
        done.sent.is_empty() || done.continued == 0,
        "answered and passed"
    );
    no_trailer_of_ours(&done);
}

fn send_trailers(s: &crate::abi::fake::Stream, trailers: &Trailers) {
    if let Some(t) = trailers {
        let refs: Vec<(&str, &str)> = t.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        s.trailers_of(&refs);
    }
}

/// Whatever became of the request, none of our trailers is left in it.
fn no_trailer_of_ours(done: &fake::FakeStream) {
    let ours: Vec<_> = done
        .trailers
        .iter()
        .flatten()
        .filter(|(n, _)| is_owned_header("x-web-bot-auth-", n))
        .collect();
    assert!(ours.is_empty(), "trailers of ours left: {ours:?}");
}

fn clean() {
    let (violations, panics) = fake::with(|e| {
        (
            e.violations.clone(),
            e.logs.iter().filter(|(_, m)| m.contains("panic")).count(),
        )
    });
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(panics, 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_never_panic((headers, body, trailers) in exchange(), mode in 0..3usize) {
        fake::install();
        let mode = ["observe", "enforce", "require"][mode];
        let config = Config::new("web_bot_auth", &pinned(mode)).unwrap();
        drive(&config, &headers, &body, &trailers);
        clean();
    }

    #[test]
    fn arbitrary_directory_answers_never_panic(
        (headers, body, trailers) in exchange(),
        status in prop_oneof![Just("200".to_string()), "[0-9]{0,4}"],
        content_type in prop_oneof![
            Just("application/http-message-signatures-directory+json".to_string()),
            any::<String>(),
        ],
        answer in prop_oneof![
            Just(br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA"}]}"#.to_vec()),
            prop::collection::vec(any::<u8>(), 0..128),
        ],
        reset in any::<bool>(),
    ) {
        fake::install();
        let json = r#"{"mode":"enforce","agents":[{"name":"A","url":"https://a.example","cluster":"dir"}]}"#;
        let config = Config::new("web_bot_auth", json).unwrap();
        let refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let waiting = config.stream(&refs);
        waiting.headers(body.is_empty() && trailers.is_none());
        config.scheduled(EVENT_WAKE);
        if let Some((id, _, _)) = fake::with(|e| e.config_callouts.pop()) {
            let result = if reset { CalloutResult::RESET } else { CalloutResult::SUCCESS };
            config.answer(id, result, &[(":status", &status), ("content-type", &content_type)], &answer);
        }
        waiting.run_events();
        for (i, chunk) in body.iter().enumerate() {
            waiting.body(chunk, i + 1 == body.len() && trailers.is_none());
        }
        send_trailers(&waiting, &trailers);
        let done = waiting.complete();
        prop_assert!(done.sent.len() <= 1);
        no_trailer_of_ours(&done);
        drive(&config, &headers, &body, &trailers);
        clean();
    }
}
