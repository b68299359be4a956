//! Key files: JWK (RFC 7517) and PEM (PKCS#8 private keys, SPKI public keys), private or
//! public, and the key pair files `wba generate` writes.
//!
//! Signing needs a private key of one of the three algorithms: Ed25519, ECDSA P-256 or RSA
//! (RSA-PSS, 2048 to 8192 bits). Thumbprints and directories accept any public key the core can
//! fingerprint (OKP, EC, RSA JWKs); private members are dropped before the core sees the key,
//! so a private JWK never leaks into a directory.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use serde_json::{Map, Value};
use wba_filter::algorithm::Algorithm;
use wba_filter::jwk::{Jwk, JwkError};
use wba_filter::private_key::{PrivateKey, PrivateKeyError};
use wba_filter::rsa_pss::{MAX_BITS, MIN_BITS};
use wba_filter::sign::SignatureKey as _;

/// JWK members that hold private key material (RFC 7518 section 6).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a key file cannot be used.
#[derive(Debug)]
pub enum KeyFileError {
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    Empty {
        path: PathBuf,
    },
    UnknownFormat {
        path: PathBuf,
    },
    Json {
        path: PathBuf,
        error: String,
    },
    KeySet {
        path: PathBuf,
    },
    Jwk {
        path: PathBuf,
        error: JwkError,
    },
    Pem {
        path: PathBuf,
        what: String,
    },
    PemKind {
        path: PathBuf,
        label: String,
    },
    BadPrivate {
        path: PathBuf,
        why: &'static str,
    },
    NotPrivate {
        path: PathBuf,
    },
    Private {
        path: PathBuf,
        error: PrivateKeyError,
    },
    RsaBits(usize),
    Exists {
        path: PathBuf,
    },
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    Random(String),
    Encode(String),
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            Self::Empty { path } => write!(f, "{} is empty: expected a JWK or PEM key", path.display()),
            Self::UnknownFormat { path } => write!(
                f,
                "{} is neither a JWK (a JSON object) nor a PEM key (-----BEGIN ...): \
                 create one with `wba generate --out NAME`",
                path.display()
            ),
            Self::Json { path, error } => write!(f, "{} is not valid JSON: {error}", path.display()),
            Self::KeySet { path } => write!(
                f,
                "{} is a key set ({{\"keys\": [...]}}), not a single key: pass one key file, \
                 or use it as a directory file (`--directory`)",
                path.display()
            ),
            Self::Jwk { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Pem { path, what } => write!(f, "{}: {what}", path.display()),
            Self::PemKind { path, label } => write!(
                f,
                "{}: PEM \"{label}\" keys are not supported: use a PKCS#8 key (\"PRIVATE KEY\", \
                 e.g. from `wba generate` or `openssl genpkey`), \"RSA PRIVATE KEY\", \
                 \"EC PRIVATE KEY\" or a \"PUBLIC KEY\"",
                path.display()
            ),
            Self::BadPrivate { path, why } => write!(f, "{}: invalid private key: {why}", path.display()),
            Self::NotPrivate { path } => write!(
                f,
                "{} holds a public key; signing needs the private key (the .jwk with \"d\" or the .pem \
                 that `wba generate` wrote)",
                path.display()
            ),
            Self::Private { path, error } => write!(f, "{}: {error}", path.display()),
            Self::RsaBits(bits) => write!(
                f,
                "--bits {bits}: an RSA key has from {MIN_BITS} to {MAX_BITS} bits (verifiers refuse others)"
            ),
            Self::Exists { path } => write!(
                f,
                "{} already exists: refusing to overwrite a key; choose another --out or remove it first",
                path.display()
            ),
            Self::Write { path, error } => write!(f, "cannot write {}: {error}", path.display()),
            Self::Random(e) => write!(f, "the system random number generator failed: {e}"),
            Self::Encode(e) => write!(f, "cannot encode the key: {e}"),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// The key material a file holds.
#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// A private key of one of the three algorithms (JWK with `d`, or PEM).
    Private(Box<PrivateKey>),
    /// A public key (JWK or SPKI PEM), known by its public JWK; usable for thumbprints,
    /// directories and verification.
    Public,
}

/// A key read from a file, with its public JWK (no private members, no `kid` unless the file
/// had one).
#[derive(Debug, Clone)]
pub struct LoadedKey {
    pub path: PathBuf,
    pub material: KeyMaterial,
    pub public_jwk: Jwk,
}

impl LoadedKey {
    /// The RFC 7638 thumbprint of the public key.
    pub fn thumbprint(&self) -> Result<String, JwkError> {
        self.public_jwk.thumbprint().map(String::from)
    }

