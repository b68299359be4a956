//! Verification of a request's Web Bot Auth signatures (RFC 9421 section 3.2 plus the profile).
//!
//! In three stages. The fields as a whole: syntax, each label defined once and present in both
//! `Signature-Input` and `Signature` (RFC 9421 section 4); a problem there is the request's.
//! Then, for every label tagged `web-bot-auth` and only for those, the cheap checks: its member,
//! parameters, coverage, freshness, key lookup; a problem there is that label's. Last, the
//! signature base and the cryptographic check, for at most `max_signatures` of the labels that
//! passed: the work a request can cause is bounded whatever its number of labels. The RFC 9421
//! steps themselves (select, parameters, window, algorithm, base, verify) are
//! [`crate::pipeline`]'s, shared with key directories' possession proofs.

use sha2::{Digest, Sha256};

use crate::agent_url::{AgentId, UrlError};
use crate::algorithm::Algorithm;
use crate::base::{BaseError, Message};
use crate::component::{ComponentName, Derived};
use crate::jwk::{Key, VerifyError};
use crate::keyring::{KeySource, Lookup};
use crate::pipeline::{self, AlgorithmError, Required, WindowError, WindowRules};
use crate::policy::Policy;
use crate::request::HttpRequest;
use crate::signature::{parse_signature_field, SignatureField};
use crate::signature_agent::{parse_signature_agent, AgentMember, MemberParams, SignatureAgent};
use crate::signature_input::{
    parse_input_field, InputError, InputField, SignatureInput, WEB_BOT_AUTH_TAG,
};
use crate::verdict::{Failure, Outcome, Reason, ReplayKey, Verdict, Verified};

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
    /// The signature base built for each label whose signature was checked, in order.
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
    let (inputs, signatures) = match signature_fields(req, &mut t) {
        Ok(Some(fields)) => fields,
        Ok(None) => return Verdict::Unsigned,
        Err(f) => return t.fail(f),
    };
    let Some(selected) = select(&inputs, &mut t) else {
        return Verdict::Unsigned;
    };
    let agent = match signature_agent_field(req) {
        Ok(agent) => agent,
        Err(f) => return t.fail(f),
    };
    // Every label's cheap checks first, so that the bound below spends the costly checks on
    // labels that could verify.
    let screen = Screen {
        signatures: &signatures,
        agent: agent.as_ref(),
        policy,
        keys,
        now,
    };
    let mut failures = BestFailure::default();
    // The first label that failed a cheap check it could pass later with the same bytes: see
    // `all_checked`.
    let mut later: Option<Failure> = None;
    let mut candidates = Vec::with_capacity(selected.len());
    for (index, (label, input)) in selected.into_iter().enumerate() {
        match screen.screen(label, input, &mut t) {
            Ok(c) => candidates.push((index, c)),
            Err(f) => {
                if later.is_none() && could_verify_later(&f) {
                    later = Some(Failure {
                        label: Some(label.to_string()),
                        ..f.clone()
                    });
                }
                failures.offer(index, label, f);
            }
        }
    }
    // At least one: a bound of 0 (which the configuration refuses) would make every signed
    // request look unsigned.
    let budget = policy.max_signatures.max(1);
    let not_tried = candidates.len().saturating_sub(budget);
    for (_, c) in candidates.iter().skip(budget) {
        t.check(Some(&c.input.label), "signature budget", false, || {
            format!("not checked: at most {budget} signature(s) per request (max_signatures)")
        });
    }
    let mut verified = Vec::new();
    for (index, c) in candidates.into_iter().take(budget) {
        let label = c.input.label.clone();
        match check_signature(req, c, &mut t) {
            Ok(v) => {
                verified.push(v);
                // Without replay protection nothing is recorded: the first one is enough.
                if !policy.replay_protection {
                    break;
                }
            }
            Err(f) => failures.offer(index, &label, f),
        }
    }
    let mut verified = verified.into_iter();
    let Some(mut first) = verified.next() else {
        return failures.into_verdict(not_tried);
    };
    if policy.replay_protection {
        if let Err(f) = all_checked(not_tried, budget, later, &mut t) {
            return Verdict::Failed(f);
        }
    }
    first.others = verified.collect();
    Verdict::Verified(Box::new(first))
}

/// With replay protection, a request is accepted only when none of its Web Bot Auth
/// signatures could verify later on its own without having been recorded now: each is a
/// credential, replayable alone. Every one that verified is recorded with the request
/// ([`Verified::others`]); one that is definitely not valid (a bad signature, expired,
/// malformed, an unknown agent...) can never be; one that could not be checked now (its key is
/// not known yet or its directory unavailable, `created` is ahead of this clock, or it was
/// left unchecked by `max_signatures`) could, so the request is not accepted: it gets that
/// signature's failure (which fetches a key that is not known yet).
fn all_checked(
    not_tried: usize,
    budget: usize,
    later: Option<Failure>,
    t: &mut Tracer<'_>,
) -> Result<(), Failure> {
    let name = "every signature checked";
    if not_tried > 0 {
        let f = Failure {
            not_tried,
            ..Failure::new(
                Reason::Malformed,
                format!(
                    "{not_tried} more Web Bot Auth signature(s) could verify than the {budget} this verifier checks (max_signatures): a request is accepted only when each of its signatures was checked"
                ),
            )
        };
        t.check(None, name, false, || f.to_string());
        return Err(f);
    }
    if let Some(f) = later {
        t.check(f.label.as_deref(), name, false, || {
            format!("could verify later on its own: {f}")
        });
        return Err(f);
    }
    t.check(None, name, true, || "each verified or not valid");
    Ok(())
}

