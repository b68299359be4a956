//! The signature base (RFC 9421 section 2.5): the exact bytes a signature covers.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fmt;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sfv::{Dictionary, FieldType, Item, List, ListEntry, ListSerializer};

use crate::component::{Component, ComponentName, Derived};
use crate::request::{clean_value, field_values, HttpRequest, HttpResponse};
use crate::signature_input::SignatureInput;

/// The message a base is built from: a request, or a response together with its request.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Request(&'a HttpRequest),
    Response {
        request: &'a HttpRequest,
        response: &'a HttpResponse,
    },
}

/// Why a signature base cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseError {
    /// A covered field is not in the message.
    MissingField(String),
    /// `key="k"` names a member the Dictionary field lacks.
    MissingMember { field: String, key: String },
    /// `@query-param` names a parameter the query lacks.
    MissingQueryParam(String),
    /// The field cannot be parsed as the structured type it must have.
    NotStructured(String),
    /// `@status` or `req` used where there is no response.
    ResponseOnly(String),
    /// `tr`: trailers are not available when the headers are verified.
    Trailer(String),
    /// The base grew past [`max_base_bytes`] of its message: no legitimate signature's does.
    TooLarge(usize),
}

impl fmt::Display for BaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingField(n) => write!(f, "covered field {n:?} is not in the message"),
            Self::MissingMember { field, key } => {
                write!(
                    f,
                    "covered field {field:?} has no dictionary member {key:?}"
                )
            }
            Self::MissingQueryParam(n) => write!(f, "the query has no parameter {n:?}"),
            Self::NotStructured(n) => write!(f, "field {n:?} is not a valid structured field"),
            Self::ResponseOnly(c) => write!(f, "{c} only applies to responses"),
            Self::Trailer(c) => write!(f, "{c}: trailer fields cannot be verified here"),
            Self::TooLarge(max) => write!(
                f,
                "the signature base would be larger than {max} bytes, several times the message"
            ),
        }
    }
}

impl std::error::Error for BaseError {}

/// Builds the signature base for `input` over `msg`: one line per covered component, then
/// `"@signature-params"`, joined by LF with no trailing LF.
///
/// Work is linear in the message: what several components read (a field's combined value, its
/// Dictionary parse for `key=`, the query's parameters for `@query-param`) is computed once per
/// base, not once per component.
pub fn signature_base(msg: Message<'_>, input: &SignatureInput) -> Result<String, BaseError> {
    let mut out = String::with_capacity(256);
    let max = max_base_bytes(msg);
    let mut memo = Memo {
        max,
        ..Memo::default()
    };
    for c in &input.components {
        lines_of(msg, c, &mut memo, &mut out)?;
        if out.len() > max {
            return Err(BaseError::TooLarge(max));
        }
    }
    out.push_str("\"@signature-params\": ");
    out.push_str(&input.serialized);
    Ok(out)
}

/// The largest signature base built over `msg`: four times its bytes (each component reads a
/// part of the message, and a legitimate signature reads a part a few times at most, as
/// `@target-uri`, `@path` and `@request-target` do), plus 16 KiB for identifiers and
/// `@signature-params`. A base that grows past it (a parameter repeated thousands of times in
/// the query, covered by many `@query-param` components) is refused before it is hashed.
pub fn max_base_bytes(msg: Message<'_>) -> usize {
    let fields = |h: &[(String, String)]| h.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
    let request = match msg {
        Message::Request(r) | Message::Response { request: r, .. } => r,
    };
    let mut bytes = request.method.len()
        + request.scheme.len()
        + request.authority.len()
        + request.path.len()
        + request.query.as_ref().map_or(0, String::len)
        + fields(&request.headers);
    if let Message::Response { response, .. } = msg {
        bytes += fields(&response.headers);
    }
    bytes.saturating_mul(4).saturating_add(16 * 1024)
}

