//! Key directories: the JWK Set an agent publishes, and the directory's own response
//! signatures that prove possession of the listed keys.

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use crate::base::Message;
use crate::component::{ComponentName, Derived};
use crate::jwk::{Jwk, JwkError, Key};
use crate::pipeline::{self, AlgorithmError, MissingParameter, Required, WindowError, WindowRules};
use crate::request::{HttpRequest, HttpResponse};
use crate::signature::{parse_signature_field, SignatureField, SignatureFieldError};
use crate::signature_input::{parse_input_field, SignatureInput};

/// The media type of a key directory.
pub const DIRECTORY_MEDIA_TYPE: &str = "application/http-message-signatures-directory+json";
/// The tag of a directory's response signatures.
pub const DIRECTORY_TAG: &str = "http-message-signatures-directory";

/// Why a fetched key set is refused as a whole. One unusable key is not such a reason: it
/// is skipped ([`SkippedKey`]) and the rest of the set kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryError {
    NotJson,
    NoKeys,
    /// More entries than `max_keys`, usable or not: the bound is on what is parsed.
    TooManyKeys {
        count: usize,
        max: usize,
    },
    /// At the well-known location a `kid` must be the key's thumbprint (the draft's MUST): a
    /// directory that breaks it is broken as a whole, not in one key.
    KidMismatch {
        index: usize,
    },
    /// Entries are listed but none is usable: more likely a broken directory (or a format
    /// this verifier does not know) than an agent revoking its keys, so the cached keys stay.
    NoUsableKey {
        listed: usize,
        first: SkippedKey,
    },
}

impl fmt::Display for DirectoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson => write!(f, "the key directory is not valid JSON"),
            Self::NoKeys => write!(f, "the key directory has no \"keys\" array"),
            Self::TooManyKeys { count, max } => {
                write!(f, "the key directory lists {count} keys, more than {max}")
            }
            Self::KidMismatch { index } => {
                write!(f, "key {index}: kid is not the key's JWK thumbprint")
            }
            Self::NoUsableKey { listed, first } => {
                write!(f, "none of the {listed} listed keys is usable ({first})")
            }
        }
    }
}

impl std::error::Error for DirectoryError {}

/// A listed entry that cannot be used: unknown `kty`, `use` other than `sig`, an `alg` that
/// contradicts the key, an invalid key value, private members, members of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Its position in the `keys` array.
    pub index: usize,
    pub error: JwkError,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}: {}", self.index, self.error)
    }
}

impl std::error::Error for SkippedKey {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// An accepted JWK Set: its usable keys, in order, and the entries skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySet {
    pub keys: Vec<Key>,
    pub skipped: Vec<SkippedKey>,
    /// The body was a bare JWK where a JWK Set belongs, read as a one-key set.
    pub bare_jwk: bool,
}

/// What a key's `kid` must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KidRule {
    /// At the well-known directory: the key's RFC 7638 thumbprint (the draft's MUST).
    Thumbprint,
    /// At any other JWK Set URL: a label, not checked.
    Label,
}

impl KidRule {
    /// The rule at an agent's JWK Set URL.
    pub fn at(id: &crate::agent_url::AgentId) -> Self {
        if id.is_well_known() {
            KidRule::Thumbprint
        } else {
            KidRule::Label
        }
    }
}

/// Parses a JWK Set (or a bare JWK, which some agents serve: a one-key set). Keys are indexed
/// by thumbprint whatever their `kid`, which must follow `kid`. An entry that is not a usable
/// public JWK is skipped; an empty `keys` array is an empty set (the agent lists no keys).
pub fn parse_key_set(body: &[u8], kid: KidRule, max_keys: usize) -> Result<KeySet, DirectoryError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| DirectoryError::NotJson)?;
    let bare_jwk = v.get("keys").is_none() && v.get("kty").is_some();
    let arr = if bare_jwk {
        std::slice::from_ref(&v)
    } else {
        v.get("keys")
            .and_then(Value::as_array)
            .ok_or(DirectoryError::NoKeys)?
            .as_slice()
    };
    if arr.len() > max_keys {
        return Err(DirectoryError::TooManyKeys {
            count: arr.len(),
            max: max_keys,
        });
    }
    let mut set = KeySet {
        keys: Vec::with_capacity(arr.len()),
        skipped: Vec::new(),
        bare_jwk,
    };
    for (index, k) in arr.iter().enumerate() {
        let jwk = match Jwk::from_value(k) {
            Ok(jwk) => jwk,
            Err(error) => {
                set.skipped.push(SkippedKey { index, error });
                continue;
            }
        };
        // Checked for every entry whose thumbprint can be computed, usable or not.
        if kid == KidRule::Thumbprint {
            if let (Some(kid), Ok(thumbprint)) = (jwk.kid.as_deref(), jwk.thumbprint()) {
                if kid != thumbprint {
                    return Err(DirectoryError::KidMismatch { index });
                }
            }
        }
        match jwk.to_key() {
            Ok(key) => set.keys.push(key),
            Err(error) => set.skipped.push(SkippedKey { index, error }),
        }
    }
    if set.keys.is_empty() {
        if let Some(first) = set.skipped.first() {
            return Err(DirectoryError::NoUsableKey {
                listed: arr.len(),
                first: first.clone(),
            });
        }
    }
    Ok(set)
}