/// A cheap check's failure that the same signature could pass later: its key is not known yet
/// (or not yet valid), its agent's directory is unavailable, or it is created ahead of this
/// clock.
fn could_verify_later(f: &Failure) -> bool {
    matches!(
        f.reason,
        Reason::UnknownKey | Reason::DirectoryUnavailable | Reason::CreatedInFuture
    )
}

/// The `Signature-Input` and `Signature` fields, read as a whole: `None` when the request
/// carries neither; a failure (the request's) when they are not two dictionaries defining each
/// label once, with the same labels.
fn signature_fields(
    req: &HttpRequest,
    t: &mut Tracer<'_>,
) -> Result<Option<(InputField, SignatureField)>, Failure> {
    let (input_value, sig_value) = match (req.header("signature-input"), req.header("signature")) {
        (None, None) => {
            t.check(None, "signature headers present", false, || {
                "no Signature-Input or Signature"
            });
            return Ok(None);
        }
        (Some(i), Some(s)) => (i, s),
        (Some(_), None) => return Err(malformed("Signature-Input without Signature")),
        (None, Some(_)) => return Err(malformed("Signature without Signature-Input")),
    };
    let inputs = parse_input_field(&input_value).map_err(|e| malformed(e.to_string()))?;
    t.check(None, "parse Signature-Input", true, || {
        format!("{} label(s)", inputs.len())
    });
    let signatures = parse_signature_field(&sig_value).map_err(|e| malformed(e.to_string()))?;
    t.check(None, "parse Signature", true, || {
        format!("{} label(s)", signatures.len())
    });
    pair_labels(&inputs, &signatures)?;
    t.check(None, "pair labels", true, || "each label in both fields");
    Ok(Some((inputs, signatures)))
}

/// The labels tagged `web-bot-auth`, each with its member parsed on its own; `None` when there
/// is none (the request is unsigned as far as this profile goes).
fn select<'a>(
    inputs: &'a InputField,
    t: &mut Tracer<'_>,
) -> Option<Vec<(&'a str, Result<SignatureInput, InputError>)>> {
    let selected: Vec<_> = pipeline::select(inputs, WEB_BOT_AUTH_TAG).collect();
    let name = "select tag=\"web-bot-auth\"";
    if selected.is_empty() {
        t.check(None, name, false, || {
            "no label carries the web-bot-auth tag"
        });
        return None;
    }
    t.check(None, name, true, || {
        selected
            .iter()
            .map(|(l, _)| *l)
            .collect::<Vec<_>>()
            .join(", ")
    });
    Some(selected)
}

/// The `Signature-Agent` field, when the request has one; a field that cannot be read is the
/// request's failure.
fn signature_agent_field(req: &HttpRequest) -> Result<Option<SignatureAgent>, Failure> {
    req.header("signature-agent")
        .map(|v| parse_signature_agent(&v).map_err(|e| malformed(e.to_string())))
        .transpose()
}

/// RFC 9421 section 4: every label is in both fields. Checked for every label, selected or
/// not: a lone member is an error in the fields, not in one signature.
fn pair_labels(inputs: &InputField, signatures: &SignatureField) -> Result<(), Failure> {
    if let Some(l) = inputs.labels().find(|l| !signatures.contains(l)) {
        return Err(malformed(format!(
            "label {l:?} is in Signature-Input but not in Signature"
        )));
    }
    if let Some(l) = signatures.labels().find(|l| !inputs.contains(l)) {
        return Err(malformed(format!(
            "label {l:?} is in Signature but not in Signature-Input"
        )));
    }
    Ok(())
}

fn malformed(detail: impl Into<String>) -> Failure {
    Failure::new(Reason::Malformed, detail)
}

/// The failure a request reports: evidence of a bad signature (`invalid`) outranks a lack of
/// information (`unverified`); between equals, the first label's, whichever stage found it.
#[derive(Default)]
struct BestFailure(Option<(usize, Failure)>);

impl BestFailure {
    fn offer(&mut self, index: usize, label: &str, mut f: Failure) {
        f.label = Some(label.to_string());
        let invalid = |f: &Failure| f.outcome() == Outcome::Invalid;
        let better = match &self.0 {
            None => true,
            Some((i, best)) => match (invalid(&f), invalid(best)) {
                (true, false) => true,
                (false, true) => false,
                _ => index < *i,
            },
        };
        if better {
            self.0 = Some((index, f));
        }
    }

    /// The verdict when no signature verified; `not_tried` candidates were left by the bound.
    fn into_verdict(self, not_tried: usize) -> Verdict {
        match self.0 {
            Some((_, f)) => Verdict::Failed(Failure { not_tried, ..f }),
            None => Verdict::Unsigned,
        }
    }
}

/// A label that passed every check but the signature base and the signature itself.
struct Candidate<'a> {
    input: SignatureInput,
    signature: &'a [u8],
    key: &'a Key,
    agent_name: &'a str,
    agent: AgentId,
    created: i64,
    expires: i64,
}

/// What the cheap checks of a label look at.
struct Screen<'a> {
    signatures: &'a SignatureField,
    agent: Option<&'a SignatureAgent>,
    policy: &'a Policy,
    keys: &'a dyn KeySource,
    now: i64,
}

