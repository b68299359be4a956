//! The `Signature-Agent` field (Web Bot Auth): where a signature's key material is published.
//!
//! Two wire forms: a Dictionary (`sig1="https://agent.example"`) and the legacy bare String
//! (`"https://agent.example"`), told apart by the first character. A value is an origin or a
//! JWK Set URL ([`crate::agent_url`]). Draft -01 says a member that carries parameters MUST be
//! ignored; the previous draft's two unambiguous forms, `type=directory` on an origin and
//! `type=jwks_uri` on a URL that is not one, name the same JWK Set and are read as such.

use std::fmt;

use sfv::{BareItem, Dictionary, Item, ListEntry, Parameters};

use crate::agent_url::AgentUrl;
use crate::component::Component;
use crate::limits::{screen_item, Exceeded, Screened, SIGNATURE_AGENT};
use crate::sf_dictionary::{parse_unique_dictionary, DictionaryError};

/// One `Signature-Agent` member whose value is a String.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMember {
    /// The dictionary member key; `None` for the legacy form.
    pub key: Option<String>,
    /// The URL as sent.
    pub url: String,
    /// What its parameters make of it.
    pub params: MemberParams,
}

/// A member's parameters, as this verifier reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberParams {
    /// None (draft -01 and the forms before it).
    None,
    /// The previous draft's `type` (`directory` or `jwks_uri`), on a value it fits: the same
    /// JWK Set as without it.
    PreviousDraft(&'static str),
    /// Any other parameters (serialized, e.g. `;type=cimd`): the member is ignored.
    Ignored(String),
}

/// How a member was written, as `wba explain` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    LegacyString,
    DictionaryOrigin,
    DictionaryJwkSetUrl,
    PreviousDraftTyped,
    IgnoredWithParameters,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Self::LegacyString => "legacy string",
            Self::DictionaryOrigin => "dictionary origin",
            Self::DictionaryJwkSetUrl => "dictionary JWK Set URL (draft -01)",
            Self::PreviousDraftTyped => "previous-draft typed member",
            Self::IgnoredWithParameters => "ignored member with parameters",
        }
    }
}

impl AgentMember {
    /// Whether verification may use it (draft -01: a member with parameters is ignored).
    pub fn is_ignored(&self) -> bool {
        matches!(self.params, MemberParams::Ignored(_))
    }

    pub fn dialect(&self) -> Dialect {
        match (&self.params, &self.key) {
            (MemberParams::Ignored(_), _) => Dialect::IgnoredWithParameters,
            (MemberParams::PreviousDraft(_), _) => Dialect::PreviousDraftTyped,
            (MemberParams::None, None) => Dialect::LegacyString,
            (MemberParams::None, Some(_)) => {
                if AgentUrl::parse(&self.url).is_ok_and(|u| !u.is_origin()) {
                    Dialect::DictionaryJwkSetUrl
                } else {
                    Dialect::DictionaryOrigin
                }
            }
        }
    }
}

/// A parsed `Signature-Agent` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureAgent {
    /// Members whose value is a String; other members are ignored.
    Dictionary(Vec<AgentMember>),
    /// The legacy form: one String.
    Legacy(AgentMember),
}

/// Why a `Signature-Agent` field is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentFieldError {
    Syntax,
    /// Past one of the bounds on members, parameters or sizes ([`crate::limits`]).
    TooLarge(Exceeded),
    /// A member key defined twice (within a line or across lines).
    DuplicateMember(String),
}

impl fmt::Display for AgentFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => write!(
                f,
                "Signature-Agent is neither a structured-field dictionary nor a string"
            ),
            Self::TooLarge(e) => write!(f, "Signature-Agent is past this verifier's bounds: {e}"),
            Self::DuplicateMember(k) => {
                write!(f, "Signature-Agent member {k:?} is defined more than once")
            }
        }
    }
}

impl std::error::Error for AgentFieldError {}

/// Parses a `Signature-Agent` field value (all lines already combined).
pub fn parse_signature_agent(value: &str) -> Result<SignatureAgent, AgentFieldError> {
    if value.trim_start().starts_with('"') {
        screen_item(value, &SIGNATURE_AGENT).map_err(|e| match e {
            Screened::Syntax => AgentFieldError::Syntax,
            Screened::Exceeded(e) => AgentFieldError::TooLarge(e),
        })?;
        let item: Item = sfv::Parser::new(value)
            .parse()
            .map_err(|_| AgentFieldError::Syntax)?;
        return match member(None, &item) {
            Some(m) => Ok(SignatureAgent::Legacy(m)),
            None => Err(AgentFieldError::Syntax),
        };
    }
    // A member defined twice is as ambiguous here as a label defined twice in Signature-Input:
    // another reader may take the other value.
    let dict: Dictionary =
        parse_unique_dictionary(value, &SIGNATURE_AGENT).map_err(|e| match e {
            DictionaryError::DuplicateKey(k) => AgentFieldError::DuplicateMember(k),
            DictionaryError::Syntax => AgentFieldError::Syntax,
            DictionaryError::TooLarge(e) => AgentFieldError::TooLarge(e),
        })?;
    Ok(SignatureAgent::Dictionary(
        dict.iter()
            .filter_map(|(k, entry)| match entry {
                ListEntry::Item(item) => member(Some(k.as_str().to_string()), item),
                ListEntry::InnerList(_) => None,
            })
            .collect(),
    ))
}