/// What one base has already read of its message. Fields are keyed by the side they come from
/// (`true`: the request) and name.
#[derive(Default)]
struct Memo {
    /// [`max_base_bytes`] of the message.
    max: usize,
    combined: HashMap<(bool, String), Option<String>>,
    dictionaries: HashMap<(bool, String), Option<Dictionary>>,
    /// Each query parameter's values, by re-encoded name (RFC 9421 section 2.2.8).
    query: Option<HashMap<String, Vec<String>>>,
}

/// Appends the base line(s) of one component (several for repeated `@query-param`).
pub fn component_lines(msg: Message<'_>, c: &Component, out: &mut String) -> Result<(), BaseError> {
    let mut memo = Memo {
        max: max_base_bytes(msg),
        ..Memo::default()
    };
    lines_of(msg, c, &mut memo, out)
}

/// [`component_lines`], reading the message through the base's `memo`.
fn lines_of(
    msg: Message<'_>,
    c: &Component,
    memo: &mut Memo,
    out: &mut String,
) -> Result<(), BaseError> {
    if c.tr {
        return Err(BaseError::Trailer(c.serialized.clone()));
    }
    let (request, response) = match msg {
        Message::Request(r) => {
            if c.req {
                return Err(BaseError::ResponseOnly(c.serialized.clone()));
            }
            (r, None)
        }
        Message::Response { request, response } => (request, (!c.req).then_some(response)),
    };
    match &c.name {
        ComponentName::Derived(Derived::QueryParam(name)) => {
            let params = memo
                .query
                .get_or_insert_with(|| query_params(request.query.as_deref().unwrap_or("")));
            let values = params
                .get(&canonical_query_name(name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            if values.is_empty() {
                return Err(BaseError::MissingQueryParam(name.clone()));
            }
            for v in values {
                line(out, c, v);
                // One component can add a line per value: stop as soon as it is too large.
                if out.len() > memo.max {
                    return Err(BaseError::TooLarge(memo.max));
                }
            }
            Ok(())
        }
        ComponentName::Derived(d) => {
            let value = match (d, response) {
                (Derived::Status, Some(resp)) => resp.status.to_string(),
                (Derived::Status, None) => {
                    return Err(BaseError::ResponseOnly(c.serialized.clone()))
                }
                // Other derived components describe the request, even for a response.
                (Derived::Method, _) => request.method.clone(),
                (Derived::TargetUri, _) => request.target_uri(),
                (Derived::Authority, _) => request.normalized_authority(),
                (Derived::Scheme, _) => request.scheme.to_ascii_lowercase(),
                (Derived::RequestTarget, _) => request.request_target(),
                (Derived::Path, _) => {
                    if request.path.is_empty() {
                        "/".to_string()
                    } else {
                        request.path.clone()
                    }
                }
                (Derived::Query, _) => format!("?{}", request.query.as_deref().unwrap_or("")),
                (Derived::QueryParam(_), _) => String::new(),
            };
            line(out, c, &value);
            Ok(())
        }
        ComponentName::Field(name) => {
            let (side, headers) = match response {
                Some(r) => (false, &r.headers),
                None => (true, &request.headers),
            };
            let value = field_value(headers, side, name, c, memo)?;
            line(out, c, &value);
            Ok(())
        }
    }
}

fn line(out: &mut String, c: &Component, value: &str) {
    out.push_str(&c.serialized);
    out.push_str(": ");
    out.push_str(value);
    out.push('\n');
}

/// The value of an HTTP field component (RFC 9421 section 2.1) with `sf`, `key` or `bs`.
fn field_value(
    headers: &[(String, String)],
    side: bool,
    name: &str,
    c: &Component,
    memo: &mut Memo,
) -> Result<String, BaseError> {
    if c.bs {
        let mut lines = field_values(headers, name).peekable();
        if lines.peek().is_none() {
            return Err(BaseError::MissingField(name.to_string()));
        }
        let mut out = String::new();
        for (i, v) in lines.enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, ":{}:", STANDARD.encode(clean_value(v)));
        }
        return Ok(out);
    }
    let field = (side, name.to_string());
    let combined = memo
        .combined
        .entry(field.clone())
        .or_insert_with(|| combined_value(headers, name))
        .as_deref()
        .ok_or_else(|| BaseError::MissingField(name.to_string()))?;
    if let Some(key) = &c.key {
        let dict = match memo.dictionaries.entry(field) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(sfv::Parser::new(combined).parse().ok()),
        };
        let dict = dict
            .as_ref()
            .ok_or_else(|| BaseError::NotStructured(name.to_string()))?;
        let entry = dict
            .get(key.as_str())
            .ok_or_else(|| BaseError::MissingMember {
                field: name.to_string(),
                key: key.clone(),
            })?;
        return Ok(serialize_entry(entry));
    }
    if c.sf {
        return reserialize(name, combined)
            .ok_or_else(|| BaseError::NotStructured(name.to_string()));
    }
    Ok(combined.to_string())
}

