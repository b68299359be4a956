//! The crates.io `web-bot-auth` crate's view of a request: it asks the application for every
//! component value, so this adapter derives them itself (RFC 9421 sections 2.1, 2.1.2 and 2.2),
//! independently of our core's `base` module. Used by tests/interop.rs and benches/verify.rs.
#![allow(dead_code)]

use indexmap::IndexMap;
use web_bot_auth::components::{
    CoveredComponent, DerivedComponent, HTTPField, HTTPFieldParameters,
};
use web_bot_auth::message_signatures::{SignedMessage, UnsignedMessage};

use wba_filter::request::HttpRequest;

/// A request as their crate sees it: component values derived here, independently of our core.
pub struct Theirs<'a> {
    pub req: &'a HttpRequest,
    /// What to sign, when their signer is used.
    pub cover: Vec<CoveredComponent>,
    pub label: &'a str,
    /// The `Signature-Input` and `Signature` their signer produced.
    pub registered: Option<(String, String)>,
}

impl<'a> Theirs<'a> {
    /// The request, for verification only.
    pub fn verifying(req: &'a HttpRequest) -> Self {
        Theirs {
            req,
            cover: Vec::new(),
            label: "sig1",
            registered: None,
        }
    }

    fn lines(&self, name: &str) -> Vec<String> {
        self.req
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

fn authority(req: &HttpRequest) -> String {
    let a = req.authority.to_ascii_lowercase();
    a.strip_suffix(":443")
        .filter(|_| req.scheme.eq_ignore_ascii_case("https"))
        .map(str::to_string)
        .unwrap_or(a)
}

impl SignedMessage for Theirs<'_> {
    fn lookup_component(&self, name: &CoveredComponent) -> Vec<String> {
        let r = self.req;
        match name {
            CoveredComponent::HTTP(HTTPField { name, parameters }) => {
                let lines = self.lines(name);
                match parameters.0.as_slice() {
                    [] => lines,
                    // RFC 9421 section 2.1.2: the serialized value of one Dictionary member.
                    [HTTPFieldParameters::Key(k)] => {
                        if lines.is_empty() {
                            return vec![];
                        }
                        let dict: sfv::Dictionary =
                            match sfv::Parser::new(&lines.join(", ")).parse() {
                                Ok(d) => d,
                                Err(_) => return vec![],
                            };
                        match dict.get(k.as_str()) {
                            Some(sfv::ListEntry::Item(item)) => {
                                vec![sfv::FieldType::serialize(item)]
                            }
                            _ => vec![],
                        }
                    }
                    _ => vec![],
                }
            }
            CoveredComponent::Derived(d) => match d {
                DerivedComponent::Authority { req: false } => vec![authority(r)],
                DerivedComponent::Method { req: false } => vec![r.method.clone()],
                DerivedComponent::Path { req: false } => vec![r.path.clone()],
                DerivedComponent::Scheme { req: false } => vec![r.scheme.to_ascii_lowercase()],
                DerivedComponent::Query { req: false } => {
                    vec![format!("?{}", r.query.as_deref().unwrap_or(""))]
                }
                DerivedComponent::TargetUri { req: false } => vec![format!(
                    "{}://{}{}{}",
                    r.scheme,
                    authority(r),
                    r.path,
                    r.query
                        .as_deref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default()
                )],
                _ => vec![],
            },
        }
    }
}

impl UnsignedMessage for Theirs<'_> {
    fn fetch_components_to_cover(&self) -> IndexMap<CoveredComponent, String> {
        self.cover
            .iter()
            .map(|c| {
                let v = self.lookup_component(c);
                assert!(!v.is_empty(), "no value for {c:?}");
                (c.clone(), v.join(", "))
            })
            .collect()
    }

    fn register_header_contents(&mut self, signature_input: String, signature_header: String) {
        self.registered = Some((
            format!("{}={signature_input}", self.label),
            format!("{}={signature_header}", self.label),
        ));
    }
}
