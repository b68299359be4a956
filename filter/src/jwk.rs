//! JSON Web Keys (RFC 7517), their RFC 7638 thumbprints, and the verifying keys they hold.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ed25519::Ed25519Key;

/// A parsed public JWK. Members this verifier does not use are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Jwk {
    pub kty: String,
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub use_: Option<String>,
    /// Not before / expiry (unix seconds), as some key directories publish them.
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

/// Why a JWK is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwkError {
    NotAnObject,
    MissingMember(&'static str),
    WrongType(&'static str),
    UnknownKty(String),
    PrivateKey,
    BadKey(&'static str),
    WrongUse(String),
    /// `alg` names an algorithm this key cannot be used with (or not a signature algorithm).
    WrongAlg(String),
}

impl fmt::Display for JwkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAnObject => write!(f, "a JWK must be a JSON object"),
            Self::MissingMember(m) => write!(f, "the JWK lacks the {m:?} member"),
            Self::WrongType(m) => write!(f, "the JWK member {m:?} has the wrong type"),
            Self::UnknownKty(k) => write!(f, "unknown JWK key type {k:?}"),
            Self::PrivateKey => write!(
                f,
                "the JWK holds private key material where a public key belongs"
            ),
            Self::BadKey(why) => write!(f, "invalid key: {why}"),
            Self::WrongUse(u) => write!(f, "the JWK is for use {u:?}, not signatures"),
            Self::WrongAlg(a) => write!(f, "the JWK's alg {a:?} does not fit its key type"),
        }
    }
}

impl std::error::Error for JwkError {}

/// A key ready to verify signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(Ed25519Key),
    /// A well-formed key of a type whose algorithm this verifier does not implement.
    Unsupported {
        kty: String,
    },
}

/// A verified-for-shape key with its thumbprint and validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// RFC 7638 SHA-256 thumbprint, base64url without padding.
    pub thumbprint: String,
    pub public: PublicKey,
    pub jwk: Jwk,
}

/// Why a signature does not verify with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    UnsupportedAlgorithm,
    BadSignature,
}