impl<'a> Screen<'a> {
    /// The cheap checks of one selected label, in order: its member, its signature, its
    /// parameters, coverage, freshness, the key, the key's algorithm.
    fn screen(
        &self,
        label: &str,
        input: Result<SignatureInput, InputError>,
        t: &mut Tracer<'_>,
    ) -> Result<Candidate<'a>, Failure> {
        let input = input.map_err(|e| malformed(e.to_string()));
        let input = t.step(label, "Signature-Input member", input, |i| {
            i.covered.clone()
        })?;
        let signature = pipeline::signature_member(self.signatures, label)
            .map_err(|e| malformed(e.to_string()));
        let signature = t.step(label, "signature present", signature, |s| {
            format!("{} bytes", s.len())
        })?;
        let params = required_parameters(&input, self.policy);
        let Required {
            created,
            expires,
            keyid,
        } = t.step(label, "required parameters", params, |_| {
            "created, expires, keyid, tag".to_string()
        })?;
        let member = covered_agent(&input, self.agent, self.policy);
        let member = t.step(label, "covered components", member, |_| {
            input.covered.clone()
        })?;
        let fresh = freshness(created, expires, self.policy, self.now);
        t.step(label, "freshness", fresh, |_| {
            format!("created {created}, expires {expires}, now {}", self.now)
        })?;
        let resolved = agent_id(member).and_then(|id| self.resolve_key(id, keyid));
        let (agent, key, agent_name) =
            t.step(label, "key lookup (agent, keyid)", resolved, |(a, _, _)| {
                format!("{a} / {keyid}")
            })?;
        let algorithm = key_algorithm(key, input.params.alg.as_deref(), &agent);
        t.step(label, "key algorithm", algorithm, |a| a.name().to_string())?;
        Ok(Candidate {
            input,
            signature,
            key,
            agent_name,
            agent,
            created,
            expires,
        })
    }

    /// The key of (agent, keyid), usable under the policy at this time.
    fn resolve_key(
        &self,
        id: AgentId,
        keyid: &str,
    ) -> Result<(AgentId, &'a Key, &'a str), Failure> {
        let url = id.shown();
        let with_agent = |reason, detail: String| Failure {
            agent: Some(url.to_string()),
            ..Failure::new(reason, detail)
        };
        let (key, agent_name) = match self.keys.lookup(&id, keyid) {
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
        if key.is_test_key() && !self.policy.allow_test_keys {
            return Err(with_agent(
                Reason::TestKey,
                "the key is a published RFC 9421 test key".into(),
            ));
        }
        if !key.valid_at(self.now) {
            return Err(with_agent(
                Reason::UnknownKey,
                format!("key {keyid:?} is outside its nbf/exp window"),
            ));
        }
        Ok((id, key, agent_name))
    }
}

/// The agent the covered `Signature-Agent` member names.
fn agent_id(member: Option<&AgentMember>) -> Result<AgentId, Failure> {
    // No header at all: nothing says where the key is, which is not evidence of anything.
    let member = member.ok_or_else(|| {
        Failure::new(
            Reason::UnknownAgent,
            "there is no Signature-Agent header: no URL to find the key at",
        )
    })?;
    if let MemberParams::Ignored(params) = &member.params {
        let name = member.key.as_deref().unwrap_or("(legacy string)");
        return Err(Failure::new(
            Reason::UnknownAgent,
            format!(
                "Signature-Agent member {name} was ignored: it carries parameters ({params}), which draft -01 forbids"
            ),
        ));
    }
    AgentId::parse(&member.url).map_err(|e| {
        Failure::new(
            agent_url_reason(&e),
            format!("Signature-Agent {:?}: {e}", member.url),
        )
    })
}

/// A member URL that is not https at all is evidence of a bad signer (`invalid`); one that is
/// https but that this verifier cannot use as an agent identifier is not (`unknown_agent`).
fn agent_url_reason(e: &UrlError) -> Reason {
    match e {
        UrlError::NotHttps => Reason::BadAgentUrl,
        _ => Reason::UnknownAgent,
    }
}

/// `created`, `expires` and `keyid`, which the profile requires, and the policy's `alg` and
/// `nonce` rules.
fn required_parameters<'i>(
    input: &'i SignatureInput,
    policy: &Policy,
) -> Result<Required<'i>, Failure> {
    let p = &input.params;
    let required = pipeline::required_parameters(p)
        .map_err(|e| Failure::new(Reason::MissingParameter, e.to_string()))?;
    if let Some(alg) = &p.alg {
        if Algorithm::from_name(alg).is_none() {
            return Err(Failure::new(
                Reason::UnsupportedAlgorithm,
                format!(
                    "alg {alg:?} is not supported (ed25519, ecdsa-p256-sha256 and rsa-pss-sha512 are)"
                ),
            ));
        }
    }
    if policy.require_nonce && p.nonce.is_none() {
        return Err(Failure::new(
            Reason::NonceRequired,
            "this verifier requires a nonce",
        ));
    }
    Ok(required)
}

/// Coverage: the target, the signature's own `Signature-Agent` member, the operator's list.
/// The member the signature covers; `None` when the request has no `Signature-Agent` header.
fn covered_agent<'a>(
    input: &SignatureInput,
    agent: Option<&'a SignatureAgent>,
    policy: &Policy,
) -> Result<Option<&'a AgentMember>, Failure> {
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
    let Some(agent) = agent else {
        // No field at all: the draft's coverage rule has nothing to apply to, and there is no
        // agent to check the signature against (`unknown_agent`, unverified, in `agent_id`).
        required_coverage(input, policy)?;
        return Ok(None);
    };
    let label = input.label.as_str();
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
    // Prefer the member keyed by the label; otherwise the first member the signature covers.
    let member = agent_components()
        .find(|c| c.key.as_deref() == Some(label))
        .and_then(|c| agent.member_for(c, label))
        .or_else(|| agent_components().find_map(|c| agent.member_for(c, label)))
        .ok_or_else(|| {
            Failure::new(
                Reason::MissingComponent,
                "no covered Signature-Agent member is present in the Signature-Agent header",
            )
        })?;
    required_coverage(input, policy)?;
    Ok(Some(member))
}

