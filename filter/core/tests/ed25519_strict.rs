//! The precomputed-table Ed25519 check (`wba_filter::ed25519`) accepts exactly what
//! ed25519-dalek's `verify_strict` accepts: valid signatures, and after random tampering with
//! the signature, the message or the key, both say no (or, for the rare tamper that still
//! verifies, both say yes).
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::{Signature, Signer, SigningKey};
use proptest::collection::vec;
use proptest::prelude::*;
use wba_filter::ed25519::Ed25519Key;

fn strict(key: &SigningKey, msg: &[u8], sig: &[u8; 64]) -> bool {
    key.verifying_key()
        .verify_strict(msg, &Signature::from_bytes(sig))
        .is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn agrees_with_verify_strict(
        seed in any::<[u8; 32]>(),
        msg in vec(any::<u8>(), 0..300),
        flips in vec((0usize..64, 1u8..=255), 0..3),
        msg_flip in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
    ) {
        let sk = SigningKey::from_bytes(&seed);
        let key = Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap();
        let mut sig = sk.sign(&msg).to_bytes();
        prop_assert!(key.verify(&msg, &sig));
        for (i, x) in flips {
            sig[i] ^= x;
        }
        let mut msg = msg;
        if let (Some((i, x)), false) = (msg_flip, msg.is_empty()) {
            let i = i.index(msg.len());
            msg[i] ^= x;
        }
        prop_assert_eq!(key.verify(&msg, &sig), strict(&sk, &msg, &sig));
    }

    #[test]
    fn arbitrary_signature_bytes_agree(
        seed in any::<[u8; 32]>(),
        msg in vec(any::<u8>(), 0..64),
        r in any::<[u8; 32]>(),
        s in any::<[u8; 32]>(),
    ) {
        let sk = SigningKey::from_bytes(&seed);
        let key = Ed25519Key::from_bytes(sk.verifying_key().as_bytes()).unwrap();
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r);
        sig[32..].copy_from_slice(&s);
        prop_assert_eq!(key.verify(&msg, &sig), strict(&sk, &msg, &sig));
    }
}
