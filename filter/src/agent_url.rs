//! Agent identifiers: the `Signature-Agent` URL types and their normalization
//! (RFC 3986 sections 6.2.2 and 6.2.3), so that a request's URL and the configured one compare
//! equal exactly when they name the same resource.

use std::fmt;

/// How an agent publishes its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentType {
    /// `https://origin` + `/.well-known/http-message-signatures-directory`.
    Directory,
    /// The URL is a JWK Set.
    JwksUri,
    /// An OAuth Client ID Metadata Document.
    Cimd,
}

impl AgentType {
    /// The type named in a `Signature-Agent` `type` parameter or in configuration.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "directory" => Some(Self::Directory),
            "jwks_uri" => Some(Self::JwksUri),
            "cimd" => Some(Self::Cimd),
            _ => None,
        }
    }

    /// The name used on the wire and in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::JwksUri => "jwks_uri",
            Self::Cimd => "cimd",
        }
    }
}

/// The path of a key directory under an agent's origin.
pub const DIRECTORY_PATH: &str = "/.well-known/http-message-signatures-directory";

/// Why a URL cannot identify an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    NotHttps,
    NoHost,
    UserInfo,
    BadPort,
    BadHost,
    NotAnOrigin,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotHttps => "the URL must start with https://",
            Self::NoHost => "the URL has no host",
            Self::UserInfo => "the URL must not carry user information",
            Self::BadPort => "the URL has an invalid port",
            Self::BadHost => "the URL has an invalid host",
            Self::NotAnOrigin => "a directory agent must be an origin (https://host[:port])",
        })
    }
}

impl std::error::Error for UrlError {}

/// Normalizes an agent URL. For [`AgentType::Directory`] the result is the origin
/// (`https://host[:port]`); otherwise scheme and host are lowercased, the default port is
/// dropped, percent-encodings are normalized, dot segments removed, query and fragment dropped.
pub fn normalize_agent_url(kind: AgentType, url: &str) -> Result<String, UrlError> {
    let rest = strip_prefix_ignore_case(url.trim(), "https://").ok_or(UrlError::NotHttps)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    let authority = normalize_host_port(authority)?;
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let path = &tail[..path_end];
    match kind {
        AgentType::Directory => {
            if !(path.is_empty() || path == "/") || path_end != tail.len() {
                return Err(UrlError::NotAnOrigin);
            }
            Ok(format!("https://{authority}"))
        }
        AgentType::JwksUri | AgentType::Cimd => {
            let path = remove_dot_segments(&normalize_percent(path));
            let path = if path.is_empty() {
                "/".to_string()
            } else {
                path
            };
            Ok(format!("https://{authority}{path}"))
        }
    }
}

/// The URL the agent's key material is fetched from: [`normalize_agent_url`] plus, for a
/// key-set URL (`jwks_uri`, `cimd`), the configured query (the server may need it: `?v=2`).
/// The fragment is dropped (it is never sent), and bytes that may not appear in a request
/// target are percent-encoded, so the fetch's `:path` is always valid.
pub fn fetch_url(kind: AgentType, url: &str) -> Result<String, UrlError> {
    let normalized = normalize_agent_url(kind, url)?;
    if kind == AgentType::Directory {
        return Ok(normalized);
    }
    // The authority is valid (the normalization checked it); path and query may need escaping.
    let authority_end = normalized
        .bytes()
        .skip(8)
        .position(|b| b == b'/')
        .map_or(normalized.len(), |i| i + 8);
    let (origin, path) = normalized.split_at(authority_end);
    let mut out = origin.to_string();
    escape_into(&mut out, path.as_bytes());
    let raw = url.trim().as_bytes();
    let raw = &raw[..raw.iter().position(|b| *b == b'#').unwrap_or(raw.len())];
    if let Some(q) = raw.iter().position(|b| *b == b'?') {
        out.push('?');
        escape_into(&mut out, &raw[q + 1..]);
    }
    Ok(out)
}

/// Appends `s`, percent-encoding what RFC 3986 allows in no path or query: controls, space,
/// non-ASCII bytes, the characters `"<>[\]^{|}` and the backtick, and a `%` not followed by
/// two hex digits.
fn escape_into(out: &mut String, b: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, &c) in b.iter().enumerate() {
        let lone_pct = c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        if c.is_ascii_graphic() && !lone_pct && !b"\"<>[\\]^`{|}".contains(&c) {
            out.push(char::from(c));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 15)]));
        }
    }
}

/// The `:authority` and `:path` of a fetch of `url` (a [`fetch_url`]).
pub fn fetch_target(kind: AgentType, url: &str) -> (String, String) {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = match kind {
        AgentType::Directory => DIRECTORY_PATH.to_string(),
        _ if !path.starts_with('/') => format!("/{path}"),
        _ => path.to_string(),
    };
    (authority.to_string(), path)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn normalize_host_port(authority: &str) -> Result<String, UrlError> {
    if authority.is_empty() {
        return Err(UrlError::NoHost);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or(UrlError::BadHost)?;
        let host = &authority[..close + 2];
        let after = &v6[close + 1..];
        if !v6[..close]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UrlError::BadHost);
        }
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or(UrlError::BadPort)?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(UrlError::BadHost);
    }
    let host = host.to_ascii_lowercase();
    match port {
        None | Some("") => Ok(host),
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UrlError::BadPort);
            }
            let n: u32 = p.parse().map_err(|_| UrlError::BadPort)?;
            if n > 65535 {
                return Err(UrlError::BadPort);
            }
            if n == 443 {
                Ok(host)
            } else {
                Ok(format!("{host}:{n}"))
            }
        }
    }
}