    /// The signing key, or why this file cannot sign.
    pub fn signing_key(&self) -> Result<PrivateKey, KeyFileError> {
        match &self.material {
            KeyMaterial::Private(k) => Ok((**k).clone()),
            KeyMaterial::Public => Err(KeyFileError::NotPrivate {
                path: self.path.clone(),
            }),
        }
    }
}

/// Reads a key file (JWK or PEM, private or public).
pub fn load_key(path: &Path) -> Result<LoadedKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| KeyFileError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse_key(path, &text)
}

/// Reads a private key file of any of the three algorithms.
pub fn load_signing_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    load_key(path)?.signing_key()
}

/// Parses key file contents; `path` names the file in messages.
pub fn parse_key(path: &Path, text: &str) -> Result<LoadedKey, KeyFileError> {
    let trimmed = text.trim();
    let path_buf = path.to_path_buf();
    if trimmed.is_empty() {
        return Err(KeyFileError::Empty { path: path_buf });
    }
    if trimmed.starts_with("-----BEGIN") {
        return parse_pem(path, trimmed);
    }
    if !trimmed.starts_with('{') {
        return Err(KeyFileError::UnknownFormat { path: path_buf });
    }
    let value: Value = serde_json::from_str(trimmed).map_err(|e| KeyFileError::Json {
        path: path_buf.clone(),
        error: e.to_string(),
    })?;
    parse_jwk_value(path, &value)
}

