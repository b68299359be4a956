//! Verification of a request's Web Bot Auth signatures (RFC 9421 section 3.2 plus the profile).

use crate::agent_url::normalize_agent_url;
use crate::base::{signature_base, Message};
use crate::component::{ComponentName, Derived};
use crate::jwk::VerifyError;
use crate::keyring::{KeySource, Lookup};
use crate::policy::Policy;
use crate::request::HttpRequest;
use crate::signature::parse_signature;
use crate::signature_agent::{parse_signature_agent, SignatureAgent};
use crate::signature_input::{parse_signature_input, SignatureInput};
use crate::verdict::{Failure, Outcome, Reason, Verdict, Verified};

/// One step of verification, as `explain` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub label: Option<String>,
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Collects the steps of a verification when asked to; free when not.
#[derive(Debug, Default)]
pub struct Trace {
    pub checks: Vec<Check>,
    /// The signature base built for each label, in order.
    pub bases: Vec<(String, String)>,
}

/// Verifies a request's Web Bot Auth signatures.
pub fn verify_request(
    req: &HttpRequest,
    policy: &Policy,
    keys: &dyn KeySource,
    now: i64,
) -> Verdict {
    verify_traced(req, policy, keys, now, None)
}

/// As [`verify_request`], recording each check into `trace`.
pub fn verify_traced(
    req: &HttpRequest,
    policy: &Policy,
    keys: &dyn KeySource,
    now: i64,
    trace: Option<&mut Trace>,
) -> Verdict {
    let mut t = Tracer(trace);
    let input_value = req.header("signature-input");
    let sig_value = req.header("signature");
    let (input_value, sig_value) = match (input_value, sig_value) {
        (None, None) => {
            t.check(None, "signature headers present", false, || {
                "no Signature-Input or Signature"
            });
            return Verdict::Unsigned;
        }
        (Some(i), Some(s)) => (i, s),
        (Some(_), None) => return t.fail(malformed("Signature-Input without Signature")),
        (None, Some(_)) => return t.fail(malformed("Signature without Signature-Input")),
    };
    let inputs = match parse_signature_input(&input_value) {
        Ok(i) => i,
        Err(e) => return t.fail(malformed(e.to_string())),
    };
    t.check(None, "parse Signature-Input", true, || {
        format!("{} label(s)", inputs.len())
    });
    let signatures = match parse_signature(&sig_value) {
        Ok(s) => s,
        Err(e) => return t.fail(malformed(e.to_string())),
    };
    t.check(None, "parse Signature", true, || {
        format!("{} label(s)", signatures.len())
    });
    let wba: Vec<&SignatureInput> = inputs.iter().filter(|i| i.is_web_bot_auth()).collect();
    if wba.is_empty() {
        t.check(None, "select tag=\"web-bot-auth\"", false, || {
            "no label carries the web-bot-auth tag"
        });
        return Verdict::Unsigned;
    }
    t.check(None, "select tag=\"web-bot-auth\"", true, || {
        wba.iter()
            .map(|i| i.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    });
    let agent = match req.header("signature-agent") {
        None => None,
        Some(v) => match parse_signature_agent(&v) {
            Ok(a) => Some(a),
            Err(e) => return t.fail(malformed(e.to_string())),
        },
    };
    let mut best: Option<Failure> = None;
    for input in wba {
        let sig = signatures
            .iter()
            .find(|(l, _)| *l == input.label)
            .map(|(_, b)| b.as_slice());
        match verify_one(req, input, sig, agent.as_ref(), policy, keys, now, &mut t) {
            Ok(v) => return Verdict::Verified(Box::new(v)),
            Err(mut f) => {
                f.label = Some(input.label.clone());
                // Evidence of a bad signature outranks a lack of information.
                let replace = match &best {
                    None => true,
                    Some(b) => {
                        b.outcome() == Outcome::Unverified && f.outcome() == Outcome::Invalid
                    }
                };
                if replace {
                    best = Some(f);
                }
            }
        }
    }
    match best {
        Some(f) => Verdict::Failed(f),
        None => Verdict::Unsigned,
    }
}

fn malformed(detail: impl Into<String>) -> Failure {
    Failure::new(Reason::Malformed, detail)
}

/// Records checks into a [`Trace`] when there is one. Details are closures, so that without
/// a trace (the filter's hot path) no detail string is ever built.
struct Tracer<'a>(Option<&'a mut Trace>);

