//! `Content-Digest` (RFC 9530): what a signature that covers it says about the body.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256, Sha512};

/// Why a body does not match its `Content-Digest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestError {
    /// Not an RFC 9651 Dictionary of byte sequences.
    Malformed,
    /// No `sha-256` or `sha-512` member: nothing this verifier can check.
    NoSupportedAlgorithm,
    /// A `sha-256`/`sha-512` member does not match the body.
    Mismatch(&'static str),
}

impl fmt::Display for DigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => write!(f, "Content-Digest is not a dictionary of byte sequences"),
            Self::NoSupportedAlgorithm => {
                write!(f, "Content-Digest has no sha-256 or sha-512 digest")
            }
            Self::Mismatch(alg) => write!(f, "the body does not match its {alg} Content-Digest"),
        }
    }
}

impl std::error::Error for DigestError {}

/// Checks `body` against a `Content-Digest` field value: every `sha-256` and `sha-512` member
/// must match, and at least one must be present (other algorithms are ignored, RFC 9530
/// section 2).
pub fn check(value: &str, body: &[u8]) -> Result<(), DigestError> {
    let mut hasher = BodyHasher::for_field(value);
    hasher.update(body);
    hasher.check(value)
}

/// The digests of a body that arrives in pieces, for the algorithms a `Content-Digest` field
/// names (so a host can hash as the body streams past instead of keeping it).
#[derive(Clone, Default)]
pub struct BodyHasher {
    sha256: Option<Sha256>,
    sha512: Option<Sha512>,
    len: u64,
}

impl fmt::Debug for BodyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyHasher")
            .field("len", &self.len)
            .finish()
    }
}

impl BodyHasher {
    /// Hashers for the supported algorithms `value` names (none if it does not parse).
    pub fn for_field(value: &str) -> Self {
        let names = |alg: &str| {
            sfv::Parser::new(value)
                .parse::<sfv::Dictionary>()
                .is_ok_and(|d| d.keys().any(|k| k.as_str() == alg))
        };
        BodyHasher {
            sha256: names("sha-256").then(Sha256::new),
            sha512: names("sha-512").then(Sha512::new),
            len: 0,
        }
    }

    /// Adds the next piece of the body.
    pub fn update(&mut self, chunk: &[u8]) {
        if let Some(h) = &mut self.sha256 {
            h.update(chunk);
        }
        if let Some(h) = &mut self.sha512 {
            h.update(chunk);
        }
        self.len = self.len.saturating_add(chunk.len() as u64);
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the body hashed so far against `value` (see [`check`]).
    pub fn check(&self, value: &str) -> Result<(), DigestError> {
        let dict: sfv::Dictionary = sfv::Parser::new(value)
            .parse()
            .map_err(|_| DigestError::Malformed)?;
        let mut checked = false;
        for (alg, entry) in &dict {
            let (name, expected): (&'static str, Vec<u8>) = match (alg.as_str(), self) {
                (
                    "sha-256",
                    BodyHasher {
                        sha256: Some(h), ..
                    },
                ) => ("sha-256", h.clone().finalize().to_vec()),
                (
                    "sha-512",
                    BodyHasher {
                        sha512: Some(h), ..
                    },
                ) => ("sha-512", h.clone().finalize().to_vec()),
                _ => continue,
            };
            let sfv::ListEntry::Item(item) = entry else {
                return Err(DigestError::Malformed);
            };
            let Some(sent) = item.bare_item.as_byte_sequence() else {
                return Err(DigestError::Malformed);
            };
            if sent != expected.as_slice() {
                return Err(DigestError::Mismatch(name));
            }
            checked = true;
        }
        if checked {
            Ok(())
        } else {
            Err(DigestError::NoSupportedAlgorithm)
        }
    }
}

/// A `Content-Digest` field value for `body`, with SHA-256.
pub fn sha256(body: &[u8]) -> String {
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn matches_and_mismatches() {
        assert_eq!(check(&sha256(b"abc"), b"abc"), Ok(()));
        assert_eq!(
            check(&sha256(b"abc"), b"abd"),
            Err(DigestError::Mismatch("sha-256"))
        );
        let sha512 = format!(
            "sha-512=:{}:",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(b""))
        );
        assert_eq!(check(&sha512, b""), Ok(()));
        assert_eq!(
            check(&format!("{}, {sha512}", sha256(b"")), b"x"),
            Err(DigestError::Mismatch("sha-256"))
        );
        // Every supported member must match, not just one.
        assert_eq!(
            check(&format!("{}, {sha512}", sha256(b"x")), b"x"),
            Err(DigestError::Mismatch("sha-512"))
        );
    }

    #[test]
    fn unsupported_or_malformed() {
        assert_eq!(
            check("md5=:AA==:", b"abc"),
            Err(DigestError::NoSupportedAlgorithm)
        );
        assert_eq!(check("", b""), Err(DigestError::NoSupportedAlgorithm));
        assert_eq!(check("sha-256=1", b""), Err(DigestError::Malformed));
        assert_eq!(check("sha-256=(:AA==:)", b""), Err(DigestError::Malformed));
        assert_eq!(check("(((", b""), Err(DigestError::Malformed));
        // RFC 9530 Appendix B: other algorithms beside a good one are ignored.
        assert_eq!(
            check(&format!("unixsum=:AA==:, {}", sha256(b"{}")), b"{}"),
            Ok(())
        );
    }

    #[test]
    fn hashing_in_pieces_is_hashing_at_once() {
        let field = sha256(b"hello, world");
        let mut h = BodyHasher::for_field(&field);
        for piece in [&b"hello"[..], b", ", b"", b"world"] {
            h.update(piece);
        }
        assert_eq!(h.len(), 12);
        assert_eq!(h.check(&field), Ok(()));
        // A hasher built for one field cannot vouch for an algorithm it did not hash.
        let other = BodyHasher::for_field("md5=:AA==:");
        assert_eq!(other.check(&field), Err(DigestError::NoSupportedAlgorithm));
    }
}
