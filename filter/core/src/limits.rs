//! Bounds on the signature fields a request may carry, checked while they are parsed.
//!
//! An attacker controls every byte of `Signature-Input`, `Signature` and `Signature-Agent` up to
//! the proxy's header limit (Envoy: 60 KiB). Each count (labels, components, parameters) and
//! each item's size is bounded, and a field past a bound is refused (`malformed`): every item is
//! checked before it is built, and the parse stops at the first one past a bound, so nothing past
//! it is built ([`parse_dictionary`]; [`screen_item`] checks an item without
//! building anything). Legitimate signatures are far inside them: a Web Bot Auth signature covers
//! a handful of components and carries six parameters; an RSA-8192 signature is 1,024 bytes.

use std::cell::Cell;
use std::convert::Infallible;
use std::fmt;

use sfv::visitor::{
    DictionaryVisitor, EntryVisitor, Ignored, InnerListVisitor, ItemVisitor, ParameterVisitor,
};
use sfv::{BareItemFromInput, Dictionary, KeyRef};

/// Labels (members) of one `Signature-Input` or `Signature` field.
pub const MAX_LABELS: usize = 64;
/// Components one signature covers (items of its inner list).
pub const MAX_COMPONENTS: usize = 64;
/// Parameters of one member, or of one item (a signature's own parameters, a component's).
pub const MAX_PARAMETERS: usize = 16;
/// Members of one `Signature-Agent` field.
pub const MAX_AGENT_MEMBERS: usize = 64;
/// Bytes of one String, Token or Display String (a component name, a `keyid`, a URL).
pub const MAX_STRING_BYTES: usize = 2048;
/// Bytes of one Dictionary or parameter key (a label, a member key).
pub const MAX_KEY_BYTES: usize = 128;
/// Decoded bytes of one Byte Sequence (a signature: RSA-8192 is 1,024 bytes, ML-DSA-87 4,627).
pub const MAX_BYTE_SEQUENCE: usize = 8192;

/// The bounds of one kind of field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Members of the Dictionary.
    pub members: usize,
    /// Items of one Inner List.
    pub inner_items: usize,
    /// Parameters of one member or item.
    pub parameters: usize,
    pub string_bytes: usize,
    pub key_bytes: usize,
    pub byte_sequence: usize,
}

/// `Signature-Input` and `Signature`: labels, components, parameters, sizes.
pub const SIGNATURE_FIELDS: Bounds = Bounds {
    members: MAX_LABELS,
    inner_items: MAX_COMPONENTS,
    parameters: MAX_PARAMETERS,
    string_bytes: MAX_STRING_BYTES,
    key_bytes: MAX_KEY_BYTES,
    byte_sequence: MAX_BYTE_SEQUENCE,
};

/// `Signature-Agent`: members (and, for the legacy form, its one String).
pub const SIGNATURE_AGENT: Bounds = Bounds {
    members: MAX_AGENT_MEMBERS,
    ..SIGNATURE_FIELDS
};

/// The first bound a field went past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Members(usize),
    InnerItems(usize),
    Parameters(usize),
    String(usize),
    Key(usize),
    ByteSequence(usize),
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Members(n) => write!(f, "more than {n} members"),
            Self::InnerItems(n) => write!(f, "an inner list of more than {n} items"),
            Self::Parameters(n) => write!(f, "more than {n} parameters on one member or item"),
            Self::String(n) => write!(f, "a string or token longer than {n} bytes"),
            Self::Key(n) => write!(f, "a key longer than {n} bytes"),
            Self::ByteSequence(n) => write!(f, "a byte sequence longer than {n} bytes"),
        }
    }
}

impl std::error::Error for Exceeded {}

/// Why a screened field is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    /// Not valid RFC 9651 syntax (of the type screened for).
    Syntax,
    Exceeded(Exceeded),
}

/// Parses `value` as a Dictionary within `bounds`, in one pass: each item is checked before it
/// is built, and the parse stops at the first one past a bound (nothing past it is built).
/// Also returns the first key defined twice, if any (RFC 9651 keeps the last definition).
pub fn parse_dictionary(
    value: &str,
    bounds: &Bounds,
) -> Result<(Dictionary, Option<String>), Screened> {
    let screen = Screen::new(bounds);
    let parsed = sfv::Parser::new(value).parse_dictionary_with_visitor(DictScreen {
        screen: &screen,
        members: 0,
        dict: Build {
            dict: Dictionary::new(),
            duplicate: None,
        },
    });
    screen.result(parsed.is_ok())?;
    match parsed {
        Ok(Build { dict, duplicate }) => Ok((dict, duplicate)),
        Err(_) => Err(Screened::Syntax),
    }
}

