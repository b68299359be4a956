//! Captured requests, as people paste them: a raw HTTP/1.1 request (request line, header lines,
//! a blank line, a body that is ignored), or header lines alone, optionally with HTTP/2
//! pseudo-headers (`:method`, `:path`, `:authority`, `:scheme`), or the output of `curl -v`
//! (the `> ` lines are the request).

use std::fmt;

use wba_filter::request::HttpRequest;

use crate::sign::{is_tchar, parse_url, url_authority};

/// A parsed capture.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawRequest {
    /// From the request line, when there is one.
    pub method: Option<String>,
    pub target: Option<String>,
    pub version: Option<String>,
    /// Pseudo-headers, name without the colon.
    pub pseudo: Vec<(String, String)>,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
}

/// Why a capture cannot be read. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawRequestError {
    Empty,
    BadRequestLine { line: usize, text: String },
    BadHeaderLine { line: usize, text: String },
    BadHeaderName { line: usize, name: String },
    ContinuationFirst { line: usize },
    NoTarget,
    NoAuthority,
    BadUrl(String),
}

impl fmt::Display for RawRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "the request is empty: expected a raw HTTP request (`GET /path HTTP/1.1`, then header lines) or header lines"),
            Self::BadRequestLine { line, text } => write!(
                f,
                "line {line}: {text:?} is not a request line (METHOD TARGET HTTP/1.1) nor a header line (name: value)"
            ),
            Self::BadHeaderLine { line, text } => {
                write!(f, "line {line}: {text:?} is not a header line (name: value)")
            }
            Self::BadHeaderName { line, name } => {
                write!(f, "line {line}: {name:?} is not a valid header name")
            }
            Self::ContinuationFirst { line } => write!(
                f,
                "line {line}: a continuation line (starting with whitespace) has no header to continue"
            ),
            Self::NoTarget => write!(
                f,
                "the request has no request line and no :path: add `GET /path HTTP/1.1` as the first line, or pass --url"
            ),
            Self::NoAuthority => write!(
                f,
                "the request names no host: add a Host header, or pass --url"
            ),
            Self::BadUrl(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RawRequestError {}

fn looks_like_request_line(line: &str) -> bool {
    match line.split_once(' ') {
        Some((first, _)) => !first.contains(':') && !first.is_empty(),
        None => false,
    }
}

/// Parses a capture.
pub fn parse(text: &str) -> Result<RawRequest, RawRequestError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = RawRequest::default();
    // `curl -v` output: the request is the lines sent (`> `); `*`, `<` and body lines are not.
    let curl_trace = text.lines().any(|l| l.starts_with("> "));
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !curl_trace || l.starts_with('>'))
        .map(|(i, l)| {
            let l = if curl_trace {
                l.strip_prefix("> ")
                    .or_else(|| l.strip_prefix('>'))
                    .unwrap_or(l)
            } else {
                l
            };
            (i, l)
        })
        .skip_while(|(_, l)| l.trim().is_empty())
        .peekable();
    let Some(&(first_no, first)) = lines.peek() else {
        return Err(RawRequestError::Empty);
    };
    if looks_like_request_line(first) {
        lines.next();
        let bad = || RawRequestError::BadRequestLine {
            line: first_no,
            text: first.to_string(),
        };
        let parts: Vec<&str> = first.split(' ').filter(|p| !p.is_empty()).collect();
        let (method, target, version) = match parts.as_slice() {
            [m, t] => (*m, *t, None),
            [m, t, v] if v.starts_with("HTTP/") => (*m, *t, Some(v.to_string())),
            _ => return Err(bad()),
        };
        let target_ok = target.starts_with('/')
            || target == "*"
            || target.contains("://")
            || method.eq_ignore_ascii_case("CONNECT");
        if !method.bytes().all(is_tchar) || !target_ok {
            return Err(bad());
        }
        out.method = Some(method.to_string());
        out.target = Some(target.to_string());
        out.version = version;
    }
    for (no, line) in lines {
        if line.trim().is_empty() {
            break; // The body follows: not part of what is verified.
        }
        if line.starts_with([' ', '\t']) {
            // Obsolete line folding: the line continues the previous field value.
            let Some((_, v)) = out.headers.last_mut() else {
                return Err(RawRequestError::ContinuationFirst { line: no });
            };
            v.push(' ');
            v.push_str(line.trim());
            continue;
        }
        let (pseudo, rest) = match line.strip_prefix(':') {
            Some(r) => (true, r),
            None => (false, line),
        };
        let Some((name, value)) = rest.split_once(':') else {
            return Err(RawRequestError::BadHeaderLine {
                line: no,
                text: line.to_string(),
            });
        };
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(RawRequestError::BadHeaderName {
                line: no,
                name: name.to_string(),
            });
        }
        let pair = (name.to_ascii_lowercase(), value.trim().to_string());
        if pseudo {
            out.pseudo.push(pair);
        } else {
            out.headers
                .push((name.to_string(), value.trim().to_string()));
        }
    }
    if out.method.is_none() && out.pseudo.is_empty() && out.headers.is_empty() {
        return Err(RawRequestError::Empty);
    }
    Ok(out)
}

