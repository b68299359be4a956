//! The prefix of the filter's result headers (`header_prefix`), checked once when the
//! configuration loads.

use std::fmt;

use crate::plan::is_owned_header;

/// The headers a prefix must leave alone: the filter removes every inbound header it owns.
const PROTECTED: [&str; 3] = ["signature", "signature-input", "signature-agent"];

/// A header name prefix: non-empty, lowercase, of header name (token) characters, and owning
/// none of the signature headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPrefix(String);

/// Why a configured `header_prefix` is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPrefixError {
    /// Empty, or a character a header name cannot hold (as configured).
    NotAPrefix(String),
    /// It would remove this signature header (lowercased).
    Owns {
        prefix: String,
        header: &'static str,
    },
}

impl fmt::Display for HeaderPrefixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAPrefix(raw) => write!(
                f,
                "header_prefix {raw:?} must be a non-empty header name prefix"
            ),
            Self::Owns { prefix, header } => {
                write!(
                    f,
                    "header_prefix {prefix:?} would remove the {header} header"
                )
            }
        }
    }
}

impl std::error::Error for HeaderPrefixError {}

impl HeaderPrefix {
    /// Checks a configured prefix, which is compared case-insensitively: kept lowercase.
    pub fn parse(raw: &str) -> Result<Self, HeaderPrefixError> {
        let prefix = raw.to_ascii_lowercase();
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(HeaderPrefixError::NotAPrefix(raw.to_string()));
        }
        if let Some(header) = PROTECTED.into_iter().find(|h| is_owned_header(&prefix, h)) {
            return Err(HeaderPrefixError::Owns { prefix, header });
        }
        Ok(HeaderPrefix(prefix))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the filter owns header `name` ([`is_owned_header`]).
    pub fn owns(&self, name: &str) -> bool {
        is_owned_header(&self.0, name)
    }

    /// The result header `suffix`, e.g. `x-web-bot-auth-result`.
    pub fn header(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.0)
    }
}

impl std::ops::Deref for HeaderPrefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HeaderPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for HeaderPrefix {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for HeaderPrefix {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn lowercased_and_checked() {
        let p = HeaderPrefix::parse("X-Bot-").unwrap();
        assert_eq!(p, "x-bot-");
        assert_eq!(p.header("result"), "x-bot-result");
        assert!(p.owns("X-Bot-Agent") && !p.owns("x-other"));
        assert_eq!(
            HeaderPrefix::parse(""),
            Err(HeaderPrefixError::NotAPrefix(String::new()))
        );
        assert!(matches!(
            HeaderPrefix::parse("x bot"),
            Err(HeaderPrefixError::NotAPrefix(_))
        ));
        assert_eq!(
            HeaderPrefix::parse("Sig"),
            Err(HeaderPrefixError::Owns {
                prefix: "sig".into(),
                header: "signature"
            })
        );
        assert_eq!(
            HeaderPrefix::parse("signature_a")
                .map_err(|e| e.to_string())
                .unwrap_err(),
            "header_prefix \"signature_a\" would remove the signature-agent header"
        );
    }
}