/// Checks that `value` is an Item within `bounds` (the legacy `Signature-Agent` String).
pub fn screen_item(value: &str, bounds: &Bounds) -> Result<(), Screened> {
    let screen = Screen::new(bounds);
    let parsed = sfv::Parser::new(value).parse_item_with_visitor(ItemScreen {
        screen: &screen,
        inner: Ignored,
    });
    screen.result(parsed.is_ok())
}

/// The bounds and the first one exceeded, shared by the visitors of one pass.
struct Screen<'b> {
    bounds: &'b Bounds,
    exceeded: Cell<Option<Exceeded>>,
}

/// Ends a pass early: the reason is in [`Screen::exceeded`] (sfv keeps only its own error).
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a bound was exceeded")
    }
}

impl std::error::Error for Stop {}

impl<'b> Screen<'b> {
    fn new(bounds: &'b Bounds) -> Self {
        Screen {
            bounds,
            exceeded: Cell::new(None),
        }
    }

    fn stop(&self, e: Exceeded) -> Stop {
        self.exceeded.set(Some(e));
        Stop
    }

    fn result(&self, parsed: bool) -> Result<(), Screened> {
        match (self.exceeded.get(), parsed) {
            (Some(e), _) => Err(Screened::Exceeded(e)),
            (None, true) => Ok(()),
            (None, false) => Err(Screened::Syntax),
        }
    }

    fn key(&self, key: &KeyRef) -> Result<(), Stop> {
        if key.as_str().len() > self.bounds.key_bytes {
            return Err(self.stop(Exceeded::Key(self.bounds.key_bytes)));
        }
        Ok(())
    }

    fn bare(&self, v: &BareItemFromInput<'_>) -> Result<(), Stop> {
        let b = self.bounds;
        let (len, max, exceeded): (usize, usize, fn(usize) -> Exceeded) = match v {
            sfv::GenericBareItem::String(s) => (s.as_str().len(), b.string_bytes, Exceeded::String),
            sfv::GenericBareItem::Token(t) => (t.as_str().len(), b.string_bytes, Exceeded::String),
            sfv::GenericBareItem::DisplayString(s) => (s.len(), b.string_bytes, Exceeded::String),
            sfv::GenericBareItem::ByteSequence(bytes) => {
                (bytes.len(), b.byte_sequence, Exceeded::ByteSequence)
            }
            _ => return Ok(()),
        };
        if len > max {
            return Err(self.stop(exceeded(max)));
        }
        Ok(())
    }
}

/// Builds the Dictionary with sfv's own visitors, noting the first key defined twice.
struct Build {
    dict: Dictionary,
    duplicate: Option<String>,
}

impl Build {
    /// sfv's own visitor for the entry `key` (the checking visitors below wrap it and call it
    /// only once an item passed its checks: nothing past a bound is built).
    fn entry<'de>(&mut self, key: &'de KeyRef) -> impl EntryVisitor<'de> + use<'_, 'de> {
        if self.duplicate.is_none() && self.dict.contains_key(key) {
            self.duplicate = Some(key.as_str().to_string());
        }
        Built(DictionaryVisitor::entry(&mut self.dict, key))
    }
}

/// sfv's builder for one entry, which cannot fail (its error type is `Infallible`).
struct Built<E>(Result<E, Infallible>);

impl<'de, E: EntryVisitor<'de>> EntryVisitor<'de> for Built<E> {
    type Error = E::Error;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        match self.0 {
            Ok(v) => v.item(),
            Err(e) => match e {},
        }
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        match self.0 {
            Ok(v) => v.inner_list(),
            Err(e) => match e {},
        }
    }
}

struct DictScreen<'s, 'b> {
    screen: &'s Screen<'b>,
    members: usize,
    dict: Build,
}

impl<'de> DictionaryVisitor<'de> for DictScreen<'_, '_> {
    type Out = Build;
    type Error = Stop;

