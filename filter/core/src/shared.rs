//! State shared by every worker's VM: Envoy's proxy-wasm shared data, a byte map with
//! compare-and-swap. Behind a trait so the cache and replay logic are tested natively.

use std::collections::HashMap;
use std::fmt;

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since it was read: read again and retry.
    CasMismatch,
    /// The host refused for another reason.
    Unavailable,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StoreError::CasMismatch => "shared data changed concurrently",
            StoreError::Unavailable => "shared data unavailable",
        })
    }
}

impl std::error::Error for StoreError {}

/// A byte map shared across workers.
pub trait SharedStore {
    /// The value and its version (`cas`), or `(None, None)`.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` if the key's version is still `cas` (`None`: unconditionally).
    ///
    /// Envoy's shared data compares versions only for a key that exists: a write to an absent
    /// key always succeeds, whatever `cas`. So two workers that both read "absent" would both
    /// write. The filter therefore writes request-time state only with the version of an entry
    /// that exists, and creates entries with [`SharedStore::create_if_absent`] when the
    /// configuration loads.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;

    /// Creates `key` with `value` unless it exists; returns whether it created it.
    ///
    /// Envoy offers no atomic create: this reads, then writes. The proxy-wasm filter calls it
    /// only while a configuration loads, which Envoy does first on the main thread (its
    /// "configuration canary"), before any worker serves a request; later calls find the
    /// entries there and write nothing.
    fn create_if_absent(&mut self, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let (present, cas) = self.get(key);
        if present.is_some() || cas.is_some() {
            return Ok(false);
        }
        self.set(key, value, None).map(|()| true)
    }
}

/// An in-memory [`SharedStore`] with Envoy's semantics, for tests and native tools.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    map: HashMap<String, (Vec<u8>, u32)>,
    /// Writes attempted (successful or not), for tests that count traffic.
    pub writes: usize,
}

impl MemoryStore {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.map.get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.writes += 1;
        let current = self.map.get(key).map(|(_, c)| *c);
        if let Some(expected) = cas {
            // Envoy: a cas of 0 means "unconditional"; a stale cas is a mismatch.
            if expected != 0 && current.is_some_and(|c| c != expected) {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = current.map_or(1, |c| c.wrapping_add(1).max(1));
        self.map.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn create_if_absent_never_overwrites() {
        let mut s = MemoryStore::default();
        assert_eq!(s.create_if_absent("k", b"a"), Ok(true));
        assert_eq!(s.create_if_absent("k", b"b"), Ok(false));
        assert_eq!(s.get("k").0.as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn compare_and_swap() {
        let mut s = MemoryStore::default();
        assert_eq!(s.get("k"), (None, None));
        s.set("k", b"a", None).unwrap();
        let (v, cas) = s.get("k");
        assert_eq!(v.as_deref(), Some(&b"a"[..]));
        s.set("k", b"b", cas).unwrap();
        assert_eq!(s.set("k", b"c", cas), Err(StoreError::CasMismatch));
        assert_eq!(s.get("k").0.as_deref(), Some(&b"b"[..]));
    }
}
