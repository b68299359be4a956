//! ECDSA on P-256 with SHA-256 (RFC 9421 section 3.3.4), with the RustCrypto `p256` crate.

use std::fmt;

use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};

/// An uncompressed coordinate of P-256: 32 bytes, big-endian (RFC 7518 section 6.2.1.2).
pub const COORDINATE_LEN: usize = 32;
/// The signature is `r || s`, each 32 bytes (section 3.3.4), never the DER form.
pub const SIGNATURE_LEN: usize = 64;

/// A P-256 public key, checked to be a point on the curve (not the identity).
#[derive(Clone, PartialEq, Eq)]
pub struct EcdsaP256Key(VerifyingKey);

impl EcdsaP256Key {
    /// The key of the affine coordinates `x`, `y` (32 bytes each).
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Self, &'static str> {
        if x.len() != COORDINATE_LEN || y.len() != COORDINATE_LEN {
            return Err("a P-256 coordinate is 32 bytes");
        }
        let mut sec1 = [0u8; 1 + 2 * COORDINATE_LEN];
        sec1[0] = 0x04;
        sec1[1..=COORDINATE_LEN].copy_from_slice(x);
        sec1[1 + COORDINATE_LEN..].copy_from_slice(y);
        VerifyingKey::from_sec1_bytes(&sec1)
            .map(Self)
            .map_err(|_| "not a point on P-256")
    }

    /// The underlying key (for signers and tests).
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// Whether `signature` (64 bytes, `r || s`) is this key's signature of SHA-256(`message`).
    /// A DER signature (70 to 72 bytes) has the wrong length and is refused; `r` and `s` must
    /// be in 1..n. Both `s` and `n - s` verify: RFC 9421 does not ask for low-S signatures, and
    /// signers (OpenSSL, WebCrypto) do not produce only those.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        if signature.len() != SIGNATURE_LEN {
            return false;
        }
        match Signature::from_slice(signature) {
            Ok(sig) => self.0.verify(message, &sig).is_ok(),
            Err(_) => false,
        }
    }
}

impl fmt::Debug for EcdsaP256Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let point = self.0.to_encoded_point(false);
        f.debug_tuple("EcdsaP256Key")
            .field(&format_args!("{point:?}"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn signer(byte: u8) -> SigningKey {
        SigningKey::from_slice(&[byte; 32]).unwrap()
    }

    fn key_of(sk: &SigningKey) -> EcdsaP256Key {
        let point = sk.verifying_key().to_encoded_point(false);
        EcdsaP256Key::from_coordinates(point.x().unwrap(), point.y().unwrap()).unwrap()
    }

    #[test]
    fn verifies_raw_r_s_and_refuses_der_and_tampering() {
        let sk = signer(7);
        let key = key_of(&sk);
        let sig: Signature = sk.sign(b"hello");
        let raw = sig.to_bytes();
        assert!(key.verify(b"hello", &raw));
        assert!(!key.verify(b"hellp", &raw));
        // The same signature, DER-encoded: refused.
        let der = sig.to_der();
        assert!(der.as_bytes().len() > SIGNATURE_LEN);
        assert!(!key.verify(b"hello", der.as_bytes()));
        for i in [0, 31, 32, 63] {
            let mut bad = raw;
            bad[i] ^= 1;
            assert!(!key.verify(b"hello", &bad), "byte {i}");
        }
        assert!(!key.verify(b"hello", &raw[..63]));
        assert!(!key.verify(b"hello", &[0; 64]), "r = s = 0");
        assert!(!key.verify(b"hello", &[0xff; 64]), "r, s >= n");
        assert!(!key_of(&signer(8)).verify(b"hello", &raw));
    }

    #[test]
    fn high_s_verifies_too() {
        let sk = signer(9);
        let key = key_of(&sk);
        let sig: Signature = sk.sign(b"m");
        // n - s: the other valid s for the same r (p256 signs low-S).
        let (r, s) = sig.split_scalars();
        let high = Signature::from_scalars(r, -*s.as_ref()).unwrap();
        assert_ne!(high.to_bytes(), sig.to_bytes());
        assert!(key.verify(b"m", &high.to_bytes()));
    }

    #[test]
    fn refuses_points_off_the_curve_and_bad_lengths() {
        assert_eq!(
            EcdsaP256Key::from_coordinates(&[1; 32], &[2; 32]),
            Err("not a point on P-256")
        );
        assert_eq!(
            EcdsaP256Key::from_coordinates(&[1; 31], &[2; 32]),
            Err("a P-256 coordinate is 32 bytes")
        );
        assert_eq!(
            EcdsaP256Key::from_coordinates(&[0; 32], &[0; 32]),
            Err("not a point on P-256")
        );
    }
}
