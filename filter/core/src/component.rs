//! Component identifiers (RFC 9421 section 2): what a signature covers.

use std::fmt;

use sfv::{BareItem, FieldType, Item};

/// A derived component (RFC 9421 section 2.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Derived {
    Method,
    TargetUri,
    Authority,
    Scheme,
    RequestTarget,
    Path,
    Query,
    /// `@query-param;name="..."`, holding the (encoded) parameter name.
    QueryParam(String),
    /// Response-only; an error on requests.
    Status,
}

/// What a component identifier names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ComponentName {
    Derived(Derived),
    /// An HTTP field, by lowercase name.
    Field(String),
}

/// A parsed component identifier with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: ComponentName,
    /// `sf`: re-serialize the field as a structured field.
    pub sf: bool,
    /// `key="k"`: one member of a Dictionary field.
    pub key: Option<String>,
    /// `bs`: wrap each field line as a Byte Sequence.
    pub bs: bool,
    /// `req`: take the component from the request (response signatures only).
    pub req: bool,
    /// `tr`: the trailer field.
    pub tr: bool,
    /// The identifier as serialized (RFC 9651), the left side of its signature base line.
    pub serialized: String,
}

/// What a component reads ([`Component::identity`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ComponentIdentity {
    name: ComponentName,
    sf: bool,
    key: Option<String>,
    bs: bool,
    req: bool,
    tr: bool,
}

/// Why a component identifier cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentError {
    NotAString,
    EmptyName,
    UppercaseName(String),
    UnknownDerived(String),
    UnknownParameter(String),
    BadParameterValue(String),
    MissingName,
    ParameterNotAllowed {
        component: String,
        parameter: &'static str,
    },
    SfWithBs(String),
    Unparsable(String),
    /// A flag parameter (`sf`, `bs`, `req`, `tr`) given as `?0`: RFC 9421 defines each as present
    /// or absent, and `?0` would be one more spelling of the same component.
    FalseFlag(String),
}

impl fmt::Display for ComponentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAString => write!(f, "a component identifier must be a string"),
            Self::EmptyName => write!(f, "a component identifier must not be empty"),
            Self::UppercaseName(n) => write!(f, "component name {n:?} must be lowercase"),
            Self::UnknownDerived(n) => write!(f, "unknown derived component {n:?}"),
            Self::UnknownParameter(p) => write!(f, "unknown component parameter {p:?}"),
            Self::BadParameterValue(p) => write!(f, "component parameter {p:?} has the wrong type"),
            Self::MissingName => write!(f, "\"@query-param\" needs a name parameter"),
            Self::ParameterNotAllowed {
                component,
                parameter,
            } => write!(f, "parameter {parameter:?} is not allowed on {component}"),
            Self::SfWithBs(n) => write!(f, "{n}: \"sf\" and \"bs\" cannot be combined"),
            Self::Unparsable(s) => write!(f, "not a component identifier: {s:?}"),
            Self::FalseFlag(p) => write!(
                f,
                "component parameter {p:?} is a flag: present or absent, never ?0"
            ),
        }
    }
}

impl std::error::Error for ComponentError {}

