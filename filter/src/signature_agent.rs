//! The `Signature-Agent` field (Web Bot Auth): where a signature's key material is published.
//!
//! Two wire forms: a Dictionary (`sig1="https://agent.example"`) and the legacy bare String
//! (`"https://agent.example"`), told apart by the first character.

use std::fmt;

use sfv::{BareItem, Dictionary, Item, ListEntry};

use crate::agent_url::AgentType;
use crate::component::Component;

/// One usable `Signature-Agent` member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMember {
    /// The dictionary member key; `None` for the legacy form.
    pub key: Option<String>,
    /// The URL as sent.
    pub url: String,
    /// The declared type; `None` when the type is one this verifier does not know.
    pub kind: Option<AgentType>,
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
        crate::sf_dictionary::parse_unique_dictionary(value).map_err(|e| match e {
            crate::sf_dictionary::DictionaryError::DuplicateKey(k) => {
                AgentFieldError::DuplicateMember(k)
            }
            crate::sf_dictionary::DictionaryError::Syntax => AgentFieldError::Syntax,
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
    let kind = match item.params.get("type") {
        None => Some(AgentType::Directory),
        Some(BareItem::Token(t)) => AgentType::from_name(t.as_str()),
        Some(BareItem::String(s)) => AgentType::from_name(s.as_str()),
        Some(_) => None,
    };
    Some(AgentMember { key, url, kind })
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
    fn dictionary_form() {
        let a = parse_signature_agent(
            r#"sig1="https://a.test", j="https://b.test/jwks";type=jwks_uri, x="https://c.test";type=weird, n=1"#,
        )
        .expect("parse");
        let SignatureAgent::Dictionary(m) = &a else {
            panic!("dictionary expected")
        };
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].kind, Some(AgentType::Directory));
        assert_eq!(m[1].kind, Some(AgentType::JwksUri));
        assert_eq!(m[2].kind, None);
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
