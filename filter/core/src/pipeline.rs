//! The steps of RFC 9421 signature verification (section 3.2) that request signatures
//! ([`crate::verify`]) and key directory response signatures ([`crate::directory`]) share:
//! select the members by tag, read the signature, require the parameters, check the
//! created/expires window, take the key's algorithm, build the signature base, verify.
//!
//! Each step returns its own error, whose `Display` is the detail a request failure shows; each
//! caller maps it to its vocabulary ([`crate::verdict::Reason`] or
//! [`crate::directory::ProofError`]) and places its profile's own checks (coverage, key lookup)
//! between the steps.

use std::fmt;

use crate::algorithm::Algorithm;
use crate::base::{signature_base, BaseError, Message};
use crate::jwk::{Key, VerifyError};
use crate::signature::{SignatureField, SignatureFieldError};
use crate::signature_input::{InputError, InputField, SignatureInput, SignatureParams};

/// Select: the members of `inputs` tagged `tag`, in order, each parsed on its own (a problem
/// inside one is that member's, and members of other profiles are not looked into).
pub fn select<'a>(
    inputs: &'a InputField,
    tag: &'a str,
) -> impl Iterator<Item = (&'a str, Result<SignatureInput, InputError>)> + 'a {
    inputs.tagged(tag)
}

/// Why a selected label has no usable signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberError {
    /// The `Signature` field has no member of that label.
    Absent(String),
    /// The member is not a byte sequence.
    NotBytes(SignatureFieldError),
}

impl fmt::Display for MemberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent(label) => write!(f, "no Signature member for label {label:?}"),
            Self::NotBytes(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for MemberError {}

/// The signature of `label`.
pub fn signature_member<'a>(
    signatures: &'a SignatureField,
    label: &str,
) -> Result<&'a [u8], MemberError> {
    match signatures.bytes(label) {
        Some(Ok(b)) => Ok(b),
        Some(Err(e)) => Err(MemberError::NotBytes(e)),
        None => Err(MemberError::Absent(label.to_string())),
    }
}

/// The parameters both profiles require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Required<'i> {
    pub created: i64,
    pub expires: i64,
    pub keyid: &'i str,
}

/// A required parameter is missing: its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingParameter(pub &'static str);

impl fmt::Display for MissingParameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} parameter is required", self.0)
    }
}

impl std::error::Error for MissingParameter {}

/// `created`, `expires` and `keyid`, in that order.
pub fn required_parameters(p: &SignatureParams) -> Result<Required<'_>, MissingParameter> {
    Ok(Required {
        created: p.created.ok_or(MissingParameter("created"))?,
        expires: p.expires.ok_or(MissingParameter("expires"))?,
        keyid: p.keyid.as_deref().ok_or(MissingParameter("keyid"))?,
    })
}

/// What a signature's created/expires window must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowRules {
    /// Tolerated clock difference in seconds, both ways.
    pub clock_skew_seconds: i64,
    /// Longest accepted `expires - created`; `None`: unbounded.
    pub max_validity_seconds: Option<i64>,
}

/// Why a signature's window does not contain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowError {
    NotAfterCreated,
    CreatedInFuture { created: i64, ahead: i64 },
    Expired { ago: i64 },
    TooLong { validity: i64, max: i64 },
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAfterCreated => write!(f, "expires is not after created"),
            Self::CreatedInFuture { created, ahead } => {
                write!(f, "created {created} is {ahead}s in the future")
            }
            Self::Expired { ago } => write!(f, "expired {ago}s ago"),
            Self::TooLong { validity, max } => write!(
                f,
                "valid for {validity}s, more than the {max}s this verifier accepts"
            ),
        }
    }
}

impl std::error::Error for WindowError {}