fn member(key: Option<String>, item: &Item) -> Option<AgentMember> {
    let url = match &item.bare_item {
        BareItem::String(s) => s.as_str().to_string(),
        _ => return None,
    };
    let params = read_params(&url, &item.params);
    Some(AgentMember { key, url, params })
}

fn read_params(url: &str, params: &Parameters) -> MemberParams {
    if params.is_empty() {
        return MemberParams::None;
    }
    let kind = match params.iter().next() {
        Some((k, BareItem::Token(t))) if params.len() == 1 && k.as_str() == "type" => t.as_str(),
        Some((k, BareItem::String(s))) if params.len() == 1 && k.as_str() == "type" => s.as_str(),
        _ => return ignored(params),
    };
    // A URL that is not usable at all is left to verification to report (`http://` is
    // evidence of a bad signer, whatever the type says).
    let origin = AgentUrl::parse(url).map(|u| u.is_origin()).ok();
    match (kind, origin) {
        ("directory", Some(true) | None) => MemberParams::PreviousDraft("directory"),
        // On an origin, `jwks_uri` meant a JWK Set at the origin's root, which the identity
        // model reads as the well-known directory: ambiguous, so ignored.
        ("jwks_uri", Some(false) | None) => MemberParams::PreviousDraft("jwks_uri"),
        _ => ignored(params),
    }
}

fn ignored(params: &Parameters) -> MemberParams {
    // Serialized after a placeholder value, which is then cut off.
    let item = Item::with_params(BareItem::Boolean(true), params.clone());
    let text = sfv::FieldType::serialize(&item);
    MemberParams::Ignored(text.get(2..).unwrap_or_default().to_string())
}

