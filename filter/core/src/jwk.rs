//! JSON Web Keys (RFC 7517), their RFC 7638 thumbprints, and the verifying keys they hold.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::algorithm::Algorithm;
#[cfg(feature = "ecdsa")]
use crate::ecdsa_p256::EcdsaP256Key;
use crate::ed25519::Ed25519Key;
#[cfg(feature = "rsa")]
use crate::rsa_pss::{RsaKeyError, RsaPssKey};

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
    /// An RSA key whose modulus has this many bits, outside 2048..=8192.
    RsaKeySize(usize),
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
            Self::RsaKeySize(bits) => write!(
                f,
                "an RSA key of {bits} bits: from 2048 to 8192 bits are accepted"
            ),
        }
    }
}

impl std::error::Error for JwkError {}

/// A key ready to verify signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(Ed25519Key),
    #[cfg(feature = "ecdsa")]
    EcdsaP256(EcdsaP256Key),
    #[cfg(feature = "rsa")]
    RsaPss(RsaPssKey),
    /// A well-formed key of a type whose algorithm this verifier does not implement.
    Unsupported {
        kty: String,
    },
}

/// An RFC 7638 JWK thumbprint: the base64url (unpadded) SHA-256 of the key's canonical JSON.
/// Only [`Jwk::thumbprint`] makes one, so a `Thumbprint` is always of that form; compared with
/// a `keyid` as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Thumbprint(String);

impl Thumbprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Thumbprint {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Thumbprint {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Thumbprint {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Thumbprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Thumbprint> for String {
    fn from(t: Thumbprint) -> String {
        t.0
    }
}

impl PartialEq<str> for Thumbprint {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Thumbprint {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Thumbprint {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Thumbprint> for str {
    fn eq(&self, other: &Thumbprint) -> bool {
        self == other.0
    }
}

impl PartialEq<Thumbprint> for &str {
    fn eq(&self, other: &Thumbprint) -> bool {
        *self == other.0
    }
}

impl PartialEq<Thumbprint> for String {
    fn eq(&self, other: &Thumbprint) -> bool {
        *self == other.0
    }
}

/// A verified-for-shape key with its thumbprint and validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub thumbprint: Thumbprint,
    pub public: PublicKey,
    pub jwk: Jwk,
}

/// Why a signature does not verify with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    UnsupportedAlgorithm,
    BadSignature,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnsupportedAlgorithm => "the key is of no algorithm this verifier implements",
            Self::BadSignature => "the signature does not match",
        })
    }
}

impl std::error::Error for VerifyError {}

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