/// Parses a JWK (public or private) given as JSON.
pub fn parse_jwk_value(path: &Path, value: &Value) -> Result<LoadedKey, KeyFileError> {
    let path_buf = path.to_path_buf();
    let obj = value.as_object().ok_or_else(|| KeyFileError::Jwk {
        path: path_buf.clone(),
        error: JwkError::NotAnObject,
    })?;
    if obj.contains_key("keys") && !obj.contains_key("kty") {
        return Err(KeyFileError::KeySet { path: path_buf });
    }
    let public: Map<String, Value> = obj
        .iter()
        .filter(|(k, _)| !PRIVATE_MEMBERS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let jwk_err = |error| KeyFileError::Jwk {
        path: path_buf.clone(),
        error,
    };
    let public_jwk = Jwk::from_value(&Value::Object(public)).map_err(jwk_err)?;
    let is_ed25519 = public_jwk.kty == "OKP" && public_jwk.crv.as_deref() == Some("Ed25519");
    let material = if obj.contains_key("d") {
        let key = PrivateKey::from_jwk(value).map_err(|error| match error {
            PrivateKeyError::Public(error) => KeyFileError::Jwk {
                path: path_buf.clone(),
                error,
            },
            PrivateKeyError::Bad(why) => KeyFileError::BadPrivate {
                path: path_buf.clone(),
                why,
            },
            error => KeyFileError::Private {
                path: path_buf.clone(),
                error,
            },
        })?;
        KeyMaterial::Private(Box::new(key))
    } else {
        // The core refuses weak Ed25519 points: check the shape as a verifier would. Other
        // types are fingerprinted as they are (a directory may list keys a verifier skips).
        if is_ed25519 {
            public_jwk.to_key().map_err(jwk_err)?;
        }
        KeyMaterial::Public
    };
    Ok(LoadedKey {
        path: path_buf,
        material,
        public_jwk,
    })
}

fn parse_pem(path: &Path, text: &str) -> Result<LoadedKey, KeyFileError> {
    let path_buf = path.to_path_buf();
    let label = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("-----BEGIN ")
        .trim_end_matches("-----")
        .to_string();
    let pem_err = |what: String| KeyFileError::Pem {
        path: path_buf.clone(),
        what,
    };
    let private = match label.as_str() {
        "PRIVATE KEY" => {
            if let Ok(sk) = SigningKey::from_pkcs8_pem(text) {
                PrivateKey::Ed25519(sk)
            } else if let Ok(sk) = p256::ecdsa::SigningKey::from_pkcs8_pem(text) {
                PrivateKey::EcdsaP256(sk)
            } else {
                match rsa::RsaPrivateKey::from_pkcs8_pem(text) {
                    Ok(k) => PrivateKey::RsaPss(Box::new(k)),
                    Err(e) => {
                        return Err(pem_err(format!(
                            "not an Ed25519, P-256 or RSA PKCS#8 private key ({e})"
                        )))
                    }
                }
            }
        }
        "RSA PRIVATE KEY" => rsa::RsaPrivateKey::from_pkcs1_pem(text)
            .map(|k| PrivateKey::RsaPss(Box::new(k)))
            .map_err(|e| pem_err(format!("not a PKCS#1 RSA private key ({e})")))?,
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_pem(text)
            .map(|k| PrivateKey::EcdsaP256(k.into()))
            .map_err(|e| pem_err(format!("not a P-256 SEC1 private key ({e})")))?,
        "PUBLIC KEY" => {
            let public_jwk = if let Ok(vk) = VerifyingKey::from_public_key_pem(text) {
                Jwk::from_ed25519(vk.as_bytes())
            } else if let Ok(vk) = p256::ecdsa::VerifyingKey::from_public_key_pem(text) {
                Jwk::from_p256(&vk)
            } else {
                let k = rsa::RsaPublicKey::from_public_key_pem(text).map_err(|e| {
                    pem_err(format!("not an Ed25519, P-256 or RSA public key ({e})"))
                })?;
                Jwk::from_rsa(&k)
            };
            // Checked as a verifier would (weak points, RSA sizes).
            public_jwk.to_key().map_err(|error| KeyFileError::Jwk {
                path: path_buf.clone(),
                error,
            })?;
            return Ok(LoadedKey {
                path: path_buf,
                material: KeyMaterial::Public,
                public_jwk,
            });
        }
        _ => {
            return Err(KeyFileError::PemKind {
                path: path_buf,
                label,
            })
        }
    };
    let public_jwk = private.public_jwk();
    // An RSA key a verifier would refuse (too short, say) cannot sign usefully.
    public_jwk.to_key().map_err(|error| KeyFileError::Jwk {
        path: path_buf.clone(),
        error,
    })?;
    Ok(LoadedKey {
        path: path_buf,
        material: KeyMaterial::Private(Box::new(private)),
        public_jwk,
    })
}

/// A new random key of `algorithm` from the operating system's generator; `bits` is the RSA
/// modulus size.
pub fn generate_key(algorithm: Algorithm, bits: usize) -> Result<PrivateKey, KeyFileError> {
    let random = |e: &dyn fmt::Display| KeyFileError::Random(e.to_string());
    match algorithm {
        Algorithm::Ed25519 => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| random(&e))?;
            Ok(PrivateKey::Ed25519(SigningKey::from_bytes(&seed)))
        }
        Algorithm::EcdsaP256Sha256 => Ok(PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::random(
            &mut rand_core::OsRng,
        ))),
        Algorithm::RsaPssSha512 => {
            if !(MIN_BITS..=MAX_BITS).contains(&bits) {
                return Err(KeyFileError::RsaBits(bits));
            }
            rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                .map(|k| PrivateKey::RsaPss(Box::new(k)))
                .map_err(|e| random(&e))
        }
    }
}

