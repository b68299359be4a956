//! The result of verifying a request: outcome, reason token and the verified identity.

use std::fmt;

/// The four outcomes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Verified,
    Invalid,
    Unverified,
    Unsigned,
}

impl Outcome {
    /// All outcomes, for stats.
    pub const ALL: [Outcome; 4] = [
        Outcome::Verified,
        Outcome::Invalid,
        Outcome::Unverified,
        Outcome::Unsigned,
    ];

    /// The token sent upstream.
    pub fn token(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::Invalid => "invalid",
            Outcome::Unverified => "unverified",
            Outcome::Unsigned => "unsigned",
        }
    }
}

/// Why a request is `invalid` or `unverified` (the contract's reason tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Malformed,
    MissingParameter,
    MissingComponent,
    Expired,
    CreatedInFuture,
    ValidityTooLong,
    UnsupportedAlgorithm,
    BadSignature,
    UnknownAgent,
    UnknownKey,
    DirectoryUnavailable,
    TestKey,
    Replayed,
    NonceRequired,
    /// A `Signature-Agent` member that is not an https URL (`http://...`).
    BadAgentUrl,
    /// The body does not match the covered `Content-Digest` (RFC 9530).
    DigestMismatch,
    /// The body a covered `Content-Digest` vouches for is larger than the configured bound.
    BodyTooLarge,
    /// The fleet's replay store could not say whether the signature was used before
    /// (`replay_store.on_error: reject`).
    ReplayStoreUnavailable,
    /// The signature covers the body, and this filter chain cannot hold the body while it is
    /// checked (wasm: no hold companion of this chain claimed the request): refused with 500.
    BodyNotHeld,
}

impl Reason {
    /// All reasons, for stats.
    pub const ALL: [Reason; 19] = [
        Reason::Malformed,
        Reason::MissingParameter,
        Reason::MissingComponent,
        Reason::Expired,
        Reason::CreatedInFuture,
        Reason::ValidityTooLong,
        Reason::UnsupportedAlgorithm,
        Reason::BadSignature,
        Reason::UnknownAgent,
        Reason::UnknownKey,
        Reason::DirectoryUnavailable,
        Reason::TestKey,
        Reason::Replayed,
        Reason::NonceRequired,
        Reason::BadAgentUrl,
        Reason::DigestMismatch,
        Reason::BodyTooLarge,
        Reason::ReplayStoreUnavailable,
        Reason::BodyNotHeld,
    ];

    /// The token sent upstream.
    pub fn token(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::MissingParameter => "missing_parameter",
            Reason::MissingComponent => "missing_component",
            Reason::Expired => "expired",
            Reason::CreatedInFuture => "created_in_future",
            Reason::ValidityTooLong => "validity_too_long",
            Reason::UnsupportedAlgorithm => "unsupported_algorithm",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownAgent => "unknown_agent",
            Reason::UnknownKey => "unknown_key",
            Reason::DirectoryUnavailable => "directory_unavailable",
            Reason::TestKey => "test_key",
            Reason::Replayed => "replayed",
            Reason::NonceRequired => "nonce_required",
            Reason::BadAgentUrl => "bad_agent_url",
            Reason::DigestMismatch => "digest_mismatch",
            Reason::BodyTooLarge => "body_too_large",
            Reason::ReplayStoreUnavailable => "replay_store_unavailable",
            Reason::BodyNotHeld => "body_not_held",
        }
    }

    /// Not enough information to decide is `unverified`; everything else is `invalid`.
    pub fn outcome(self) -> Outcome {
        match self {
            Reason::UnknownAgent
            | Reason::UnknownKey
            | Reason::DirectoryUnavailable
            | Reason::ReplayStoreUnavailable
            | Reason::BodyNotHeld => Outcome::Unverified,
            _ => Outcome::Invalid,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// The identity a valid signature establishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The agent's URL as configured (normalized).
    pub agent_url: String,
    /// The agent's configured name.
    pub agent_name: String,
    /// The JWK thumbprint of the key that verified.
    pub key_id: String,
    pub label: String,
    /// The covered components, serialized as in `Signature-Input`.
    pub covered: String,
    /// The signature covers the request's `Content-Digest`: it vouches for the body only once
    /// the body matches it.
    pub covers_content_digest: bool,
    pub created: i64,
    pub expires: i64,
    /// What identifies the signature against replays.
    pub replay_key: ReplayKey,
    /// The request's other Web Bot Auth signatures that verified too: each could be replayed
    /// on its own, so each is recorded with this one (with replay protection; see
    /// [`crate::verify`]).
    pub others: Vec<Verified>,
}

/// What identifies a verified signature against replays, besides its agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayKey {
    /// Its `nonce`.
    Nonce(String),
    /// Without a nonce, what was signed: the SHA-256 of the signature base (never the
    /// signature's encoding: ECDSA signatures are malleable and RSA-PSS ones randomized, so the
    /// same signed content has many valid encodings). Computed only for such signatures.
    Signed([u8; 32]),
}