/// Every line of `name`, cleaned and combined with `, `; `None` when there is none.
fn combined_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut combined: Option<String> = None;
    for v in field_values(headers, name) {
        match &mut combined {
            None => combined = Some(clean_value(v)),
            Some(c) => {
                c.push_str(", ");
                c.push_str(&clean_value(v));
            }
        }
    }
    combined
}

fn serialize_entry(entry: &ListEntry) -> String {
    match entry {
        ListEntry::Item(item) => item.serialize(),
        ListEntry::InnerList(inner) => {
            let mut ser = ListSerializer::new();
            {
                let mut il = ser.inner_list();
                il.items(&inner.items);
                let _ = il.finish().parameters(&inner.params);
            }
            ser.finish().unwrap_or_default()
        }
    }
}

/// The structured type of fields this verifier knows; others are tried as Dictionary, List,
/// then Item.
enum SfType {
    Dictionary,
    List,
    Item,
}

fn known_type(name: &str) -> Option<SfType> {
    Some(match name {
        "signature"
        | "signature-input"
        | "signature-agent"
        | "accept-signature"
        | "content-digest"
        | "repr-digest"
        | "want-content-digest"
        | "want-repr-digest"
        | "priority"
        | "cache-status"
        | "proxy-status"
        | "example-dict" => SfType::Dictionary,
        "accept-ch" | "cdn-cache-control" => SfType::List,
        "example-integer"
        | "example-decimal"
        | "example-string"
        | "example-token"
        | "example-bytesequence"
        | "example-boolean" => SfType::Item,
        _ => return None,
    })
}

fn reserialize(name: &str, value: &str) -> Option<String> {
    let dict = || {
        sfv::Parser::new(value)
            .parse::<Dictionary>()
            .ok()
            .and_then(|d| d.serialize())
    };
    let list = || {
        sfv::Parser::new(value)
            .parse::<List>()
            .ok()
            .and_then(|l| l.serialize())
    };
    let item = || {
        sfv::Parser::new(value)
            .parse::<Item>()
            .ok()
            .map(|i| i.serialize())
    };
    match known_type(name) {
        Some(SfType::Dictionary) => dict(),
        Some(SfType::List) => list(),
        Some(SfType::Item) => item(),
        None => dict().or_else(list).or_else(item),
    }
}

/// The values of query parameter `name` (RFC 9421 section 2.2.8): each parameter's name and
/// value are decoded as `application/x-www-form-urlencoded`, then re-encoded with percent-encoding.
pub fn query_param_values(query: &str, name: &str) -> Vec<String> {
    query_params(query)
        .remove(&canonical_query_name(name))
        .unwrap_or_default()
}

/// A `@query-param` name as the base compares it: decoded as
/// `application/x-www-form-urlencoded`, then percent-encoded (RFC 9421 section 2.2.8), so that
/// `a`, `%61` and `%61` name one parameter.
pub fn canonical_query_name(name: &str) -> String {
    encode_form_component(&decode_form_component(name))
}

