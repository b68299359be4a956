//! Key directories: the JWK Set an agent publishes, and the directory's own response
//! signatures that prove possession of the listed keys.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use crate::agent_url::AgentType;
use crate::base::{signature_base, Message};
use crate::component::{ComponentName, Derived};
use crate::jwk::{Jwk, JwkError, Key};
use crate::request::{HttpRequest, HttpResponse};
use crate::signature::parse_signature;
use crate::signature_input::parse_signature_input;

/// The media type of a key directory.
pub const DIRECTORY_MEDIA_TYPE: &str = "application/http-message-signatures-directory+json";
/// The tag of a directory's response signatures.
pub const DIRECTORY_TAG: &str = "http-message-signatures-directory";

/// Why a fetched key set is refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryError {
    NotJson,
    NoKeys,
    TooManyKeys { count: usize, max: usize },
    BadKey { index: usize, error: JwkError },
    KidMismatch { index: usize },
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson => write!(f, "the key directory is not valid JSON"),
            Self::NoKeys => write!(f, "the key directory has no \"keys\" array"),
            Self::TooManyKeys { count, max } => {
                write!(f, "the key directory lists {count} keys, more than {max}")
            }
            Self::BadKey { index, error } => write!(f, "key {index}: {error}"),
            Self::KidMismatch { index } => {
                write!(f, "key {index}: kid is not the key's JWK thumbprint")
            }
        }
    }
}

impl std::error::Error for DirectoryError {}

/// Parses a JWK Set. For [`AgentType::Directory`], a `kid` must be the key's thumbprint.
/// Keys are indexed by thumbprint whatever their `kid`.
pub fn parse_key_set(
    body: &[u8],
    kind: AgentType,
    max_keys: usize,
) -> Result<Vec<Key>, DirectoryError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| DirectoryError::NotJson)?;
    let arr = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(DirectoryError::NoKeys)?;
    if arr.len() > max_keys {
        return Err(DirectoryError::TooManyKeys {
            count: arr.len(),
            max: max_keys,
        });
    }
    let mut keys = Vec::with_capacity(arr.len());
    for (index, k) in arr.iter().enumerate() {
        let jwk = Jwk::from_value(k).map_err(|error| DirectoryError::BadKey { index, error })?;
        let key = jwk
            .to_key()
            .map_err(|error| DirectoryError::BadKey { index, error })?;
        if kind == AgentType::Directory
            && jwk.kid.as_deref().is_some_and(|kid| kid != key.thumbprint)
        {
            return Err(DirectoryError::KidMismatch { index });
        }
        keys.push(key);
    }
    Ok(keys)
}

/// The body of a key directory listing `keys` (each with `kid` set to its thumbprint).
pub fn build_key_set(keys: &[Jwk]) -> Result<String, JwkError> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let mut k = k.clone();
        k.kid = Some(k.thumbprint()?);
        let v: Value = serde_json::from_str(&k.to_json()).map_err(|_| JwkError::NotAnObject)?;
        out.push(v);
    }
    Ok(serde_json::json!({ "keys": out }).to_string())
}

/// `Content-Digest` (RFC 9530) for `body`, with SHA-256.
pub fn content_digest(body: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
    )
}

/// Why a directory response signature does not prove possession.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    NoSignature,
    Malformed(String),
    DigestMismatch,
    NoDigest,
    MissingCoverage(&'static str),
    MissingParameter(&'static str),
    CreatedInFuture,
    Expired,
    UnknownKey(String),
    BadSignature,
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSignature => write!(f, "the response carries no directory signature"),
            Self::Malformed(e) => write!(f, "malformed response signature: {e}"),
            Self::DigestMismatch => write!(f, "Content-Digest does not match the body"),
            Self::NoDigest => write!(f, "no Content-Digest with sha-256 or sha-512"),
            Self::MissingCoverage(c) => write!(f, "the response signature does not cover {c}"),
            Self::MissingParameter(p) => write!(f, "the response signature lacks {p}"),
            Self::CreatedInFuture => write!(f, "the response signature is created in the future"),
            Self::Expired => write!(f, "the response signature has expired"),
            Self::UnknownKey(k) => write!(
                f,
                "the response is signed by {k:?}, which the directory does not list"
            ),
            Self::BadSignature => write!(f, "the response signature does not verify"),
        }
    }
}

impl std::error::Error for ProofError {}

/// Checks `Content-Digest` against the body: every sha-256/sha-512 member must match, and at
/// least one must be present.
pub fn check_content_digest(value: &str, body: &[u8]) -> Result<(), ProofError> {
    let dict: sfv::Dictionary = sfv::Parser::new(value)
        .parse()
        .map_err(|_| ProofError::Malformed("Content-Digest".into()))?;
    let mut seen = false;
    for (alg, entry) in &dict {
        let expected: Vec<u8> = match alg.as_str() {
            "sha-256" => Sha256::digest(body).to_vec(),
            "sha-512" => Sha512::digest(body).to_vec(),
            _ => continue,
        };
        let sfv::ListEntry::Item(item) = entry else {
            return Err(ProofError::Malformed("Content-Digest".into()));
        };
        if item.bare_item.as_byte_sequence() != Some(expected.as_slice()) {
            return Err(ProofError::DigestMismatch);
        }
        seen = true;
    }
    if seen {
        Ok(())
    } else {
        Err(ProofError::NoDigest)
    }
}