impl Jwk {
    /// Parses a public JWK; private members are refused.
    pub fn from_value(v: &Value) -> Result<Self, JwkError> {
        let obj = v.as_object().ok_or(JwkError::NotAnObject)?;
        let s = |name: &'static str| -> Result<Option<String>, JwkError> {
            match obj.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(JwkError::WrongType(name)),
            }
        };
        let i = |name: &'static str| -> Result<Option<i64>, JwkError> {
            match obj.get(name) {
                None => Ok(None),
                Some(v) => v.as_i64().map(Some).ok_or(JwkError::WrongType(name)),
            }
        };
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| obj.contains_key(*m))
        {
            return Err(JwkError::PrivateKey);
        }
        let jwk = Jwk {
            kty: s("kty")?.ok_or(JwkError::MissingMember("kty"))?,
            crv: s("crv")?,
            x: s("x")?,
            y: s("y")?,
            n: s("n")?,
            e: s("e")?,
            kid: s("kid")?,
            alg: s("alg")?,
            use_: s("use")?,
            nbf: i("nbf")?,
            exp: i("exp")?,
        };
        if let Some(u) = &jwk.use_ {
            if u != "sig" {
                return Err(JwkError::WrongUse(u.clone()));
            }
        }
        // Validate the members the thumbprint needs, whatever the type.
        jwk.thumbprint_input()?;
        Ok(jwk)
    }

    /// Parses a JWK from JSON text.
    pub fn from_json(text: &str) -> Result<Self, JwkError> {
        let v: Value = serde_json::from_str(text).map_err(|_| JwkError::NotAnObject)?;
        Self::from_value(&v)
    }

    /// The public JWK for an Ed25519 key.
    pub fn from_ed25519(public: &[u8; 32]) -> Self {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(public)),
            ..Jwk::default()
        }
    }

    /// The RFC 7638 canonical JSON: required members only, lexicographic order, no spaces.
    pub fn thumbprint_input(&self) -> Result<String, JwkError> {
        let req = |v: &Option<String>, name: &'static str| {
            v.as_deref()
                .map(json_string)
                .ok_or(JwkError::MissingMember(name))
        };
        Ok(match self.kty.as_str() {
            "OKP" => format!(
                "{{\"crv\":{},\"kty\":\"OKP\",\"x\":{}}}",
                req(&self.crv, "crv")?,
                req(&self.x, "x")?
            ),
            "EC" => format!(
                "{{\"crv\":{},\"kty\":\"EC\",\"x\":{},\"y\":{}}}",
                req(&self.crv, "crv")?,
                req(&self.x, "x")?,
                req(&self.y, "y")?
            ),
            "RSA" => format!(
                "{{\"e\":{},\"kty\":\"RSA\",\"n\":{}}}",
                req(&self.e, "e")?,
                req(&self.n, "n")?
            ),
            other => return Err(JwkError::UnknownKty(other.to_string())),
        })
    }

    /// The RFC 7638 SHA-256 thumbprint, base64url without padding.
    pub fn thumbprint(&self) -> Result<String, JwkError> {
        Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(self.thumbprint_input()?.as_bytes())))
    }

    /// The key this JWK holds, checked for shape.
    pub fn to_key(&self) -> Result<Key, JwkError> {
        let thumbprint = self.thumbprint()?;
        let public = match (self.kty.as_str(), self.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                // "ed25519" is the RFC 9421 algorithm name, seen in JWKs too. (Keys of other
                // types never verify here, so their `alg` is not checked.)
                if let Some(alg) = &self.alg {
                    if !matches!(alg.as_str(), "EdDSA" | "Ed25519" | "ed25519") {
                        return Err(JwkError::WrongAlg(alg.clone()));
                    }
                }
                let x = self.x.as_deref().unwrap_or_default();
                let bytes = URL_SAFE_NO_PAD
                    .decode(x)
                    .map_err(|_| JwkError::BadKey("x is not base64url"))?;
                let arr: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| JwkError::BadKey("an Ed25519 key is 32 bytes"))?;
                let key = Ed25519Key::from_bytes(&arr).map_err(|e| JwkError::BadKey(e.as_str()))?;
                PublicKey::Ed25519(key)
            }
            (kty, _) => PublicKey::Unsupported {
                kty: kty.to_string(),
            },
        };
        Ok(Key {
            thumbprint,
            public,
            jwk: self.clone(),
        })
    }

    /// Serializes the public JWK (with `kid` and `alg` when set) as compact JSON.
    pub fn to_json(&self) -> String {
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                obj.insert(k.to_string(), Value::String(v.clone()));
            }
        };
        put("kty", &Some(self.kty.clone()));
        put("crv", &self.crv);
        put("x", &self.x);
        put("y", &self.y);
        put("n", &self.n);
        put("e", &self.e);
        put("kid", &self.kid);
        put("alg", &self.alg);
        put("use", &self.use_);
        if let Some(n) = self.nbf {
            obj.insert("nbf".into(), n.into());
        }
        if let Some(e) = self.exp {
            obj.insert("exp".into(), e.into());
        }
        Value::Object(obj).to_string()
    }
}

impl Key {
    /// Parses a public JWK from JSON text into a key.
    pub fn from_jwk_json(text: &str) -> Result<Self, JwkError> {
        Jwk::from_json(text)?.to_key()
    }

    /// Whether the key is one of RFC 9421 Appendix B's published test keys.
    pub fn is_test_key(&self) -> bool {
        TEST_KEY_THUMBPRINTS.contains(&self.thumbprint.as_str())
    }

    /// Whether the key's `nbf`/`exp` window contains `now`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.jwk.nbf.is_none_or(|nbf| now >= nbf) && self.jwk.exp.is_none_or(|exp| now < exp)
    }

    /// The signature algorithm name (`alg` signature parameter) this key verifies.
    pub fn algorithm(&self) -> Option<&'static str> {
        match self.public {
            PublicKey::Ed25519(_) => Some("ed25519"),
            PublicKey::Unsupported { .. } => None,
        }
    }

    /// Verifies `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        match &self.public {
            // Strict: refuses non-canonical encodings and small-order components.
            PublicKey::Ed25519(key) => match key.verify(message, signature) {
                true => Ok(()),
                false => Err(VerifyError::BadSignature),
            },
            PublicKey::Unsupported { .. } => Err(VerifyError::UnsupportedAlgorithm),
        }
    }
}

