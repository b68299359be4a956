//! Private keys of the three algorithms, read from private JWKs (RFC 7518 section 6): what
//! the `wba` tool and the tests sign with. The filter itself never holds one.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::jwk::{Jwk, JwkError};
use crate::sign::{SignError, SignatureKey};

/// A private key of any algorithm this project signs with.
#[derive(Clone)]
pub enum PrivateKey {
    Ed25519(ed25519_dalek::SigningKey),
    #[cfg(feature = "ecdsa")]
    EcdsaP256(p256::ecdsa::SigningKey),
    #[cfg(feature = "rsa")]
    RsaPss(Box<rsa::RsaPrivateKey>),
}

/// Why a private JWK cannot be used to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateKeyError {
    /// The public members are wrong (what a verifier would say of the public JWK).
    Public(JwkError),
    /// No `d`: a public key.
    NotPrivate,
    /// A key type or curve this project does not sign with.
    Unsupported(String),
    /// A private member is missing, not base64url, or does not match the public key.
    Bad(&'static str),
}

impl fmt::Display for PrivateKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Public(e) => write!(f, "{e}"),
            Self::NotPrivate => write!(f, "a public key (no \"d\"): signing needs the private key"),
            Self::Unsupported(what) => write!(
                f,
                "{what} keys cannot sign here: use Ed25519 (OKP), P-256 (EC) or RSA (2048 to 8192 bits)"
            ),
            Self::Bad(why) => write!(f, "invalid private key: {why}"),
        }
    }
}

impl std::error::Error for PrivateKeyError {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private material.
        write!(
            f,
            "PrivateKey({}, {})",
            self.algorithm(),
            self.public_jwk()
                .thumbprint()
                .map(String::from)
                .unwrap_or_default()
        )
    }
}

fn member(v: &Value, name: &'static str) -> Result<Vec<u8>, PrivateKeyError> {
    let s = v
        .get(name)
        .and_then(Value::as_str)
        .ok_or(PrivateKeyError::Bad(match name {
            "d" => "\"d\" is missing or not a string",
            "p" => "\"p\" is missing or not a string (RSA keys need p and q)",
            _ => "\"q\" is missing or not a string (RSA keys need p and q)",
        }))?;
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| PrivateKeyError::Bad("a private member is not base64url"))
}

