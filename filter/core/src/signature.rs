//! The `Signature` field (RFC 9421 section 4.2): label -> signature bytes.

use std::fmt;

use sfv::{BareItem, ListEntry};

use crate::limits::Exceeded;
use crate::sf_dictionary::{DictionaryError, Labeled};

/// Why a `Signature` field, or one of its members, is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFieldError {
    Syntax,
    /// Past one of the bounds on labels, parameters or sizes ([`crate::limits`]).
    TooLarge(Exceeded),
    /// A label defined twice (RFC 9421 section 4), within a line or across lines.
    DuplicateLabel(String),
    NotByteSequence(String),
}

impl fmt::Display for SignatureFieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => write!(f, "Signature is not a structured-field dictionary"),
            Self::TooLarge(e) => write!(f, "Signature is past this verifier's bounds: {e}"),
            Self::DuplicateLabel(l) => write!(f, "Signature defines label {l:?} more than once"),
            Self::NotByteSequence(l) => write!(f, "Signature member {l:?} is not a byte sequence"),
        }
    }
}

impl std::error::Error for SignatureFieldError {}

/// A `Signature` field read as a Dictionary with unique labels, its members not yet
/// interpreted: only the signatures a verifier selects must be byte sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureField(Labeled);

impl std::ops::Deref for SignatureField {
    type Target = Labeled;
    fn deref(&self) -> &Labeled {
        &self.0
    }
}

/// Reads a `Signature` field value (all lines already combined): dictionary syntax and label
/// uniqueness only.
pub fn parse_signature_field(value: &str) -> Result<SignatureField, SignatureFieldError> {
    Labeled::parse(value)
        .map(SignatureField)
        .map_err(|e| match e {
            DictionaryError::Syntax => SignatureFieldError::Syntax,
            DictionaryError::DuplicateKey(l) => SignatureFieldError::DuplicateLabel(l),
            DictionaryError::TooLarge(e) => SignatureFieldError::TooLarge(e),
        })
}

/// Parses a `Signature` field value into (label, bytes) pairs in order; every member must be a
/// byte sequence.
pub fn parse_signature(value: &str) -> Result<Vec<(String, Vec<u8>)>, SignatureFieldError> {
    let field = parse_signature_field(value)?;
    field.check_all()?;
    Ok(field
        .labels()
        .filter_map(|label| Some((label.to_string(), field.bytes(label)?.ok()?.to_vec())))
        .collect())
}

impl SignatureField {
    /// Every member is a byte sequence; else the first that is not.
    pub fn check_all(&self) -> Result<(), SignatureFieldError> {
        for label in self.labels() {
            if let Some(Err(e)) = self.bytes(label) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The signature bytes of `label`: `None` without such a member, an error when the member
    /// is not a byte sequence.
    pub fn bytes(&self, label: &str) -> Option<Result<&[u8], SignatureFieldError>> {
        let bytes = match self.entry(label)? {
            ListEntry::Item(item) => match &item.bare_item {
                BareItem::ByteSequence(b) => Some(b.as_slice()),
                _ => None,
            },
            ListEntry::InnerList(_) => None,
        };
        Some(bytes.ok_or_else(|| SignatureFieldError::NotByteSequence(label.to_string())))
    }
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
    fn refuses_what_is_past_the_bounds() {
        use crate::limits::{MAX_BYTE_SEQUENCE, MAX_LABELS};
        use base64::Engine as _;
        let sig = |n| base64::engine::general_purpose::STANDARD.encode(vec![1u8; n]);
        assert!(parse_signature_field(&format!("sig1=:{}:", sig(MAX_BYTE_SEQUENCE))).is_ok());
        assert_eq!(
            parse_signature_field(&format!("sig1=:{}:", sig(20 * 1024))),
            Err(SignatureFieldError::TooLarge(Exceeded::ByteSequence(
                MAX_BYTE_SEQUENCE
            )))
        );
        let labels: Vec<String> = (0..1000).map(|i| format!("s{i}=:AA==:")).collect();
        assert_eq!(
            parse_signature_field(&labels.join(", ")),
            Err(SignatureFieldError::TooLarge(Exceeded::Members(MAX_LABELS)))
        );
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

    #[test]
    fn refuses_a_label_defined_twice() {
        assert_eq!(
            parse_signature("a=:AAE=:, a=:/w==:"),
            Err(SignatureFieldError::DuplicateLabel("a".into()))
        );
        // Lines are combined with ", " before parsing: a repeat across lines is the same.
        assert_eq!(
            parse_signature_field(&["a=:AAE=:", "b=:AA==:, a=:/w==:"].join(", ")),
            Err(SignatureFieldError::DuplicateLabel("a".into()))
        );
    }

    #[test]
    fn members_are_interpreted_only_when_asked() {
        let f = parse_signature_field("odd=1, list=(:AA==:), sig1=:AAE=:").expect("parse");
        assert_eq!(f.labels().collect::<Vec<_>>(), ["odd", "list", "sig1"]);
        assert_eq!(f.bytes("sig1"), Some(Ok(&[0u8, 1][..])));
        assert_eq!(
            f.bytes("odd"),
            Some(Err(SignatureFieldError::NotByteSequence("odd".into())))
        );
        assert_eq!(
            f.bytes("list"),
            Some(Err(SignatureFieldError::NotByteSequence("list".into())))
        );
        assert_eq!(f.bytes("absent"), None);
        assert!(f.contains("odd") && !f.contains("absent"));
        // The strict form still refuses the field.
        assert!(parse_signature("odd=1, sig1=:AAE=:").is_err());
    }
}
