//! RSASSA-PSS with SHA-512 (RFC 9421 section 3.3.1), with the RustCrypto `rsa` crate: MGF1
//! with SHA-512 and a 64-byte salt, on keys of 2048 to 8192 bits.
//!
//! Only verification is built into the filter. (The crate's Marvin timing advisory,
//! RUSTSEC-2023-0071, concerns decryption and signing with the private key, which the filter
//! never does.)

use std::fmt;

use rsa::pss::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPublicKey};
use sha2::Sha512;

/// The smallest modulus accepted: smaller keys are too weak to vouch for anyone (NIST SP
/// 800-131A) and none of the draft's examples use one.
pub const MIN_BITS: usize = 2048;
/// The largest modulus accepted, so that a hostile directory cannot make verification costly.
pub const MAX_BITS: usize = 8192;
/// The largest public exponent the `rsa` crate accepts (2^33 - 1); real keys use 65537.
const MAX_EXPONENT: u64 = (1 << 33) - 1;
/// The salt length of `rsa-pss-sha512`: the digest's length.
pub const SALT_LEN: usize = 64;

/// Why `n` and `e` are not an RSA key this verifier uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaKeyError {
    /// The modulus has this many bits, outside [`MIN_BITS`]..=[`MAX_BITS`].
    Size(usize),
    /// An even modulus, or an exponent that is even, below 3 or above 2^33 - 1.
    Malformed,
}

impl fmt::Display for RsaKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Size(bits) => write!(
                f,
                "an RSA key of {bits} bits (from {MIN_BITS} to {MAX_BITS} are accepted)"
            ),
            Self::Malformed => write!(
                f,
                "not an RSA public key (n must be odd, e odd and from 3 to 2^33-1)"
            ),
        }
    }
}

impl std::error::Error for RsaKeyError {}

/// An RSA public key for `rsa-pss-sha512`.
#[derive(Clone)]
pub struct RsaPssKey {
    key: VerifyingKey<Sha512>,
    bits: usize,
}

impl RsaPssKey {
    /// The key of modulus `n` and exponent `e` (big-endian bytes, leading zeros allowed).
    pub fn from_components(n: &[u8], e: &[u8]) -> Result<Self, RsaKeyError> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        // Bounded before any big-number work: at most MAX_BITS / 8 bytes of modulus.
        if n.len() > MAX_BITS / 8 {
            return Err(RsaKeyError::Size(n.len().saturating_mul(8)));
        }
        if e.len() > 8 {
            return Err(RsaKeyError::Malformed);
        }
        let exponent = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let odd = |bytes: &[u8]| bytes.last().is_some_and(|b| b & 1 == 1);
        if !(3..=MAX_EXPONENT).contains(&exponent) || !odd(e) || !odd(n) {
            return Err(RsaKeyError::Malformed);
        }
        let modulus = BigUint::from_bytes_be(n);
        let bits = modulus.bits();
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(RsaKeyError::Size(bits));
        }
        let key = RsaPublicKey::new_with_max_size(modulus, BigUint::from(exponent), MAX_BITS)
            .map_err(|_| RsaKeyError::Malformed)?;
        Ok(RsaPssKey {
            key: VerifyingKey::new_with_salt_len(key, SALT_LEN),
            bits,
        })
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The public key (for signers and tests).
    pub fn public_key(&self) -> &RsaPublicKey {
        self.key.as_ref()
    }

    /// Whether `signature` (as long as the modulus) is this key's RSASSA-PSS signature of
    /// `message` with SHA-512, MGF1-SHA-512 and a 64-byte salt.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        if signature.len() != self.public_key().size() {
            return false;
        }
        match Signature::try_from(signature) {
            Ok(sig) => self.key.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

impl PartialEq for RsaPssKey {
    fn eq(&self, other: &Self) -> bool {
        self.public_key() == other.public_key()
    }
}

impl Eq for RsaPssKey {}

impl fmt::Debug for RsaPssKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPssKey")
            .field("bits", &self.bits)
            .field("e", &self.public_key().e())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// An odd modulus of exactly `bits` bits (not a real key: enough for the bounds).
    fn modulus(bits: usize) -> Vec<u8> {
        let mut n = vec![0xffu8; bits.div_ceil(8)];
        n[0] = 0xff >> ((8 - bits % 8) % 8);
        n
    }

    #[test]
    fn size_bounds() {
        let e = [1, 0, 1];
        assert_eq!(
            RsaPssKey::from_components(&modulus(1024), &e),
            Err(RsaKeyError::Size(1024))
        );
        assert_eq!(
            RsaPssKey::from_components(&modulus(2047), &e),
            Err(RsaKeyError::Size(2047))
        );
        assert_eq!(
            RsaPssKey::from_components(&modulus(2048), &e)
                .unwrap()
                .bits(),
            2048
        );
        let mut padded = vec![0, 0];
        padded.extend(modulus(2048));
        assert_eq!(
            RsaPssKey::from_components(&padded, &e).unwrap().bits(),
            2048
        );
        assert_eq!(
            RsaPssKey::from_components(&modulus(8192), &e)
                .unwrap()
                .bits(),
            8192
        );
        assert_eq!(
            RsaPssKey::from_components(&modulus(8193), &e),
            Err(RsaKeyError::Size(8200))
        );
        assert!(matches!(
            RsaPssKey::from_components(&modulus(100_000), &e),
            Err(RsaKeyError::Size(_))
        ));
    }

    #[test]
    fn exponent_and_parity() {
        let n = modulus(2048);
        for bad in [
            &[][..],
            &[1],
            &[2],
            &[4],
            &[1, 0, 0, 0, 0, 0, 0, 0, 1],
            &[3, 0, 0, 0, 1],
        ] {
            assert_eq!(
                RsaPssKey::from_components(&n, bad),
                Err(RsaKeyError::Malformed),
                "{bad:?}"
            );
        }
        assert!(RsaPssKey::from_components(&n, &[3]).is_ok());
        let mut even = n.clone();
        if let Some(last) = even.last_mut() {
            *last = 0xfe;
        }
        assert_eq!(
            RsaPssKey::from_components(&even, &[1, 0, 1]),
            Err(RsaKeyError::Malformed)
        );
    }

    #[test]
    fn signatures_of_the_wrong_length_are_refused_without_work() {
        let key = RsaPssKey::from_components(&modulus(2048), &[1, 0, 1]).unwrap();
        for len in [0, 64, 255, 257, 512] {
            assert!(!key.verify(b"m", &vec![1; len]), "{len}");
        }
        // The right length, but not below the modulus / not a PSS encoding.
        assert!(!key.verify(b"m", &[0xff; 256]));
        assert!(!key.verify(b"m", &[1; 256]));
    }
}
