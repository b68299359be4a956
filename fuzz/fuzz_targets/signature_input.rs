//! `Signature-Input` parsing: the field as a whole (labels defined once), the members selected
//! by tag, and the re-serialization that becomes `@signature-params`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::signature_input::{parse_input_field, parse_signature_input, WEB_BOT_AUTH_TAG};

fuzz_target!(|data: &[u8]| {
    let value = wba_filter_fuzz::text(data);
    wba_filter_fuzz::bounded("Signature-Input", || check(&value));
});

fn check(value: &str) {
    let strict = parse_signature_input(value);
    let Ok(field) = parse_input_field(value) else {
        assert!(strict.is_err(), "{value}");
        return;
    };
    assert_eq!(field.labels().count(), field.len());
    for (label, input) in field.tagged(WEB_BOT_AUTH_TAG) {
        assert!(field.contains(label));
        if let Ok(input) = input {
            assert!(input.is_web_bot_auth());
        }
    }
    if let Ok(inputs) = strict {
        assert_eq!(inputs.len(), field.len());
        for input in &inputs {
            // What we serialize, a peer must be able to parse.
            let again = format!("l={}", input.serialized);
            assert!(parse_signature_input(&again).is_ok(), "{again}");
        }
    }
}