/// Thumbprints of the RFC 9421 Appendix B keys (B.1.1 RSA, B.1.2 RSA-PSS, B.1.3 P-256,
/// B.1.4 Ed25519): refused unless the operator allows test keys.
pub const TEST_KEY_THUMBPRINTS: &[&str] = &["poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"];

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TEST_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";

    #[test]
    fn ed25519_thumbprint_matches_vector() {
        let k = Key::from_jwk_json(&format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}"}}"#
        ))
        .expect("key");
        assert_eq!(k.thumbprint, "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U");
        assert!(k.is_test_key());
        assert_eq!(k.algorithm(), Some("ed25519"));
    }

    #[test]
    fn rfc7638_rsa_example() {
        // RFC 7638 section 3.1.
        let jwk = Jwk::from_json(r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#).expect("jwk");
        assert_eq!(
            jwk.thumbprint().expect("tp"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let key = jwk.to_key().expect("key");
        assert_eq!(key.public, PublicKey::Unsupported { kty: "RSA".into() });
        assert_eq!(
            key.verify(b"x", &[0; 64]),
            Err(VerifyError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn ec_thumbprint_member_order() {
        let jwk = Jwk::from_json(r#"{"y":"b","x":"a","kty":"EC","crv":"P-256"}"#).expect("jwk");
        assert_eq!(
            jwk.thumbprint_input().expect("input"),
            r#"{"crv":"P-256","kty":"EC","x":"a","y":"b"}"#
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(Jwk::from_json("[]"), Err(JwkError::NotAnObject));
        assert_eq!(Jwk::from_json("{}"), Err(JwkError::MissingMember("kty")));
        assert_eq!(
            Jwk::from_json(r#"{"kty":"OKP","crv":"Ed25519"}"#),
            Err(JwkError::MissingMember("x"))
        );
        assert_eq!(
            Jwk::from_json(r#"{"kty":"oct","k":"AA"}"#),
            Err(JwkError::PrivateKey)
        );
        assert_eq!(
            Jwk::from_json(r#"{"kty":"XYZ"}"#),
            Err(JwkError::UnknownKty("XYZ".into()))
        );
        assert_eq!(
            Jwk::from_json(r#"{"kty":"OKP","crv":"Ed25519","x":1}"#),
            Err(JwkError::WrongType("x"))
        );
        assert!(matches!(
            Key::from_jwk_json(r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#),
            Err(JwkError::BadKey(_))
        ));
        // The identity point is small-order: refused.
        assert!(matches!(
            Key::from_jwk_json(
                r#"{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#
            ),
            Err(JwkError::BadKey(_))
        ));
        assert_eq!(
            Jwk::from_json(&format!(
                r#"{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}","use":"enc"}}"#
            )),
            Err(JwkError::WrongUse("enc".into()))
        );
        // An Ed25519 x of the wrong length.
        assert_eq!(
            Key::from_jwk_json(
                r#"{"kty":"OKP","crv":"Ed25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#
            ),
            Err(JwkError::BadKey("an Ed25519 key is 32 bytes"))
        );
    }

    #[test]
    fn alg_must_fit_the_key() {
        let ed = |alg: &str| {
            Key::from_jwk_json(&format!(
                r#"{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}","alg":"{alg}"}}"#
            ))
        };
        for ok in ["EdDSA", "Ed25519", "ed25519"] {
            assert!(ed(ok).is_ok(), "{ok}");
        }
        for bad in ["RS256", "ES256", "HS256", "ECDH-ES", "none", ""] {
            assert_eq!(ed(bad), Err(JwkError::WrongAlg(bad.into())), "{bad}");
        }
        // Keys this verifier cannot use are not checked further: they never verify.
        assert!(
            Key::from_jwk_json(r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","alg":"EdDSA"}"#)
                .is_ok()
        );
    }

    #[test]
    fn validity_window() {
        let mut jwk = Jwk::from_ed25519(&[7; 32]);
        jwk.nbf = Some(100);
        jwk.exp = Some(200);
        // Some bytes are not valid points; use the test key instead.
        let mut key = Key::from_jwk_json(&format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{TEST_X}","nbf":100,"exp":200}}"#
        ))
        .expect("key");
        assert!(!key.valid_at(99));
        assert!(key.valid_at(100));
        assert!(!key.valid_at(200));
        key.jwk = jwk;
        assert!(key.valid_at(150));
    }
}