/// Every parameter of `query`, by re-encoded name, each name's values in order: read once per
/// base, whatever number of `@query-param` components it has.
fn query_params(query: &str) -> HashMap<String, Vec<String>> {
    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        params
            .entry(encode_form_component(&decode_form_component(n)))
            .or_default()
            .push(encode_form_component(&decode_form_component(v)));
    }
    params
}

fn decode_form_component(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Percent-encodes everything but ASCII alphanumerics and `*-._` (the
/// application/x-www-form-urlencoded percent-encode set, with space as `%20`).
fn encode_form_component(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        if c.is_ascii_alphanumeric() || b"*-._".contains(&c) {
            out.push(c as char);
        } else {
            let _ = write!(out, "%{c:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature_input::parse_signature_input;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn req(query: Option<&str>, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: "GET".into(),
            scheme: "https".into(),
            authority: "www.example.com".into(),
            path: "/path".into(),
            query: query.map(str::to_string),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn base(r: &HttpRequest, covered: &str) -> Result<String, BaseError> {
        let input = parse_signature_input(&format!("s=({covered})")).expect("input");
        signature_base(Message::Request(r), &input[0])
    }

    #[test]
    fn query_params_repeat_and_reencode() {
        let r = req(Some("a=1&b=x+y&a=2&c=%7e"), &[]);
        assert_eq!(
            base(&r, "\"@query-param\";name=\"a\" \"@query-param\";name=\"b\" \"@query-param\";name=\"c\"")
                .expect("base"),
            "\"@query-param\";name=\"a\": 1\n\"@query-param\";name=\"a\": 2\n\"@query-param\";name=\"b\": x%20y\n\"@query-param\";name=\"c\": %7E\n\"@signature-params\": (\"@query-param\";name=\"a\" \"@query-param\";name=\"b\" \"@query-param\";name=\"c\")"
        );
        assert_eq!(
            base(&r, "\"@query-param\";name=\"zz\""),
            Err(BaseError::MissingQueryParam("zz".into()))
        );
    }

    #[test]
    fn request_errors() {
        let r = req(None, &[("x", "1")]);
        assert!(matches!(
            base(&r, "\"@status\""),
            Err(BaseError::ResponseOnly(_))
        ));
        assert!(matches!(
            base(&r, "\"x\";req"),
            Err(BaseError::ResponseOnly(_))
        ));
        assert!(matches!(base(&r, "\"x\";tr"), Err(BaseError::Trailer(_))));
        assert_eq!(base(&r, "\"y\""), Err(BaseError::MissingField("y".into())));
        assert!(matches!(
            base(&r, "\"x\";key=\"a\""),
            Err(BaseError::NotStructured(_))
        ));
        let r = req(None, &[("x", "b=2")]);
        assert!(matches!(
            base(&r, "\"x\";key=\"a\""),
            Err(BaseError::MissingMember { .. })
        ));
    }

    #[test]
    fn a_base_many_times_its_message_is_refused() {
        // 300 values of one parameter, each a line (of 27 bytes, for 2 in the query): within.
        let query = "a&".repeat(300);
        let r = req(Some(&query), &[]);
        let one = base(&r, "\"@query-param\";name=\"a\"").expect("one component");
        assert!(one.len() <= max_base_bytes(Message::Request(&r)));
        // Covered under three spellings of what it reads would be refused as a duplicate;
        // under three names that all match (a query of `a`, `b` and `c` values), the base
        // passes the bound and is refused before it is built further.
        let query = "a&b&c&".repeat(2000);
        let r = req(Some(&query), &[]);
        let covering = (0..3)
            .map(|i| format!("\"@query-param\";name=\"{}\"", ["a", "b", "c"][i]))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(matches!(base(&r, &covering), Err(BaseError::TooLarge(_))));
    }

    #[test]
    fn empty_query_and_path() {
        let mut r = req(None, &[]);
        r.path = String::new();
        assert_eq!(
            base(&r, "\"@query\" \"@path\"").expect("base"),
            "\"@query\": ?\n\"@path\": /\n\"@signature-params\": (\"@query\" \"@path\")"
        );
    }
}