/// Verifies a directory response's possession proofs. Returns, per signature tagged
/// `http-message-signatures-directory`, the thumbprint it proves or why it does not.
pub fn verify_directory_response(
    request: &HttpRequest,
    response: &HttpResponse,
    body: &[u8],
    keys: &[Key],
    now: i64,
    clock_skew_seconds: i64,
) -> Vec<Result<String, ProofError>> {
    let (Some(input), Some(sigs)) = (
        response.header("signature-input"),
        response.header("signature"),
    ) else {
        return vec![Err(ProofError::NoSignature)];
    };
    let inputs = match parse_signature_input(&input) {
        Ok(i) => i,
        Err(e) => return vec![Err(ProofError::Malformed(e.to_string()))],
    };
    let sigs = match parse_signature(&sigs) {
        Ok(s) => s,
        Err(e) => return vec![Err(ProofError::Malformed(e.to_string()))],
    };
    let digest = match response.header("content-digest") {
        Some(d) => check_content_digest(&d, body),
        None => Err(ProofError::MissingCoverage("content-digest")),
    };
    let results: Vec<_> = inputs
        .iter()
        .filter(|i| i.params.tag.as_deref() == Some(DIRECTORY_TAG))
        .map(|input| {
            digest.clone()?;
            let covers_authority = input
                .components
                .iter()
                .any(|c| c.req && matches!(c.name, ComponentName::Derived(Derived::Authority)));
            if !covers_authority {
                return Err(ProofError::MissingCoverage("\"@authority\";req"));
            }
            if !input
                .components
                .iter()
                .any(|c| c.is_field("content-digest") && !c.req)
            {
                return Err(ProofError::MissingCoverage("content-digest"));
            }
            let p = &input.params;
            let created = p.created.ok_or(ProofError::MissingParameter("created"))?;
            let expires = p.expires.ok_or(ProofError::MissingParameter("expires"))?;
            let keyid = p
                .keyid
                .as_deref()
                .ok_or(ProofError::MissingParameter("keyid"))?;
            if created > now.saturating_add(clock_skew_seconds) {
                return Err(ProofError::CreatedInFuture);
            }
            if now > expires.saturating_add(clock_skew_seconds) {
                return Err(ProofError::Expired);
            }
            let key = keys
                .iter()
                .find(|k| k.thumbprint == keyid)
                .ok_or_else(|| ProofError::UnknownKey(keyid.to_string()))?;
            let sig = sigs
                .iter()
                .find(|(l, _)| *l == input.label)
                .map(|(_, s)| s)
                .ok_or(ProofError::NoSignature)?;
            let base = signature_base(Message::Response { request, response }, input)
                .map_err(|e| ProofError::Malformed(e.to_string()))?;
            key.verify(base.as_bytes(), sig)
                .map_err(|_| ProofError::BadSignature)?;
            Ok(key.thumbprint.clone())
        })
        .collect();
    if results.is_empty() {
        vec![Err(ProofError::NoSignature)]
    } else {
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
    const TP: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";

    #[test]
    fn key_sets() {
        let ok = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"{TP}"}}]}}"#);
        let keys = parse_key_set(ok.as_bytes(), AgentType::Directory, 4).expect("keys");
        assert_eq!(keys[0].thumbprint, TP);
        let labelled =
            format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"ops-2026"}}]}}"#);
        assert_eq!(
            parse_key_set(labelled.as_bytes(), AgentType::Directory, 4),
            Err(DirectoryError::KidMismatch { index: 0 })
        );
        let keys = parse_key_set(labelled.as_bytes(), AgentType::JwksUri, 4).expect("jwks");
        assert_eq!(keys[0].thumbprint, TP);
        assert_eq!(
            parse_key_set(b"{", AgentType::Directory, 4),
            Err(DirectoryError::NotJson)
        );
        assert_eq!(
            parse_key_set(b"{\"keys\":{}}", AgentType::Directory, 4),
            Err(DirectoryError::NoKeys)
        );
        assert_eq!(
            parse_key_set(ok.as_bytes(), AgentType::Directory, 0),
            Err(DirectoryError::TooManyKeys { count: 1, max: 0 })
        );
        assert!(matches!(
            parse_key_set(br#"{"keys":[{"kty":"OKP"}]}"#, AgentType::Directory, 4),
            Err(DirectoryError::BadKey { index: 0, .. })
        ));
    }

    #[test]
    fn build_sets_kid() {
        let jwk =
            Jwk::from_json(&format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}"}}"#)).expect("jwk");
        let body = build_key_set(&[jwk]).expect("build");
        let keys = parse_key_set(body.as_bytes(), AgentType::Directory, 4).expect("parse");
        assert_eq!(keys[0].jwk.kid.as_deref(), Some(TP));
    }

    #[test]
    fn digests() {
        assert_eq!(
            check_content_digest(&content_digest(b"abc"), b"abc"),
            Ok(())
        );
        assert_eq!(
            check_content_digest(&content_digest(b"abc"), b"abd"),
            Err(ProofError::DigestMismatch)
        );
        assert_eq!(
            check_content_digest("md5=:AA==:", b"abc"),
            Err(ProofError::NoDigest)
        );
    }
}
