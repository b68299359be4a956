//! The verifier's own rules on top of the protocol: clock skew, validity, required coverage.

use crate::component::Component;
use crate::config::{
    DEFAULT_ALLOW_TEST_KEYS, DEFAULT_CLOCK_SKEW_SECONDS, DEFAULT_MAX_SIGNATURES,
    DEFAULT_MAX_VALIDITY_SECONDS, DEFAULT_REPLAY_PROTECTION, DEFAULT_REQUIRE_NONCE,
};

/// What an accepted Web Bot Auth signature must satisfy beyond RFC 9421.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Tolerated clock difference in seconds, both ways.
    pub clock_skew_seconds: i64,
    /// Longest accepted `expires - created`.
    pub max_validity_seconds: i64,
    /// Components every accepted signature must cover.
    pub required_components: Vec<Component>,
    /// Accept RFC 9421 Appendix B test keys.
    pub allow_test_keys: bool,
    /// Refuse signatures without `nonce`.
    pub require_nonce: bool,
    /// Web Bot Auth signatures verified per request, at most.
    pub max_signatures: usize,
    /// Accepted signatures are recorded against replays: then a request carrying several Web
    /// Bot Auth signatures must carry a nonce in each, and every one is recorded (each is a
    /// credential that could be replayed on its own).
    pub replay_protection: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            clock_skew_seconds: DEFAULT_CLOCK_SKEW_SECONDS,
            max_validity_seconds: DEFAULT_MAX_VALIDITY_SECONDS,
            required_components: Vec::new(),
            allow_test_keys: DEFAULT_ALLOW_TEST_KEYS,
            require_nonce: DEFAULT_REQUIRE_NONCE,
            // 3 fits every usize.
            max_signatures: usize::try_from(DEFAULT_MAX_SIGNATURES).unwrap_or(1),
            replay_protection: DEFAULT_REPLAY_PROTECTION,
        }
    }
}