/// The body of a key directory listing `keys` (each with `kid` set to its thumbprint).
pub fn build_key_set(keys: &[Jwk]) -> Result<String, JwkError> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        let mut k = k.clone();
        k.kid = Some(k.thumbprint()?.into());
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

/// One directory response signature (tagged `http-message-signatures-directory`), the key
/// it names, and whether it proves possession of that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofCheck {
    /// Its `keyid`; `None` when it names none or the signature fields cannot be read: then
    /// it cannot be attributed to a key.
    pub keyid: Option<String>,
    pub result: Result<(), ProofError>,
}

impl ProofCheck {
    fn unattributed(error: ProofError) -> Self {
        ProofCheck {
            keyid: None,
            result: Err(error),
        }
    }
}

/// Checks a directory response's possession proofs: one [`ProofCheck`] per signature tagged
/// `http-message-signatures-directory` (none when the response carries none).
///
/// A proof must cover `"@authority";req` and `content-digest` (which must match the body),
/// carry `created`, `expires` (after `created`) and `keyid`, name a listed key, and verify.
/// Time, with the same tolerance as request signatures: `created` more than
/// `clock_skew_seconds` after `now` is in the future ([`ProofError::CreatedInFuture`]), and
/// `now` more than `clock_skew_seconds` after `expires` is expired.
pub fn verify_directory_response(
    request: &HttpRequest,
    response: &HttpResponse,
    body: &[u8],
    keys: &[Key],
    now: i64,
    clock_skew_seconds: i64,
) -> Vec<ProofCheck> {
    let input = response.header("signature-input");
    let sigs = response.header("signature");
    let input = match (input, &sigs) {
        (None, None) => return Vec::new(),
        (None, Some(_)) => {
            return vec![ProofCheck::unattributed(ProofError::Malformed(
                "Signature without Signature-Input".into(),
            ))]
        }
        (Some(i), _) => i,
    };
    // Unlike a request's, a directory response's fields are refused whole when any member is
    // malformed: no other profile signs them.
    let inputs = match parse_input_field(&input).and_then(|f| f.parse_all().map(|_| f)) {
        Ok(i) => i,
        Err(e) => {
            return vec![ProofCheck::unattributed(ProofError::Malformed(
                e.to_string(),
            ))]
        }
    };
    let sigs = sigs.map(|s| parse_signature_field(&s).and_then(|f| f.check_all().map(|_| f)));
    let digest = match response.header("content-digest") {
        Some(d) => check_content_digest(&d, body),
        None => Err(ProofError::MissingCoverage("content-digest")),
    };
    let proofs = Proofs {
        message: Message::Response { request, response },
        signatures: &sigs,
        digest: &digest,
        keys,
        now,
        clock_skew_seconds,
    };
    pipeline::select(&inputs, DIRECTORY_TAG)
        .map(|(_, input)| match input {
            Ok(input) => ProofCheck {
                keyid: input.params.keyid.clone(),
                result: proofs.check(&input),
            },
            // Not reached: every member parsed above.
            Err(e) => ProofCheck::unattributed(ProofError::Malformed(e.to_string())),
        })
        .collect()
}

/// What each possession proof of a response is checked against.
struct Proofs<'a> {
    message: Message<'a>,
    /// The `Signature` field (every member a byte sequence), or why it is unusable.
    signatures: &'a Option<Result<SignatureField, SignatureFieldError>>,
    /// Whether `Content-Digest` matches the body.
    digest: &'a Result<(), ProofError>,
    keys: &'a [Key],
    now: i64,
    clock_skew_seconds: i64,
}