    /// The public JWK for a P-256 key, with `alg` `ES256`.
    #[cfg(feature = "ecdsa")]
    pub fn from_p256(key: &p256::ecdsa::VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        let coordinate = |c: Option<&p256::FieldBytes>| c.map(|c| URL_SAFE_NO_PAD.encode(c));
        Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            x: coordinate(point.x()),
            y: coordinate(point.y()),
            alg: Some(Algorithm::EcdsaP256Sha256.jose_name().into()),
            ..Jwk::default()
        }
    }

    /// The public JWK for an RSA key, with `alg` `PS512` (RSA keys serve several algorithms:
    /// this one is for `rsa-pss-sha512`, and some verifiers want it said).
    #[cfg(feature = "rsa")]
    pub fn from_rsa(key: &rsa::RsaPublicKey) -> Self {
        use rsa::traits::PublicKeyParts as _;
        Jwk {
            kty: "RSA".into(),
            n: Some(URL_SAFE_NO_PAD.encode(key.n().to_bytes_be())),
            e: Some(URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())),
            alg: Some(Algorithm::RsaPssSha512.jose_name().into()),
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
    pub fn thumbprint(&self) -> Result<Thumbprint, JwkError> {
        Ok(Thumbprint(URL_SAFE_NO_PAD.encode(Sha256::digest(
            self.thumbprint_input()?.as_bytes(),
        ))))
    }

    /// The key this JWK holds, checked for shape. The key type decides the algorithm; an `alg`
    /// member that names another makes the key unusable ([`JwkError::WrongAlg`]).
    pub fn to_key(&self) -> Result<Key, JwkError> {
        let thumbprint = self.thumbprint()?;
        let public = match (self.kty.as_str(), self.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                self.check_alg(Algorithm::Ed25519)?;
                let arr: [u8; 32] = self
                    .member_bytes(&self.x, "x")?
                    .try_into()
                    .map_err(|_| JwkError::BadKey("an Ed25519 key is 32 bytes"))?;
                let key = Ed25519Key::from_bytes(&arr).map_err(|e| JwkError::BadKey(e.as_str()))?;
                PublicKey::Ed25519(key)
            }
            #[cfg(feature = "ecdsa")]
            ("EC", Some("P-256")) => {
                self.check_alg(Algorithm::EcdsaP256Sha256)?;
                let x = self.member_bytes(&self.x, "x")?;
                let y = self.member_bytes(&self.y, "y")?;
                PublicKey::EcdsaP256(
                    EcdsaP256Key::from_coordinates(&x, &y).map_err(JwkError::BadKey)?,
                )
            }
            #[cfg(feature = "rsa")]
            ("RSA", _) => {
                self.check_alg(Algorithm::RsaPssSha512)?;
                let n = self.member_bytes(&self.n, "n")?;
                let e = self.member_bytes(&self.e, "e")?;
                PublicKey::RsaPss(RsaPssKey::from_components(&n, &e).map_err(|e| match e {
                    RsaKeyError::Size(bits) => JwkError::RsaKeySize(bits),
                    RsaKeyError::Malformed => JwkError::BadKey("not a valid RSA public key"),
                })?)
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

    /// An `alg` member, when present, must name `algorithm` (in one of its spellings).
    fn check_alg(&self, algorithm: Algorithm) -> Result<(), JwkError> {
        match &self.alg {
            Some(alg) if !algorithm.fits_jwk_alg(alg) => Err(JwkError::WrongAlg(alg.clone())),
            _ => Ok(()),
        }
    }

    /// A base64url member's bytes (its presence was checked with the thumbprint).
    fn member_bytes(&self, v: &Option<String>, name: &'static str) -> Result<Vec<u8>, JwkError> {
        let text = v.as_deref().ok_or(JwkError::MissingMember(name))?;
        URL_SAFE_NO_PAD.decode(text).map_err(|_| {
            JwkError::BadKey(match name {
                "x" => "x is not base64url",
                "y" => "y is not base64url",
                "n" => "n is not base64url",
                _ => "e is not base64url",
            })
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

    /// The algorithm this key verifies; `None` for a key type this verifier does not use.
    pub fn alg(&self) -> Option<Algorithm> {
        match self.public {
            PublicKey::Ed25519(_) => Some(Algorithm::Ed25519),
            #[cfg(feature = "ecdsa")]
            PublicKey::EcdsaP256(_) => Some(Algorithm::EcdsaP256Sha256),
            #[cfg(feature = "rsa")]
            PublicKey::RsaPss(_) => Some(Algorithm::RsaPssSha512),
            PublicKey::Unsupported { .. } => None,
        }
    }

    /// The signature algorithm name (`alg` signature parameter) this key verifies.
    pub fn algorithm(&self) -> Option<&'static str> {
        self.alg().map(Algorithm::name)
    }

    /// Verifies `signature` over `message` with the key's algorithm.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        let valid = match &self.public {
            // Strict: refuses non-canonical encodings and small-order components.
            PublicKey::Ed25519(key) => key.verify(message, signature),
            #[cfg(feature = "ecdsa")]
            PublicKey::EcdsaP256(key) => key.verify(message, signature),
            #[cfg(feature = "rsa")]
            PublicKey::RsaPss(key) => key.verify(message, signature),
            PublicKey::Unsupported { .. } => return Err(VerifyError::UnsupportedAlgorithm),
        };
        if valid {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

/// Thumbprints of the RFC 9421 Appendix B keys (B.1.1 RSA, B.1.2 RSA-PSS, B.1.3 P-256,
/// B.1.4 Ed25519), whose private halves are published: refused unless the operator allows
/// test keys. (B.1.1 is a PKCS#1 v1.5 key in the RFC, but an RSA JWK is usable for
/// `rsa-pss-sha512` here, so it is listed too.)
pub const TEST_KEY_THUMBPRINTS: &[&str] = &[
    "BHj8s0GPnMEQtkaULIM-PLgEhLBbuGUQ1vMxmBWZzEo",
    "oD0HwocPBSfpNy5W3bpJeyFGY_IQ_YpqxSjQ3Yd-CLA",
    "ydQXMtvbsOsZyFir-Y7A8t7fKEM1gbKPvyFkdpu4fvI",
    "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U",
];

fn json_string(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TEST_X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
    // RFC 9421 B.1.3, test-key-ecc-p256.
    const P256_X: &str = "qIVYZVLCrPZHGHjP17CTW0_-D9Lfw0EkjqF7xB4FivA";
    const P256_Y: &str = "Mc4nN9LTDOBhfoUeg8Ye9WedFRhnZXZJA12Qp0zZ6F0";

    #[test]
    fn ec_p256_keys() {
        let k = Key::from_jwk_json(&format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{P256_X}","y":"{P256_Y}"}}"#
        ))
        .expect("key");
        assert_eq!(k.algorithm(), Some("ecdsa-p256-sha256"));
        assert_eq!(k.thumbprint, "ydQXMtvbsOsZyFir-Y7A8t7fKEM1gbKPvyFkdpu4fvI");
        assert!(k.is_test_key(), "B.1.3 is a published test key");
        // y of another point: off the curve.
        let off = Key::from_jwk_json(&format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{P256_X}","y":"{P256_X}"}}"#
        ));
        assert_eq!(off, Err(JwkError::BadKey("not a point on P-256")));
        let short = Key::from_jwk_json(&format!(
            r#"{{"kty":"EC","crv":"P-256","x":"AAAA","y":"{P256_Y}"}}"#
        ));
        assert_eq!(
            short,
            Err(JwkError::BadKey("a P-256 coordinate is 32 bytes"))
        );
        assert_eq!(
            Jwk::from_json(r#"{"kty":"EC","crv":"P-256","x":"a"}"#),
            Err(JwkError::MissingMember("y"))
        );
        assert_eq!(
            Jwk::from_json(r#"{"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"}"#),
            Err(JwkError::PrivateKey)
        );
        let jwk = Jwk::from_p256(match &k.public {
            PublicKey::EcdsaP256(key) => key.verifying_key(),
            _ => panic!(),
        });
        assert_eq!(jwk.thumbprint().expect("tp"), k.thumbprint);
        assert_eq!(jwk.alg.as_deref(), Some("ES256"));
    }

    #[test]
    fn rsa_keys() {
        let rsa = |n: &str, e: &str| {
            Key::from_jwk_json(&format!(r#"{{"kty":"RSA","n":"{n}","e":"{e}"}}"#))
        };
        let n2048 = URL_SAFE_NO_PAD.encode([0xffu8; 256]);
        let k = rsa(&n2048, "AQAB").expect("2048 bits");
        assert_eq!(k.algorithm(), Some("rsa-pss-sha512"));
        let jwk = Jwk::from_rsa(match &k.public {
            PublicKey::RsaPss(key) => key.public_key(),
            _ => panic!(),
        });
        assert_eq!(jwk.thumbprint().expect("tp"), k.thumbprint);
        assert_eq!(jwk.alg.as_deref(), Some("PS512"));
        let n1024 = URL_SAFE_NO_PAD.encode([0xffu8; 128]);
        assert_eq!(rsa(&n1024, "AQAB"), Err(JwkError::RsaKeySize(1024)));
        let n16k = URL_SAFE_NO_PAD.encode([0xffu8; 2048]);
        assert_eq!(rsa(&n16k, "AQAB"), Err(JwkError::RsaKeySize(16384)));
        assert!(matches!(rsa(&n2048, "AAE"), Err(JwkError::BadKey(_))));
        assert!(matches!(rsa(&n2048, "!"), Err(JwkError::BadKey(_))));
        assert_eq!(
            Jwk::from_json(r#"{"kty":"RSA","n":"AQAB"}"#),
            Err(JwkError::MissingMember("e"))
        );
    }

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
        // RS256 is PKCS#1 v1.5, which contradicts the key's algorithm here (rsa-pss-sha512).
        assert_eq!(jwk.to_key(), Err(JwkError::WrongAlg("RS256".into())));
        let mut jwk = jwk;
        jwk.alg = None;
        let key = jwk.to_key().expect("key");
        assert_eq!(key.algorithm(), Some("rsa-pss-sha512"));
        assert_eq!(key.verify(b"x", &[0; 64]), Err(VerifyError::BadSignature));
        jwk.alg = Some("PS512".into());
        assert!(jwk.to_key().is_ok());
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
        // Each key type has its own names; an HMAC or PKCS#1 name contradicts every key.
        let ec = |alg: &str| {
            Key::from_jwk_json(&format!(
                r#"{{"kty":"EC","crv":"P-256","x":"{P256_X}","y":"{P256_Y}","alg":"{alg}"}}"#
            ))
        };
        for ok in ["ES256", "ecdsa-p256-sha256"] {
            assert_eq!(
                ec(ok).map(|k| k.algorithm()),
                Ok(Some("ecdsa-p256-sha256")),
                "{ok}"
            );
        }
        for bad in ["EdDSA", "ES384", "PS512", "HS256", "es256"] {
            assert_eq!(ec(bad), Err(JwkError::WrongAlg(bad.into())), "{bad}");
        }
        // Keys this verifier cannot use are not checked further: they never verify.
        let p384 =
            Key::from_jwk_json(r#"{"kty":"EC","crv":"P-384","x":"a","y":"b","alg":"EdDSA"}"#)
                .expect("kept, unusable");
        assert_eq!(p384.algorithm(), None);
        assert_eq!(
            p384.verify(b"m", &[0; 96]),
            Err(VerifyError::UnsupportedAlgorithm)
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