impl Component {
    /// Parses one member of a `Signature-Input` inner list.
    pub fn from_item(item: &Item) -> Result<Self, ComponentError> {
        let raw = match &item.bare_item {
            BareItem::String(s) => s.as_str(),
            _ => return Err(ComponentError::NotAString),
        };
        if raw.is_empty() {
            return Err(ComponentError::EmptyName);
        }
        if raw.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ComponentError::UppercaseName(raw.to_string()));
        }
        let mut c = Component {
            name: ComponentName::Field(String::new()),
            sf: false,
            key: None,
            bs: false,
            req: false,
            tr: false,
            serialized: item.serialize(),
        };
        let mut qname = None;
        for (k, v) in &item.params {
            let flag = || match v {
                BareItem::Boolean(true) => Ok(true),
                BareItem::Boolean(false) => Err(ComponentError::FalseFlag(k.as_str().to_string())),
                _ => Err(ComponentError::BadParameterValue(k.as_str().to_string())),
            };
            match k.as_str() {
                "sf" => c.sf = flag()?,
                "bs" => c.bs = flag()?,
                "req" => c.req = flag()?,
                "tr" => c.tr = flag()?,
                "key" => match v {
                    BareItem::String(s) => c.key = Some(s.as_str().to_string()),
                    _ => return Err(ComponentError::BadParameterValue("key".into())),
                },
                "name" => match v {
                    BareItem::String(s) => qname = Some(s.as_str().to_string()),
                    _ => return Err(ComponentError::BadParameterValue("name".into())),
                },
                other => return Err(ComponentError::UnknownParameter(other.to_string())),
            }
        }
        if let Some(dname) = raw.strip_prefix('@') {
            let derived = match dname {
                "method" => Derived::Method,
                "target-uri" => Derived::TargetUri,
                "authority" => Derived::Authority,
                "scheme" => Derived::Scheme,
                "request-target" => Derived::RequestTarget,
                "path" => Derived::Path,
                "query" => Derived::Query,
                "status" => Derived::Status,
                "query-param" => {
                    Derived::QueryParam(qname.take().ok_or(ComponentError::MissingName)?)
                }
                _ => return Err(ComponentError::UnknownDerived(raw.to_string())),
            };
            let not_allowed = |parameter| ComponentError::ParameterNotAllowed {
                component: raw.to_string(),
                parameter,
            };
            if c.sf {
                return Err(not_allowed("sf"));
            }
            if c.bs {
                return Err(not_allowed("bs"));
            }
            if c.tr {
                return Err(not_allowed("tr"));
            }
            if c.key.is_some() {
                return Err(not_allowed("key"));
            }
            if qname.is_some() {
                return Err(not_allowed("name"));
            }
            c.name = ComponentName::Derived(derived);
        } else {
            if qname.is_some() {
                return Err(ComponentError::ParameterNotAllowed {
                    component: raw.to_string(),
                    parameter: "name",
                });
            }
            if c.bs && (c.sf || c.key.is_some()) {
                return Err(ComponentError::SfWithBs(raw.to_string()));
            }
            c.name = ComponentName::Field(raw.to_string());
        }
        Ok(c)
    }

    /// Parses a component given on a command line or in configuration: either a serialized
    /// identifier (`"@query-param";name="q"`) or the same without quotes (`@query-param;name="q"`).
    pub fn parse(spec: &str) -> Result<Self, ComponentError> {
        let spec = spec.trim();
        let quoted = if spec.starts_with('"') {
            spec.to_string()
        } else {
            let (name, params) = match spec.find(';') {
                Some(i) => spec.split_at(i),
                None => (spec, ""),
            };
            format!("\"{name}\"{params}")
        };
        let item: Item = sfv::Parser::new(&quoted)
            .parse()
            .map_err(|_| ComponentError::Unparsable(spec.to_string()))?;
        Self::from_item(&item)
    }

    /// The plain name: `@authority`, `content-digest`.
    pub fn name_str(&self) -> &str {
        match &self.name {
            ComponentName::Field(n) => n,
            ComponentName::Derived(d) => match d {
                Derived::Method => "@method",
                Derived::TargetUri => "@target-uri",
                Derived::Authority => "@authority",
                Derived::Scheme => "@scheme",
                Derived::RequestTarget => "@request-target",
                Derived::Path => "@path",
                Derived::Query => "@query",
                Derived::QueryParam(_) => "@query-param",
                Derived::Status => "@status",
            },
        }
    }

    /// What the component reads, whatever the spelling of its identifier (parameter order, a
    /// `@query-param` name's percent-encoding): two components of one signature with the same
    /// identity would put the same value in its base twice (RFC 9421 section 3.2 allows a
    /// component once).
    pub fn identity(&self) -> ComponentIdentity {
        let name = match &self.name {
            ComponentName::Derived(Derived::QueryParam(n)) => {
                ComponentName::Derived(Derived::QueryParam(crate::base::canonical_query_name(n)))
            }
            other => other.clone(),
        };
        ComponentIdentity {
            name,
            sf: self.sf,
            key: self.key.clone(),
            bs: self.bs,
            req: self.req,
            tr: self.tr,
        }
    }

    /// Whether this is the field `name` (lowercase).
    pub fn is_field(&self, name: &str) -> bool {
        matches!(&self.name, ComponentName::Field(n) if n == name)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.serialized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_derived_and_fields() {
        let c = Component::parse("@authority").expect("parse");
        assert_eq!(c.name, ComponentName::Derived(Derived::Authority));
        assert_eq!(c.serialized, "\"@authority\"");
        let c = Component::parse("signature-agent;key=\"sig1\"").expect("parse");
        assert!(c.is_field("signature-agent"));
        assert_eq!(c.key.as_deref(), Some("sig1"));
        assert_eq!(c.serialized, "\"signature-agent\";key=\"sig1\"");
        let c = Component::parse("\"@query-param\";name=\"q\"").expect("parse");
        assert_eq!(
            c.name,
            ComponentName::Derived(Derived::QueryParam("q".into()))
        );
        let c = Component::parse("\"@authority\";req").expect("parse");
        assert!(c.req);
    }

    #[test]
    fn refuses_bad_identifiers() {
        assert_eq!(
            Component::parse("@nope"),
            Err(ComponentError::UnknownDerived("@nope".into()))
        );
        assert_eq!(
            Component::parse("@query-param"),
            Err(ComponentError::MissingName)
        );
        assert!(matches!(
            Component::parse("Host"),
            Err(ComponentError::UppercaseName(_))
        ));
        assert!(matches!(
            Component::parse("host;foo"),
            Err(ComponentError::UnknownParameter(_))
        ));
        assert!(matches!(
            Component::parse("host;sf;bs"),
            Err(ComponentError::SfWithBs(_))
        ));
        assert!(matches!(
            Component::parse("@method;sf"),
            Err(ComponentError::ParameterNotAllowed { .. })
        ));
        assert!(matches!(
            Component::parse("host;key=1"),
            Err(ComponentError::BadParameterValue(_))
        ));
        assert!(Component::parse("\"unterminated").is_err());
        assert_eq!(
            Component::parse("host;sf=?0"),
            Err(ComponentError::FalseFlag("sf".into()))
        );
        assert_eq!(
            Component::parse("@method;req=?0"),
            Err(ComponentError::FalseFlag("req".into()))
        );
    }

    #[test]
    fn identity_is_what_is_read_not_how_it_is_spelled() {
        let id = |s: &str| Component::parse(s).expect(s).identity();
        assert_eq!(id("x;sf;req"), id("x;req;sf"));
        assert_eq!(
            id("\"@query-param\";name=\"a\""),
            id("\"@query-param\";name=\"%61\"")
        );
        assert_eq!(
            id("\"@query-param\";name=\"a b\""),
            id("\"@query-param\";name=\"a+b\"")
        );
        assert_ne!(id("x;sf"), id("x"));
        assert_ne!(id("x;key=\"a\""), id("x;key=\"b\""));
        assert_ne!(
            id("\"@query-param\";name=\"a\""),
            id("\"@query-param\";name=\"b\"")
        );
    }
}
