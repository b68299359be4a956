//! Agent identity: an agent is the JWK Set its keys come from (Web Bot Auth -01). A
//! `Signature-Agent` value or a configured `url` is either an https origin, shorthand for
//! `<origin>/.well-known/http-message-signatures-directory`, or the https URL of a JWK Set.
//! Identifiers compare after RFC 3986 normalization (sections 6.2.2 and 6.2.3), query and
//! fragment dropped; the fetch keeps the query.

use std::fmt;

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
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotHttps => "the URL must start with https://",
            Self::NoHost => "the URL has no host",
            Self::UserInfo => "the URL must not carry user information",
            Self::BadPort => "the URL has an invalid port",
            Self::BadHost => "the URL has an invalid host",
        })
    }
}

impl std::error::Error for UrlError {}

/// An agent's identity: the normalized URL of its JWK Set, without query or fragment. Made
/// only by [`AgentUrl::parse`] (or [`AgentId::parse`]), so it is always normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentId {
    /// `https://host[:port]/path`.
    url: String,
    /// The path is the well-known directory's: keys are bound to the origin.
    well_known: bool,
}

impl AgentId {
    /// The identity of an origin or JWK Set URL.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        AgentUrl::parse(url).map(|u| u.id)
    }

    /// The JWK Set URL (normalized, no query).
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// Whether the keys are at the origin's well-known directory (where a `kid` must be the
    /// key's thumbprint), rather than at another JWK Set URL (where `kid` is a label).
    pub fn is_well_known(&self) -> bool {
        self.well_known
    }

    /// How the agent is shown (result header, filter state, logs): its origin when its keys
    /// are at the well-known directory, so that an agent configured and signing as
    /// `https://agent.example` still shows as that; otherwise the JWK Set URL.
    pub fn shown(&self) -> &str {
        if self.well_known {
            self.url
                .get(..self.url.len().saturating_sub(DIRECTORY_PATH.len()))
                .unwrap_or(&self.url)
        } else {
            &self.url
        }
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

/// An agent URL as written: its identity, the URL its keys are fetched from, and whether it
/// was written as an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUrl {
    id: AgentId,
    /// The JWK Set URL with the query as given, escaped so that it is a valid request target.
    fetch: String,
    origin: bool,
}

impl AgentUrl {
    /// Reads an https origin (path empty or `/`: its well-known directory) or JWK Set URL.
    /// Scheme and host are lowercased, the default port dropped, percent-encodings normalized,
    /// dot segments removed; the identity drops query and fragment, the fetch keeps the query.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let raw = url.trim();
        let rest = strip_prefix_ignore_case(raw, "https://").ok_or(UrlError::NotHttps)?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let authority = normalize_host_port(authority)?;
        let path = tail.split(['?', '#']).next().unwrap_or_default();
        let path = remove_dot_segments(&normalize_percent(path));
        // The origin is decided by the path alone: the query is not part of the identity.
        let origin = path.is_empty() || path == "/";
        let path = if origin { DIRECTORY_PATH } else { &path };
        // Escaped in the identity too, so that it reads back as itself (a lone `%` is `%25`).
        let mut url = format!("https://{authority}");
        escape_into(&mut url, path.as_bytes());
        let id = AgentId {
            url,
            well_known: path == DIRECTORY_PATH,
        };
        let mut fetch = id.url.clone();
        let without_fragment = tail.split('#').next().unwrap_or_default();
        if let Some((_, query)) = without_fragment.split_once('?') {
            fetch.push('?');
            escape_into(&mut fetch, query.as_bytes());
        }
        Ok(AgentUrl { id, fetch, origin })
    }

    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// The URL the keys are fetched from (the query kept, the fragment dropped).
    pub fn fetch_url(&self) -> &str {
        &self.fetch
    }

    /// Written as an origin (`https://host[:port]`, optionally with `/`), not as a JWK Set URL.
    pub fn is_origin(&self) -> bool {
        self.origin
    }

    /// The `:authority` and `:path` (with the query) of the fetch.
    pub fn fetch_target(&self) -> (String, String) {
        let rest = self.fetch.get("https://".len()..).unwrap_or_default();
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        (authority.to_string(), path.to_string())
    }
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

