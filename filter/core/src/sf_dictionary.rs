//! Structured-field Dictionaries whose keys must be unique.
//!
//! RFC 9651 resolves a repeated key silently (the last one wins), but RFC 9421 section 4 makes a
//! label defined twice in `Signature-Input` or `Signature` an error: another parser downstream
//! may read the other definition. The fields' lines are combined with `, ` before parsing, so a
//! repeat across lines is caught the same way as one within a line.

use std::fmt;

use sfv::{Dictionary, ListEntry};

use crate::limits::{parse_dictionary, Bounds, Exceeded, Screened};

/// Why a Dictionary with unique keys cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DictionaryError {
    /// Not an RFC 9651 Dictionary.
    Syntax,
    /// A key defined more than once (the first such key).
    DuplicateKey(String),
    /// Past one of the field's [`Bounds`] (checked before the field is parsed into values).
    TooLarge(Exceeded),
}

impl fmt::Display for DictionaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => write!(f, "not a structured-field dictionary"),
            Self::DuplicateKey(k) => write!(f, "{k:?} is defined more than once"),
            Self::TooLarge(e) => write!(f, "past this verifier's bounds: {e}"),
        }
    }
}

impl std::error::Error for DictionaryError {}

/// Parses `value` as a Dictionary within `bounds`, refusing a key defined twice, in one pass
/// ([`parse_dictionary`]): each item is checked against the bounds before it is built, and a
/// repeated key is found by looking it up in the map being built (hashed), in linear time.
pub fn parse_unique_dictionary(
    value: &str,
    bounds: &Bounds,
) -> Result<Dictionary, DictionaryError> {
    match parse_dictionary(value, bounds) {
        Ok((dict, None)) => Ok(dict),
        Ok((_, Some(key))) => Err(DictionaryError::DuplicateKey(key)),
        Err(Screened::Syntax) => Err(DictionaryError::Syntax),
        Err(Screened::Exceeded(e)) => Err(DictionaryError::TooLarge(e)),
    }
}

/// A Dictionary whose keys are labels, each defined once (`Signature-Input`, `Signature`).
#[derive(Debug, Clone, PartialEq)]
pub struct Labeled(pub(crate) Dictionary);

impl Labeled {
    /// Parses `value` with [`parse_unique_dictionary`], within the signature fields' bounds.
    pub fn parse(value: &str) -> Result<Self, DictionaryError> {
        parse_unique_dictionary(value, &crate::limits::SIGNATURE_FIELDS).map(Labeled)
    }

    /// The labels, in order.
    pub fn labels(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.keys().map(|k| k.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, label: &str) -> bool {
        self.0.contains_key(label)
    }

    /// The member of `label`, as parsed.
    pub fn entry(&self, label: &str) -> Option<&ListEntry> {
        self.0.get(label)
    }

    /// Every (label, member), in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &ListEntry)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const B: Bounds = crate::limits::SIGNATURE_FIELDS;

    #[test]
    fn a_field_past_its_bounds_is_refused_before_it_is_built() {
        let many = vec!["a=1"; crate::limits::MAX_LABELS + 1].join(", ");
        assert_eq!(
            parse_unique_dictionary(&many, &B),
            Err(DictionaryError::TooLarge(Exceeded::Members(
                crate::limits::MAX_LABELS
            )))
        );
    }

    #[test]
    fn parses_like_sfv_when_keys_are_unique() {
        let d = parse_unique_dictionary("a=1, b=(2 3);p, c", &B).expect("parse");
        let plain: Dictionary = sfv::Parser::new("a=1, b=(2 3);p, c").parse().expect("sfv");
        assert_eq!(d, plain);
    }

    #[test]
    fn refuses_a_key_defined_twice() {
        assert_eq!(
            parse_unique_dictionary("a=1, b=2, a=3", &B),
            Err(DictionaryError::DuplicateKey("a".into()))
        );
        // A bare key (boolean true) repeats just the same.
        assert_eq!(
            parse_unique_dictionary("a, a=:AA==:", &B),
            Err(DictionaryError::DuplicateKey("a".into()))
        );
        // Two field lines combined.
        assert_eq!(
            parse_unique_dictionary(&["x=1, y=2", "z=3, y=4"].join(", "), &B),
            Err(DictionaryError::DuplicateKey("y".into()))
        );
    }

    #[test]
    fn syntax_errors_win() {
        assert_eq!(
            parse_unique_dictionary("a=1, a=2, (((", &B),
            Err(DictionaryError::Syntax)
        );
        assert_eq!(
            parse_unique_dictionary("=1", &B),
            Err(DictionaryError::Syntax)
        );
    }
}
