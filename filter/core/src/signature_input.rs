//! The `Signature-Input` field (RFC 9421 section 4.1): labels, covered components, parameters.

use std::fmt;

use sfv::{BareItem, InnerList, ListEntry, ListSerializer};

use crate::component::{Component, ComponentError};
use crate::limits::Exceeded;
use crate::sf_dictionary::{DictionaryError, Labeled};

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
    /// Past one of the bounds on labels, components, parameters or sizes
    /// ([`crate::limits`]).
    TooLarge(Exceeded),
    /// A label defined twice (RFC 9421 section 4), within a line or across lines.
    DuplicateLabel(String),
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
            Self::TooLarge(e) => write!(f, "Signature-Input is past this verifier's bounds: {e}"),
            Self::DuplicateLabel(l) => {
                write!(f, "Signature-Input defines label {l:?} more than once")
            }
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

/// A `Signature-Input` field read as a Dictionary with unique labels, its members not yet
/// interpreted: a verifier interprets only the members it selects, so that a problem inside
/// another profile's signature does not spoil its own.
#[derive(Debug, Clone, PartialEq)]
pub struct InputField(Labeled);

impl std::ops::Deref for InputField {
    type Target = Labeled;
    fn deref(&self) -> &Labeled {
        &self.0
    }
}

/// Reads a `Signature-Input` field value (all lines already combined): dictionary syntax and
/// label uniqueness only.
pub fn parse_input_field(value: &str) -> Result<InputField, InputError> {
    Labeled::parse(value).map(InputField).map_err(|e| match e {
        DictionaryError::Syntax => InputError::Syntax,
        DictionaryError::DuplicateKey(l) => InputError::DuplicateLabel(l),
        DictionaryError::TooLarge(e) => InputError::TooLarge(e),
    })
}

/// Parses a `Signature-Input` field value (all lines already combined), every member.
pub fn parse_signature_input(value: &str) -> Result<Vec<SignatureInput>, InputError> {
    parse_input_field(value)?.parse_all()
}

impl InputField {
    /// Every member, parsed; the first problem in any member is the field's.
    pub fn parse_all(&self) -> Result<Vec<SignatureInput>, InputError> {
        self.entries()
            .map(|(label, entry)| SignatureInput::from_entry(label, entry))
            .collect()
    }

    /// The members whose `tag` parameter names `tag`, each parsed on its own: other members
    /// are not looked into.
    pub fn tagged<'a>(
        &'a self,
        tag: &'a str,
    ) -> impl Iterator<Item = (&'a str, Result<SignatureInput, InputError>)> + 'a {
        self.entries()
            .filter(move |(_, entry)| entry_tag(entry) == Some(tag))
            .map(|(label, entry)| (label, SignatureInput::from_entry(label, entry)))
    }
}

/// The `tag` a member claims, read leniently (a Token too, and on a member that is not an inner
/// list) so that a botched Web Bot Auth signature is reported as such, not skipped as another
/// profile's. [`SignatureInput::from_entry`] then refuses what is not well-formed.
fn entry_tag(entry: &ListEntry) -> Option<&str> {
    let params = match entry {
        ListEntry::InnerList(inner) => &inner.params,
        ListEntry::Item(item) => &item.params,
    };
    match params.get("tag")? {
        BareItem::String(s) => Some(s.as_str()),
        BareItem::Token(t) => Some(t.as_str()),
        _ => None,
    }
}

impl SignatureInput {
    /// Builds the parsed form of one `Signature-Input` member, which must be an inner list.
    pub fn from_entry(label: &str, entry: &ListEntry) -> Result<Self, InputError> {
        match entry {
            ListEntry::InnerList(inner) => Self::from_inner_list(label, inner),
            ListEntry::Item(_) => Err(InputError::NotInnerList(label.to_string())),
        }
    }

