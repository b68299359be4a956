//! Ed25519 verification (RFC 8032), as strict as ed25519-dalek's `verify_strict`, with a
//! precomputed table per key.
//!
//! Why: in wasm32 the signature check is nearly all of a signed request's cost, and most of
//! that is the double-scalar multiplication `[s]B - [k]A`, about 256 point doublings. A
//! key's radix-16 table (`EdwardsBasepointTable`, 30 KiB) turns `[k]A` into 64 additions
//! without doublings, as the basepoint's own table does for `[s]B`: the check costs about a
//! third less, natively and in wasm (bench/results). The table is built on the key's first
//! verification in each VM (about 1 ms natively, 2 ms in wasm) and dropped with the key.

use std::fmt;
use std::sync::{Arc, OnceLock};

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::EdwardsBasepointTable;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::BasepointTable as _;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha512};

/// Why 32 bytes are not an Ed25519 public key this verifier accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ed25519KeyError {
    /// Not the encoding of a point on the curve.
    NotAPoint,
    /// A point of small order: any signature would be forgeable with it.
    Weak,
}

impl Ed25519KeyError {
    /// The reason, as [`Display`](fmt::Display) prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAPoint => "not a point on Ed25519",
            Self::Weak => "a small-order Ed25519 key",
        }
    }
}

impl fmt::Display for Ed25519KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Ed25519KeyError {}

/// An Ed25519 public key, ready to verify: decoded once, its table built on first use.
#[derive(Clone)]
pub struct Ed25519Key {
    key: VerifyingKey,
    /// Shared by the key's clones, so a table is built once per key and VM.
    table: Arc<OnceLock<EdwardsBasepointTable>>,
}

impl Ed25519Key {
    /// Decodes a public key; small-order points are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, Ed25519KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| Ed25519KeyError::NotAPoint)?;
        if key.is_weak() {
            return Err(Ed25519KeyError::Weak);
        }
        Ok(Ed25519Key {
            key,
            table: Arc::default(),
        })
    }

    /// The key as ed25519-dalek's type.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `signature` (64 bytes, `R || s`) is this key's signature of `message`.
    ///
    /// Accepts exactly what `VerifyingKey::verify_strict` accepts: `s` canonical, `A` and `R`
    /// not of small order, and `R` equal to the encoding of `[s]B - [k]A`, where
    /// `k = SHA-512(R || A || message)`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = <&[u8; 64]>::try_from(signature) else {
            return false;
        };
        let (r, s) = signature.split_at(32);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(s);
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
            return false;
        };
        let mut h = Sha512::new();
        h.update(r);
        h.update(self.key.as_bytes());
        h.update(message);
        let k = Scalar::from_hash(h);
        let a = self
            .table
            .get_or_init(|| EdwardsBasepointTable::create(&self.key.to_edwards()));
        let expected = basepoint_table() * &s - a * &k;
        // Equal encodings make R the canonical encoding of `expected`, so R is of small order
        // exactly when `expected` is: verify_strict's check without decompressing R.
        expected.compress().as_bytes()[..] == *r && !expected.is_small_order()
    }

    /// Whether this key's table has been built (for tests and memory accounting).
    pub fn has_table(&self) -> bool {
        self.table.get().is_some()
    }
}

/// Builds the basepoint's table now (about 2 ms in wasm), so that the VM's first signed
/// request does not wait for it: the filter calls this when its configuration is loaded.
pub fn prepare() {
    let _ = basepoint_table();
}

/// The basepoint's table, built once per VM instead of linking curve25519-dalek's static
/// one (30 KiB more module).
fn basepoint_table() -> &'static EdwardsBasepointTable {
    static TABLE: OnceLock<EdwardsBasepointTable> = OnceLock::new();
    TABLE.get_or_init(|| EdwardsBasepointTable::create(&ED25519_BASEPOINT_POINT))
}

impl PartialEq for Ed25519Key {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Ed25519Key {}

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Ed25519Key").field(&self.key).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn signer(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn key_of(sk: &SigningKey) -> Ed25519Key {
        Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap()
    }

    #[test]
    fn verifies_a_signature_and_builds_the_table_once() {
        let sk = signer(1);
        let key = key_of(&sk);
        let clone = key.clone();
        let sig = sk.sign(b"hello").to_bytes();
        assert!(!key.has_table());
        assert!(key.verify(b"hello", &sig));
        assert!(clone.has_table(), "clones share the table");
        assert!(clone.verify(b"hello", &sig));
    }

    #[test]
    fn refuses_a_tampered_message_or_signature() {
        let sk = signer(2);
        let key = key_of(&sk);
        let sig = sk.sign(b"hello").to_bytes();
        assert!(!key.verify(b"hellp", &sig));
        for i in [0, 31, 32, 63] {
            let mut bad = sig;
            bad[i] ^= 1;
            assert!(!key.verify(b"hello", &bad), "byte {i}");
        }
        assert!(!key.verify(b"hello", &sig[..63]));
        assert!(!key.verify(b"hello", &[]));
        assert!(!key_of(&signer(3)).verify(b"hello", &sig), "another key");
    }

    #[test]
    fn refuses_a_non_canonical_s() {
        // s + l: the same scalar, malleated; verify_strict refuses it, so do we.
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let sk = signer(4);
        let key = key_of(&sk);
        for msg in 0u8..64 {
            let mut sig = sk.sign(&[msg]).to_bytes();
            let mut carry = 0u16;
            for i in 0..32 {
                let sum = u16::from(sig[32 + i]) + u16::from(L[i]) + carry;
                sig[32 + i] = sum as u8;
                carry = sum >> 8;
            }
            if carry == 0 && sig[63] < 0x20 {
                assert!(!key.verify(&[msg], &sig));
                assert!(sk
                    .verifying_key()
                    .verify_strict(&[msg], &sig.into())
                    .is_err());
            }
        }
    }

    #[test]
    fn refuses_small_order_keys_and_r() {
        // The identity (y = 1) and the point of order 2 (y = -1): small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            Ed25519Key::from_bytes(&identity),
            Err(Ed25519KeyError::Weak)
        );
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        assert_eq!(
            Ed25519Key::from_bytes(&minus_one),
            Err(Ed25519KeyError::Weak)
        );
        // A small-order R never passes, whatever s.
        let key = key_of(&signer(5));
        for r in [identity, minus_one] {
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r);
            assert!(!key.verify(b"m", &sig));
        }
    }

    #[test]
    fn agrees_with_verify_strict_on_the_rfc_8032_test_1() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let public: [u8; 32] =
            hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .try_into()
                .unwrap();
        let sig = hex(concat!(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155",
            "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        ));
        let key = Ed25519Key::from_bytes(&public).unwrap();
        assert!(key.verify(b"", &sig));
        assert!(!key.verify(b"x", &sig));
    }
}