/// The public JWK of a key with `kid` set to its thumbprint.
pub fn public_jwk(key: &PrivateKey) -> Jwk {
    let mut jwk = key.public_jwk();
    jwk.kid = jwk.thumbprint().ok().map(String::from);
    jwk
}

/// The public JWK as pretty JSON.
pub fn public_jwk_json(key: &PrivateKey) -> String {
    let v: Value = serde_json::from_str(&public_jwk(key).to_json()).unwrap_or(Value::Null);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The private JWK (public members, `kid`, and the private members) as pretty JSON.
pub fn private_jwk_json(key: &PrivateKey) -> String {
    serde_json::to_string_pretty(&key.to_jwk()).unwrap_or_default()
}

/// The private key as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), the form OpenSSL writes.
pub fn private_pem(key: &PrivateKey) -> Result<String, KeyFileError> {
    let encode = |e: &dyn fmt::Display| KeyFileError::Encode(format!("PKCS#8: {e}"));
    match key {
        PrivateKey::Ed25519(sk) => {
            let pair = KeypairBytes {
                secret_key: sk.to_bytes(),
                public_key: None,
            };
            pair.to_pkcs8_pem(LineEnding::LF)
                .map(|z| z.to_string())
                .map_err(|e| encode(&e))
        }
        PrivateKey::EcdsaP256(sk) => sk
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| encode(&e)),
        PrivateKey::RsaPss(sk) => sk
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| encode(&e)),
    }
}

/// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_pem(key: &PrivateKey) -> Result<String, KeyFileError> {
    let encode = |e: &dyn fmt::Display| KeyFileError::Encode(format!("SPKI: {e}"));
    match key {
        PrivateKey::Ed25519(sk) => sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| encode(&e)),
        PrivateKey::EcdsaP256(sk) => sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| encode(&e)),
        PrivateKey::RsaPss(sk) => sk
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| encode(&e)),
    }
}

/// The files `wba generate --out PREFIX` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairFiles {
    /// Private JWK, mode 0600.
    pub private_jwk: PathBuf,
    /// Private PKCS#8 PEM, mode 0600.
    pub private_pem: PathBuf,
    /// Public JWK.
    pub public_jwk: PathBuf,
}

impl KeyPairFiles {
    /// `PREFIX.jwk`, `PREFIX.pem`, `PREFIX.pub.jwk`.
    pub fn for_prefix(prefix: &Path) -> Self {
        let with = |suffix: &str| {
            let mut s = prefix.as_os_str().to_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        KeyPairFiles {
            private_jwk: with(".jwk"),
            private_pem: with(".pem"),
            public_jwk: with(".pub.jwk"),
        }
    }

    pub fn all(&self) -> [&Path; 3] {
        [&self.private_jwk, &self.private_pem, &self.public_jwk]
    }
}

/// Generates a key pair of `algorithm` (`bits` for RSA) and writes its three files. Refuses
/// when any of them exists; nothing is written then.
pub fn generate_files(
    prefix: &Path,
    algorithm: Algorithm,
    bits: usize,
) -> Result<(PrivateKey, KeyPairFiles), KeyFileError> {
    let files = KeyPairFiles::for_prefix(prefix);
    for p in files.all() {
        if p.symlink_metadata().is_ok() {
            return Err(KeyFileError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    let sk = generate_key(algorithm, bits)?;
    let pem = private_pem(&sk)?;
    write_new(&files.private_jwk, &(private_jwk_json(&sk) + "\n"), 0o600)?;
    write_new(&files.private_pem, &pem, 0o600)?;
    write_new(&files.public_jwk, &(public_jwk_json(&sk) + "\n"), 0o644)?;
    Ok((sk, files))
}

/// Creates `path` (which must not exist) with `contents` and Unix `mode`.
pub fn write_new(path: &Path, contents: &str, mode: u32) -> Result<(), KeyFileError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            KeyFileError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            KeyFileError::Write {
                path: path.to_path_buf(),
                error,
            }
        }
    })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|error| KeyFileError::Write {
            path: path.to_path_buf(),
            error,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    const X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
    const D: &str = "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU";
    const TP: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";
    const PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";
    const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAJrQLj5P/89iXES9+vFgrIy29clF9CC/oPPsw3c5D0bs=\n-----END PUBLIC KEY-----\n";

    fn p() -> &'static Path {
        Path::new("k")
    }