    /// Builds the parsed form of one `Signature-Input` member.
    pub fn from_inner_list(label: &str, inner: &InnerList) -> Result<Self, InputError> {
        let mut components: Vec<Component> = Vec::with_capacity(inner.items.len());
        // RFC 9421 section 3.2: a component may be covered only once, however its identifier is
        // spelled (each spelling would put its value in the base again). Found by hashing, in
        // linear time.
        let mut seen = std::collections::HashSet::with_capacity(inner.items.len());
        for item in &inner.items {
            let c = Component::from_item(item).map_err(|error| InputError::Component {
                label: label.to_string(),
                error,
            })?;
            if !seen.insert(c.identity()) {
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
        // The same component under another spelling is the same component.
        for twice in [
            "s=(\"x\";sf;req \"x\";req;sf)",
            "s=(\"@query-param\";name=\"a\" \"@query-param\";name=\"%61\")",
        ] {
            assert!(
                matches!(
                    parse_signature_input(twice),
                    Err(InputError::DuplicateComponent { .. })
                ),
                "{twice}"
            );
        }
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

    #[test]
    fn refuses_what_is_past_the_bounds_before_parsing_it() {
        use crate::limits::{MAX_COMPONENTS, MAX_LABELS};
        let covering = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("\"h{i}\"")).collect();
            format!("sig1=({});tag=\"web-bot-auth\"", names.join(" "))
        };
        let at_bound = parse_signature_input(&covering(MAX_COMPONENTS)).expect("64 components");
        assert_eq!(at_bound[0].components.len(), MAX_COMPONENTS);
        // The issue's request: 8,000 distinct names, refused as a field (not one label's).
        assert_eq!(
            parse_input_field(&covering(8000)),
            Err(InputError::TooLarge(Exceeded::InnerItems(MAX_COMPONENTS)))
        );
        let labels: Vec<String> = (0..=MAX_LABELS)
            .map(|i| format!("l{i}=(\"@method\")"))
            .collect();
        let e = parse_input_field(&labels.join(", ")).expect_err("65 labels");
        assert_eq!(e, InputError::TooLarge(Exceeded::Members(MAX_LABELS)));
        assert!(e.to_string().contains("more than 64 members"), "{e}");
    }

    #[test]
    fn refuses_a_label_defined_twice() {
        let a = r#"a=("@method");tag="web-bot-auth""#;
        let b = r#"b=("@path")"#;
        // Within one line.
        assert_eq!(
            parse_input_field(&format!("{a}, {b}, {a}")),
            Err(InputError::DuplicateLabel("a".into()))
        );
        // Across two lines, combined with ", " as RFC 9110 section 5.3 does.
        assert_eq!(
            parse_signature_input(&[a, b, a].join(", ")),
            Err(InputError::DuplicateLabel("a".into()))
        );
        // Even when the repeated label is not a Web Bot Auth signature.
        assert_eq!(
            parse_input_field(&format!("{a}, {b}, {b}")),
            Err(InputError::DuplicateLabel("b".into()))
        );
        assert!(InputError::DuplicateLabel("a".into())
            .to_string()
            .contains("more than once"));
    }

    #[test]
    fn only_selected_members_are_interpreted() {
        let v = [
            r#"other=("@method" "x";unknown);tag="other-profile";created="not an int""#,
            r#"item="not a list";tag="other""#,
            r#"untagged=("@Method")"#,
            r#"wba=("@authority" "signature-agent";key="wba");created=1;keyid="k";tag="web-bot-auth""#,
        ]
        .join(", ");
        let field = parse_input_field(&v).expect("field");
        assert_eq!(
            field.labels().collect::<Vec<_>>(),
            ["other", "item", "untagged", "wba"]
        );
        assert!(field.contains("item") && !field.contains("nope"));
        let selected: Vec<_> = field.tagged(WEB_BOT_AUTH_TAG).collect();
        assert_eq!(selected.len(), 1);
        let (label, input) = &selected[0];
        assert_eq!(*label, "wba");
        assert!(input.as_ref().expect("wba parses").is_web_bot_auth());
        // The strict form still refuses the whole field.
        assert!(parse_signature_input(&v).is_err());
    }

    #[test]
    fn a_problem_in_a_selected_member_is_that_members() {
        let v = [
            r#"good=("@authority");tag="web-bot-auth""#,
            r#"badparam=("@authority" "x";unknown);tag="web-bot-auth""#,
            r#"item="x";tag="web-bot-auth""#,
            r#"token=("@authority");tag=web-bot-auth"#,
        ]
        .join(", ");
        let field = parse_input_field(&v).expect("field");
        let selected: Vec<_> = field.tagged(WEB_BOT_AUTH_TAG).collect();
        let labels: Vec<_> = selected.iter().map(|(l, _)| *l).collect();
        assert_eq!(labels, ["good", "badparam", "item", "token"]);
        assert!(selected[0].1.is_ok());
        assert!(matches!(
            &selected[1].1,
            Err(InputError::Component {
                error: ComponentError::UnknownParameter(_),
                ..
            })
        ));
        assert_eq!(selected[2].1, Err(InputError::NotInnerList("item".into())));
        // A tag sent as a Token is read as a botched Web Bot Auth signature, not skipped.
        assert_eq!(
            selected[3].1,
            Err(InputError::ParameterType {
                label: "token".into(),
                parameter: "tag"
            })
        );
    }
}