impl Proofs<'_> {
    /// One proof, as the steps of RFC 9421 verification with the directory's coverage and
    /// key lookup between them.
    fn check(&self, input: &SignatureInput) -> Result<(), ProofError> {
        let signature = match self.signatures {
            None => return Err(ProofError::NoSignature),
            Some(Err(e)) => return Err(ProofError::Malformed(e.to_string())),
            Some(Ok(sigs)) => pipeline::signature_member(sigs, &input.label)
                .map_err(|_| ProofError::NoSignature)?,
        };
        self.digest.clone()?;
        covers_proof_components(input)?;
        let Required {
            created,
            expires,
            keyid,
        } = pipeline::required_parameters(&input.params)
            .map_err(|MissingParameter(p)| ProofError::MissingParameter(p))?;
        let rules = WindowRules {
            clock_skew_seconds: self.clock_skew_seconds,
            max_validity_seconds: None,
        };
        pipeline::check_window(created, expires, self.now, rules).map_err(|e| match e {
            WindowError::CreatedInFuture { .. } => ProofError::CreatedInFuture,
            WindowError::Expired { .. } => ProofError::Expired,
            WindowError::NotAfterCreated | WindowError::TooLong { .. } => {
                ProofError::Malformed(e.to_string())
            }
        })?;
        let key = self
            .keys
            .iter()
            .find(|k| k.thumbprint == keyid)
            .ok_or_else(|| ProofError::UnknownKey(keyid.to_string()))?;
        // As for requests, an `alg` naming another algorithm than the key's cannot be that
        // key's signature. A key of no implemented algorithm fails verification below.
        let alg = input.params.alg.as_deref();
        match pipeline::key_algorithm(key, alg) {
            Err(AlgorithmError::Contradicts { .. }) => return Err(ProofError::BadSignature),
            Err(AlgorithmError::Unimplemented) if alg.is_some() => {
                return Err(ProofError::BadSignature)
            }
            _ => {}
        }
        let base = pipeline::base(self.message, input)
            .map_err(|e| ProofError::Malformed(e.to_string()))?;
        pipeline::verify(key, &base, signature).map_err(|_| ProofError::BadSignature)
    }
}

/// A proof covers `"@authority";req` (whose directory it is) and the response's
/// `content-digest` (which keys it lists).
fn covers_proof_components(input: &SignatureInput) -> Result<(), ProofError> {
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
    Ok(())
}