impl RawRequest {
    fn pseudo(&self, name: &str) -> Option<&str> {
        self.pseudo
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The request the verifier sees. `scheme` applies unless the capture says otherwise;
    /// `url` fills in what a headers-only capture lacks (method defaults to `method`).
    pub fn to_http_request(
        &self,
        scheme: &str,
        url: Option<&str>,
        method: &str,
    ) -> Result<HttpRequest, RawRequestError> {
        let url = url
            .map(parse_url)
            .transpose()
            .map_err(|e| RawRequestError::BadUrl(format!("--url: {e:#}")))?;
        let mut scheme = self
            .pseudo("scheme")
            .map(str::to_string)
            .or_else(|| url.as_ref().map(|u| u.scheme().to_string()))
            .unwrap_or_else(|| scheme.to_string());
        let mut authority = self.pseudo("authority").map(str::to_string);
        let method = self
            .method
            .clone()
            .or_else(|| self.pseudo("method").map(str::to_string))
            .unwrap_or_else(|| method.to_ascii_uppercase());
        let mut target = self
            .target
            .clone()
            .or_else(|| self.pseudo("path").map(str::to_string));
        // Absolute form (`GET https://host/path HTTP/1.1`): the URL says it all.
        if let Some(t) = target.clone().filter(|t| t.contains("://")) {
            let u = parse_url(&t).map_err(|e| RawRequestError::BadUrl(format!("{e:#}")))?;
            scheme = u.scheme().to_string();
            authority = Some(url_authority(&u));
            let mut p = u.path().to_string();
            if let Some(q) = u.query() {
                p.push('?');
                p.push_str(q);
            }
            target = Some(p);
        }
        let target = match (target, &url) {
            (Some(t), _) => t,
            (None, Some(u)) => {
                let mut p = u.path().to_string();
                if let Some(q) = u.query() {
                    p.push('?');
                    p.push_str(q);
                }
                p
            }
            (None, None) => return Err(RawRequestError::NoTarget),
        };
        let authority = authority
            .or_else(|| wba_filter::request::combined(&self.headers, "host"))
            .or_else(|| url.as_ref().map(url_authority))
            .ok_or(RawRequestError::NoAuthority)?;
        Ok(HttpRequest::from_parts(
            &method,
            &scheme,
            &authority,
            &target,
            self.headers.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_http11() {
        let r = parse("GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nX-Long: one\r\n  two\r\n\r\nbody: not a header\r\n").unwrap();
        assert_eq!(r.method.as_deref(), Some("GET"));
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.headers[1].1, "one two");
        let h = r.to_http_request("https", None, "GET").unwrap();
        assert_eq!(h.authority, "shop.example");
        assert_eq!(h.path, "/a");
        assert_eq!(h.query.as_deref(), Some("b=1"));
        assert_eq!(h.scheme, "https");
    }

    #[test]
    fn absolute_form_pseudo_headers_and_headers_only() {
        let h = parse("POST https://x.example:8443/p HTTP/1.1\nHost: ignored\n")
            .unwrap()
            .to_http_request("http", None, "GET")
            .unwrap();
        assert_eq!(
            (h.scheme.as_str(), h.authority.as_str()),
            ("https", "x.example:8443")
        );
        let h =
            parse(":method: PUT\n:path: /q\n:authority: y.example\n:scheme: http\naccept: */*\n")
                .unwrap()
                .to_http_request("https", None, "GET")
                .unwrap();
        assert_eq!(h.method, "PUT");
        assert_eq!(h.scheme, "http");
        assert_eq!(h.authority, "y.example");
        assert_eq!(h.headers.len(), 1);
        let trace = parse("* Connected\n> GET /t HTTP/1.1\r\n> Host: a.example\r\n> Accept: */*\r\n> \r\n< HTTP/1.1 200 OK\r\n< Server: x\r\n* Done\n").unwrap();
        assert_eq!(trace.target.as_deref(), Some("/t"));
        assert_eq!(trace.headers.len(), 2);
        let only = parse("> Signature: sig1=:AA==:\n> Accept: x\n").unwrap();
        assert_eq!(
            only.to_http_request("https", None, "GET"),
            Err(RawRequestError::NoTarget)
        );
        let h = only
            .to_http_request("https", Some("https://z.example/r?s"), "get")
            .unwrap();
        assert_eq!(
            (h.method.as_str(), h.authority.as_str(), h.path.as_str()),
            ("GET", "z.example", "/r")
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(""), Err(RawRequestError::Empty));
        assert_eq!(parse("\n\n  \n"), Err(RawRequestError::Empty));
        assert!(matches!(
            parse("GET"),
            Err(RawRequestError::BadHeaderLine { line: 1, .. })
        ));
        assert!(matches!(
            parse("GET nowhere HTTP/1.1\n"),
            Err(RawRequestError::BadRequestLine { line: 1, .. })
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\nHost example\n"),
            Err(RawRequestError::BadHeaderLine { line: 2, .. })
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\nBad Name: x\n"),
            Err(RawRequestError::BadHeaderName { line: 2, .. })
        ));
        assert!(matches!(
            parse(" folded: x\n"),
            Err(RawRequestError::ContinuationFirst { line: 1 })
        ));
        assert_eq!(
            parse("GET / HTTP/1.1\n")
                .unwrap()
                .to_http_request("https", None, "GET"),
            Err(RawRequestError::NoAuthority)
        );
    }
}
