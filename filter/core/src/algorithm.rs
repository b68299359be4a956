//! The signature algorithms of RFC 9421 section 3.3 that Web Bot Auth keys use, and the names
//! they go by in the `alg` signature parameter and in JWKs.

use std::fmt;

/// An algorithm this verifier knows. The key's type decides it (RFC 9421 section 3.3.7): an
/// `alg` parameter can only confirm it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `ed25519` (section 3.3.6): OKP keys on Ed25519.
    Ed25519,
    /// `ecdsa-p256-sha256` (section 3.3.4): EC keys on P-256; the signature is `r || s`.
    EcdsaP256Sha256,
    /// `rsa-pss-sha512` (section 3.3.1): RSA keys; MGF1 with SHA-512, a 64-byte salt.
    RsaPssSha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 3] = [
        Algorithm::Ed25519,
        Algorithm::EcdsaP256Sha256,
        Algorithm::RsaPssSha512,
    ];

    /// The name in the `alg` signature parameter (the HTTP Signature Algorithms registry).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::EcdsaP256Sha256 => "ecdsa-p256-sha256",
            Self::RsaPssSha512 => "rsa-pss-sha512",
        }
    }

    /// The algorithm an `alg` parameter names; `None` for any other (HMAC included).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether a JWK's `alg` member is compatible with this algorithm: its JOSE name (RFC 7518),
    /// or its RFC 9421 name, which some directories publish. For Ed25519, deployed directories
    /// also say `Ed25519` (RFC 9864).
    pub fn fits_jwk_alg(self, alg: &str) -> bool {
        match self {
            Self::Ed25519 => matches!(alg, "EdDSA" | "Ed25519" | "ed25519"),
            Self::EcdsaP256Sha256 => matches!(alg, "ES256" | "ecdsa-p256-sha256"),
            Self::RsaPssSha512 => matches!(alg, "PS512" | "rsa-pss-sha512"),
        }
    }

    /// The JOSE `alg` a JWK of this algorithm carries when this project writes one.
    pub fn jose_name(self) -> &'static str {
        match self {
            Self::Ed25519 => "EdDSA",
            Self::EcdsaP256Sha256 => "ES256",
            Self::RsaPssSha512 => "PS512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_round_trip_and_hmac_is_not_one() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
            assert!(a.fits_jwk_alg(a.name()));
            assert!(a.fits_jwk_alg(a.jose_name()));
        }
        for other in [
            "hmac-sha256",
            "rsa-v1_5-sha256",
            "ecdsa-p384-sha384",
            "ED25519",
            "",
        ] {
            assert_eq!(Algorithm::from_name(other), None, "{other}");
        }
        assert!(!Algorithm::RsaPssSha512.fits_jwk_alg("RS256"));
        assert!(!Algorithm::EcdsaP256Sha256.fits_jwk_alg("ES384"));
        assert!(!Algorithm::Ed25519.fits_jwk_alg("ES256"));
    }
}