impl SignatureAgent {
    /// The member a covered `signature-agent` component designates for the signature `label`:
    /// `;key="m"` names a dictionary member; the plain component names the legacy string, or,
    /// over a dictionary, the member keyed by the label (the plain component covers the whole
    /// field, so it covers that member too).
    pub fn member_for(&self, component: &Component, label: &str) -> Option<&AgentMember> {
        match (self, &component.key) {
            (SignatureAgent::Dictionary(members), key) => {
                let key = key.as_deref().unwrap_or(label);
                members.iter().find(|m| m.key.as_deref() == Some(key))
            }
            (SignatureAgent::Legacy(m), None) => Some(m),
            (SignatureAgent::Legacy(_), Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn refuses_what_is_past_the_bounds() {
        use crate::limits::{MAX_AGENT_MEMBERS, MAX_STRING_BYTES};
        let members: Vec<String> = (0..1000)
            .map(|i| format!("m{i}=\"https://a{i}.example\""))
            .collect();
        assert_eq!(
            parse_signature_agent(&members.join(", ")),
            Err(AgentFieldError::TooLarge(Exceeded::Members(
                MAX_AGENT_MEMBERS
            )))
        );
        assert!(parse_signature_agent(&members[..MAX_AGENT_MEMBERS].join(", ")).is_ok());
        let long = format!("\"https://a.example/{}\"", "p".repeat(MAX_STRING_BYTES));
        assert_eq!(
            parse_signature_agent(&long),
            Err(AgentFieldError::TooLarge(Exceeded::String(
                MAX_STRING_BYTES
            )))
        );
        assert_eq!(
            parse_signature_agent(&format!("sig1={long}")),
            Err(AgentFieldError::TooLarge(Exceeded::String(
                MAX_STRING_BYTES
            )))
        );
    }

    #[test]
    fn dictionary_form() {
        let a = parse_signature_agent(
            r#"sig1="https://a.test", j="https://b.test/jwks";type=jwks_uri, x="https://c.test";type=weird, n=1"#,
        )
        .expect("parse");
        let SignatureAgent::Dictionary(m) = &a else {
            panic!("dictionary expected")
        };
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].params, MemberParams::None);
        assert_eq!(m[1].params, MemberParams::PreviousDraft("jwks_uri"));
        assert_eq!(m[2].params, MemberParams::Ignored(";type=weird".into()));
        let c = Component::parse("signature-agent;key=\"sig1\"").expect("component");
        assert_eq!(
            a.member_for(&c, "other").map(|m| m.url.as_str()),
            Some("https://a.test")
        );
        // The plain component covers the whole field: the member keyed by the label.
        let plain = Component::parse("signature-agent").expect("component");
        assert_eq!(
            a.member_for(&plain, "j").map(|m| m.url.as_str()),
            Some("https://b.test/jwks")
        );
        assert_eq!(a.member_for(&plain, "absent"), None);
    }

    fn params_of(field: &str) -> MemberParams {
        match parse_signature_agent(field).expect(field) {
            SignatureAgent::Dictionary(m) => m[0].params.clone(),
            SignatureAgent::Legacy(m) => m.params,
        }
    }

    #[test]
    fn only_the_previous_drafts_unambiguous_types_are_tolerated() {
        use MemberParams::*;
        for (field, expected) in [
            (r#"a="https://a.test""#, None),
            (r#"a="https://a.test/keys.json""#, None),
            (
                r#"a="https://a.test";type=directory"#,
                PreviousDraft("directory"),
            ),
            (
                r#"a="https://a.test/";type="directory""#,
                PreviousDraft("directory"),
            ),
            (
                r#"a="https://a.test/k.json";type=jwks_uri"#,
                PreviousDraft("jwks_uri"),
            ),
            (
                r#"a="https://a.test/k.json";type="jwks_uri""#,
                PreviousDraft("jwks_uri"),
            ),
            // Not usable URLs: verification says why.
            (
                r#"a="http://a.test";type=directory"#,
                PreviousDraft("directory"),
            ),
            (
                r#""https://a.test";type=directory"#,
                PreviousDraft("directory"),
            ),
            // Contradictions, removed types, unknown or extra parameters: ignored.
            (
                r#"a="https://a.test/k.json";type=directory"#,
                Ignored(";type=directory".into()),
            ),
            (
                r#"a="https://a.test";type=jwks_uri"#,
                Ignored(";type=jwks_uri".into()),
            ),
            (
                r#"a="https://a.test";type=cimd"#,
                Ignored(";type=cimd".into()),
            ),
            (
                r#"a="https://a.test";type=directory;v=1"#,
                Ignored(";type=directory;v=1".into()),
            ),
            (r#"a="https://a.test";x"#, Ignored(";x".into())),
            (r#"a="https://a.test";type=1"#, Ignored(";type=1".into())),
            (
                r#""https://a.test/k";note="hi""#,
                Ignored(";note=\"hi\"".into()),
            ),
        ] {
            assert_eq!(params_of(field), expected, "{field}");
        }
    }

    #[test]
    fn dialects() {
        let d = |f: &str| match parse_signature_agent(f).expect(f) {
            SignatureAgent::Dictionary(m) => m[0].dialect(),
            SignatureAgent::Legacy(m) => m.dialect(),
        };
        assert_eq!(d(r#""https://chatgpt.com""#), Dialect::LegacyString);
        assert_eq!(
            d(r#"g="https://agent.bot.goog""#),
            Dialect::DictionaryOrigin
        );
        assert_eq!(
            d(r#"sig1="https://signature-agent.test/jwks.json""#),
            Dialect::DictionaryJwkSetUrl
        );
        assert_eq!(
            d(r#"s="https://a.test/.well-known/http-message-signatures-directory""#),
            Dialect::DictionaryJwkSetUrl
        );
        assert_eq!(
            d(r#"s="https://a.test/k";type=jwks_uri"#),
            Dialect::PreviousDraftTyped
        );
        assert_eq!(
            d(r#"s="https://a.test";type=cimd"#),
            Dialect::IgnoredWithParameters
        );
    }

    #[test]
    fn legacy_form() {
        let a = parse_signature_agent(" \"https://a.test\"").expect("parse");
        let plain = Component::parse("signature-agent").expect("component");
        assert_eq!(
            a.member_for(&plain, "sig1").map(|m| m.url.as_str()),
            Some("https://a.test")
        );
        let keyed = Component::parse("signature-agent;key=\"sig1\"").expect("component");
        assert_eq!(a.member_for(&keyed, "sig1"), None);
    }

    #[test]
    fn malformed() {
        assert_eq!(
            parse_signature_agent("\"unterminated"),
            Err(AgentFieldError::Syntax)
        );
        assert_eq!(
            parse_signature_agent("a=\"x\" junk"),
            Err(AgentFieldError::Syntax)
        );
        assert_eq!(
            parse_signature_agent("https://a.test"),
            Err(AgentFieldError::Syntax)
        );
        assert_eq!(
            parse_signature_agent(r#"sig1="https://a.test", sig1="https://evil.test""#),
            Err(AgentFieldError::DuplicateMember("sig1".into()))
        );
    }
}
