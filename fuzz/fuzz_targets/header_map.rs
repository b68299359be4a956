//! Decoding the host's serialized header maps (the bytes Envoy hands the filter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::header_map::decode_header_map;

fuzz_target!(|data: &[u8]| {
    wba_filter_fuzz::bounded("decode_header_map", || decode_header_map(data));
});