    fn entry(&mut self, key: &'de KeyRef) -> Result<impl EntryVisitor<'de>, Self::Error> {
        // Every occurrence counts, a repeated key too: what is bounded is the work.
        self.members += 1;
        if self.members > self.screen.bounds.members {
            let max = self.screen.bounds.members;
            return Err(self.screen.stop(Exceeded::Members(max)));
        }
        self.screen.key(key)?;
        Ok(EntryScreen {
            screen: self.screen,
            inner: self.dict.entry(key),
        })
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        Ok(self.dict)
    }
}

struct EntryScreen<'s, 'b, E> {
    screen: &'s Screen<'b>,
    inner: E,
}

impl<'de, E: EntryVisitor<'de>> EntryVisitor<'de> for EntryScreen<'_, '_, E> {
    type Error = Stop;

    fn item(self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        Ok(ItemScreen {
            screen: self.screen,
            inner: self.inner.item().map_err(|_| Stop)?,
        })
    }

    fn inner_list(self) -> Result<impl InnerListVisitor<'de>, Self::Error> {
        Ok(InnerScreen {
            screen: self.screen,
            items: 0,
            inner: self.inner.inner_list().map_err(|_| Stop)?,
        })
    }
}

struct ItemScreen<'s, 'b, I> {
    screen: &'s Screen<'b>,
    inner: I,
}

impl<'de, I: ItemVisitor<'de>> ItemVisitor<'de> for ItemScreen<'_, '_, I> {
    type Out = I::Out;
    type Error = Stop;

    fn bare_item(
        self,
        bare_item: BareItemFromInput<'de>,
    ) -> Result<impl ParameterVisitor<'de, Out = Self::Out>, Self::Error> {
        self.screen.bare(&bare_item)?;
        Ok(ParamScreen {
            screen: self.screen,
            parameters: 0,
            inner: self.inner.bare_item(bare_item).map_err(|_| Stop)?,
        })
    }
}

struct InnerScreen<'s, 'b, L> {
    screen: &'s Screen<'b>,
    items: usize,
    inner: L,
}

impl<'de, L: InnerListVisitor<'de>> InnerListVisitor<'de> for InnerScreen<'_, '_, L> {
    type Error = Stop;

    fn item(&mut self) -> Result<impl ItemVisitor<'de>, Self::Error> {
        self.items += 1;
        if self.items > self.screen.bounds.inner_items {
            let max = self.screen.bounds.inner_items;
            return Err(self.screen.stop(Exceeded::InnerItems(max)));
        }
        Ok(ItemScreen {
            screen: self.screen,
            inner: self.inner.item().map_err(|_| Stop)?,
        })
    }

    fn finish(self) -> Result<impl ParameterVisitor<'de>, Self::Error> {
        Ok(ParamScreen {
            screen: self.screen,
            parameters: 0,
            inner: self.inner.finish().map_err(|_| Stop)?,
        })
    }
}

struct ParamScreen<'s, 'b, P> {
    screen: &'s Screen<'b>,
    parameters: usize,
    inner: P,
}