/// `created` and `expires` against the clock, the skew and the longest accepted validity.
pub fn check_window(
    created: i64,
    expires: i64,
    now: i64,
    rules: WindowRules,
) -> Result<(), WindowError> {
    if expires <= created {
        return Err(WindowError::NotAfterCreated);
    }
    if created > now.saturating_add(rules.clock_skew_seconds) {
        return Err(WindowError::CreatedInFuture {
            created,
            ahead: created.saturating_sub(now),
        });
    }
    if now > expires.saturating_add(rules.clock_skew_seconds) {
        return Err(WindowError::Expired {
            ago: now.saturating_sub(expires),
        });
    }
    let validity = expires.saturating_sub(created);
    match rules.max_validity_seconds {
        Some(max) if validity > max => Err(WindowError::TooLong { validity, max }),
        _ => Ok(()),
    }
}

/// Why a key cannot check a signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgorithmError {
    /// The key is of no algorithm this verifier implements.
    Unimplemented,
    /// The `alg` parameter names another algorithm than the key's: the signature cannot be
    /// this key's (RFC 9421 section 3.2).
    Contradicts { alg: String, key: Algorithm },
}

impl fmt::Display for AlgorithmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unimplemented => {
                write!(f, "the key is of no algorithm this verifier implements")
            }
            Self::Contradicts { alg, key } => {
                write!(f, "alg {alg:?} contradicts the key, a {key} key")
            }
        }
    }
}

impl std::error::Error for AlgorithmError {}

/// The key's algorithm, which its type decides, checked against the `alg` parameter.
pub fn key_algorithm(key: &Key, alg: Option<&str>) -> Result<Algorithm, AlgorithmError> {
    let algorithm = key.alg().ok_or(AlgorithmError::Unimplemented)?;
    match alg {
        Some(alg) if alg != algorithm.name() => Err(AlgorithmError::Contradicts {
            alg: alg.to_string(),
            key: algorithm,
        }),
        _ => Ok(algorithm),
    }
}

/// The signature base of `input` over `message` (RFC 9421 section 2.5).
pub fn base(message: Message<'_>, input: &SignatureInput) -> Result<String, BaseError> {
    signature_base(message, input)
}

/// Whether `signature` is `key`'s over `base`.
pub fn verify(key: &Key, base: &str, signature: &[u8]) -> Result<(), VerifyError> {
    key.verify(base.as_bytes(), signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const RULES: WindowRules = WindowRules {
        clock_skew_seconds: 60,
        max_validity_seconds: Some(300),
    };

    #[test]
    fn window_edges() {
        assert_eq!(check_window(100, 200, 150, RULES), Ok(()));
        assert_eq!(
            check_window(200, 200, 150, RULES),
            Err(WindowError::NotAfterCreated)
        );
        // Within the skew both ways.
        assert_eq!(check_window(210, 300, 150, RULES), Ok(()));
        assert_eq!(check_window(0, 90, 150, RULES), Ok(()));
        assert_eq!(
            check_window(211, 300, 150, RULES),
            Err(WindowError::CreatedInFuture {
                created: 211,
                ahead: 61
            })
        );
        assert_eq!(
            check_window(0, 89, 150, RULES),
            Err(WindowError::Expired { ago: 61 })
        );
        assert_eq!(
            check_window(100, 401, 150, RULES),
            Err(WindowError::TooLong {
                validity: 301,
                max: 300
            })
        );
        let unbounded = WindowRules {
            max_validity_seconds: None,
            ..RULES
        };
        assert_eq!(check_window(100, i64::MAX, 150, unbounded), Ok(()));
        // No overflow at the ends of the range.
        assert!(check_window(i64::MIN, i64::MAX, i64::MAX, RULES).is_err());
    }

    #[test]
    fn required_parameters_in_order() {
        let mut p = SignatureParams::default();
        assert_eq!(required_parameters(&p), Err(MissingParameter("created")));
        p.created = Some(1);
        assert_eq!(required_parameters(&p), Err(MissingParameter("expires")));
        p.expires = Some(2);
        assert_eq!(required_parameters(&p), Err(MissingParameter("keyid")));
        p.keyid = Some("k".into());
        assert_eq!(
            required_parameters(&p),
            Ok(Required {
                created: 1,
                expires: 2,
                keyid: "k"
            })
        );
        assert_eq!(
            MissingParameter("keyid").to_string(),
            "the keyid parameter is required"
        );
    }
}
