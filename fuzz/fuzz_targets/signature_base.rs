//! Signature base construction: the first line is a `Signature-Input` value, the rest a request
//! in the text form of `wba_filter_fuzz` (request line, then header lines). The base is built
//! for each parsed signature over the request, and over a response carrying the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::base::{signature_base, Message};
use wba_filter::request::HttpResponse;
use wba_filter::signature_input::parse_signature_input;

fuzz_target!(|data: &[u8]| {
    let text = wba_filter_fuzz::text(data);
    wba_filter_fuzz::bounded("signature base", || check(&text));
});

fn check(text: &str) {
    let (input, rest) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(inputs) = parse_signature_input(input) else {
        return;
    };
    let request = wba_filter_fuzz::request(rest);
    let response = HttpResponse {
        status: 200,
        headers: request.headers.clone(),
    };
    for i in &inputs {
        if let Ok(base) = signature_base(Message::Request(&request), i) {
            assert!(base.ends_with(&i.serialized));
        }
        let _ = signature_base(
            Message::Response {
                request: &request,
                response: &response,
            },
            i,
        );
    }
}