    #[test]
    fn all_four_forms_of_the_vector_key() {
        let private_jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","d":"{D}"}}"#);
        let public_jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}"}}"#);
        for text in [private_jwk.as_str(), &public_jwk, PRIVATE_PEM, PUBLIC_PEM] {
            let k = parse_key(p(), text).unwrap();
            assert_eq!(k.thumbprint().unwrap(), TP, "{text}");
        }
        let sk = parse_key(p(), &private_jwk).unwrap().signing_key().unwrap();
        let from_pem = parse_key(p(), PRIVATE_PEM).unwrap().signing_key().unwrap();
        assert_eq!(sk.to_jwk(), from_pem.to_jwk());
        // Writing gives back the published encodings byte for byte.
        assert_eq!(private_pem(&sk).unwrap(), PRIVATE_PEM);
        assert_eq!(public_pem(&sk).unwrap(), PUBLIC_PEM);
        assert!(matches!(
            parse_key(p(), &public_jwk).unwrap().signing_key(),
            Err(KeyFileError::NotPrivate { .. })
        ));
    }

    #[test]
    fn private_jwk_round_trip() {
        let sk = PrivateKey::Ed25519(SigningKey::from_bytes(&[9; 32]));
        let k = parse_key(p(), &private_jwk_json(&sk)).unwrap();
        assert_eq!(k.signing_key().unwrap().to_jwk(), sk.to_jwk());
        assert!(!k.public_jwk.to_json().contains("\"d\""));
    }

    fn rsa_test_key() -> PrivateKey {
        let keys: Value = serde_json::from_str(include_str!(
            "../../filter/core/tests/data/rsa_test_keys.json"
        ))
        .unwrap();
        PrivateKey::from_jwk(&keys["rsa2048"]).unwrap()
    }

    #[test]
    fn every_algorithm_in_every_format() {
        let keys = [
            PrivateKey::Ed25519(SigningKey::from_bytes(&[9; 32])),
            PrivateKey::EcdsaP256(p256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap()),
            rsa_test_key(),
        ];
        for key in keys {
            let tp = key.public_jwk().thumbprint().unwrap();
            let forms = [
                private_jwk_json(&key),
                private_pem(&key).unwrap(),
                public_jwk_json(&key),
                public_pem(&key).unwrap(),
            ];
            for (i, text) in forms.iter().enumerate() {
                let k = parse_key(p(), text).unwrap();
                assert_eq!(k.thumbprint().unwrap(), tp, "{text}");
                assert_eq!(k.public_jwk.to_key().unwrap().alg(), Some(key.algorithm()));
                match (i < 2, &k.material) {
                    (true, KeyMaterial::Private(sk)) => assert_eq!(sk.to_jwk(), key.to_jwk()),
                    (false, KeyMaterial::Public) => {}
                    _ => panic!("{i}: {text}"),
                }
            }
        }
    }

    #[test]
    fn pkcs1_and_sec1_private_keys() {
        use p256::pkcs8::der::pem::LineEnding;
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let rsa = rsa_test_key();
        let PrivateKey::RsaPss(k) = &rsa else {
            panic!()
        };
        let pkcs1 = k.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert_eq!(
            parse_key(p(), &pkcs1).unwrap().thumbprint().unwrap(),
            rsa.public_jwk().thumbprint().unwrap()
        );
        let ec = p256::SecretKey::from_slice(&[5; 32]).unwrap();
        let sec1 = ec.to_sec1_pem(LineEnding::LF).unwrap();
        let loaded = parse_key(p(), &sec1).unwrap();
        assert_eq!(
            loaded.public_jwk.to_key().unwrap().algorithm(),
            Some("ecdsa-p256-sha256")
        );
    }

    #[test]
    fn short_rsa_keys_are_refused() {
        let keys: Value = serde_json::from_str(include_str!(
            "../../filter/core/tests/data/rsa_test_keys.json"
        ))
        .unwrap();
        let e = parse_key(p(), &keys["rsa1024"].to_string())
            .unwrap_err()
            .to_string();
        assert!(e.contains("1024 bits"), "{e}");
        assert!(matches!(
            generate_key(Algorithm::RsaPssSha512, 1024),
            Err(KeyFileError::RsaBits(1024))
        ));
    }

    #[test]
    fn public_keys_of_other_algorithms_give_thumbprints() {
        // RFC 7638 section 3.1: an RS256 key, which cannot verify rsa-pss-sha512 signatures,
        // still has its thumbprint.
        let rsa = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"}"#;
        let k = parse_key(p(), rsa).unwrap();
        assert_eq!(
            k.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert!(matches!(
            k.signing_key(),
            Err(KeyFileError::NotPrivate { .. })
        ));
        // With private members that are not a key, it cannot be read as a private key.
        let broken = rsa.replace(
            "\"alg\":\"RS256\",",
            "\"d\":\"X4cTteJY\",\"p\":\"83i-7IvM\",",
        );
        assert!(parse_key(p(), &broken).is_err());
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, &str)] = &[
            ("", "is empty"),
            ("hello", "neither a JWK"),
            ("{", "not valid JSON"),
            (r#"{"keys":[]}"#, "key set"),
            (r#"{"kty":"OKP","crv":"Ed25519"}"#, "\"x\""),
            (r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#, "32 bytes"),
            (
                "-----BEGIN DSA PRIVATE KEY-----\nAA==\n-----END DSA PRIVATE KEY-----\n",
                "not supported",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----\n",
                "PKCS#1",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
                "PKCS#8",
            ),
        ];
        for (text, expected) in cases {
            let e = parse_key(p(), text).unwrap_err().to_string();
            assert!(e.contains(expected), "{text:?}: {e}");
        }
        let wrong_d = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","d":"{}"}}"#,
            URL_SAFE_NO_PAD.encode([1u8; 32])
        );
        let e = parse_key(p(), &wrong_d).unwrap_err().to_string();
        assert!(e.contains("are not those of the private key"), "{e}");
    }

    #[test]
    fn generate_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("agent");
        let (sk, files) = generate_files(&prefix, Algorithm::Ed25519, 0).unwrap();
        let loaded = load_signing_key(&files.private_pem).unwrap();
        assert_eq!(loaded.to_jwk(), sk.to_jwk());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in [&files.private_jwk, &files.private_pem] {
                let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", f.display());
            }
        }
        let e = generate_files(&prefix, Algorithm::EcdsaP256Sha256, 0).unwrap_err();
        assert!(matches!(e, KeyFileError::Exists { .. }));
        // Nothing was replaced.
        assert_eq!(
            load_signing_key(&files.private_jwk).unwrap().to_jwk(),
            sk.to_jwk()
        );
        // A P-256 pair: the three files agree.
        let (ec, files) =
            generate_files(&dir.path().join("ec"), Algorithm::EcdsaP256Sha256, 0).unwrap();
        for f in files.all() {
            assert_eq!(
                load_key(f).unwrap().thumbprint().unwrap(),
                ec.public_jwk().thumbprint().unwrap()
            );
        }
    }
}