/// Signed directory responses for the tests of this module and of `fetch`.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::sign::sign_response;
    use ed25519_dalek::SigningKey;
    use sfv::{BareItem, Key as SfKey, Parameters};

    pub const AUTHORITY: &str = "agent.example";

    /// The public JWK of the test key with this seed.
    pub fn jwk(seed: u8) -> Jwk {
        Jwk::from_ed25519(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .as_bytes(),
        )
    }

    pub fn thumbprint(seed: u8) -> String {
        jwk(seed).thumbprint().map(String::from).unwrap_or_default()
    }

    /// One response signature: by key `seed`, naming `keyid` (the thumbprint of `seed`
    /// unless set), over a request to `authority`.
    #[derive(Debug, Clone)]
    pub struct Spec {
        pub seed: u8,
        pub keyid: Option<String>,
        pub created: i64,
        pub expires: i64,
        pub authority: &'static str,
    }

    impl Spec {
        pub fn by(seed: u8, now: i64) -> Self {
            Spec {
                seed,
                keyid: Some(thumbprint(seed)),
                created: now - 5,
                expires: now + 300,
                authority: AUTHORITY,
            }
        }
    }

    /// `Signature-Input` and `Signature` with one proof per spec, over `headers` (which hold
    /// the Content-Digest).
    pub fn proof_headers(headers: &[(String, String)], specs: &[Spec]) -> Vec<(String, String)> {
        let response = HttpResponse {
            status: 200,
            headers: headers.to_vec(),
        };
        let components = [
            "\"@authority\";req".to_string(),
            "content-digest".to_string(),
        ];
        let (mut inputs, mut sigs) = (Vec::new(), Vec::new());
        for (i, spec) in specs.iter().enumerate() {
            let request = HttpRequest::from_parts(
                "GET",
                "https",
                spec.authority,
                crate::agent_url::DIRECTORY_PATH,
                Vec::new(),
            );
            let mut params = Parameters::new();
            let mut put = |k: &str, v: BareItem| {
                if let Ok(k) = SfKey::from_string(k.into()) {
                    params.insert(k, v);
                }
            };
            let string =
                |v: &str| BareItem::String(sfv::String::from_string(v.into()).unwrap_or_default());
            let int = |v: i64| BareItem::Integer(sfv::Integer::try_from(v).unwrap_or_default());
            put("created", int(spec.created));
            put("expires", int(spec.expires));
            if let Some(k) = &spec.keyid {
                put("keyid", string(k));
            }
            put("tag", string(DIRECTORY_TAG));
            let key = SigningKey::from_bytes(&[spec.seed; 32]);
            if let Ok(signed) = sign_response(
                &request,
                &response,
                &key,
                &format!("p{i}"),
                &components,
                params,
            ) {
                inputs.push(signed.signature_input);
                sigs.push(signed.signature);
            }
        }
        vec![
            ("signature-input".into(), inputs.join(", ")),
            ("signature".into(), sigs.join(", ")),
        ]
    }

    /// A directory response listing the keys of `seeds`, with Content-Digest and the proofs of
    /// `specs`: (request, response, body).
    pub fn signed_directory(seeds: &[u8], specs: &[Spec]) -> (HttpRequest, HttpResponse, Vec<u8>) {
        let jwks: Vec<Jwk> = seeds.iter().map(|s| jwk(*s)).collect();
        let body = build_key_set(&jwks).unwrap_or_default().into_bytes();
        let mut headers = vec![
            ("content-type".to_string(), DIRECTORY_MEDIA_TYPE.to_string()),
            ("content-digest".to_string(), content_digest(&body)),
        ];
        if !specs.is_empty() {
            let proofs = proof_headers(&headers, specs);
            headers.extend(proofs);
        }
        let request = HttpRequest::from_parts(
            "GET",
            "https",
            AUTHORITY,
            crate::agent_url::DIRECTORY_PATH,
            Vec::new(),
        );
        (
            request,
            HttpResponse {
                status: 200,
                headers,
            },
            body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{jwk, signed_directory, thumbprint, Spec};
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const X: &str = "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs";
    const TP: &str = "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U";
    const NOW: i64 = 1_790_000_000;

    fn good() -> String {
        format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"{TP}"}}"#)
    }

    #[test]
    fn key_sets() {
        let ok = format!(r#"{{"keys":[{}]}}"#, good());
        let set = parse_key_set(ok.as_bytes(), KidRule::Thumbprint, 4).expect("keys");
        assert_eq!(set.keys[0].thumbprint, TP);
        assert!(set.skipped.is_empty());
        let labelled =
            format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"ops-2026"}}]}}"#);
        assert_eq!(
            parse_key_set(labelled.as_bytes(), KidRule::Thumbprint, 4),
            Err(DirectoryError::KidMismatch { index: 0 })
        );
        let set = parse_key_set(labelled.as_bytes(), KidRule::Label, 4).expect("jwks");
        assert_eq!(set.keys[0].thumbprint, TP);
        assert_eq!(
            parse_key_set(b"{", KidRule::Thumbprint, 4),
            Err(DirectoryError::NotJson)
        );
        assert_eq!(
            parse_key_set(b"{\"keys\":{}}", KidRule::Thumbprint, 4),
            Err(DirectoryError::NoKeys)
        );
        assert_eq!(
            parse_key_set(ok.as_bytes(), KidRule::Thumbprint, 0),
            Err(DirectoryError::TooManyKeys { count: 1, max: 0 })
        );
        // max_keys bounds the entries, usable or not.
        let two = format!(r#"{{"keys":[{{"kty":"XYZ"}},{}]}}"#, good());
        assert_eq!(
            parse_key_set(two.as_bytes(), KidRule::Thumbprint, 1),
            Err(DirectoryError::TooManyKeys { count: 2, max: 1 })
        );
        // An empty set is a set: the agent lists no keys.
        let empty = parse_key_set(br#"{"keys":[]}"#, KidRule::Thumbprint, 4).expect("empty");
        assert!(empty.keys.is_empty() && empty.skipped.is_empty());
    }

    #[test]
    fn an_unusable_key_is_skipped_and_the_rest_kept() {
        let small_order =
            r#"{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#;
        let cases: Vec<(String, JwkError)> = vec![
            (r#"{"kty":"XYZ"}"#.into(), JwkError::UnknownKty("XYZ".into())),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","use":"enc"}}"#),
                JwkError::WrongUse("enc".into()),
            ),
            (
                r#"{"kty":"OKP","crv":"Ed25519","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#
                    .into(),
                JwkError::BadKey("an Ed25519 key is 32 bytes"),
            ),
            (
                r#"{"kty":"OKP","crv":"Ed25519","x":"!!!"}"#.into(),
                JwkError::BadKey("x is not base64url"),
            ),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","alg":"RS256"}}"#),
                JwkError::WrongAlg("RS256".into()),
            ),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","d":"{X}"}}"#),
                JwkError::PrivateKey,
            ),
            ("7".into(), JwkError::NotAnObject),
            ("{}".into(), JwkError::MissingMember("kty")),
            (
                r#"{"kty":"OKP","crv":"Ed25519"}"#.into(),
                JwkError::MissingMember("x"),
            ),
            (
                format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":5}}"#),
                JwkError::WrongType("kid"),
            ),
        ];
        for (bad, error) in cases {
            for (body, index) in [
                (format!(r#"{{"keys":[{bad},{}]}}"#, good()), 0),
                (format!(r#"{{"keys":[{},{bad}]}}"#, good()), 1),
            ] {
                let set = parse_key_set(body.as_bytes(), KidRule::Thumbprint, 4)
                    .unwrap_or_else(|e| panic!("{body}: {e}"));
                assert_eq!(set.keys.len(), 1, "{body}");
                assert_eq!(set.keys[0].thumbprint, TP);
                assert_eq!(
                    set.skipped,
                    vec![SkippedKey {
                        index,
                        error: error.clone()
                    }],
                    "{body}"
                );
            }
        }
        // A small-order point is not a key either.
        let body = format!(r#"{{"keys":[{small_order},{}]}}"#, good());
        let set = parse_key_set(body.as_bytes(), KidRule::Thumbprint, 4).expect("set");
        assert!(matches!(
            set.skipped.as_slice(),
            [SkippedKey {
                index: 0,
                error: JwkError::BadKey(_)
            }]
        ));
        // A well-formed key of a type this verifier cannot verify with is kept: a request signed
        // with it is then `unsupported_algorithm`, not `unknown_key`.
        let body = format!(
            r#"{{"keys":[{{"kty":"EC","crv":"P-384","x":"a","y":"b"}},{}]}}"#,
            good()
        );
        let set = parse_key_set(body.as_bytes(), KidRule::Label, 4).expect("set");
        assert_eq!(set.keys.len(), 2);
        assert!(set.skipped.is_empty());
    }

    #[test]
    fn what_still_refuses_the_whole_set() {
        // No usable key at all.
        assert_eq!(
            parse_key_set(br#"{"keys":[{"kty":"XYZ"},7]}"#, KidRule::Thumbprint, 4),
            Err(DirectoryError::NoUsableKey {
                listed: 2,
                first: SkippedKey {
                    index: 0,
                    error: JwkError::UnknownKty("XYZ".into())
                }
            })
        );
        // A kid that is not the thumbprint, even on a key that would be skipped anyway: the
        // directory is broken. (An entry whose thumbprint cannot be computed is only skipped.)
        let short = r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"nope"}"#;
        let body = format!(r#"{{"keys":[{},{short}]}}"#, good());
        assert_eq!(
            parse_key_set(body.as_bytes(), KidRule::Thumbprint, 4),
            Err(DirectoryError::KidMismatch { index: 1 })
        );
        let set = parse_key_set(body.as_bytes(), KidRule::Label, 4).expect("a label there");
        assert_eq!(set.skipped.len(), 1);
        let body = format!(r#"{{"keys":[{},{{"kty":"XYZ","kid":"nope"}}]}}"#, good());
        assert_eq!(
            parse_key_set(body.as_bytes(), KidRule::Thumbprint, 4)
                .expect("skipped")
                .skipped
                .len(),
            1
        );
    }

    #[test]
    fn directories_as_they_are_served() {
        // `alg` absent or any of the Ed25519 spellings; `use`, `nbf`, `exp` and unknown members.
        for extra in [
            "",
            r#","alg":"EdDSA""#,
            r#","alg":"Ed25519""#,
            r#","alg":"ed25519""#,
            r#","use":"sig","nbf":1,"exp":4102444800,"key_ops":["verify"],"x5u":"https://x","note":{"a":[1]}"#,
        ] {
            let key = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"{TP}"{extra}}}"#);
            let body = format!(r#"{{"keys":[{key}],"purpose":"rag","v":2}}"#);
            let set = parse_key_set(body.as_bytes(), KidRule::Thumbprint, 4)
                .unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(set.keys.len(), 1, "{body}");
            assert!(!set.bare_jwk);
            // Served bare, where a set belongs: a one-key set, flagged.
            let set = parse_key_set(key.as_bytes(), KidRule::Thumbprint, 4)
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_eq!(set.keys[0].thumbprint, TP, "{key}");
            assert!(set.bare_jwk);
        }
        // A bare JWK follows the same rules as a listed one.
        let labelled = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}","kid":"k-1"}}"#);
        assert_eq!(
            parse_key_set(labelled.as_bytes(), KidRule::Thumbprint, 4),
            Err(DirectoryError::KidMismatch { index: 0 })
        );
        assert!(parse_key_set(labelled.as_bytes(), KidRule::Label, 4).is_ok());
        assert!(matches!(
            parse_key_set(br#"{"kty":"XYZ"}"#, KidRule::Label, 4),
            Err(DirectoryError::NoUsableKey { listed: 1, .. })
        ));
        assert_eq!(
            parse_key_set(br#"{"kty":"OKP"}"#, KidRule::Label, 0),
            Err(DirectoryError::TooManyKeys { count: 1, max: 0 })
        );
        // Neither a set nor a key.
        assert_eq!(
            parse_key_set(br#"{"x":"y"}"#, KidRule::Label, 4),
            Err(DirectoryError::NoKeys)
        );
        assert_eq!(
            parse_key_set(b"[]", KidRule::Label, 4),
            Err(DirectoryError::NoKeys)
        );
        // Key types mixed: the set is kept whatever the others are, the Ed25519 key in it.
        let ec = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","alg":"ES256","kid":"ec"}"#;
        let rsa = r#"{"kty":"RSA","e":"AQAB","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","alg":"PS512","kid":"rsa"}"#;
        let body = format!(
            r#"{{"keys":[{ec},{rsa},{{"kty":"oct-ish","kid":"x"}},{}]}}"#,
            good()
        );
        let set = parse_key_set(body.as_bytes(), KidRule::Label, 8).expect("mixed");
        assert!(set.keys.iter().any(|k| k.thumbprint == TP));
        // Their kids are labels: at the well-known location, that breaks the directory.
        assert!(matches!(
            parse_key_set(body.as_bytes(), KidRule::Thumbprint, 8),
            Err(DirectoryError::KidMismatch { index: 0 })
        ));
    }

    #[test]
    fn build_sets_kid() {
        let jwk =
            Jwk::from_json(&format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{X}"}}"#)).expect("jwk");
        let body = build_key_set(&[jwk]).expect("build");
        let set = parse_key_set(body.as_bytes(), KidRule::Thumbprint, 4).expect("parse");
        assert_eq!(set.keys[0].jwk.kid.as_deref(), Some(TP));
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

    fn checks(seeds: &[u8], specs: &[Spec], now: i64, skew: i64) -> Vec<ProofCheck> {
        let (request, response, body) = signed_directory(seeds, specs);
        let keys: Vec<Key> = seeds.iter().filter_map(|s| jwk(*s).to_key().ok()).collect();
        verify_directory_response(&request, &response, &body, &keys, now, skew)
    }

    fn ok(seed: u8) -> ProofCheck {
        ProofCheck {
            keyid: Some(thumbprint(seed)),
            result: Ok(()),
        }
    }

    fn failed(seed: u8, e: ProofError) -> ProofCheck {
        ProofCheck {
            keyid: Some(thumbprint(seed)),
            result: Err(e),
        }
    }

    #[test]
    fn one_check_per_directory_signature_naming_its_key() {
        assert_eq!(
            checks(&[1, 2], &[Spec::by(1, NOW), Spec::by(2, NOW)], NOW, 60),
            vec![ok(1), ok(2)]
        );
        // No signature fields: no checks (every key's proof is absent).
        assert_eq!(checks(&[1, 2], &[], NOW, 60), vec![]);
        // Signed for another authority.
        let elsewhere = Spec {
            authority: "evil.example",
            ..Spec::by(2, NOW)
        };
        assert_eq!(
            checks(&[1, 2], &[Spec::by(1, NOW), elsewhere], NOW, 60),
            vec![ok(1), failed(2, ProofError::BadSignature)]
        );
        // Signed by key 1 but naming key 2.
        let impostor = Spec {
            keyid: Some(thumbprint(2)),
            ..Spec::by(1, NOW)
        };
        assert_eq!(
            checks(&[1, 2], &[impostor], NOW, 60),
            vec![failed(2, ProofError::BadSignature)]
        );
        // Naming no key: cannot be attributed.
        let anonymous = Spec {
            keyid: None,
            ..Spec::by(1, NOW)
        };
        assert_eq!(
            checks(&[1], &[anonymous], NOW, 60),
            vec![ProofCheck {
                keyid: None,
                result: Err(ProofError::MissingParameter("keyid"))
            }]
        );
        // By a key the directory does not list.
        assert_eq!(
            checks(&[1], &[Spec::by(3, NOW)], NOW, 60),
            vec![failed(3, ProofError::UnknownKey(thumbprint(3)))]
        );
    }

    #[test]
    fn created_in_the_future_means_beyond_the_clock_skew() {
        let at = |created: i64| Spec {
            created,
            expires: created + 300,
            ..Spec::by(1, NOW)
        };
        // Within the skew: clocks differ, as for request signatures.
        assert_eq!(checks(&[1], &[at(NOW + 60)], NOW, 60), vec![ok(1)]);
        assert_eq!(
            checks(&[1], &[at(NOW + 61)], NOW, 60),
            vec![failed(1, ProofError::CreatedInFuture)]
        );
        assert_eq!(
            checks(&[1], &[at(NOW + 1)], NOW, 0),
            vec![failed(1, ProofError::CreatedInFuture)]
        );
        let until = |expires: i64| Spec {
            created: expires - 300,
            expires,
            ..Spec::by(1, NOW)
        };
        assert_eq!(checks(&[1], &[until(NOW - 60)], NOW, 60), vec![ok(1)]);
        assert_eq!(
            checks(&[1], &[until(NOW - 61)], NOW, 60),
            vec![failed(1, ProofError::Expired)]
        );
        let backwards = Spec {
            created: NOW,
            expires: NOW,
            ..Spec::by(1, NOW)
        };
        assert_eq!(
            checks(&[1], &[backwards], NOW, 60),
            vec![failed(
                1,
                ProofError::Malformed("expires is not after created".into())
            )]
        );
        // Extreme clocks and skews do not overflow.
        assert_eq!(checks(&[1], &[at(NOW)], i64::MAX, i64::MAX), vec![ok(1)]);
        assert_eq!(
            checks(&[1], &[at(NOW)], i64::MIN, 0),
            vec![failed(1, ProofError::CreatedInFuture)]
        );
    }

    #[test]
    fn unreadable_or_incomplete_signature_fields() {
        let (request, mut response, body) = signed_directory(&[1], &[Spec::by(1, NOW)]);
        let keys = vec![jwk(1).to_key().expect("key")];
        let run =
            |r: &HttpResponse, b: &[u8]| verify_directory_response(&request, r, b, &keys, NOW, 60);
        // The body does not match the Content-Digest.
        assert_eq!(
            run(&response, b"{\"keys\":[]}"),
            vec![failed(1, ProofError::DigestMismatch)]
        );
        // Signature-Input without Signature: attributed, and failed.
        let mut no_sig = response.clone();
        no_sig.headers.retain(|(n, _)| n != "signature");
        assert_eq!(
            run(&no_sig, &body),
            vec![failed(1, ProofError::NoSignature)]
        );
        // Signature without Signature-Input: nothing to attribute it to.
        let mut no_input = response.clone();
        no_input.headers.retain(|(n, _)| n != "signature-input");
        assert!(matches!(
            run(&no_input, &body).as_slice(),
            [ProofCheck {
                keyid: None,
                result: Err(ProofError::Malformed(_))
            }]
        ));
        let mut garbled = response.clone();
        for (n, v) in &mut garbled.headers {
            if n == "signature-input" {
                *v = "(((".into();
            }
        }
        assert!(matches!(
            run(&garbled, &body).as_slice(),
            [ProofCheck { keyid: None, .. }]
        ));
        // Signatures with another tag are not directory proofs.
        for (n, v) in &mut response.headers {
            if n == "signature-input" {
                *v = v.replace(DIRECTORY_TAG, "web-bot-auth");
            }
        }
        assert_eq!(run(&response, &body), vec![]);
    }
}
