//! The header plan: from a verdict and the configuration, what the upstream is told and
//! whether the request is rejected (the contract's headers and rejection table).

use serde_json::json;

use crate::config::{Config, Mode};
use crate::verdict::{Outcome, Reason, Verdict};

/// A response the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// `application/problem+json` (RFC 9457).
    pub body: String,
}

/// What to do with a request once its verdict is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Result headers to set (names already prefixed).
    pub set: Vec<(String, String)>,
    pub reject: Option<Rejection>,
}

/// Whether a header name is one the filter owns (and so strips from inbound requests):
/// it starts with the prefix, compared case-insensitively and reading every character that is
/// not a letter or digit as `-`, because CGI-style upstreams fold them alike into
/// `HTTP_X_WEB_BOT_AUTH_...` (WSGI, Rack and PHP fold `-` and `_`; lighttpd's CGI, FastCGI and
/// SCGI every non-alphanumeric byte), where a client's `x_web_bot_auth_agent` or
/// `x.web.bot.auth.agent` would sit beside or replace ours.
pub fn is_owned_header(prefix: &str, name: &str) -> bool {
    let fold = |b: &u8| match b {
        b if b.is_ascii_alphanumeric() => b.to_ascii_lowercase(),
        _ => b'-',
    };
    name.len() >= prefix.len()
        && name.as_bytes()[..prefix.len()]
            .iter()
            .map(fold)
            .eq(prefix.as_bytes().iter().map(fold))
}

/// Builds the plan for `verdict`.
pub fn plan(verdict: &Verdict, config: &Config) -> Plan {
    let p = &config.header_prefix;
    let h = |suffix: &str, value: &str| (p.header(suffix), value.to_string());
    let mut set = vec![h("result", verdict.outcome().token())];
    match verdict {
        Verdict::Verified(v) => {
            set.push(h("agent", &v.agent_url));
            set.push(h("agent-name", &v.agent_name));
            set.push(h("key-id", &v.key_id));
            set.push(h("label", &v.label));
            set.push(h("covered", &v.covered));
            set.push(h("expires", &v.expires.to_string()));
        }
        Verdict::Failed(f) => set.push(h("reason", f.reason.token())),
        Verdict::Unsigned => {}
    }
    Plan {
        set,
        reject: rejection(verdict, config),
    }
}

/// The status a verdict gets in `mode`, or `None` when the request passes.
pub fn status(verdict: &Verdict, mode: Mode) -> Option<u16> {
    // Whatever the mode: passing it would forward a body nobody checked.
    if verdict.reason() == Some(Reason::BodyNotHeld) {
        return Some(500);
    }
    if mode == Mode::Observe {
        return None;
    }
    match (verdict.outcome(), verdict.reason(), mode) {
        (Outcome::Verified, _, _) => None,
        (_, Some(Reason::Malformed), _) => Some(400),
        (_, Some(Reason::Replayed), _) => Some(429),
        (_, Some(Reason::BodyTooLarge), _) => Some(413),
        // Fails closed in both modes that reject: the verifier could not finish its checks.
        (_, Some(Reason::ReplayStoreUnavailable), _) => Some(503),
        (Outcome::Invalid, _, _) => Some(403),
        (Outcome::Unverified | Outcome::Unsigned, _, Mode::Require) => Some(403),
        _ => None,
    }
}

fn rejection(verdict: &Verdict, config: &Config) -> Option<Rejection> {
    let status = status(verdict, config.mode)?;
    let (title, detail) = match verdict {
        Verdict::Failed(f) => (
            match f.outcome() {
                _ if f.reason == Reason::ReplayStoreUnavailable => "Replay check unavailable",
                _ if f.reason == Reason::BodyNotHeld => "Signed body cannot be checked here",
                Outcome::Unverified => "Signature could not be verified",
                _ if f.reason == Reason::Malformed => "Malformed signature headers",
                _ if f.reason == Reason::Replayed => "Signature replayed",
                _ if f.reason == Reason::BodyTooLarge => "Signed body too large",
                _ if f.reason == Reason::DigestMismatch => "Body does not match its signed digest",
                _ => "Invalid signature",
            },
            f.detail.clone(),
        ),
        _ => (
            "Signature required",
            "this resource requires a Web Bot Auth signature (RFC 9421, tag \"web-bot-auth\")"
                .to_string(),
        ),
    };
    let reason = verdict
        .reason()
        .map(Reason::token)
        .unwrap_or(verdict.outcome().token());
    let mut r = problem(status, title, &detail, Some(reason));
    if status == 403 {
        r.headers
            .push(("accept-signature".to_string(), accept_signature(config)));
    }
    Some(r)
}

/// A local `application/problem+json` response (RFC 9457), with the filter's `reason` token
/// when it has one.
pub fn problem(status: u16, title: &str, detail: &str, reason: Option<&str>) -> Rejection {
    let mut body = json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    });
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    Rejection {
        status,
        headers: vec![(
            "content-type".to_string(),
            "application/problem+json".to_string(),
        )],
        body: body.to_string(),
    }
}