/// RFC 3986 6.2.2.1 and 6.2.2.2: uppercase hex digits, decode unreserved characters. A `%` that
/// starts no percent-encoding is written `%25`, so that the result is stable: left as it is, it
/// could start one with what follows a decoded triplet (`%%333` would become `%33`, then `3`).
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
        if b[i] == b'%' {
            out.push_str("%25");
            i += 1;
            continue;
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

    const WK: &str = "https://agent.example/.well-known/http-message-signatures-directory";

    fn id(u: &str) -> Result<String, UrlError> {
        AgentId::parse(u).map(|i| i.as_str().to_string())
    }

    #[test]
    fn a_stray_percent_is_encoded_so_that_normalizing_is_stable() {
        // Found by fuzzing (signature_agent): `%%333` became `%33`, then `3`.
        for (raw, want) in [
            ("https://a.test/%%333", "https://a.test/%2533"),
            ("https://a.test/x%", "https://a.test/x%25"),
            ("https://a.test/%4", "https://a.test/%254"),
            ("https://a.test/%zz", "https://a.test/%25zz"),
        ] {
            let id = AgentId::parse(raw).unwrap();
            assert_eq!(id.as_str(), want, "{raw}");
            assert_eq!(AgentId::parse(id.as_str()).unwrap(), id, "{raw}");
        }
    }

    #[test]
    fn an_origin_is_its_well_known_directory() {
        for origin in [
            "https://agent.example",
            "https://Agent.Example",
            "HTTPS://agent.example:443/",
            "https://agent.example/?v=1",
            "https://agent.example#f",
            "https://agent.example/./",
            WK,
            "https://AGENT.example:443/.well-known/./http-message-signatures%2Ddirectory?x#y",
        ] {
            let a = AgentId::parse(origin).unwrap();
            assert_eq!(a.as_str(), WK, "{origin}");
            assert!(a.is_well_known(), "{origin}");
            assert_eq!(a.shown(), "https://agent.example", "{origin}");
            assert_eq!(a.to_string(), "https://agent.example");
        }
        assert!(AgentUrl::parse("https://agent.example/")
            .unwrap()
            .is_origin());
        assert!(!AgentUrl::parse(WK).unwrap().is_origin());
        let port = AgentId::parse("https://agent.example:8443").unwrap();
        assert_eq!(port.shown(), "https://agent.example:8443");
        assert_ne!(port, AgentId::parse("https://agent.example").unwrap());
        assert_eq!(
            AgentId::parse("https://[::1]:8443").unwrap().shown(),
            "https://[::1]:8443"
        );
    }

    #[test]
    fn a_jwk_set_url_is_itself() {
        let a = AgentId::parse("https://A.example:443/a/./b/../%7euser/%2f?q#f").unwrap();
        assert_eq!(a.as_str(), "https://a.example/a/~user/%2F");
        assert!(!a.is_well_known());
        assert_eq!(a.shown(), a.as_str());
        assert_eq!(
            id("https://a.example/%e2%82%ac").as_deref(),
            Ok("https://a.example/%E2%82%AC")
        );
        // What a request target cannot carry is escaped, so the identity reads back as itself.
        assert_eq!(
            id("https://a.example/100%").as_deref(),
            Ok("https://a.example/100%25")
        );
        assert_eq!(
            id("https://a.example/a b/\u{e9}").as_deref(),
            Ok("https://a.example/a%20b/%C3%A9")
        );
        assert_eq!(
            id("https://a.example/a%20b/%c3%a9").as_deref(),
            Ok("https://a.example/a%20b/%C3%A9")
        );
        // Found by fuzz/signature_agent: a segment ". " is not a dot segment, and its space
        // must read back the same from the identity and from the fetch URL.
        let a = AgentUrl::parse("https://agent.e0/a/. /").unwrap();
        assert_eq!(a.id().as_str(), "https://agent.e0/a/.%20/");
        assert_eq!(AgentUrl::parse(a.fetch_url()).unwrap().id(), a.id());
        assert_eq!(AgentId::parse(a.id().as_str()).as_ref(), Ok(a.id()));
        // The well-known path elsewhere than at the root, or with a trailing slash, is not it.
        for other in [
            "https://a.example/x/.well-known/http-message-signatures-directory",
            "https://a.example/.well-known/http-message-signatures-directory/",
        ] {
            assert!(!AgentId::parse(other).unwrap().is_well_known(), "{other}");
        }
    }

    #[test]
    fn invalid_urls() {
        assert_eq!(id("http://agent.example"), Err(UrlError::NotHttps));
        assert_eq!(id("agent.example"), Err(UrlError::NotHttps));
        assert_eq!(id("https://u@agent.example"), Err(UrlError::UserInfo));
        assert_eq!(id("https://agent.example:99999"), Err(UrlError::BadPort));
        assert_eq!(id("https://agent.example:x"), Err(UrlError::BadPort));
        assert_eq!(id("https://"), Err(UrlError::NoHost));
        assert_eq!(id("https://a b"), Err(UrlError::BadHost));
    }

    #[test]
    fn fetch_urls_keep_the_query_the_identity_drops() {
        let f = |u| AgentUrl::parse(u).map(|a| a.fetch_url().to_string());
        assert_eq!(
            f("https://A.example:443/keys.json?v=2#frag").as_deref(),
            Ok("https://a.example/keys.json?v=2")
        );
        assert_eq!(
            id("https://A.example:443/keys.json?v=2#frag").as_deref(),
            Ok("https://a.example/keys.json")
        );
        assert_eq!(
            AgentUrl::parse("https://a.example/keys.json?v=2")
                .unwrap()
                .fetch_target(),
            ("a.example".into(), "/keys.json?v=2".into())
        );
        assert_eq!(f("https://a.example").as_deref(), Ok(WK_A));
        assert_eq!(
            f("https://a.example?a=1&b=/x?y").as_deref(),
            Ok(format!("{WK_A}?a=1&b=/x?y").as_str())
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
    }

    const WK_A: &str = "https://a.example/.well-known/http-message-signatures-directory";

    #[test]
    fn fetch_targets() {
        let t = |u| AgentUrl::parse(u).unwrap().fetch_target();
        assert_eq!(
            t("https://a.example:8443"),
            ("a.example:8443".into(), DIRECTORY_PATH.into())
        );
        assert_eq!(
            t("https://a.example/k.json"),
            ("a.example".into(), "/k.json".into())
        );
        assert_eq!(
            t("https://a.example/?v=3"),
            ("a.example".into(), format!("{DIRECTORY_PATH}?v=3"))
        );
    }
}