impl<'de, P: ParameterVisitor<'de>> ParameterVisitor<'de> for ParamScreen<'_, '_, P> {
    type Out = P::Out;
    type Error = Stop;

    fn parameter(
        &mut self,
        key: &'de KeyRef,
        value: BareItemFromInput<'de>,
    ) -> Result<(), Self::Error> {
        self.parameters += 1;
        if self.parameters > self.screen.bounds.parameters {
            let max = self.screen.bounds.parameters;
            return Err(self.screen.stop(Exceeded::Parameters(max)));
        }
        self.screen.key(key)?;
        self.screen.bare(&value)?;
        self.inner.parameter(key, value).map_err(|_| Stop)
    }

    fn finish(self) -> Result<Self::Out, Self::Error> {
        self.inner.finish().map_err(|_| Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// [`parse_dictionary`]'s verdict alone.
    fn screened(value: &str, bounds: &Bounds) -> Result<(), Screened> {
        parse_dictionary(value, bounds).map(|_| ())
    }

    fn components(n: usize) -> String {
        let names: Vec<String> = (0..n).map(|i| format!("\"h{i}\"")).collect();
        format!("sig1=({});tag=\"web-bot-auth\"", names.join(" "))
    }

    #[test]
    fn within_every_bound() {
        assert_eq!(
            screened(&components(MAX_COMPONENTS), &SIGNATURE_FIELDS),
            Ok(())
        );
        let labels: Vec<String> = (0..MAX_LABELS).map(|i| format!("l{i}=:AA==:")).collect();
        assert_eq!(screened(&labels.join(", "), &SIGNATURE_FIELDS), Ok(()));
        let params: String = (0..MAX_PARAMETERS).map(|i| format!(";p{i}=1")).collect();
        assert_eq!(
            screened(&format!("s=(\"a\"){params}"), &SIGNATURE_FIELDS),
            Ok(())
        );
    }

    #[test]
    fn each_bound_is_refused_one_past_it() {
        let e = |v: &str| screened(v, &SIGNATURE_FIELDS);
        assert_eq!(
            e(&components(MAX_COMPONENTS + 1)),
            Err(Screened::Exceeded(Exceeded::InnerItems(MAX_COMPONENTS)))
        );
        let labels: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}=:AA==:")).collect();
        assert_eq!(
            e(&labels.join(", ")),
            Err(Screened::Exceeded(Exceeded::Members(MAX_LABELS)))
        );
        // A repeated label counts each time.
        assert_eq!(
            e(&vec!["a=1"; MAX_LABELS + 1].join(", ")),
            Err(Screened::Exceeded(Exceeded::Members(MAX_LABELS)))
        );
        let params: String = (0..=MAX_PARAMETERS).map(|i| format!(";p{i}=1")).collect();
        assert_eq!(
            e(&format!("s=(\"a\"){params}")),
            Err(Screened::Exceeded(Exceeded::Parameters(MAX_PARAMETERS)))
        );
        // On a component too.
        assert_eq!(
            e(&format!("s=(\"a\"{params})")),
            Err(Screened::Exceeded(Exceeded::Parameters(MAX_PARAMETERS)))
        );
        let long = "a".repeat(MAX_STRING_BYTES + 1);
        assert_eq!(
            e(&format!("s=(\"{long}\")")),
            Err(Screened::Exceeded(Exceeded::String(MAX_STRING_BYTES)))
        );
        assert_eq!(
            e(&format!("s=(\"a\");keyid=\"{long}\"")),
            Err(Screened::Exceeded(Exceeded::String(MAX_STRING_BYTES)))
        );
        assert_eq!(
            e(&format!("s=(\"a\");keyid={long}")),
            Err(Screened::Exceeded(Exceeded::String(MAX_STRING_BYTES)))
        );
        assert_eq!(
            e(&format!("s=(\"{}\")", "a".repeat(MAX_STRING_BYTES))),
            Ok(())
        );
        let key = "k".repeat(MAX_KEY_BYTES + 1);
        assert_eq!(
            e(&format!("{key}=:AA==:")),
            Err(Screened::Exceeded(Exceeded::Key(MAX_KEY_BYTES)))
        );
        assert_eq!(e(&format!("{}=:AA==:", "k".repeat(MAX_KEY_BYTES))), Ok(()));
        use base64::Engine as _;
        let b64 = |n| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        assert_eq!(e(&format!("s=:{}:", b64(MAX_BYTE_SEQUENCE))), Ok(()));
        assert_eq!(
            e(&format!("s=:{}:", b64(MAX_BYTE_SEQUENCE + 1))),
            Err(Screened::Exceeded(Exceeded::ByteSequence(
                MAX_BYTE_SEQUENCE
            )))
        );
    }

    #[test]
    fn syntax_is_told_apart_and_items_screen_too() {
        assert_eq!(
            screened("sig1=(\"a\"", &SIGNATURE_FIELDS),
            Err(Screened::Syntax)
        );
        // A bound crossed before a later syntax error is what is reported: the pass stopped.
        let v = format!("{}, (((", components(MAX_COMPONENTS + 1));
        assert!(matches!(
            screened(&v, &SIGNATURE_FIELDS),
            Err(Screened::Exceeded(_))
        ));
        assert_eq!(
            screen_item("\"https://a.example\"", &SIGNATURE_AGENT),
            Ok(())
        );
        let long = format!("\"https://a.example/{}\"", "x".repeat(MAX_STRING_BYTES));
        assert_eq!(
            screen_item(&long, &SIGNATURE_AGENT),
            Err(Screened::Exceeded(Exceeded::String(MAX_STRING_BYTES)))
        );
        assert_eq!(
            screen_item("\"a\" junk", &SIGNATURE_AGENT),
            Err(Screened::Syntax)
        );
    }
}