/// The components the operator requires every accepted signature to cover.
fn required_coverage(input: &SignatureInput, policy: &Policy) -> Result<(), Failure> {
    for r in &policy.required_components {
        if !input.covers(&r.serialized) {
            return Err(Failure::new(
                Reason::MissingComponent,
                format!("this verifier requires {} to be covered", r.serialized),
            ));
        }
    }
    Ok(())
}

/// The key's algorithm, which its type decides: a key of no algorithm this verifier
/// implements is `unsupported_algorithm`; an `alg` parameter that names another algorithm than
/// the key's is `bad_signature` (the signature cannot be this key's, RFC 9421 section 3.2).
fn key_algorithm(key: &Key, alg: Option<&str>, agent: &AgentId) -> Result<Algorithm, Failure> {
    pipeline::key_algorithm(key, alg).map_err(|e| {
        let (reason, detail) = match e {
            AlgorithmError::Unimplemented => (
                Reason::UnsupportedAlgorithm,
                format!(
                    "key {:?} is a {:?} key, of no algorithm this verifier implements",
                    key.thumbprint, key.jwk.kty
                ),
            ),
            AlgorithmError::Contradicts { .. } => (Reason::BadSignature, e.to_string()),
        };
        Failure {
            agent: Some(agent.shown().to_string()),
            ..Failure::new(reason, detail)
        }
    })
}

/// `created` and `expires` against the clock, the skew and the longest accepted validity.
fn freshness(created: i64, expires: i64, policy: &Policy, now: i64) -> Result<(), Failure> {
    let rules = WindowRules {
        clock_skew_seconds: policy.clock_skew_seconds,
        max_validity_seconds: Some(policy.max_validity_seconds),
    };
    pipeline::check_window(created, expires, now, rules).map_err(|e| {
        let reason = match e {
            WindowError::NotAfterCreated => Reason::Malformed,
            WindowError::CreatedInFuture { .. } => Reason::CreatedInFuture,
            WindowError::Expired { .. } => Reason::Expired,
            WindowError::TooLong { .. } => Reason::ValidityTooLong,
        };
        Failure::new(reason, e.to_string())
    })
}

/// The costly part of a candidate: its signature base, then the cryptographic check.
fn check_signature(
    req: &HttpRequest,
    c: Candidate<'_>,
    t: &mut Tracer<'_>,
) -> Result<Verified, Failure> {
    let label = c.input.label.as_str();
    let base = pipeline::base(Message::Request(req), &c.input).map_err(|e| {
        let reason = match e {
            BaseError::MissingField(_)
            | BaseError::MissingMember { .. }
            | BaseError::MissingQueryParam(_) => Reason::MissingComponent,
            _ => Reason::Malformed,
        };
        Failure::new(reason, e.to_string())
    });
    let base = t.step(label, "signature base", base, |_| "built".to_string())?;
    let checked = pipeline::verify(c.key, &base, c.signature).map_err(|e| match e {
        VerifyError::UnsupportedAlgorithm => {
            Failure::new(Reason::UnsupportedAlgorithm, "unsupported key type")
        }
        VerifyError::BadSignature => Failure {
            agent: Some(c.agent.shown().to_string()),
            ..Failure::new(
                Reason::BadSignature,
                "the signature does not match the signature base",
            )
        },
    });
    // The replay identity: the nonce, or else what was signed (hashed only then).
    let replay_key = match &c.input.params.nonce {
        Some(nonce) => ReplayKey::Nonce(nonce.clone()),
        None => ReplayKey::Signed(Sha256::digest(base.as_bytes()).into()),
    };
    t.base(label, base);
    t.step(label, signature_check_name(c.key), checked, |_| {
        "valid".to_string()
    })?;
    Ok(verified(c, replay_key))
}

/// What a request reports of the signature that verified.
fn verified(c: Candidate<'_>, replay_key: ReplayKey) -> Verified {
    Verified {
        covers_content_digest: c
            .input
            .components
            .iter()
            .any(|x| x.is_field("content-digest") && !x.req && !x.tr),
        agent_url: c.agent.shown().to_string(),
        agent_name: c.agent_name.to_string(),
        key_id: c.key.thumbprint.to_string(),
        label: c.input.label,
        covered: c.input.covered,
        created: c.created,
        expires: c.expires,
        replay_key,
        others: Vec::new(),
    }
}

