//! `Signature-Input` parsing, and the re-serialization that becomes `@signature-params`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::signature_input::parse_signature_input;

fuzz_target!(|data: &[u8]| {
    let value = wba_filter_fuzz::text(data);
    if let Ok(inputs) = parse_signature_input(&value) {
        for input in &inputs {
            let _ = input.is_web_bot_auth();
            // What we serialize, a peer must be able to parse.
            let again = format!("l={}", input.serialized);
            assert!(parse_signature_input(&again).is_ok(), "{again}");
        }
    }
});