/// A signature that did not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    /// The label concerned, when the failure is about one signature.
    pub label: Option<String>,
    /// The normalized agent URL concerned, when known.
    pub agent: Option<String>,
    /// A human-readable explanation (for problem bodies and `explain`).
    pub detail: String,
    /// Web Bot Auth signatures that passed every check but the cryptographic one and were not
    /// tried because the request reached `max_signatures` verifications; 0 when none was left.
    pub not_tried: usize,
}

impl Failure {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Failure {
            reason,
            label: None,
            agent: None,
            detail: detail.into(),
            not_tried: 0,
        }
    }

    pub fn outcome(&self) -> Outcome {
        self.reason.outcome()
    }
}

/// The reason's token and the detail, as `explain` shows a failed step.
impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Failure {}

/// The verdict on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Verified(Box<Verified>),
    /// `invalid` or `unverified`, depending on the reason.
    Failed(Failure),
    /// No Web Bot Auth signature at all.
    Unsigned,
}

impl Verdict {
    pub fn outcome(&self) -> Outcome {
        match self {
            Verdict::Verified(_) => Outcome::Verified,
            Verdict::Failed(f) => f.outcome(),
            Verdict::Unsigned => Outcome::Unsigned,
        }
    }

    pub fn reason(&self) -> Option<Reason> {
        match self {
            Verdict::Failed(f) => Some(f.reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Every error type of the core can be shown and boxed as a `std::error::Error`.
    #[test]
    fn every_error_type_is_an_error() {
        fn error<E: std::error::Error + 'static>() {}
        error::<Failure>();
        error::<crate::agent_url::UrlError>();
        error::<crate::base::BaseError>();
        error::<crate::component::ComponentError>();
        error::<crate::config::ConfigError>();
        error::<crate::content_digest::DigestError>();
        error::<crate::directory::DirectoryError>();
        error::<crate::directory::ProofError>();
        error::<crate::directory::SkippedKey>();
        error::<crate::ed25519::Ed25519KeyError>();
        error::<crate::fetch::FetchFailure>();
        error::<crate::fetch::Skipped>();
        error::<crate::header_prefix::HeaderPrefixError>();
        error::<crate::host::HeadersUnavailable>();
        error::<crate::jwk::JwkError>();
        error::<crate::jwk::VerifyError>();
        error::<crate::pipeline::MemberError>();
        error::<crate::pipeline::MissingParameter>();
        error::<crate::pipeline::WindowError>();
        error::<crate::pipeline::AlgorithmError>();
        error::<crate::private_key::PrivateKeyError>();
        #[cfg(feature = "rsa")]
        error::<crate::rsa_pss::RsaKeyError>();
        error::<crate::sf_dictionary::DictionaryError>();
        error::<crate::shared::StoreError>();
        error::<crate::sign::SignError>();
        error::<crate::signature::SignatureFieldError>();
        error::<crate::signature_agent::AgentFieldError>();
        error::<crate::signature_input::InputError>();
        let f = Failure::new(Reason::Expired, "expired 5s ago");
        assert_eq!(f.to_string(), "expired: expired 5s ago");
    }

    #[test]
    fn tokens_and_outcomes() {
        assert_eq!(Reason::ALL.len(), 19);
        let unverified: Vec<_> = Reason::ALL
            .iter()
            .filter(|r| r.outcome() == Outcome::Unverified)
            .map(|r| r.token())
            .collect();
        assert_eq!(
            unverified,
            [
                "unknown_agent",
                "unknown_key",
                "directory_unavailable",
                "replay_store_unavailable",
                "body_not_held"
            ]
        );
        assert_eq!(Verdict::Unsigned.outcome().token(), "unsigned");
        let f = Verdict::Failed(Failure::new(Reason::Replayed, "again"));
        assert_eq!(f.outcome(), Outcome::Invalid);
        assert_eq!(f.reason().map(Reason::token), Some("replayed"));
    }
}