/// The name of the cryptographic check in a trace.
fn signature_check_name(key: &Key) -> &'static str {
    match key.alg() {
        Some(Algorithm::Ed25519) => "ed25519 signature",
        Some(Algorithm::EcdsaP256Sha256) => "ecdsa-p256-sha256 signature",
        Some(Algorithm::RsaPssSha512) => "rsa-pss-sha512 signature",
        None => "signature",
    }
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

    /// Records the outcome of one step of a label's checks and passes it on: `detail`
    /// describes a success, a failure is described by its reason and detail.
    fn step<T>(
        &mut self,
        label: &str,
        name: &'static str,
        r: Result<T, Failure>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, Failure> {
        match &r {
            Ok(v) => self.check(Some(label), name, true, || detail(v)),
            Err(f) => self.check(Some(label), name, false, || f.to_string()),
        }
        r
    }

    /// Records the signature base built for `label`.
    fn base(&mut self, label: &str, base: String) {
        if let Some(t) = self.0.as_deref_mut() {
            t.bases.push((label.to_string(), base));
        }
    }

    fn fail(&mut self, f: Failure) -> Verdict {
        self.check(None, "parse signature headers", false, || f.detail.clone());
        Verdict::Failed(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            AgentId::parse("https://agent.example").unwrap(),
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

    const NOW: i64 = 1_800_000_000;
    const AGENT: &str = "https://agent.example";

    fn ring() -> KeyRing {
        let mut ring = KeyRing::default();
        let key = Jwk::from_ed25519(SigningKey::from_bytes(&[1; 32]).verifying_key().as_bytes())
            .to_key()
            .unwrap();
        ring.add("A", AgentId::parse(AGENT).unwrap(), vec![key]);
        ring
    }

    fn request() -> HttpRequest {
        HttpRequest::from_parts("GET", "https", "shop.example", "/x", vec![])
    }

    /// Options for a signature labelled `label`, with a nonce of its own: requests here carry
    /// several signatures, which replay protection (on by default) requires.
    fn opts(label: &str) -> SignOptions {
        SignOptions {
            label: label.into(),
            nonce: Some(format!("n-{label}")),
            ..SignOptions::web_bot_auth(AGENT, NOW - 10, 300)
        }
    }

    /// A signature for `label` by the agent's key (seed 1) or, with another seed, a bogus one
    /// that still names the agent's key: it passes every cheap check and fails the crypto.
    fn signed(label: &str, seed: u8) -> crate::sign::SignedHeaders {
        let mut o = opts(label);
        o.keyid = Some(ring().agents[0].keys[0].thumbprint.to_string());
        sign_request(&request(), &SigningKey::from_bytes(&[seed; 32]), &o).unwrap()
    }

    /// A request carrying `sigs`, each field as one line (members joined with ", ").
    fn carrying(sigs: &[crate::sign::SignedHeaders]) -> HttpRequest {
        let mut req = request();
        let join = |f: &dyn Fn(&crate::sign::SignedHeaders) -> Option<String>| {
            sigs.iter().filter_map(f).collect::<Vec<_>>().join(", ")
        };
        req.add_header("signature-agent", &join(&|s| s.signature_agent.clone()));
        req.add_header(
            "signature-input",
            &join(&|s| Some(s.signature_input.clone())),
        );
        req.add_header("signature", &join(&|s| Some(s.signature.clone())));
        req
    }

    fn traced(req: &HttpRequest, policy: &Policy) -> (Verdict, Trace) {
        let mut trace = Trace::default();
        let v = verify_traced(req, policy, &ring(), NOW, Some(&mut trace));
        (v, trace)
    }

    fn tokens(v: &Verdict) -> (&'static str, Option<&'static str>) {
        (v.outcome().token(), v.reason().map(Reason::token))
    }

    fn crypto_checks(t: &Trace) -> usize {
        t.checks
            .iter()
            .filter(|c| c.name == "ed25519 signature")
            .count()
    }

    #[test]
    fn a_label_defined_twice_is_malformed() {
        let good = signed("sig1", 1);
        // Within one line of each field.
        let req = carrying(&[good.clone(), good.clone()]);
        assert_eq!(
            tokens(&verify_request(&req, &Policy::default(), &ring(), NOW)),
            ("invalid", Some("malformed"))
        );
        // Across two lines of Signature-Input only (Signature defines it once).
        let mut req = carrying(std::slice::from_ref(&good));
        req.add_header("signature-input", &good.signature_input);
        let v = verify_request(&req, &Policy::default(), &ring(), NOW);
        assert_eq!(tokens(&v), ("invalid", Some("malformed")));
        let Verdict::Failed(f) = v else { panic!() };
        assert!(f.detail.contains("more than once"), "{}", f.detail);
        assert_eq!(f.label, None, "a request-level failure");
        // Across two lines of Signature only.
        let mut req = carrying(std::slice::from_ref(&good));
        req.add_header("signature", &signed("sig1", 2).signature);
        assert_eq!(
            tokens(&verify_request(&req, &Policy::default(), &ring(), NOW)),
            ("invalid", Some("malformed"))
        );
        // A repeated label that is not a Web Bot Auth signature spoils the fields just the same.
        let mut req = carrying(&[good]);
        req.add_header("signature-input", "o=(\"@method\"), o=(\"@path\")");
        req.add_header("signature", "o=:AA==:");
        assert_eq!(
            tokens(&verify_request(&req, &Policy::default(), &ring(), NOW)),
            ("invalid", Some("malformed"))
        );
    }

    #[test]
    fn an_unpaired_label_is_malformed_both_ways() {
        let req = carrying(&[signed("sig1", 1)]);
        for (field, extra, missing_from) in [
            (
                "signature-input",
                "o=(\"@method\");tag=\"other\"",
                "Signature",
            ),
            ("signature", "o=:AA==:", "Signature-Input"),
        ] {
            let mut r = req.clone();
            r.add_header(field, extra);
            let v = verify_request(&r, &Policy::default(), &ring(), NOW);
            assert_eq!(tokens(&v), ("invalid", Some("malformed")), "{field}");
            let Verdict::Failed(f) = v else { panic!() };
            assert!(
                f.detail.ends_with(&format!("not in {missing_from}")),
                "{}",
                f.detail
            );
        }
    }

    #[test]
    fn odd_members_of_other_signatures_are_ignored() {
        let mut req = carrying(&[signed("sig1", 1)]);
        // Another profile's member with an unknown component parameter and a badly typed
        // parameter, whose Signature value is not a byte sequence; an untagged item member.
        req.add_header(
            "signature-input",
            "other=(\"@method\" \"x\";unknown);created=\"x\";tag=\"other\", item=1",
        );
        req.add_header("signature", "other=(1 2), item=?1");
        let v = verify_request(&req, &Policy::default(), &ring(), NOW);
        let Verdict::Verified(v) = v else {
            panic!("{v:?}")
        };
        assert_eq!(v.label, "sig1");
    }

    #[test]
    fn a_problem_inside_a_selected_member_is_that_labels() {
        let good = signed("sig1", 1);
        for (input, sig) in [
            (
                "bad=(\"@authority\" \"x\";unknown);tag=\"web-bot-auth\"",
                "bad=:AA==:",
            ),
            ("bad=(\"@authority\");tag=\"web-bot-auth\"", "bad=?1"),
            ("bad=\"not a list\";tag=\"web-bot-auth\"", "bad=:AA==:"),
        ] {
            // Next to a valid signature: the request is verified.
            let mut req = carrying(std::slice::from_ref(&good));
            req.add_header("signature-input", input);
            req.add_header("signature", sig);
            assert_eq!(
                verify_request(&req, &Policy::default(), &ring(), NOW).outcome(),
                Outcome::Verified,
                "{input} {sig}"
            );
            // Alone: that label is malformed.
            let mut req = request();
            req.add_header("signature-input", input);
            req.add_header("signature", sig);
            let v = verify_request(&req, &Policy::default(), &ring(), NOW);
            assert_eq!(tokens(&v), ("invalid", Some("malformed")), "{input} {sig}");
            let Verdict::Failed(f) = v else { panic!() };
            assert_eq!(f.label.as_deref(), Some("bad"));
        }
    }

    #[test]
    fn at_most_max_signatures_are_verified_after_every_cheap_check() {
        let bogus: Vec<_> = (0..10).map(|i| signed(&format!("b{i}"), 2)).collect();
        let req = carrying(&bogus);
        let policy = Policy {
            max_signatures: 3,
            ..Policy::default()
        };
        let (v, trace) = traced(&req, &policy);
        assert_eq!(tokens(&v), ("invalid", Some("bad_signature")));
        assert_eq!(crypto_checks(&trace), 3);
        assert_eq!(trace.bases.len(), 3);
        let Verdict::Failed(f) = v else { panic!() };
        assert_eq!(f.not_tried, 7);
        assert_eq!(f.label.as_deref(), Some("b0"));
        // Every label's key was looked up before the first signature was checked.
        let names: Vec<_> = trace.checks.iter().map(|c| c.name).collect();
        let first_crypto = names
            .iter()
            .position(|n| *n == "ed25519 signature")
            .unwrap();
        let lookups = names[..first_crypto]
            .iter()
            .filter(|n| **n == "key lookup (agent, keyid)")
            .count();
        assert_eq!(lookups, 10);
        assert_eq!(
            names.iter().filter(|n| **n == "signature budget").count(),
            7
        );
        // A bound of 0 (the configuration refuses it) is read as 1, not as "verify nothing".
        let (v, trace) = traced(
            &req,
            &Policy {
                max_signatures: 0,
                ..Policy::default()
            },
        );
        assert_eq!(crypto_checks(&trace), 1);
        assert!(matches!(v, Verdict::Failed(Failure { not_tried: 9, .. })));
        // Unbounded enough: all ten are tried, none left.
        let (v, trace) = traced(
            &req,
            &Policy {
                max_signatures: 10,
                ..Policy::default()
            },
        );
        assert_eq!(crypto_checks(&trace), 10);
        let Verdict::Failed(f) = v else { panic!() };
        assert_eq!(f.not_tried, 0);
    }

    #[test]
    fn labels_failing_cheap_checks_do_not_use_the_budget() {
        // Ten expired labels (found by the freshness check), then a valid one.
        let mut sigs: Vec<_> = (0..10)
            .map(|i| {
                let mut o = opts(&format!("e{i}"));
                o.created = NOW - 1000;
                o.expires = NOW - 500;
                sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &o).unwrap()
            })
            .collect();
        sigs.push(signed("good", 1));
        let (v, trace) = traced(
            &carrying(&sigs),
            &Policy {
                max_signatures: 1,
                ..Policy::default()
            },
        );
        let Verdict::Verified(v) = v else {
            panic!("{v:?}")
        };
        assert_eq!(v.label, "good");
        assert_eq!(crypto_checks(&trace), 1);
    }

    #[test]
    fn every_signature_that_could_verify_is_checked_before_a_request_is_accepted() {
        let policy = Policy::default();
        assert!(policy.replay_protection);
        // Two valid signatures: both verified, the second recorded with the first.
        let v = verify_request(
            &carrying(&[signed("sig1", 1), signed("sig2", 1)]),
            &policy,
            &ring(),
            NOW,
        );
        let Verdict::Verified(v) = v else {
            panic!("{v:?}")
        };
        assert_eq!(v.label, "sig1");
        assert_eq!(v.others.len(), 1);
        assert_eq!(v.others[0].label, "sig2");
        // Beside one that is definitely not valid (a bad signature, expired): accepted, and
        // that one is not recorded (it can never verify).
        let mut expired = opts("e");
        expired.created = NOW - 1000;
        expired.expires = NOW - 500;
        let e = sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &expired).unwrap();
        for other in [signed("bad", 2), e] {
            let v = verify_request(
                &carrying(&[signed("sig1", 1), other]),
                &policy,
                &ring(),
                NOW,
            );
            let Verdict::Verified(v) = v else {
                panic!("{v:?}")
            };
            assert!(v.others.is_empty());
        }
        // Beside one that could verify later on its own (a key not known yet, created ahead
        // of this clock): not accepted, that one's failure is the request's.
        let unknown =
            sign_request(&request(), &SigningKey::from_bytes(&[2; 32]), &opts("u")).unwrap();
        let mut ahead = opts("f");
        ahead.created = NOW + 600;
        ahead.expires = NOW + 900;
        let ahead = sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &ahead).unwrap();
        for (other, reason) in [
            (unknown, Reason::UnknownKey),
            (ahead, Reason::CreatedInFuture),
        ] {
            let req = carrying(&[signed("sig1", 1), other]);
            let v = verify_request(&req, &policy, &ring(), NOW);
            assert_eq!(v.reason(), Some(reason), "{v:?}");
            // Without replay protection nothing is recorded: the valid one is enough.
            let off = Policy {
                replay_protection: false,
                ..Policy::default()
            };
            assert_eq!(
                verify_request(&req, &off, &ring(), NOW).outcome(),
                Outcome::Verified
            );
        }
        // More that could verify than max_signatures checks: not accepted (malformed).
        let three: Vec<_> = (0..3).map(|i| signed(&format!("s{i}"), 1)).collect();
        let capped = Policy {
            max_signatures: 2,
            ..Policy::default()
        };
        let v = verify_request(&carrying(&three), &capped, &ring(), NOW);
        let Verdict::Failed(f) = v else {
            panic!("{v:?}")
        };
        assert_eq!((f.reason, f.not_tried), (Reason::Malformed, 1));
        let off = Policy {
            replay_protection: false,
            ..capped
        };
        assert_eq!(
            verify_request(&carrying(&three), &off, &ring(), NOW).outcome(),
            Outcome::Verified
        );
    }

    #[test]
    fn a_valid_signature_past_the_bound_is_not_tried() {
        let mut sigs: Vec<_> = (0..3).map(|i| signed(&format!("b{i}"), 2)).collect();
        sigs.push(signed("good", 1));
        let req = carrying(&sigs);
        let v = verify_request(
            &req,
            &Policy {
                max_signatures: 3,
                ..Policy::default()
            },
            &ring(),
            NOW,
        );
        assert_eq!(tokens(&v), ("invalid", Some("bad_signature")));
        let Verdict::Failed(f) = v else { panic!() };
        assert_eq!(f.not_tried, 1);
        let v = verify_request(
            &req,
            &Policy {
                max_signatures: 4,
                ..Policy::default()
            },
            &ring(),
            NOW,
        );
        assert_eq!(v.outcome(), Outcome::Verified);
    }

    #[test]
    fn invalid_evidence_outranks_and_the_first_label_wins_whatever_the_stage() {
        // b0 fails the crypto (late), u1 the key lookup (unverified), e2 freshness (early).
        let mut expired = opts("e2");
        expired.created = NOW - 1000;
        expired.expires = NOW - 500;
        let e2 = sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &expired).unwrap();
        let u1 = sign_request(&request(), &SigningKey::from_bytes(&[2; 32]), &opts("u1")).unwrap();
        let v = verify_request(
            &carrying(&[signed("b0", 2), u1.clone(), e2.clone()]),
            &Policy::default(),
            &ring(),
            NOW,
        );
        let Verdict::Failed(f) = v else { panic!() };
        assert_eq!(
            (f.reason, f.label.as_deref(), f.not_tried),
            (Reason::BadSignature, Some("b0"), 0)
        );
        let v = verify_request(
            &carrying(&[u1.clone(), e2]),
            &Policy::default(),
            &ring(),
            NOW,
        );
        assert_eq!(v.reason(), Some(Reason::Expired));
        let v = verify_request(&carrying(&[u1]), &Policy::default(), &ring(), NOW);
        assert_eq!(v.reason(), Some(Reason::UnknownKey));
    }

    #[test]
    fn no_signature_agent_header_is_unverified() {
        let mut req = carrying(&[signed("sig1", 1)]);
        req.remove_header("signature-agent");
        let v = verify_request(&req, &Policy::default(), &ring(), NOW);
        assert_eq!(tokens(&v), ("unverified", Some("unknown_agent")));
        // Nor when the signature therefore does not cover the field: the draft requires the
        // field covered when it is present; absent, there is no agent to check it against.
        let mut o = opts("sig1");
        o.agent_url = None;
        let mut req =
            carrying(&[sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &o).unwrap()]);
        req.remove_header("signature-agent");
        assert!(!req
            .header("signature-input")
            .unwrap()
            .contains("signature-agent"));
        let v = verify_request(&req, &Policy::default(), &ring(), NOW);
        assert_eq!(tokens(&v), ("unverified", Some("unknown_agent")));
        // The target and the operator's components are still required.
        let strict = Policy {
            required_components: vec![crate::component::Component::parse("@query").unwrap()],
            ..Policy::default()
        };
        assert_eq!(
            verify_request(&req, &strict, &ring(), NOW).reason(),
            Some(Reason::MissingComponent)
        );
        // Evidence found before the key lookup still counts.
        let mut o = opts("sig1");
        o.created = NOW - 1000;
        o.expires = NOW - 500;
        let mut req =
            carrying(&[sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &o).unwrap()]);
        req.remove_header("signature-agent");
        assert_eq!(
            verify_request(&req, &Policy::default(), &ring(), NOW).reason(),
            Some(Reason::Expired)
        );
    }

    #[test]
    fn an_agent_url_that_is_not_https_is_invalid() {
        for url in [
            "http://agent.example",
            "ftp://agent.example",
            "agent.example",
        ] {
            let o = SignOptions {
                agent_url: Some(url.into()),
                ..opts("sig1")
            };
            let req = carrying(&[
                sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &o).unwrap(),
            ]);
            let v = verify_request(&req, &Policy::default(), &ring(), NOW);
            assert_eq!(tokens(&v), ("invalid", Some("bad_agent_url")), "{url}");
        }
        // https, but another agent's JWK Set URL: not evidence.
        let o = SignOptions {
            agent_url: Some(format!("{AGENT}/path")),
            ..opts("sig1")
        };
        let req =
            carrying(&[sign_request(&request(), &SigningKey::from_bytes(&[1; 32]), &o).unwrap()]);
        let v = verify_request(&req, &Policy::default(), &ring(), NOW);
        assert_eq!(tokens(&v), ("unverified", Some("unknown_agent")));
    }

    #[test]
    fn plain_signature_agent_over_a_dictionary_uses_the_labels_member() {
        // Sign covering the whole field: "signature-agent" without key, over a dictionary.
        let mut req = request();
        req.add_header(
            "signature-agent",
            &format!("other=\"https://x.example\", sig1=\"{AGENT}\""),
        );
        let sk = SigningKey::from_bytes(&[1; 32]);
        let o = SignOptions {
            agent_url: None,
            components: vec!["@authority".into(), "signature-agent".into()],
            ..opts("sig1")
        };
        let h = sign_request(&req, &sk, &o).unwrap();
        assert!(
            h.base.contains(&format!(
                "\"signature-agent\": other=\"https://x.example\", sig1=\"{AGENT}\"\n"
            )),
            "{}",
            h.base
        );
        req.add_header("signature-input", &h.signature_input);
        req.add_header("signature", &h.signature);
        let v = verify_request(&req, &Policy::default(), &ring(), NOW);
        let Verdict::Verified(v) = v else {
            panic!("{v:?}")
        };
        assert_eq!(v.agent_url, AGENT);
        // Without a member keyed by the label, no member is named.
        let mut other = req.clone();
        other.remove_header("signature-agent");
        other.add_header("signature-agent", &format!("other=\"{AGENT}\""));
        let v = verify_request(&other, &Policy::default(), &ring(), NOW);
        assert_eq!(tokens(&v), ("invalid", Some("missing_component")));
    }

    /// A request signed by the ring's agent key, its `Signature-Agent` replaced by `field`
    /// and covered as member `member`.
    fn with_agent_field(field: &str, member: &str) -> HttpRequest {
        let mut req = request();
        req.add_header("signature-agent", field);
        let o = SignOptions {
            agent_url: None,
            components: vec![
                "@authority".into(),
                format!("signature-agent;key=\"{member}\""),
            ],
            ..opts("sig1")
        };
        let h = sign_request(&req, &SigningKey::from_bytes(&[1; 32]), &o).unwrap();
        req.add_header("signature-input", &h.signature_input);
        req.add_header("signature", &h.signature);
        req
    }

    #[test]
    fn every_dialect_naming_the_agent_verifies_and_shows_its_origin() {
        let wk = format!("{AGENT}/.well-known/http-message-signatures-directory");
        for (field, member) in [
            (format!("g=\"{AGENT}\""), "g"),
            (format!("sig1=\"{wk}\""), "sig1"),
            (format!("sig1=\"{wk}?v=1#x\""), "sig1"),
            (format!("a=\"{AGENT}\";type=directory"), "a"),
            (format!("a=\"{AGENT}/\";type=\"directory\""), "a"),
        ] {
            let v = verify_request(
                &with_agent_field(&field, member),
                &Policy::default(),
                &ring(),
                NOW,
            );
            let Verdict::Verified(v) = v else {
                panic!("{field}: {v:?}")
            };
            assert_eq!(v.agent_url, AGENT, "{field}");
        }
    }

    #[test]
    fn a_jwk_set_url_agent_is_its_own_and_shows_its_url() {
        let url = "https://keys.example/jwks.json";
        let mut ring = KeyRing::default();
        ring.add("J", AgentId::parse(url).unwrap(), ring_key_for_tests());
        for field in [
            format!("sig1=\"{url}\""),
            "sig1=\"https://Keys.Example:443/./jwks.json?v=2\"".to_string(),
            format!("sig1=\"{url}\";type=jwks_uri"),
        ] {
            let v = verify_request(
                &with_agent_field(&field, "sig1"),
                &Policy::default(),
                &ring,
                NOW,
            );
            let Verdict::Verified(v) = v else {
                panic!("{field}: {v:?}")
            };
            assert_eq!(v.agent_url, url);
        }
        // Its origin is another agent.
        let v = verify_request(
            &with_agent_field("sig1=\"https://keys.example\"", "sig1"),
            &Policy::default(),
            &ring,
            NOW,
        );
        assert_eq!(tokens(&v), ("unverified", Some("unknown_agent")));
    }

    fn ring_key_for_tests() -> Vec<Key> {
        ring().agents[0].keys.clone()
    }

    #[test]
    fn a_member_with_parameters_is_ignored_not_evidence() {
        for (field, shown) in [
            (format!("sig1=\"{AGENT}\";type=cimd"), ";type=cimd"),
            (format!("sig1=\"{AGENT}\";type=jwks_uri"), ";type=jwks_uri"),
            (format!("sig1=\"{AGENT}\";v=2"), ";v=2"),
            (
                format!("sig1=\"{AGENT}/k.json\";type=directory"),
                ";type=directory",
            ),
        ] {
            let v = verify_request(
                &with_agent_field(&field, "sig1"),
                &Policy::default(),
                &ring(),
                NOW,
            );
            assert_eq!(tokens(&v), ("unverified", Some("unknown_agent")), "{field}");
            let Verdict::Failed(f) = v else { panic!() };
            assert!(
                f.detail.contains("was ignored") && f.detail.contains(shown),
                "{}",
                f.detail
            );
        }
    }
}