impl PrivateKey {
    /// Reads a private JWK; the public members must be those of the private key.
    pub fn from_jwk(v: &Value) -> Result<Self, PrivateKeyError> {
        let obj = v
            .as_object()
            .ok_or(PrivateKeyError::Public(JwkError::NotAnObject))?;
        let public: serde_json::Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| !["d", "p", "q", "dp", "dq", "qi", "oth"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let public = Jwk::from_value(&Value::Object(public)).map_err(PrivateKeyError::Public)?;
        let key = public.to_key().map_err(PrivateKeyError::Public)?;
        if !obj.contains_key("d") {
            return Err(PrivateKeyError::NotPrivate);
        }
        if key.alg().is_none() {
            let what = match &public.crv {
                Some(crv) => format!("{} {crv}", public.kty),
                None => public.kty.clone(),
            };
            return Err(PrivateKeyError::Unsupported(what));
        }
        let d = member(v, "d")?;
        let private = match key.alg() {
            Some(Algorithm::Ed25519) => {
                let seed: [u8; 32] = d
                    .try_into()
                    .map_err(|_| PrivateKeyError::Bad("\"d\" of an Ed25519 key is 32 bytes"))?;
                Self::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
            #[cfg(feature = "ecdsa")]
            Some(Algorithm::EcdsaP256Sha256) => Self::EcdsaP256(
                p256::ecdsa::SigningKey::from_slice(&d)
                    .map_err(|_| PrivateKeyError::Bad("\"d\" is not a P-256 private scalar"))?,
            ),
            #[cfg(feature = "rsa")]
            Some(Algorithm::RsaPssSha512) => {
                use rsa::BigUint;
                let int = |b: &[u8]| BigUint::from_bytes_be(b);
                let n = public.n.as_deref().unwrap_or_default();
                let e = public.e.as_deref().unwrap_or_default();
                let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).unwrap_or_default();
                let primes = vec![int(&member(v, "p")?), int(&member(v, "q")?)];
                let key = rsa::RsaPrivateKey::from_components(
                    int(&decode(n)),
                    int(&decode(e)),
                    int(&d),
                    primes,
                )
                .map_err(|_| PrivateKeyError::Bad("n, e, d, p and q are not one RSA key"))?;
                key.validate()
                    .map_err(|_| PrivateKeyError::Bad("n, e, d, p and q are not one RSA key"))?;
                Self::RsaPss(Box::new(key))
            }
            // Checked above; a type compiled out of this build lands here too.
            _ => return Err(PrivateKeyError::Unsupported(public.kty.clone())),
        };
        if private.public_jwk().thumbprint().ok() != Some(key.thumbprint) {
            return Err(PrivateKeyError::Bad(
                "the public members are not those of the private key",
            ));
        }
        Ok(private)
    }

    /// The private JWK (public members, `alg` for EC and RSA, the private members, and `kid`
    /// set to the thumbprint).
    pub fn to_jwk(&self) -> Value {
        let mut public = self.public_jwk();
        public.kid = public.thumbprint().ok().map(String::from);
        let mut v: Value = serde_json::from_str(&public.to_json()).unwrap_or(Value::Null);
        let b64 = |b: &[u8]| Value::String(URL_SAFE_NO_PAD.encode(b));
        let mut private: Vec<(&str, Value)> = Vec::new();
        match self {
            Self::Ed25519(k) => private.push(("d", b64(&k.to_bytes()))),
            #[cfg(feature = "ecdsa")]
            Self::EcdsaP256(k) => private.push(("d", b64(&k.to_bytes()))),
            #[cfg(feature = "rsa")]
            Self::RsaPss(k) => {
                use rsa::traits::PrivateKeyParts as _;
                private.push(("d", b64(&k.d().to_bytes_be())));
                let primes = k.primes();
                if let [p, q] = primes {
                    private.push(("p", b64(&p.to_bytes_be())));
                    private.push(("q", b64(&q.to_bytes_be())));
                }
                if let (Some(dp), Some(dq)) = (k.dp(), k.dq()) {
                    private.push(("dp", b64(&dp.to_bytes_be())));
                    private.push(("dq", b64(&dq.to_bytes_be())));
                }
                if let Some(qi) = k.crt_coefficient() {
                    private.push(("qi", b64(&qi.to_bytes_be())));
                }
            }
        }
        if let Some(obj) = v.as_object_mut() {
            for (k, value) in private {
                obj.insert(k.into(), value);
            }
        }
        v
    }
}

impl SignatureKey for PrivateKey {
    fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(k) => k.algorithm(),
            #[cfg(feature = "ecdsa")]
            Self::EcdsaP256(k) => k.algorithm(),
            #[cfg(feature = "rsa")]
            Self::RsaPss(_) => Algorithm::RsaPssSha512,
        }
    }

    fn public_jwk(&self) -> Jwk {
        match self {
            Self::Ed25519(k) => k.public_jwk(),
            #[cfg(feature = "ecdsa")]
            Self::EcdsaP256(k) => k.public_jwk(),
            #[cfg(feature = "rsa")]
            Self::RsaPss(k) => Jwk::from_rsa(&k.to_public_key()),
        }
    }

    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            Self::Ed25519(k) => k.sign_message(message),
            #[cfg(feature = "ecdsa")]
            Self::EcdsaP256(k) => k.sign_message(message),
            #[cfg(all(feature = "rsa", not(target_arch = "wasm32")))]
            Self::RsaPss(k) => k.as_ref().sign_message(message),
            #[cfg(all(feature = "rsa", target_arch = "wasm32"))]
            Self::RsaPss(_) => Err(SignError::Key(
                "RSA-PSS signing needs a random number generator, not built for wasm32".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwk::Key;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const RSA_KEYS: &str = include_str!("../tests/data/rsa_test_keys.json");

    fn round_trip(k: &PrivateKey) {
        let jwk = k.to_jwk();
        let again = PrivateKey::from_jwk(&jwk).unwrap();
        assert_eq!(again.public_jwk(), k.public_jwk());
        let public = Key::from_jwk_json(&k.public_jwk().to_json()).unwrap();
        assert_eq!(public.alg(), Some(k.algorithm()));
        assert_eq!(
            jwk["kid"].as_str(),
            Some(public.thumbprint.as_str()),
            "kid is the thumbprint"
        );
        let sig = again.sign_message(b"message").unwrap();
        #[cfg(not(target_arch = "wasm32"))]
        assert_eq!(public.verify(b"message", &sig), Ok(()));
        #[cfg(target_arch = "wasm32")]
        let _ = sig;
    }

    #[test]
    fn each_algorithm_round_trips_through_its_private_jwk() {
        round_trip(&PrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(
            &[3; 32],
        )));
        round_trip(&PrivateKey::EcdsaP256(
            p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap(),
        ));
        let keys: Value = serde_json::from_str(RSA_KEYS).unwrap();
        let rsa = PrivateKey::from_jwk(&keys["rsa2048"]).unwrap();
        assert_eq!(rsa.algorithm(), Algorithm::RsaPssSha512);
        #[cfg(not(target_arch = "wasm32"))]
        round_trip(&rsa);
    }

    #[test]
    fn refusals() {
        let keys: Value = serde_json::from_str(RSA_KEYS).unwrap();
        assert_eq!(
            PrivateKey::from_jwk(&keys["rsa1024"]).unwrap_err(),
            PrivateKeyError::Public(JwkError::RsaKeySize(1024))
        );
        let mut no_p = keys["rsa2048"].clone();
        no_p.as_object_mut().unwrap().remove("p");
        assert!(matches!(
            PrivateKey::from_jwk(&no_p),
            Err(PrivateKeyError::Bad(_))
        ));
        let mut public = keys["rsa2048"].clone();
        public.as_object_mut().unwrap().remove("d");
        assert_eq!(
            PrivateKey::from_jwk(&public).unwrap_err(),
            PrivateKeyError::NotPrivate
        );
        // An EC key whose d is another key's.
        let mut ec =
            PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[3; 32]).unwrap()).to_jwk();
        ec["d"] = Value::String(URL_SAFE_NO_PAD.encode([4u8; 32]));
        assert!(matches!(
            PrivateKey::from_jwk(&ec),
            Err(PrivateKeyError::Bad(_))
        ));
        let p384 = serde_json::json!({"kty": "EC", "crv": "P-384", "x": "a", "y": "b", "d": "c"});
        assert_eq!(
            PrivateKey::from_jwk(&p384).unwrap_err(),
            PrivateKeyError::Unsupported("EC P-384".into())
        );
    }
}
