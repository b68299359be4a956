//! Key files: JWK (RFC 7517) and PEM (PKCS#8 private keys, SPKI public keys), private or
//! public, and the key pair files `wba generate` writes.
//!
//! Signing needs an Ed25519 private key. Thumbprints and directories accept any public key the
//! core can fingerprint (OKP, EC, RSA JWKs); private members are dropped before the core sees
//! the key, so a private JWK never leaks into a directory.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, KeypairBytes};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use wba_filter::jwk::{Jwk, JwkError};

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
    NotEd25519 {
        path: PathBuf,
        kty: String,
    },
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
                "{}: PEM \"{label}\" keys are not supported: use an Ed25519 PKCS#8 key \
                 (\"PRIVATE KEY\", e.g. from `wba generate` or `openssl genpkey -algorithm ed25519`) \
                 or a \"PUBLIC KEY\"",
                path.display()
            ),
            Self::BadPrivate { path, why } => write!(f, "{}: invalid private key: {why}", path.display()),
            Self::NotPrivate { path } => write!(
                f,
                "{} holds a public key; signing needs the private key (the .jwk with \"d\" or the .pem \
                 that `wba generate` wrote)",
                path.display()
            ),
            Self::NotEd25519 { path, kty } => write!(
                f,
                "{} is a {kty} key; Web Bot Auth signing here needs an Ed25519 (OKP) key",
                path.display()
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
    /// An Ed25519 private key (JWK with `d`, or PKCS#8 PEM).
    Ed25519Private(SigningKey),
    /// An Ed25519 public key (JWK or SPKI PEM).
    Ed25519Public(VerifyingKey),
    /// Another key type (EC, RSA), known by its public JWK; usable for thumbprints only.
    OtherPublic,
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
        self.public_jwk.thumbprint()
    }

    /// The Ed25519 signing key, or why this file cannot sign.
    pub fn signing_key(&self) -> Result<SigningKey, KeyFileError> {
        match &self.material {
            KeyMaterial::Ed25519Private(sk) => Ok(sk.clone()),
            KeyMaterial::Ed25519Public(_) => Err(KeyFileError::NotPrivate {
                path: self.path.clone(),
            }),
            KeyMaterial::OtherPublic => Err(KeyFileError::NotEd25519 {
                path: self.path.clone(),
                kty: self.public_jwk.kty.clone(),
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

/// Reads a private Ed25519 key file.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyFileError> {
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
    if !is_ed25519 {
        // The core fingerprints it; nothing here can sign or verify with it.
        return Ok(LoadedKey {
            path: path_buf,
            material: KeyMaterial::OtherPublic,
            public_jwk,
        });
    }
    let key = public_jwk.to_key().map_err(jwk_err)?;
    let vk = match key.public {
        wba_filter::jwk::PublicKey::Ed25519(key) => *key.verifying_key(),
        wba_filter::jwk::PublicKey::Unsupported { kty } => {
            return Err(KeyFileError::NotEd25519 {
                path: path_buf,
                kty,
            })
        }
    };
    let material = match obj.get("d") {
        None => KeyMaterial::Ed25519Public(vk),
        Some(d) => {
            let bad = |why| KeyFileError::BadPrivate {
                path: path_buf.clone(),
                why,
            };
            let d = d.as_str().ok_or_else(|| bad("\"d\" is not a string"))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(d.trim_end_matches('='))
                .map_err(|_| bad("\"d\" is not base64url"))?;
            let seed: [u8; 32] = bytes
                .try_into()
                .map_err(|_| bad("\"d\" of an Ed25519 key is 32 bytes"))?;
            let sk = SigningKey::from_bytes(&seed);
            if sk.verifying_key() != vk {
                return Err(bad("\"x\" is not the public key of \"d\""));
            }
            KeyMaterial::Ed25519Private(sk)
        }
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
    match label.as_str() {
        "PRIVATE KEY" => {
            let sk = SigningKey::from_pkcs8_pem(text).map_err(|e| KeyFileError::Pem {
                path: path_buf.clone(),
                what: format!(
                    "not an Ed25519 PKCS#8 private key ({e}); only Ed25519 keys can sign here"
                ),
            })?;
            let public_jwk = Jwk::from_ed25519(sk.verifying_key().as_bytes());
            Ok(LoadedKey {
                path: path_buf,
                material: KeyMaterial::Ed25519Private(sk),
                public_jwk,
            })
        }
        "PUBLIC KEY" => {
            let vk = VerifyingKey::from_public_key_pem(text).map_err(|e| KeyFileError::Pem {
                path: path_buf.clone(),
                what: format!("not an Ed25519 public key ({e})"),
            })?;
            let public_jwk = Jwk::from_ed25519(vk.as_bytes());
            // The core refuses weak points: check the shape like a JWK would be.
            public_jwk.to_key().map_err(|error| KeyFileError::Jwk {
                path: path_buf.clone(),
                error,
            })?;
            Ok(LoadedKey {
                path: path_buf,
                material: KeyMaterial::Ed25519Public(vk),
                public_jwk,
            })
        }
        _ => Err(KeyFileError::PemKind {
            path: path_buf,
            label,
        }),
    }
}

/// A new random Ed25519 key from the operating system's generator.
pub fn generate_key() -> Result<SigningKey, KeyFileError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The public JWK of an Ed25519 key with `kid` set to its thumbprint.
pub fn public_jwk(vk: &VerifyingKey) -> Jwk {
    let mut jwk = Jwk::from_ed25519(vk.as_bytes());
    jwk.kid = jwk.thumbprint().ok();
    jwk
}

/// The public JWK as pretty JSON.
pub fn public_jwk_json(vk: &VerifyingKey) -> String {
    let v: Value = serde_json::from_str(&public_jwk(vk).to_json()).unwrap_or(Value::Null);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The private JWK (`kty`, `crv`, `x`, `d`, `kid`) as pretty JSON.
pub fn private_jwk_json(sk: &SigningKey) -> String {
    let mut v: Value =
        serde_json::from_str(&public_jwk(&sk.verifying_key()).to_json()).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "d".into(),
            Value::String(URL_SAFE_NO_PAD.encode(sk.to_bytes())),
        );
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The private key as PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), the form OpenSSL writes.
pub fn private_pem(sk: &SigningKey) -> Result<String, KeyFileError> {
    let pair = KeypairBytes {
        secret_key: sk.to_bytes(),
        public_key: None,
    };
    pair.to_pkcs8_pem(LineEnding::LF)
        .map(|z| z.to_string())
        .map_err(|e| KeyFileError::Encode(format!("PKCS#8: {e}")))
}

/// The public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`).
pub fn public_pem(vk: &VerifyingKey) -> Result<String, KeyFileError> {
    vk.to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Encode(format!("SPKI: {e}")))
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

/// Generates a key pair and writes its three files. Refuses when any of them exists; nothing is
/// written then.
pub fn generate_files(prefix: &Path) -> Result<(SigningKey, KeyPairFiles), KeyFileError> {
    let files = KeyPairFiles::for_prefix(prefix);
    for p in files.all() {
        if p.symlink_metadata().is_ok() {
            return Err(KeyFileError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    let sk = generate_key()?;
    let pem = private_pem(&sk)?;
    write_new(&files.private_jwk, &(private_jwk_json(&sk) + "\n"), 0o600)?;
    write_new(&files.private_pem, &pem, 0o600)?;
    write_new(
        &files.public_jwk,
        &(public_jwk_json(&sk.verifying_key()) + "\n"),
        0o644,
    )?;
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
        assert_eq!(sk.to_bytes(), from_pem.to_bytes());
        // Writing gives back the published encodings byte for byte.
        assert_eq!(private_pem(&sk).unwrap(), PRIVATE_PEM);
        assert_eq!(public_pem(&sk.verifying_key()).unwrap(), PUBLIC_PEM);
        assert!(matches!(
            parse_key(p(), &public_jwk).unwrap().signing_key(),
            Err(KeyFileError::NotPrivate { .. })
        ));
    }

    #[test]
    fn private_jwk_round_trip() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let k = parse_key(p(), &private_jwk_json(&sk)).unwrap();
        assert_eq!(k.signing_key().unwrap().to_bytes(), sk.to_bytes());
        assert!(!k.public_jwk.to_json().contains("\"d\""));
    }

    #[test]
    fn other_key_types_give_thumbprints_only() {
        // RFC 7638 section 3.1, with private members added: they are dropped.
        let rsa = r#"{"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","d":"X4cTteJY","p":"83i-7IvM","alg":"RS256","kid":"2011-04-29"}"#;
        let k = parse_key(p(), rsa).unwrap();
        assert_eq!(
            k.thumbprint().unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        assert!(matches!(
            k.signing_key(),
            Err(KeyFileError::NotEd25519 { .. })
        ));
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
                "-----BEGIN RSA PRIVATE KEY-----\nAA==\n-----END RSA PRIVATE KEY-----\n",
                "not supported",
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
        assert!(e.contains("is not the public key"), "{e}");
    }

    #[test]
    fn generate_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("agent");
        let (sk, files) = generate_files(&prefix).unwrap();
        let loaded = load_signing_key(&files.private_pem).unwrap();
        assert_eq!(loaded.to_bytes(), sk.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for f in [&files.private_jwk, &files.private_pem] {
                let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", f.display());
            }
        }
        let e = generate_files(&prefix).unwrap_err();
        assert!(matches!(e, KeyFileError::Exists { .. }));
        // Nothing was replaced.
        assert_eq!(
            load_signing_key(&files.private_jwk).unwrap().to_bytes(),
            sk.to_bytes()
        );
    }
}