/// RFC 3986 6.2.2.1 and 6.2.2.2: uppercase hex digits, decode unreserved characters.
fn normalize_percent(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    out.push(c as char);
                } else {
                    out.push('%');
                    out.push(b[i + 1].to_ascii_uppercase() as char);
                    out.push(b[i + 2].to_ascii_uppercase() as char);
                }
                i += 3;
                continue;
            }
        }
        // Safe: we only split at ASCII bytes, so `path[i..]` starts at a char boundary.
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// RFC 3986 section 5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn directory_origins() {
        let n = |u| normalize_agent_url(AgentType::Directory, u);
        assert_eq!(
            n("https://Agent.Example").as_deref(),
            Ok("https://agent.example")
        );
        assert_eq!(
            n("HTTPS://agent.example:443/").as_deref(),
            Ok("https://agent.example")
        );
        assert_eq!(
            n("https://agent.example:8443").as_deref(),
            Ok("https://agent.example:8443")
        );
        assert_eq!(n("https://[::1]:8443").as_deref(), Ok("https://[::1]:8443"));
        assert_eq!(n("http://agent.example"), Err(UrlError::NotHttps));
        assert_eq!(n("https://agent.example/keys"), Err(UrlError::NotAnOrigin));
        assert_eq!(n("https://agent.example?x"), Err(UrlError::NotAnOrigin));
        assert_eq!(n("https://u@agent.example"), Err(UrlError::UserInfo));
        assert_eq!(n("https://agent.example:99999"), Err(UrlError::BadPort));
        assert_eq!(n("https://"), Err(UrlError::NoHost));
        assert_eq!(n("https://a b"), Err(UrlError::BadHost));
    }

    #[test]
    fn jwks_urls() {
        let n = |u| normalize_agent_url(AgentType::JwksUri, u);
        assert_eq!(
            n("https://A.example:443/a/./b/../%7euser/%2f?q#f").as_deref(),
            Ok("https://a.example/a/~user/%2F")
        );
        assert_eq!(n("https://a.example").as_deref(), Ok("https://a.example/"));
        assert_eq!(
            n("https://a.example/%e2%82%ac").as_deref(),
            Ok("https://a.example/%E2%82%AC")
        );
        assert_eq!(
            n("https://a.example/100%").as_deref(),
            Ok("https://a.example/100%")
        );
    }

    #[test]
    fn fetch_urls_keep_the_query_the_identity_drops() {
        let f = |u| fetch_url(AgentType::JwksUri, u);
        assert_eq!(
            f("https://A.example:443/keys.json?v=2#frag").as_deref(),
            Ok("https://a.example/keys.json?v=2")
        );
        assert_eq!(
            normalize_agent_url(
                AgentType::JwksUri,
                "https://A.example:443/keys.json?v=2#frag"
            )
            .as_deref(),
            Ok("https://a.example/keys.json")
        );
        assert_eq!(
            fetch_target(
                AgentType::JwksUri,
                &f("https://a.example/keys.json?v=2").unwrap()
            ),
            ("a.example".into(), "/keys.json?v=2".into())
        );
        assert_eq!(
            f("https://a.example/k.json").as_deref(),
            Ok("https://a.example/k.json")
        );
        assert_eq!(f("https://a.example").as_deref(), Ok("https://a.example/"));
        assert_eq!(
            f("https://a.example?a=1&b=/x?y").as_deref(),
            Ok("https://a.example/?a=1&b=/x?y")
        );
        // An empty query is kept as given; percent-encodings are kept, bytes a request target
        // cannot carry are encoded.
        assert_eq!(
            f("https://a.example/k?").as_deref(),
            Ok("https://a.example/k?")
        );
        assert_eq!(
            f("https://a.example/a b/k?q=a b&r=%7e&s=100%&t=[1]\u{e9}").as_deref(),
            Ok("https://a.example/a%20b/k?q=a%20b&r=%7e&s=100%25&t=%5B1%5D%C3%A9")
        );
        // A directory agent is an origin: its fetch URL is the identity.
        assert_eq!(
            fetch_url(AgentType::Directory, "https://Agent.example:443").as_deref(),
            Ok("https://agent.example")
        );
        assert_eq!(
            fetch_url(AgentType::Directory, "https://agent.example/?v=1"),
            Err(UrlError::NotAnOrigin)
        );
    }

    #[test]
    fn fetch_targets() {
        assert_eq!(
            fetch_target(AgentType::Directory, "https://a.example:8443"),
            ("a.example:8443".into(), DIRECTORY_PATH.into())
        );
        assert_eq!(
            fetch_target(AgentType::JwksUri, "https://a.example/k.json"),
            ("a.example".into(), "/k.json".into())
        );
    }
}
