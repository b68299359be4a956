//! The per-request state machine: strip, verify, annotate, enforce. Pure over [`Host`].

use crate::config::Config;
use crate::host::Host;
use crate::keyring::KeySource;
use crate::plan::{is_owned_header, plan};
use crate::request::HttpRequest;
use crate::stats::Counter;
use crate::verdict::Verdict;
use crate::verify::verify_request;

/// What the host should do with the request after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward it (possibly annotated).
    Continue,
    /// A local response was sent (or the request waits): stop iteration.
    Stop,
}

/// Filter-state keys visible to access logs.
pub const LOG_KEYS: [&str; 4] = ["wba.result", "wba.reason", "wba.agent", "wba.key_id"];

/// Handles a request's headers: strips the inbound identity headers, verifies, sets the
/// result headers, counts, records, and rejects by policy.
pub fn on_request_headers(host: &mut dyn Host, config: &Config, keys: &dyn KeySource) -> Action {
    let headers = host.request_headers();
    // Strip first, whatever the outcome: inbound copies of our headers are forgeries.
    let mut stripped: Vec<&str> = Vec::new();
    for (name, _) in &headers {
        if is_owned_header(&config.header_prefix, name)
            && !stripped.iter().any(|s| s.eq_ignore_ascii_case(name))
        {
            stripped.push(name);
        }
    }
    for name in &stripped {
        host.remove_request_header(name);
    }
    let req = request_from_headers(&headers, &config.header_prefix);
    let verdict = verify_request(&req, &config.policy, keys, host.now());
    apply(host, config, &verdict)
}

/// Sets headers, stats and log values for `verdict`, and rejects when the plan says so.
pub fn apply(host: &mut dyn Host, config: &Config, verdict: &Verdict) -> Action {
    let plan = plan(verdict, config);
    for (n, v) in &plan.set {
        host.set_request_header(n, v);
    }
    host.increment(Counter::Outcome(verdict.outcome()));
    if let Some(r) = verdict.reason() {
        host.increment(Counter::Reason(r));
    }
    host.set_log_value(LOG_KEYS[0], verdict.outcome().token());
    match verdict {
        Verdict::Verified(v) => {
            host.set_log_value(LOG_KEYS[2], &v.agent_url);
            host.set_log_value(LOG_KEYS[3], &v.key_id);
        }
        Verdict::Failed(f) => host.set_log_value(LOG_KEYS[1], f.reason.token()),
        Verdict::Unsigned => {}
    }
    match plan.reject {
        Some(r) => {
            host.increment(Counter::Rejected);
            host.send_response(r.status, &r.headers, &r.body);
            Action::Stop
        }
        None => Action::Continue,
    }
}