impl Tracer<'_> {
    fn check<D: Into<String>>(
        &mut self,
        label: Option<&str>,
        name: &'static str,
        passed: bool,
        detail: impl FnOnce() -> D,
    ) {
        if let Some(t) = self.0.as_deref_mut() {
            t.checks.push(Check {
                label: label.map(str::to_string),
                name,
                passed,
                detail: detail().into(),
            });
        }
    }

    /// Records the outcome of one step of [`verify_one`]: `detail` describes a success, a
    /// failure is described by its reason and detail.
    fn step<T>(
        &mut self,
        label: &str,
        name: &'static str,
        r: &Result<T, Failure>,
        detail: impl FnOnce(&T) -> String,
    ) {
        match r {
            Ok(v) => self.check(Some(label), name, true, || detail(v)),
            Err(f) => self.check(Some(label), name, false, || {
                format!("{}: {}", f.reason, f.detail)
            }),
        }
    }

    fn fail(&mut self, f: Failure) -> Verdict {
        self.check(None, "parse signature headers", false, || f.detail.clone());
        Verdict::Failed(f)
    }
}

#[allow(clippy::too_many_arguments)]
fn verify_one(
    req: &HttpRequest,
    input: &SignatureInput,
    signature: Option<&[u8]>,
    agent: Option<&SignatureAgent>,
    policy: &Policy,
    keys: &dyn KeySource,
    now: i64,
    t: &mut Tracer<'_>,
) -> Result<Verified, Failure> {
    let label = input.label.as_str();

    let signature =
        signature.ok_or_else(|| malformed(format!("no Signature member for label {label:?}")));
    t.step(label, "signature present", &signature, |s| {
        format!("{} bytes", s.len())
    });
    let signature = signature?;

    let p = &input.params;
    let missing = |name: &str| {
        Failure::new(
            Reason::MissingParameter,
            format!("the {name} parameter is required"),
        )
    };
    let params = (|| {
        let created = p.created.ok_or_else(|| missing("created"))?;
        let expires = p.expires.ok_or_else(|| missing("expires"))?;
        let keyid = p.keyid.as_deref().ok_or_else(|| missing("keyid"))?;
        if let Some(alg) = &p.alg {
            if alg != "ed25519" {
                return Err(Failure::new(
                    Reason::UnsupportedAlgorithm,
                    format!("alg {alg:?} is not supported (ed25519 is)"),
                ));
            }
        }
        if policy.require_nonce && p.nonce.is_none() {
            return Err(Failure::new(
                Reason::NonceRequired,
                "this verifier requires a nonce",
            ));
        }
        Ok((created, expires, keyid))
    })();
    t.step(label, "required parameters", &params, |_| {
        "created, expires, keyid, tag".to_string()
    });
    let (created, expires, keyid) = params?;

    // Coverage: the target, the signature's own Signature-Agent member, the operator's list.
    let coverage = (|| {
        let covers_target = input.components.iter().any(|c| {
            matches!(
                c.name,
                ComponentName::Derived(Derived::Authority | Derived::TargetUri)
            )
        });
        if !covers_target {
            return Err(Failure::new(
                Reason::MissingComponent,
                "the signature must cover \"@authority\" or \"@target-uri\"",
            ));
        }
        let agent_components = || {
            input
                .components
                .iter()
                .filter(|c| c.is_field("signature-agent"))
        };
        if agent_components().next().is_none() {
            return Err(Failure::new(
                Reason::MissingComponent,
                "the signature must cover \"signature-agent\"",
            ));
        }
        let agent = agent.ok_or_else(|| {
            Failure::new(
                Reason::MissingComponent,
                "the covered Signature-Agent header is absent",
            )
        })?;
        // Prefer the member keyed by the label; otherwise the first member the signature covers.
        let member = agent_components()
            .find(|c| c.key.as_deref() == Some(label))
            .and_then(|c| agent.member_for(c))
            .or_else(|| agent_components().find_map(|c| agent.member_for(c)))
            .ok_or_else(|| {
                Failure::new(
                    Reason::MissingComponent,
                    "no covered Signature-Agent member is present in the Signature-Agent header",
                )
            })?;
        for r in &policy.required_components {
            if !input.covers(&r.serialized) {
                return Err(Failure::new(
                    Reason::MissingComponent,
                    format!("this verifier requires {} to be covered", r.serialized),
                ));
            }
        }
        Ok(member)
    })();
    t.step(label, "covered components", &coverage, |_| {
        input.covered.clone()
    });
    let member = coverage?;

    let fresh = (|| {
        if expires <= created {
            return Err(malformed("expires is not after created"));
        }
        if created > now.saturating_add(policy.clock_skew_seconds) {
            return Err(Failure::new(
                Reason::CreatedInFuture,
                format!(
                    "created {created} is {}s in the future",
                    created.saturating_sub(now)
                ),
            ));
        }
        if now > expires.saturating_add(policy.clock_skew_seconds) {
            return Err(Failure::new(
                Reason::Expired,
                format!("expired {}s ago", now.saturating_sub(expires)),
            ));
        }
        if expires.saturating_sub(created) > policy.max_validity_seconds {
            return Err(Failure::new(
                Reason::ValidityTooLong,
                format!(
                    "valid for {}s, more than the {}s this verifier accepts",
                    expires.saturating_sub(created),
                    policy.max_validity_seconds
                ),
            ));
        }
        Ok(())
    })();
    t.step(label, "freshness", &fresh, |_| {
        format!("created {created}, expires {expires}, now {now}")
    });
    fresh?;

    let resolved = (|| {
        let kind = member.kind.ok_or_else(|| {
            Failure::new(
                Reason::UnknownAgent,
                format!("Signature-Agent {:?} has an unknown type", member.url),
            )
        })?;
        let url = normalize_agent_url(kind, &member.url).map_err(|e| {
            Failure::new(
                Reason::UnknownAgent,
                format!("Signature-Agent {:?}: {e}", member.url),
            )
        })?;
        let with_agent = |reason, detail: String| Failure {
            agent: Some(url.clone()),
            ..Failure::new(reason, detail)
        };
        let (key, agent_name) = match keys.lookup(kind, &url, keyid) {
            Lookup::Found { key, agent_name } => (key, agent_name),
            Lookup::UnknownAgent => {
                return Err(with_agent(
                    Reason::UnknownAgent,
                    format!("{url} is not a trusted agent"),
                ))
            }
            Lookup::UnknownKey => {
                return Err(with_agent(
                    Reason::UnknownKey,
                    format!("{url} has no key {keyid:?}"),
                ))
            }
            Lookup::Unavailable => {
                return Err(with_agent(
                    Reason::DirectoryUnavailable,
                    format!("the keys of {url} are not available"),
                ))
            }
        };
        if key.is_test_key() && !policy.allow_test_keys {
            return Err(with_agent(
                Reason::TestKey,
                "the key is a published RFC 9421 test key".into(),
            ));
        }
        if !key.valid_at(now) {
            return Err(with_agent(
                Reason::UnknownKey,
                format!("key {keyid:?} is outside its nbf/exp window"),
            ));
        }
        if key.algorithm().is_none() {
            return Err(with_agent(
                Reason::UnsupportedAlgorithm,
                format!("key {keyid:?} is not an Ed25519 key"),
            ));
        }
        Ok((url, key, agent_name))
    })();
    t.step(
        label,
        "key lookup (agent, keyid)",
        &resolved,
        |(u, _, _)| format!("{u} / {keyid}"),
    );
    let (url, key, agent_name) = resolved?;

    let base = signature_base(Message::Request(req), input).map_err(|e| {
        let reason = match e {
            crate::base::BaseError::MissingField(_)
            | crate::base::BaseError::MissingMember { .. }
            | crate::base::BaseError::MissingQueryParam(_) => Reason::MissingComponent,
            _ => Reason::Malformed,
        };
        Failure::new(reason, e.to_string())
    });
    t.step(label, "signature base", &base, |_| "built".to_string());
    let base = base?;
    if let Some(tr) = t.0.as_deref_mut() {
        tr.bases.push((label.to_string(), base.clone()));
    }

    let checked = key.verify(base.as_bytes(), signature).map_err(|e| match e {
        VerifyError::UnsupportedAlgorithm => {
            Failure::new(Reason::UnsupportedAlgorithm, "unsupported key type")
        }
        VerifyError::BadSignature => Failure {
            agent: Some(url.clone()),
            ..Failure::new(
                Reason::BadSignature,
                "the signature does not match the signature base",
            )
        },
    });
    t.step(label, "ed25519 signature", &checked, |_| {
        "valid".to_string()
    });
    checked?;

    Ok(Verified {
        agent_url: url,
        agent_name: agent_name.to_string(),
        key_id: key.thumbprint.clone(),
        label: label.to_string(),
        covered: input.covered.clone(),
        created,
        expires,
        nonce: p.nonce.clone(),
        signature: signature.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_url::AgentType;
    use crate::jwk::Jwk;
    use crate::keyring::KeyRing;
    use crate::sign::{sign_request, SignOptions};
    use ed25519_dalek::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Found by `tests/no_panic.rs`: a clock far in the past overflowed `created - now`.
    #[test]
    fn created_in_future_with_extreme_clock_does_not_overflow() {
        let sk = SigningKey::from_bytes(&[1; 32]);
        let mut ring = KeyRing::default();
        ring.add(
            "A",
            AgentType::Directory,
            "https://agent.example",
            vec![Jwk::from_ed25519(sk.verifying_key().as_bytes())
                .to_key()
                .unwrap()],
        );
        let mut req = HttpRequest::from_parts("GET", "https", "example.com", "/", vec![]);
        let opts = SignOptions::web_bot_auth("https://agent.example", 1_800_000_000, 300);
        for (n, v) in sign_request(&req, &sk, &opts).unwrap().pairs() {
            req.add_header(&n, &v);
        }
        let v = verify_request(&req, &Policy::default(), &ring, i64::MIN);
        assert_eq!(v.reason(), Some(Reason::CreatedInFuture));
    }
}
