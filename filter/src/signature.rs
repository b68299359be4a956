//! The `Signature` field (RFC 9421 section 4.2): label -> signature bytes.

use std::fmt;

use sfv::{BareItem, Dictionary, ListEntry};

/// Why a `Signature` field is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFieldError {
    Syntax,
    NotByteSequence(String),
}

impl fmt::Display for SignatureFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => write!(f, "Signature is not a structured-field dictionary"),
            Self::NotByteSequence(l) => write!(f, "Signature member {l:?} is not a byte sequence"),
        }
    }
}

impl std::error::Error for SignatureFieldError {}

/// Parses a `Signature` field value into (label, bytes) pairs in order.
pub fn parse_signature(value: &str) -> Result<Vec<(String, Vec<u8>)>, SignatureFieldError> {
    let dict: Dictionary = sfv::Parser::new(value)
        .parse()
        .map_err(|_| SignatureFieldError::Syntax)?;
    dict.into_iter()
        .map(|(label, entry)| match entry {
            ListEntry::Item(item) => match item.bare_item {
                BareItem::ByteSequence(b) => Ok((label.as_str().to_string(), b)),
                _ => Err(SignatureFieldError::NotByteSequence(
                    label.as_str().to_string(),
                )),
            },
            ListEntry::InnerList(_) => Err(SignatureFieldError::NotByteSequence(
                label.as_str().to_string(),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn parses_labels() {
        let s = parse_signature("a=:AAE=:, b=:/w==:").expect("parse");
        assert_eq!(s, vec![("a".into(), vec![0, 1]), ("b".into(), vec![255])]);
    }

    #[test]
    fn refuses_non_bytes() {
        assert_eq!(
            parse_signature("a=1"),
            Err(SignatureFieldError::NotByteSequence("a".into()))
        );
        assert_eq!(
            parse_signature("a=:not base64!:"),
            Err(SignatureFieldError::Syntax)
        );
        assert_eq!(parse_signature("=:AA==:"), Err(SignatureFieldError::Syntax));
    }
}
