//! The key directory an agent publishes: `{"keys":[...]}` with `kid` = thumbprint, public
//! members only (the core's `build_key_set`).

use std::path::Path;

use anyhow::{bail, Context as _};
use wba_filter::directory::{build_key_set, parse_key_set, KeySet, KidRule};
use wba_filter::jwk::Jwk;

use crate::keyfile::LoadedKey;

/// The most keys a directory file may list before it is refused as not a directory.
pub const MAX_KEYS: usize = 1024;

/// The directory body for `keys`; a key given twice (say as `.jwk` and `.pem`) is listed once.
pub fn directory_json(keys: &[LoadedKey]) -> anyhow::Result<String> {
    if keys.is_empty() {
        bail!("no keys: name at least one key file");
    }
    let mut seen = Vec::new();
    let mut jwks: Vec<Jwk> = Vec::new();
    for k in keys {
        let tp = k
            .thumbprint()
            .with_context(|| format!("{}", k.path.display()))?;
        if !seen.contains(&tp) {
            seen.push(tp);
            jwks.push(k.public_jwk.clone());
        }
    }
    Ok(build_key_set(&jwks)?)
}

/// Reads a directory file (a JWK Set) and checks it with the core as a verifier would: the
/// keys a verifier would use, and the entries it would skip.
pub fn load_directory_file(path: &Path) -> anyhow::Result<(Vec<u8>, KeySet)> {
    let body = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let keys = parse_key_set(&body, KidRule::Thumbprint, MAX_KEYS).with_context(|| {
        format!(
            "{} is not a usable key directory (expected {{\"keys\":[...]}} with kid = thumbprint)",
            path.display()
        )
    })?;
    Ok((body, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyfile::parse_key;

    #[test]
    fn lists_each_key_once_without_private_members() {
        let sk = wba_filter::private_key::PrivateKey::Ed25519(
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        );
        let private = parse_key(Path::new("a"), &crate::keyfile::private_jwk_json(&sk)).unwrap();
        let pem = parse_key(Path::new("b"), &crate::keyfile::private_pem(&sk).unwrap()).unwrap();
        let body = directory_json(&[private, pem]).unwrap();
        assert!(!body.contains("\"d\""), "{body}");
        let keys = parse_key_set(body.as_bytes(), KidRule::Thumbprint, 8)
            .unwrap()
            .keys;
        assert_eq!(keys.len(), 1);
        assert_eq!(
            keys[0].jwk.kid.as_deref(),
            Some(keys[0].thumbprint.as_str())
        );
        assert!(directory_json(&[]).is_err());
    }

    #[test]
    fn lists_keys_of_every_type_together() {
        use wba_filter::private_key::PrivateKey;
        let rsa: serde_json::Value = serde_json::from_str(include_str!(
            "../../filter/core/tests/data/rsa_test_keys.json"
        ))
        .unwrap();
        let keys = [
            PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[4; 32])),
            PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[4; 32]).unwrap()),
            PrivateKey::from_jwk(&rsa["rsa2048"]).unwrap(),
        ];
        let loaded: Vec<_> = keys
            .iter()
            .map(|k| parse_key(Path::new("k"), &crate::keyfile::private_jwk_json(k)).unwrap())
            .collect();
        let body = directory_json(&loaded).unwrap();
        assert!(!body.contains("\"d\""), "{body}");
        let set = parse_key_set(body.as_bytes(), KidRule::Thumbprint, 8).unwrap();
        let algs: Vec<_> = set.keys.iter().map(|k| k.algorithm()).collect();
        assert_eq!(
            algs,
            [
                Some("ed25519"),
                Some("ecdsa-p256-sha256"),
                Some("rsa-pss-sha512")
            ]
        );
        assert!(set.skipped.is_empty());
    }
}
