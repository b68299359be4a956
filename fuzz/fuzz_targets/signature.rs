//! `Signature` parsing: the field as a whole (labels defined once) and each member's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::signature::{parse_signature, parse_signature_field};

fuzz_target!(|data: &[u8]| {
    let value = wba_filter_fuzz::text(data);
    wba_filter_fuzz::bounded("Signature", || check(&value));
});

fn check(value: &str) {
    let strict = parse_signature(value);
    let Ok(field) = parse_signature_field(value) else {
        assert!(strict.is_err(), "{value}");
        return;
    };
    for label in field.labels() {
        assert!(field.bytes(label).is_some());
    }
    if let Ok(pairs) = strict {
        assert_eq!(pairs.len(), field.len());
        for (label, bytes) in &pairs {
            assert_eq!(field.bytes(label), Some(Ok(bytes.as_slice())));
        }
    }
}