/// The request as the verifier sees it: pseudo-headers for the derived components, the other
/// headers (minus the stripped ones) as fields.
pub fn request_from_headers(headers: &[(String, String)], prefix: &str) -> HttpRequest {
    let pseudo = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let fields: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| !n.starts_with(':') && !is_owned_header(prefix, n))
        .cloned()
        .collect();
    let mut authority = pseudo(":authority").to_string();
    if authority.is_empty() {
        authority = fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
    }
    let scheme = match pseudo(":scheme") {
        "" => "http",
        s => s,
    };
    HttpRequest::from_parts(
        pseudo(":method"),
        scheme,
        &authority,
        pseudo(":path"),
        fields,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::Jwk;
    use crate::sign::{sign_request, SignOptions};
    use ed25519_dalek::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    type Sent = (u16, Vec<(String, String)>, String);

    /// A recording host.
    #[derive(Default)]
    struct FakeHost {
        headers: Vec<(String, String)>,
        now: i64,
        sent: Option<Sent>,
        counters: Vec<Counter>,
        log: Vec<(String, String)>,
    }

    impl Host for FakeHost {
        fn request_headers(&self) -> Vec<(String, String)> {
            self.headers.clone()
        }
        fn remove_request_header(&mut self, name: &str) {
            self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        }
        fn set_request_header(&mut self, name: &str, value: &str) {
            self.remove_request_header(name);
            self.headers.push((name.into(), value.into()));
        }
        fn now(&self) -> i64 {
            self.now
        }
        fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str) {
            self.sent = Some((status, headers.to_vec(), body.into()));
        }
        fn increment(&mut self, counter: Counter) {
            self.counters.push(counter);
        }
        fn set_log_value(&mut self, key: &str, value: &str) {
            self.log.push((key.into(), value.into()));
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn config(mode: &str) -> Config {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let jwk = Jwk::from_ed25519(sk.verifying_key().as_bytes()).to_json();
        Config::from_json(
            format!(r#"{{"mode":"{mode}","agents":[{{"name":"A","url":"https://a.example","keys":[{jwk}]}}]}}"#)
                .as_bytes(),
        )
        .expect("config")
    }

    fn host(signed: bool, extra: &[(&str, &str)]) -> FakeHost {
        let mut headers: Vec<(String, String)> = vec![
            (":method".into(), "GET".into()),
            (":scheme".into(), "http".into()),
            (":authority".into(), "shop.example".into()),
            (":path".into(), "/x?y=1".into()),
        ];
        headers.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        if signed {
            let req = request_from_headers(&headers, "x-web-bot-auth-");
            let h = sign_request(
                &req,
                &SigningKey::from_bytes(&[5; 32]),
                &SignOptions::web_bot_auth("https://a.example", NOW, 60),
            )
            .expect("sign");
            headers.extend(h.pairs());
        }
        FakeHost {
            headers,
            now: NOW,
            ..FakeHost::default()
        }
    }

    fn get<'a>(h: &'a FakeHost, name: &str) -> Vec<&'a str> {
        h.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn verified_request_is_annotated_and_forwarded() {
        let c = config("require");
        let mut h = host(true, &[]);
        assert_eq!(
            on_request_headers(&mut h, &c, &c.pinned_keys()),
            Action::Continue
        );
        assert_eq!(get(&h, "x-web-bot-auth-result"), ["verified"]);
        assert_eq!(get(&h, "x-web-bot-auth-agent"), ["https://a.example"]);
        assert_eq!(get(&h, "x-web-bot-auth-agent-name"), ["A"]);
        assert_eq!(
            get(&h, "x-web-bot-auth-expires"),
            [(NOW + 60).to_string().as_str()]
        );
        assert_eq!(
            get(&h, "signature").len(),
            1,
            "signature headers pass unchanged"
        );
        assert!(h
            .counters
            .contains(&Counter::Outcome(crate::verdict::Outcome::Verified)));
        assert!(h.log.contains(&("wba.result".into(), "verified".into())));
        assert!(h.sent.is_none());
    }

    #[test]
    fn forged_identity_headers_are_stripped_whatever_the_case_or_count() {
        let c = config("enforce");
        let forged = [
            ("x-web-bot-auth-result", "verified"),
            ("X-Web-Bot-Auth-Agent", "https://evil.example"),
            ("x-web-bot-auth-agent", "https://evil2.example"),
            ("X-WEB-BOT-AUTH-KEY-ID", "k"),
            ("x-web-bot-auth-anything", "1"),
        ];
        for signed in [false, true] {
            let mut h = host(signed, &forged);
            assert_eq!(
                on_request_headers(&mut h, &c, &c.pinned_keys()),
                Action::Continue
            );
            let ours: Vec<_> = h
                .headers
                .iter()
                .filter(|(n, _)| is_owned_header("x-web-bot-auth-", n))
                .collect();
            assert!(
                ours.iter().all(|(n, _)| n == &n.to_ascii_lowercase()),
                "{ours:?}"
            );
            assert!(
                !ours
                    .iter()
                    .any(|(_, v)| v.contains("evil") || v == "k" || v == "1"),
                "{ours:?}"
            );
            if signed {
                assert_eq!(get(&h, "x-web-bot-auth-agent"), ["https://a.example"]);
            } else {
                assert_eq!(ours.len(), 1, "{ours:?}");
                assert_eq!(get(&h, "x-web-bot-auth-result"), ["unsigned"]);
            }
        }
    }

    #[test]
    fn modes_decide_rejection() {
        for (mode, signed, tamper, status) in [
            ("observe", true, true, None),
            ("enforce", true, true, Some(403)),
            ("enforce", false, false, None),
            ("require", false, false, Some(403)),
            ("require", true, false, None),
        ] {
            let c = config(mode);
            let mut h = host(signed, &[]);
            if tamper {
                for (n, v) in &mut h.headers {
                    if n == ":path" {
                        *v = "/other".into();
                    }
                }
            }
            let action = on_request_headers(&mut h, &c, &c.pinned_keys());
            assert_eq!(
                h.sent.as_ref().map(|s| s.0),
                status,
                "{mode} signed={signed} tamper={tamper}"
            );
            assert_eq!(action == Action::Stop, status.is_some());
        }
    }

    #[test]
    fn malformed_is_400_and_counted() {
        let c = config("enforce");
        let mut h = host(false, &[("signature-input", "((("), ("signature", "x")]);
        assert_eq!(
            on_request_headers(&mut h, &c, &c.pinned_keys()),
            Action::Stop
        );
        let (status, headers, body) = h.sent.clone().expect("sent");
        assert_eq!(status, 400);
        assert!(headers.contains(&("content-type".into(), "application/problem+json".into())));
        assert!(body.contains("\"reason\":\"malformed\""));
        assert!(h
            .counters
            .contains(&Counter::Reason(crate::verdict::Reason::Malformed)));
        assert!(h.counters.contains(&Counter::Rejected));
        assert!(h.log.contains(&("wba.reason".into(), "malformed".into())));
    }

    #[test]
    fn authority_falls_back_to_host() {
        let r = request_from_headers(
            &[
                (":method".into(), "GET".into()),
                (":path".into(), "/".into()),
                ("host".into(), "h.example".into()),
            ],
            "x-",
        );
        assert_eq!(r.authority, "h.example");
        assert_eq!(r.scheme, "http");
    }
}
