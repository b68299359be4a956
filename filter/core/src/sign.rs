//! Signing: the mirror of verification, for agents (the `keys` tool) and for tests, with any
//! of the three algorithms ([`SignatureKey`]).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sfv::{BareItem, InnerList, Item, Key as SfKey, Parameters};

use crate::algorithm::Algorithm;
use crate::base::{signature_base, Message};
use crate::component::{Component, ComponentError};
use crate::jwk::Jwk;
use crate::request::{HttpRequest, HttpResponse};
use crate::signature_input::{SignatureInput, WEB_BOT_AUTH_TAG};

/// How a request is to be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignOptions {
    pub label: String,
    /// The agent URL published in `Signature-Agent`; `None` signs without one (plain RFC 9421).
    pub agent_url: Option<String>,
    /// Send `Signature-Agent` as the legacy bare string instead of a dictionary.
    pub legacy_agent: bool,
    /// Covered components in order, e.g. `@authority`, `"@query-param";name="q"`. The
    /// `signature-agent` component is added when an agent URL is given and it is missing.
    pub components: Vec<String>,
    pub created: i64,
    pub expires: i64,
    pub nonce: Option<String>,
    /// Defaults to the key's thumbprint.
    pub keyid: Option<String>,
    /// `alg` parameter: `None` names the key's algorithm, unless `omit_alg`.
    pub alg: Option<String>,
    /// Leave the `alg` parameter out (it is optional: the key determines the algorithm).
    pub omit_alg: bool,
    pub tag: Option<String>,
}

impl SignOptions {
    /// Web Bot Auth defaults: label `sig1`, covering `@authority`, `@method`, `@path` and the
    /// agent's member, tag `web-bot-auth`, valid for `validity` seconds from `created`.
    pub fn web_bot_auth(agent_url: &str, created: i64, validity: i64) -> Self {
        SignOptions {
            label: "sig1".into(),
            agent_url: Some(agent_url.to_string()),
            legacy_agent: false,
            components: vec!["@authority".into(), "@method".into(), "@path".into()],
            created,
            expires: created.saturating_add(validity),
            nonce: None,
            keyid: None,
            alg: None,
            omit_alg: false,
            tag: Some(WEB_BOT_AUTH_TAG.into()),
        }
    }
}

/// The headers a signer adds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub signature_agent: Option<String>,
    pub signature_input: String,
    pub signature: String,
    /// The base that was signed (for debugging).
    pub base: String,
}

impl SignedHeaders {
    /// The headers as (name, value) pairs, in the order they are sent.
    pub fn pairs(&self) -> Vec<(String, String)> {
        let mut v = Vec::with_capacity(3);
        if let Some(a) = &self.signature_agent {
            v.push(("signature-agent".to_string(), a.clone()));
        }
        v.push(("signature-input".to_string(), self.signature_input.clone()));
        v.push(("signature".to_string(), self.signature.clone()));
        v
    }
}

/// Why a request cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    Component(ComponentError),
    BadLabel(String),
    BadValue(&'static str),
    Base(String),
    /// The key could not sign (say, no random number generator for RSA-PSS salts).
    Key(String),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Component(e) => write!(f, "{e}"),
            Self::BadLabel(l) => write!(
                f,
                "{l:?} is not a valid label (lowercase letters, digits, _-.*)"
            ),
            Self::BadValue(what) => write!(f, "{what} cannot be sent in a structured field"),
            Self::Base(e) => write!(f, "cannot build the signature base: {e}"),
            Self::Key(e) => write!(f, "cannot sign: {e}"),
        }
    }
}

impl std::error::Error for SignError {}

/// A private key that signs: its algorithm, its public JWK and its signature of a message.
pub trait SignatureKey {
    fn algorithm(&self) -> Algorithm;
    /// The public half as a JWK (no `kid`); its thumbprint is the default `keyid`.
    fn public_jwk(&self) -> Jwk;
    /// The signature bytes as RFC 9421 section 3.3 encodes them for the algorithm.
    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

impl SignatureKey for ed25519_dalek::SigningKey {
    fn algorithm(&self) -> Algorithm {
        Algorithm::Ed25519
    }

    fn public_jwk(&self) -> Jwk {
        Jwk::from_ed25519(self.verifying_key().as_bytes())
    }

    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        use ed25519_dalek::Signer as _;
        Ok(self.sign(message).to_bytes().to_vec())
    }
}

