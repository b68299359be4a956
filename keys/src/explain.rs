//! `wba explain`: the core's traced verification of a captured request, printed step by step
//! with the verdict and the signature base.

use std::fmt::Write as _;

use wba_filter::agent_url::AgentId;
use wba_filter::base::{signature_base, Message};
use wba_filter::jwk::Key;
use wba_filter::keyring::KeyRing;
use wba_filter::policy::Policy;
use wba_filter::request::HttpRequest;
use wba_filter::signature_agent::{
    parse_signature_agent, AgentMember, MemberParams, SignatureAgent,
};
use wba_filter::signature_input::{parse_input_field, WEB_BOT_AUTH_TAG};
use wba_filter::verdict::Verdict;
use wba_filter::verify::{verify_traced, Trace};

/// The result of `explain`.
#[derive(Debug)]
pub struct Explanation {
    pub verdict: Verdict,
    /// What `wba explain` prints.
    pub report: String,
}

/// The request's `Signature-Agent` members, or none when it has no usable field.
fn members(req: &HttpRequest) -> Vec<AgentMember> {
    match req
        .header("signature-agent")
        .map(|v| parse_signature_agent(&v))
    {
        Some(Ok(SignatureAgent::Dictionary(m))) => m,
        Some(Ok(SignatureAgent::Legacy(m))) => vec![m],
        _ => Vec::new(),
    }
}

/// The agents the keys are trusted for: `agent_url` when given (an origin or a JWK Set URL),
/// otherwise each agent the request's `Signature-Agent` names (members verification would not
/// ignore), so that the question answered is whether these keys sign this request.
pub fn key_ring(
    req: &HttpRequest,
    keys: &[Key],
    agent_url: Option<&str>,
) -> anyhow::Result<KeyRing> {
    let mut ring = KeyRing::default();
    match agent_url {
        Some(url) => {
            let id =
                AgentId::parse(url).map_err(|e| anyhow::anyhow!("--agent-url {url:?}: {e}"))?;
            ring.add("explain", id, keys.to_vec());
        }
        None => {
            for m in members(req).iter().filter(|m| !m.is_ignored()) {
                if let Ok(id) = AgentId::parse(&m.url) {
                    if !ring.agents.iter().any(|a| a.id == id) {
                        ring.add("explain", id, keys.to_vec());
                    }
                }
            }
        }
    }
    Ok(ring)
}

/// Verifies `req` with `keys` and explains each step.
pub fn explain(
    req: &HttpRequest,
    keys: &[Key],
    agent_url: Option<&str>,
    policy: &Policy,
    now: i64,
) -> anyhow::Result<Explanation> {
    let ring = key_ring(req, keys, agent_url)?;
    let mut trace = Trace::default();
    let verdict = verify_traced(req, policy, &ring, now, Some(&mut trace));
    let mut r = String::new();
    let _ = writeln!(r, "request: {} {}", req.method, req.target_uri());
    let tps: Vec<&str> = keys.iter().map(|k| k.thumbprint.as_str()).collect();
    let _ = writeln!(
        r,
        "keys: {}",
        if tps.is_empty() {
            "(none)".to_string()
        } else {
            tps.join(", ")
        }
    );
    // Which dialect each member was read as: the forms differ in what they mean.
    for m in members(req) {
        let name = m
            .key
            .as_deref()
            .map_or_else(|| "(legacy string)".to_string(), |k| format!("member {k}"));
        let meaning = match (&m.params, AgentId::parse(&m.url)) {
            (MemberParams::Ignored(p), _) => {
                format!("ignored: it carries parameters ({p}), which draft -01 forbids")
            }
            (_, Ok(id)) => format!("keys at {}", id.as_str()),
            (_, Err(e)) => format!("unusable URL: {e}"),
        };
        let _ = writeln!(
            r,
            "signature-agent {name} = {:?}: {}; {meaning}",
            m.url,
            m.dialect().name()
        );
    }
    if ring.agents.is_empty() {
        let _ = writeln!(
            r,
            "trusted agents: none (the request names no usable Signature-Agent; pass --agent-url)"
        );
    } else {
        let names: Vec<String> = ring
            .agents
            .iter()
            .map(|a| a.id.shown().to_string())
            .collect();
        let from = if agent_url.is_some() {
            "--agent-url"
        } else {
            "the request's Signature-Agent"
        };
        let _ = writeln!(r, "trusted agents (from {from}): {}", names.join(", "));
    }
    let _ = writeln!(
        r,
        "policy: now {now}, clock skew {}s, max validity {}s{}{}",
        policy.clock_skew_seconds,
        policy.max_validity_seconds,
        if policy.allow_test_keys {
            ", test keys allowed"
        } else {
            ""
        },
        if policy.require_nonce {
            ", nonce required"
        } else {
            ""
        },
    );
    let _ = writeln!(r, "checks:");
    for c in &trace.checks {
        let status = if c.passed { "ok" } else { "FAIL" };
        let label = c
            .label
            .as_deref()
            .map(|l| format!("[{l}] "))
            .unwrap_or_default();
        let _ = writeln!(r, "  {status:<4}  {label}{}: {}", c.name, c.detail);
    }
    match &verdict {
        Verdict::Verified(v) => {
            let _ = writeln!(
                r,
                "verdict: verified (agent {}, key {}, label {}, covers {}, expires {})",
                v.agent_url, v.key_id, v.label, v.covered, v.expires
            );
        }
        Verdict::Failed(f) => {
            let mut ctx = Vec::new();
            if let Some(l) = &f.label {
                ctx.push(format!("label {l}"));
            }
            if let Some(a) = &f.agent {
                ctx.push(format!("agent {a}"));
            }
            let ctx = if ctx.is_empty() {
                String::new()
            } else {
                format!(" [{}]", ctx.join(", "))
            };
            let _ = writeln!(
                r,
                "verdict: {} ({}): {}{ctx}",
                f.outcome().token(),
                f.reason.token(),
                f.detail
            );
        }
        Verdict::Unsigned => {
            let _ = writeln!(
                r,
                "verdict: unsigned (no signature tagged \"web-bot-auth\")"
            );
        }
    }
    // The bases verification built, and, for labels it stopped before, the base as it would be.
    let mut bases = trace.bases.clone();
    let mut unchecked = Vec::new();
    if let Some(Ok(field)) = req.header("signature-input").map(|v| parse_input_field(&v)) {
        // Only the Web Bot Auth members, as verification reads them: an odd member of another
        // profile hides nothing.
        let inputs: Vec<_> = field
            .tagged(WEB_BOT_AUTH_TAG)
            .filter_map(|(_, i)| i.ok())
            .collect();
        for input in &inputs {
            if bases.iter().any(|(l, _)| *l == input.label) {
                continue;
            }
            match signature_base(Message::Request(req), input) {
                Ok(b) => {
                    unchecked.push(input.label.clone());
                    bases.push((input.label.clone(), b));
                }
                Err(e) => {
                    let _ = writeln!(r, "signature base [{}]: cannot be built: {e}", input.label);
                }
            }
        }
    }
    for (label, base) in bases {
        let note = if unchecked.contains(&label) {
            " (not checked: verification stopped before the signature)"
        } else {
            ""
        };
        let _ = writeln!(r, "signature base [{label}]{note}:");
        let _ = writeln!(r, "{base}");
        let _ = writeln!(r, "(end of signature base [{label}])");
    }
    Ok(Explanation { verdict, report: r })
}