/// `Accept-Signature` (RFC 9421 section 5.1): what an acceptable signature covers.
pub fn accept_signature(config: &Config) -> String {
    let mut components = vec!["\"@authority\"".to_string()];
    for c in &config.policy.required_components {
        if !components.contains(&c.serialized) {
            components.push(c.serialized.clone());
        }
    }
    components.push("\"signature-agent\";key=\"sig1\"".to_string());
    let mut v = format!("sig1=({});created;expires", components.join(" "));
    if config.policy.require_nonce {
        v.push_str(";nonce");
    }
    v.push_str(";tag=\"web-bot-auth\"");
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Failure, Verified};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn config(mode: &str) -> Config {
        Config::from_json(
            format!(r#"{{"mode":"{mode}","required_components":["@path"]}}"#).as_bytes(),
        )
        .expect("config")
    }

    fn failed(r: Reason) -> Verdict {
        Verdict::Failed(Failure::new(r, "why"))
    }

    #[test]
    fn rejection_table() {
        let rows: &[(Verdict, [Option<u16>; 3])] = &[
            (failed(Reason::Malformed), [None, Some(400), Some(400)]),
            (failed(Reason::BadSignature), [None, Some(403), Some(403)]),
            (failed(Reason::Expired), [None, Some(403), Some(403)]),
            (failed(Reason::Replayed), [None, Some(429), Some(429)]),
            (failed(Reason::DigestMismatch), [None, Some(403), Some(403)]),
            (failed(Reason::BodyTooLarge), [None, Some(413), Some(413)]),
            (failed(Reason::BadAgentUrl), [None, Some(403), Some(403)]),
            (
                failed(Reason::ReplayStoreUnavailable),
                [None, Some(503), Some(503)],
            ),
            // Never passed, even in observe: the body would reach the upstream unchecked.
            (
                failed(Reason::BodyNotHeld),
                [Some(500), Some(500), Some(500)],
            ),
            (failed(Reason::UnknownKey), [None, None, Some(403)]),
            (
                failed(Reason::DirectoryUnavailable),
                [None, None, Some(403)],
            ),
            (Verdict::Unsigned, [None, None, Some(403)]),
        ];
        for (v, expected) in rows {
            for (mode, want) in [Mode::Observe, Mode::Enforce, Mode::Require]
                .iter()
                .zip(expected)
            {
                assert_eq!(status(v, *mode), *want, "{v:?} in {mode:?}");
            }
        }
    }

    #[test]
    fn verified_headers() {
        let v = Verdict::Verified(Box::new(Verified {
            agent_url: "https://a.example".into(),
            agent_name: "A".into(),
            key_id: "kid".into(),
            label: "sig1".into(),
            covered: "(\"@authority\")".into(),
            covers_content_digest: false,
            created: 1,
            expires: 2,
            replay_key: crate::verdict::ReplayKey::Signed([0; 32]),
            others: Vec::new(),
        }));
        let p = plan(&v, &config("require"));
        assert_eq!(p.reject, None);
        let names: Vec<_> = p.set.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-web-bot-auth-result",
                "x-web-bot-auth-agent",
                "x-web-bot-auth-agent-name",
                "x-web-bot-auth-key-id",
                "x-web-bot-auth-label",
                "x-web-bot-auth-covered",
                "x-web-bot-auth-expires"
            ]
        );
        assert_eq!(p.set[6].1, "2");
    }

    #[test]
    fn forbidden_has_problem_body_and_accept_signature() {
        let p = plan(&failed(Reason::BadSignature), &config("enforce"));
        assert_eq!(
            p.set,
            vec![
                ("x-web-bot-auth-result".into(), "invalid".into()),
                ("x-web-bot-auth-reason".into(), "bad_signature".into()),
            ]
        );
        let r = p.reject.expect("rejected");
        assert_eq!(r.status, 403);
        let body: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(body["status"], 403);
        assert_eq!(body["reason"], "bad_signature");
        assert_eq!(body["detail"], "why");
        assert!(r
            .headers
            .contains(&("content-type".into(), "application/problem+json".into())));
        assert!(r.headers.contains(&(
            "accept-signature".into(),
            "sig1=(\"@authority\" \"@path\" \"signature-agent\";key=\"sig1\");created;expires;tag=\"web-bot-auth\"".into()
        )));
        let r = plan(&failed(Reason::Malformed), &config("enforce"))
            .reject
            .expect("rejected");
        assert_eq!(r.status, 400);
        assert!(!r.headers.iter().any(|(n, _)| n == "accept-signature"));
    }

    #[test]
    fn nonce_in_accept_signature_when_required() {
        let c = Config::from_json(br#"{"require_nonce":true}"#).expect("config");
        assert_eq!(
            accept_signature(&c),
            "sig1=(\"@authority\" \"signature-agent\";key=\"sig1\");created;expires;nonce;tag=\"web-bot-auth\""
        );
    }

    #[test]
    fn owned_headers_any_case() {
        assert!(is_owned_header("x-web-bot-auth-", "X-Web-Bot-Auth-Result"));
        assert!(is_owned_header("x-web-bot-auth-", "x-web-bot-auth-"));
        assert!(!is_owned_header("x-web-bot-auth-", "x-web-bot-aut"));
        assert!(!is_owned_header("x-web-bot-auth-", "signature"));
    }

    #[test]
    fn owned_headers_with_any_punctuation_for_dashes() {
        for name in [
            "x_web_bot_auth_agent",
            "X_WEB_BOT_AUTH_RESULT",
            "x-web_bot-auth-key-id",
            "x_web-bot_auth-",
            // lighttpd's CGI/FastCGI/SCGI make HTTP_X_WEB_BOT_AUTH_AGENT of these too.
            "x.web.bot.auth.agent",
            "x+web+bot+auth+agent",
            "x~web'bot|auth`result",
        ] {
            assert!(is_owned_header("x-web-bot-auth-", name), "{name}");
        }
        // A prefix configured with underscores owns the dashed forms too.
        assert!(is_owned_header("x_bot_", "x-bot-result"));
        assert!(!is_owned_header("x-web-bot-auth-", "x_web_bot_aut"));
        assert!(!is_owned_header("x-web-bot-auth-", "xwebbotauthagent"));
    }
}
