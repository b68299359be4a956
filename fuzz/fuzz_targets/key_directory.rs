//! JWK Sets and their keys of every type (OKP, EC P-256, RSA): parsing never panics, an
//! accepted key's thumbprint is its index, and any bytes offered as a signature with any key
//! are refused or accepted without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wba_filter::directory::parse_key_set;
use wba_filter::directory::KidRule;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input: a directory body, then signature bytes.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (sig, body) = rest.split_at(rest.len() - at);
    for kind in [KidRule::Thumbprint, KidRule::Label] {
        let parsed = wba_filter_fuzz::bounded("parse_key_set", || parse_key_set(body, kind, 64));
        let Ok(set) = parsed else {
            continue;
        };
        for key in &set.keys {
            assert_eq!(
                key.jwk.thumbprint().ok().as_deref(),
                Some(key.thumbprint.as_str())
            );
            // Nothing verifies by accident over the body itself with a random signature: it may
            // be refused for any reason, but must not panic.
            let verified = wba_filter_fuzz::bounded("Key::verify", || key.verify(body, sig));
            assert!(key.alg().is_some() || verified.is_err());
        }
    }
});
