//! The `Signature-Input` field (RFC 9421 section 4.1): labels, covered components, parameters.

use std::fmt;

use sfv::{BareItem, Dictionary, InnerList, ListEntry, ListSerializer};

use crate::component::{Component, ComponentError};

/// The tag that marks a Web Bot Auth signature.
pub const WEB_BOT_AUTH_TAG: &str = "web-bot-auth";

/// One signature's metadata, as parsed from a `Signature-Input` member.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureInput {
    pub label: String,
    pub components: Vec<Component>,
    pub params: SignatureParams,
    /// The member re-serialized per RFC 9651: the value of `@signature-params`.
    pub serialized: String,
    /// The covered components alone, serialized as an inner list without parameters.
    pub covered: String,
}

/// The signature parameters of RFC 9421 section 2.3. Unknown parameters are kept only in
/// [`SignatureInput::serialized`]: they are signed but carry no meaning here.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignatureParams {
    pub created: Option<i64>,
    pub expires: Option<i64>,
    pub keyid: Option<String>,
    pub alg: Option<String>,
    pub nonce: Option<String>,
    pub tag: Option<String>,
}

/// Why a `Signature-Input` field is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Not an RFC 9651 Dictionary.
    Syntax,
    /// A member is not an inner list.
    NotInnerList(String),
    Component {
        label: String,
        error: ComponentError,
    },
    DuplicateComponent {
        label: String,
        component: String,
    },
    ParameterType {
        label: String,
        parameter: &'static str,
    },
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => write!(f, "Signature-Input is not a structured-field dictionary"),
            Self::NotInnerList(l) => write!(f, "Signature-Input member {l:?} is not an inner list"),
            Self::Component { label, error } => write!(f, "Signature-Input {label:?}: {error}"),
            Self::DuplicateComponent { label, component } => {
                write!(f, "Signature-Input {label:?} covers {component} twice")
            }
            Self::ParameterType { label, parameter } => {
                write!(
                    f,
                    "Signature-Input {label:?}: parameter {parameter:?} has the wrong type"
                )
            }
        }
    }
}

impl std::error::Error for InputError {}

/// Parses a `Signature-Input` field value (all lines already combined).
pub fn parse_signature_input(value: &str) -> Result<Vec<SignatureInput>, InputError> {
    let dict: Dictionary = sfv::Parser::new(value)
        .parse()
        .map_err(|_| InputError::Syntax)?;
    dict.iter()
        .map(|(label, entry)| match entry {
            ListEntry::InnerList(inner) => SignatureInput::from_inner_list(label.as_str(), inner),
            ListEntry::Item(_) => Err(InputError::NotInnerList(label.as_str().to_string())),
        })
        .collect()
}

impl SignatureInput {
    /// Builds the parsed form of one `Signature-Input` member.
    pub fn from_inner_list(label: &str, inner: &InnerList) -> Result<Self, InputError> {
        let mut components: Vec<Component> = Vec::with_capacity(inner.items.len());
        for item in &inner.items {
            let c = Component::from_item(item).map_err(|error| InputError::Component {
                label: label.to_string(),
                error,
            })?;
            // RFC 9421 section 3.2: a component may be covered only once.
            if components.iter().any(|p| p.serialized == c.serialized) {
                return Err(InputError::DuplicateComponent {
                    label: label.to_string(),
                    component: c.serialized,
                });
            }
            components.push(c);
        }
        let mut params = SignatureParams::default();
        let bad = |parameter| InputError::ParameterType {
            label: label.to_string(),
            parameter,
        };
        for (k, v) in &inner.params {
            match k.as_str() {
                "created" => params.created = Some(int(v).ok_or_else(|| bad("created"))?),
                "expires" => params.expires = Some(int(v).ok_or_else(|| bad("expires"))?),
                "keyid" => params.keyid = Some(string(v).ok_or_else(|| bad("keyid"))?),
                "alg" => params.alg = Some(string(v).ok_or_else(|| bad("alg"))?),
                "nonce" => params.nonce = Some(string(v).ok_or_else(|| bad("nonce"))?),
                "tag" => params.tag = Some(string(v).ok_or_else(|| bad("tag"))?),
                _ => {}
            }
        }
        let mut ser = ListSerializer::new();
        {
            let mut il = ser.inner_list();
            il.items(&inner.items);
            let _ = il.finish().parameters(&inner.params);
        }
        let serialized = ser.finish().unwrap_or_default();
        let mut ser = ListSerializer::new();
        {
            let mut il = ser.inner_list();
            il.items(&inner.items);
        }
        let covered = ser.finish().unwrap_or_default();
        Ok(SignatureInput {
            label: label.to_string(),
            components,
            params,
            serialized,
            covered,
        })
    }

    /// Whether this signature is tagged for the Web Bot Auth profile.
    pub fn is_web_bot_auth(&self) -> bool {
        self.params.tag.as_deref() == Some(WEB_BOT_AUTH_TAG)
    }

    /// Whether the signature covers the component serialized as `serialized`.
    pub fn covers(&self, serialized: &str) -> bool {
        self.components.iter().any(|c| c.serialized == serialized)
    }
}

fn int(v: &BareItem) -> Option<i64> {
    v.as_integer().map(i64::from)
}

fn string(v: &BareItem) -> Option<String> {
    v.as_string().map(|s| s.as_str().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_several_labels() {
        let v = r#"sig1=("@authority" "signature-agent";key="sig1");created=1;expires=2;keyid="k";tag="web-bot-auth", other=("@method");tag="x""#;
        let inputs = parse_signature_input(v).expect("parse");
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].label, "sig1");
        assert!(inputs[0].is_web_bot_auth());
        assert!(!inputs[1].is_web_bot_auth());
        assert_eq!(inputs[0].params.created, Some(1));
        assert_eq!(
            inputs[0].covered,
            r#"("@authority" "signature-agent";key="sig1")"#
        );
        assert_eq!(
            inputs[0].serialized,
            r#"("@authority" "signature-agent";key="sig1");created=1;expires=2;keyid="k";tag="web-bot-auth""#
        );
    }

    #[test]
    fn reserializes_rather_than_copying() {
        let v = "s=( \"@method\"   \"@path\" );created=1;keyid=\"k\"";
        let inputs = parse_signature_input(v).expect("parse");
        assert_eq!(
            inputs[0].serialized,
            "(\"@method\" \"@path\");created=1;keyid=\"k\""
        );
    }

    #[test]
    fn refuses_malformed() {
        assert_eq!(
            parse_signature_input("sig1=(\"@method\""),
            Err(InputError::Syntax)
        );
        assert!(matches!(
            parse_signature_input("sig1=\"@method\""),
            Err(InputError::NotInnerList(_))
        ));
        assert!(matches!(
            parse_signature_input("s=(\"@method\" \"@method\")"),
            Err(InputError::DuplicateComponent { .. })
        ));
        assert!(matches!(
            parse_signature_input("s=(\"@method\");created=\"x\""),
            Err(InputError::ParameterType {
                parameter: "created",
                ..
            })
        ));
        assert!(matches!(
            parse_signature_input("s=(\"@Method\")"),
            Err(InputError::Component { .. })
        ));
    }
}
