//! `Signature` parsing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::signature::parse_signature;

fuzz_target!(|data: &[u8]| {
    let _ = parse_signature(&wba_filter_fuzz::text(data));
});