/// Deterministic ECDSA (RFC 6979): no random number generator needed. The signature is the
/// fixed-size `r || s` (64 bytes), as section 3.3.4 requires, not DER.
#[cfg(feature = "ecdsa")]
impl SignatureKey for p256::ecdsa::SigningKey {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EcdsaP256Sha256
    }

    fn public_jwk(&self) -> Jwk {
        Jwk::from_p256(self.verifying_key())
    }

    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        use p256::ecdsa::signature::Signer as _;
        let signature: p256::ecdsa::Signature = self.sign(message);
        Ok(signature.to_bytes().to_vec())
    }
}

/// RSASSA-PSS with SHA-512, MGF1-SHA-512 and a random 64-byte salt (section 3.3.1), with
/// RSA blinding. Native builds only: the salt comes from the operating system.
#[cfg(all(feature = "rsa", not(target_arch = "wasm32")))]
impl SignatureKey for rsa::RsaPrivateKey {
    fn algorithm(&self) -> Algorithm {
        Algorithm::RsaPssSha512
    }

    fn public_jwk(&self) -> Jwk {
        Jwk::from_rsa(&self.to_public_key())
    }

    fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _};
        let key = rsa::pss::BlindedSigningKey::<sha2::Sha512>::new_with_salt_len(
            self.clone(),
            crate::rsa_pss::SALT_LEN,
        );
        key.try_sign_with_rng(&mut rand_core::OsRng, message)
            .map(|s| s.to_vec())
            .map_err(|e| SignError::Key(e.to_string()))
    }
}

/// Signs `req` with `key`, returning the headers to add. `req` is not modified; the
/// `Signature-Agent` header it will carry is included in the base.
pub fn sign_request<K: SignatureKey + ?Sized>(
    req: &HttpRequest,
    key: &K,
    opts: &SignOptions,
) -> Result<SignedHeaders, SignError> {
    let mut req = req.clone();
    let agent_header = match &opts.agent_url {
        None => None,
        Some(url) => {
            let s = sfv::String::from_string(url.clone())
                .map_err(|_| SignError::BadValue("the agent URL"))?;
            let item = Item::new(s);
            let value = if opts.legacy_agent {
                sfv::FieldType::serialize(&item)
            } else {
                let mut dict = sfv::Dictionary::new();
                dict.insert(label_key(&opts.label)?, item.into());
                sfv::FieldType::serialize(&dict).unwrap_or_default()
            };
            req.remove_header("signature-agent");
            req.add_header("signature-agent", &value);
            Some(value)
        }
    };
    let mut components = opts.components.clone();
    if opts.agent_url.is_some()
        && !components
            .iter()
            .any(|c| c.trim_matches('"').starts_with("signature-agent"))
    {
        components.push(if opts.legacy_agent {
            "signature-agent".to_string()
        } else {
            format!("signature-agent;key=\"{}\"", opts.label)
        });
    }
    let keyid = match &opts.keyid {
        Some(k) => k.clone(),
        None => key
            .public_jwk()
            .thumbprint()
            .map(String::from)
            .map_err(|e| SignError::Base(e.to_string()))?,
    };
    let mut params = Parameters::new();
    let put = |params: &mut Parameters, k: &str, v: BareItem| {
        if let Ok(k) = SfKey::from_string(k.to_string()) {
            params.insert(k, v);
        }
    };
    let string = |v: &str, what| -> Result<BareItem, SignError> {
        Ok(BareItem::String(
            sfv::String::from_string(v.to_string()).map_err(|_| SignError::BadValue(what))?,
        ))
    };
    put(
        &mut params,
        "created",
        BareItem::Integer(int(opts.created)?),
    );
    put(
        &mut params,
        "expires",
        BareItem::Integer(int(opts.expires)?),
    );
    put(&mut params, "keyid", string(&keyid, "the keyid")?);
    let alg = match &opts.alg {
        Some(alg) => Some(alg.as_str()),
        None if opts.omit_alg => None,
        None => Some(key.algorithm().name()),
    };
    if let Some(alg) = alg {
        put(&mut params, "alg", string(alg, "the alg")?);
    }
    if let Some(nonce) = &opts.nonce {
        put(&mut params, "nonce", string(nonce, "the nonce")?);
    }
    if let Some(tag) = &opts.tag {
        put(&mut params, "tag", string(tag, "the tag")?);
    }
    let input = build_input(&opts.label, &components, params)?;
    let base = signature_base(Message::Request(&req), &input)
        .map_err(|e| SignError::Base(e.to_string()))?;
    finish(&input, key, base, agent_header)
}

