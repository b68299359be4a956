//! The proxy-wasm serialization of a header map, as the host hands it over: a u32 count,
//! then a (name length, value length) u32 pair per header, then each name and each value
//! followed by a NUL; integers little-endian.
//!
//! Decoded here rather than by the SDK's `get_map`, which unwraps `String::from_utf8` on
//! every name and value: HTTP/1.1 allows bytes 0x80-0xFF in field values, so one such header
//! would panic the VM. Names and values are decoded lossily (a covered field holding such
//! bytes then fails verification: the safe side).

/// The pairs of a serialized map, in order; `None` when the bytes are not a well-formed map.
pub fn decode_header_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_le_bytes(<[u8; 4]>::try_from(b).ok()?)).ok()
    };
    let count = u32_at(0)?;
    let mut at = count.checked_mul(8)?.checked_add(4)?;
    if at > bytes.len() {
        return None;
    }
    let mut take = |len: usize| -> Option<String> {
        let end = at.checked_add(len)?;
        let s = String::from_utf8_lossy(bytes.get(at..end)?).into_owned();
        at = end.checked_add(1)?;
        Some(s)
    };
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let name = take(u32_at(4 + i * 8)?)?;
        let value = take(u32_at(8 + i * 8)?)?;
        out.push((name, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// What the host writes (proxy-wasm-cpp-host's `serializeMap`).
    fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend((n.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend(*n);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    #[test]
    fn decodes_pairs_in_order() {
        let bytes = encode(&[(b":method", b"GET"), (b"x-a", b""), (b"x-a", b"2")]);
        let map = decode_header_map(&bytes).unwrap();
        let want = [(":method", "GET"), ("x-a", ""), ("x-a", "2")];
        assert_eq!(map.len(), 3);
        for ((n, v), (wn, wv)) in map.iter().zip(want) {
            assert_eq!((n.as_str(), v.as_str()), (wn, wv));
        }
        assert_eq!(decode_header_map(&[]), Some(vec![]));
        assert_eq!(decode_header_map(&encode(&[])), Some(vec![]));
    }

    #[test]
    fn decodes_non_utf8_values_lossily() {
        let bytes = encode(&[(b"x-note", b"caf\xe9"), (b"x-\xff", b"\xff\xfe")]);
        let map = decode_header_map(&bytes).unwrap();
        assert_eq!(map[0], ("x-note".into(), "caf\u{fffd}".into()));
        assert_eq!(map[1], ("x-\u{fffd}".into(), "\u{fffd}\u{fffd}".into()));
    }

    #[test]
    fn refuses_truncated_or_lying_maps() {
        let good = encode(&[(b"a", b"b"), (b"cc", b"dd")]);
        for cut in 1..good.len() - 1 {
            assert_eq!(decode_header_map(&good[..cut]), None, "cut at {cut}");
        }
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header_map(&huge), None);
        let mut long = good;
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_header_map(&long), None);
    }
}
