//! The parts of an HTTP message that signature components are derived from.
//!
//! The filter fills a [`HttpRequest`] from Envoy's pseudo-headers and headers; tests fill it by
//! hand. Field names are matched case-insensitively; values are kept as received.

/// A request as seen by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    /// The method, as sent (RFC 9421 section 2.2.1 keeps its case).
    pub method: String,
    /// The scheme (`https`, `http`).
    pub scheme: String,
    /// The authority (`host[:port]`), as received.
    pub authority: String,
    /// The path, without the query. May be `*` for `OPTIONS *`.
    pub path: String,
    /// The query without its leading `?`; `None` when the target has no `?`.
    pub query: Option<String>,
    /// Header fields in message order, one entry per field line.
    pub headers: Vec<(String, String)>,
}

/// A response, for the directory's possession proof (signed responses).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in message order.
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// Builds a request from Envoy-style pseudo-headers: `:path` carries path and query.
    pub fn from_parts(
        method: &str,
        scheme: &str,
        authority: &str,
        path_and_query: &str,
        headers: Vec<(String, String)>,
    ) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path_and_query.to_string(), None),
        };
        HttpRequest {
            method: method.to_string(),
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            path,
            query,
            headers,
        }
    }

    /// Appends a header field line.
    pub fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_string(), value.to_string()));
    }

    /// Removes every line of a header field, whatever its case.
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    /// The values of every line of a header field, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        field_values(&self.headers, name)
    }

    /// The values of a header field combined as RFC 9110 section 5.3 does (`, `), or `None`.
    pub fn header(&self, name: &str) -> Option<String> {
        combined(&self.headers, name)
    }

    /// `@authority`: lowercase, default port removed (RFC 9421 section 2.2.3).
    pub fn normalized_authority(&self) -> String {
        normalize_authority(&self.scheme, &self.authority)
    }

    /// `@target-uri`: the absolute request URI (RFC 9421 section 2.2.2).
    pub fn target_uri(&self) -> String {
        let mut uri = format!(
            "{}://{}{}",
            self.scheme.to_ascii_lowercase(),
            self.normalized_authority(),
            self.path
        );
        if let Some(q) = &self.query {
            uri.push('?');
            uri.push_str(q);
        }
        uri
    }

    /// `@request-target`: path and query as in the request line (RFC 9421 section 2.2.5).
    pub fn request_target(&self) -> String {
        if self.method.eq_ignore_ascii_case("CONNECT") {
            return self.authority.clone();
        }
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}

impl HttpResponse {
    /// The values of a header field combined with `, `, or `None`.
    pub fn header(&self, name: &str) -> Option<String> {
        combined(&self.headers, name)
    }
}

/// The values of every line named `name` (case-insensitive), in order.
pub fn field_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All lines of a field, each trimmed, joined with `, ` (RFC 9421 section 2.1).
pub fn combined(headers: &[(String, String)], name: &str) -> Option<String> {
    let mut out: Option<String> = None;
    for value in field_values(headers, name) {
        let value = clean_value(value);
        match &mut out {
            Some(s) => {
                s.push_str(", ");
                s.push_str(&value);
            }
            None => out = Some(value),
        }
    }
    out
}

/// Trims leading and trailing whitespace and replaces obsolete line folding by one space.
pub fn clean_value(value: &str) -> String {
    let trimmed = value.trim_matches(|c| c == ' ' || c == '\t');
    // Bytes, not chars: this runs over every covered and combined field value.
    if !trimmed.bytes().any(|b| b == b'\r' || b == b'\n') {
        return trimmed.to_string();
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut chars = trimmed.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\r' || c == '\n' {
            // obs-fold: CRLF followed by whitespace becomes a single space.
            while matches!(chars.peek(), Some('\r' | '\n' | ' ' | '\t')) {
                chars.next();
            }
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Lowercases the authority and drops the scheme's default port.
pub fn normalize_authority(scheme: &str, authority: &str) -> String {
    let lower = authority.to_ascii_lowercase();
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return lower,
    };
    match lower.strip_suffix(default_port) {
        // Keep IPv6 literals intact: only strip a port that follows the host.
        Some(host) if !host.is_empty() && !host.ends_with(':') => host.to_string(),
        _ => lower,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn from_parts_splits_query() {
        let r = HttpRequest::from_parts("GET", "https", "a.test", "/p?x=1&y", vec![]);
        assert_eq!(r.path, "/p");
        assert_eq!(r.query.as_deref(), Some("x=1&y"));
        let r = HttpRequest::from_parts("GET", "https", "a.test", "/p", vec![]);
        assert_eq!(r.query, None);
    }

    #[test]
    fn combines_lines_trimmed() {
        let h = vec![
            ("X-A".to_string(), "  one ".to_string()),
            ("x-a".to_string(), "two\r\n  three".to_string()),
        ];
        assert_eq!(combined(&h, "x-a").as_deref(), Some("one, two three"));
        assert_eq!(combined(&h, "x-b"), None);
    }

    #[test]
    fn authority_normalization() {
        assert_eq!(
            normalize_authority("https", "Example.COM:443"),
            "example.com"
        );
        assert_eq!(normalize_authority("http", "example.com:80"), "example.com");
        assert_eq!(
            normalize_authority("https", "example.com:8443"),
            "example.com:8443"
        );
        assert_eq!(
            normalize_authority("http", "example.com:443"),
            "example.com:443"
        );
    }

    #[test]
    fn target_uri_and_request_target() {
        let r = HttpRequest::from_parts("GET", "HTTPS", "WWW.example.com:443", "/a?b=c", vec![]);
        assert_eq!(r.target_uri(), "https://www.example.com/a?b=c");
        assert_eq!(r.request_target(), "/a?b=c");
    }
}
