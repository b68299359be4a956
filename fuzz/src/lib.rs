//! Shared input decoding for the fuzz targets.
//!
//! Targets that need a whole request read it as text, so that seeds are readable and
//! mutations stay meaningful:
//!
//! ```text
//! POST https example.com /foo?param=Value
//! host: example.com
//! signature-input: sig1=("@authority");created=1;keyid="k"
//! ```
//!
//! The first line holds method, scheme, authority and path (with its query), separated by single
//! spaces; missing parts are empty. Every further line is one header field line, `name: value`
//! (split at the first `:`; a line without one is a name with an empty value).

use wba_filter::request::HttpRequest;

/// Decodes bytes as text; invalid UTF-8 is replaced, as a host's header API would refuse it.
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The request line's parts: method, scheme, authority, path and query.
pub fn request_line(line: &str) -> (&str, &str, &str, &str) {
    let mut parts = line.splitn(4, ' ');
    let mut next = || parts.next().unwrap_or_default();
    (next(), next(), next(), next())
}

/// Header field lines.
pub fn header_lines<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            (n.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string())
        })
        .collect()
}

/// A request from its text form (see the module documentation).
pub fn request(text: &str) -> HttpRequest {
    let mut lines = text.split('\n');
    let (method, scheme, authority, path) = request_line(lines.next().unwrap_or_default());
    HttpRequest::from_parts(method, scheme, authority, path, header_lines(lines))
}