/// Signs a response (e.g. a key directory's possession proof), covering request components
/// through `;req`.
pub fn sign_response<K: SignatureKey + ?Sized>(
    request: &HttpRequest,
    response: &HttpResponse,
    key: &K,
    label: &str,
    components: &[String],
    params: Parameters,
) -> Result<SignedHeaders, SignError> {
    let input = build_input(label, components, params)?;
    let base = signature_base(Message::Response { request, response }, &input)
        .map_err(|e| SignError::Base(e.to_string()))?;
    finish(&input, key, base, None)
}

fn finish<K: SignatureKey + ?Sized>(
    input: &SignatureInput,
    key: &K,
    base: String,
    signature_agent: Option<String>,
) -> Result<SignedHeaders, SignError> {
    let sig = key.sign_message(base.as_bytes())?;
    Ok(SignedHeaders {
        signature_agent,
        signature_input: format!("{}={}", input.label, input.serialized),
        signature: format!("{}=:{}:", input.label, STANDARD.encode(sig)),
        base,
    })
}

fn build_input(
    label: &str,
    components: &[String],
    params: Parameters,
) -> Result<SignatureInput, SignError> {
    let mut items = Vec::with_capacity(components.len());
    for c in components {
        let parsed = Component::parse(c).map_err(SignError::Component)?;
        let item: Item = sfv::Parser::new(&parsed.serialized)
            .parse()
            .map_err(|_| SignError::Component(ComponentError::Unparsable(c.clone())))?;
        items.push(item);
    }
    label_key(label)?;
    SignatureInput::from_inner_list(label, &InnerList::with_params(items, params))
        .map_err(|e| SignError::Base(e.to_string()))
}

fn label_key(label: &str) -> Result<SfKey, SignError> {
    SfKey::from_string(label.to_string()).map_err(|_| SignError::BadLabel(label.to_string()))
}

fn int(v: i64) -> Result<sfv::Integer, SignError> {
    sfv::Integer::try_from(v).map_err(|_| SignError::BadValue("the timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn refuses_bad_options() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let req = HttpRequest::from_parts("GET", "https", "a.test", "/", vec![]);
        let mut o = SignOptions::web_bot_auth("https://agent.test", 1, 60);
        o.label = "Bad Label".into();
        assert!(matches!(
            sign_request(&req, &key, &o),
            Err(SignError::BadLabel(_))
        ));
        let mut o = SignOptions::web_bot_auth("https://agent.test", 1, 60);
        o.components.push("@nope".into());
        assert!(matches!(
            sign_request(&req, &key, &o),
            Err(SignError::Component(_))
        ));
        let mut o = SignOptions::web_bot_auth("https://agent.test", 1, 60);
        o.components.push("x-missing".into());
        assert!(matches!(
            sign_request(&req, &key, &o),
            Err(SignError::Base(_))
        ));
        let o = SignOptions::web_bot_auth("https://agent.test\u{7f}", 1, 60);
        assert!(matches!(
            sign_request(&req, &key, &o),
            Err(SignError::BadValue(_))
        ));
    }

    #[test]
    fn dictionary_and_legacy_agent() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let req = HttpRequest::from_parts("GET", "https", "a.test", "/", vec![]);
        let o = SignOptions::web_bot_auth("https://agent.test", 1, 60);
        let h = sign_request(&req, &key, &o).expect("sign");
        assert_eq!(
            h.signature_agent.as_deref(),
            Some("sig1=\"https://agent.test\"")
        );
        assert!(h.signature_input.starts_with(
            "sig1=(\"@authority\" \"@method\" \"@path\" \"signature-agent\";key=\"sig1\");created=1;expires=61;keyid=\""
        ));
        assert!(h
            .signature_input
            .ends_with(";alg=\"ed25519\";tag=\"web-bot-auth\""));
        let mut o = o;
        o.legacy_agent = true;
        let h = sign_request(&req, &key, &o).expect("sign");
        assert_eq!(h.signature_agent.as_deref(), Some("\"https://agent.test\""));
        assert!(h
            .signature_input
            .contains("\"@path\" \"signature-agent\");"));
    }
}
