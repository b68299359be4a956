//! Replay protection: each verified signature's identity (its `nonce`, or without one its
//! signature bytes, scoped to the agent) is recorded in shared data until the signature
//! expires, atomically (compare-and-swap), so a second use on any worker is caught.
//!
//! Memory is bounded: [`BUCKETS`] shared-data entries of at most [`SLOTS`] records of
//! [`RECORD_BYTES`] bytes (about 1.5 MiB in all, 65,536 live signatures). Expired records are
//! dropped on every write. When a bucket is full of live records, the one closest to expiry is
//! evicted (and counted): its signature could then be replayed for the rest of its life. Only
//! verified signatures are recorded, so only trusted agents can fill the table.

use sha2::{Digest, Sha256};

use crate::shared::{SharedStore, StoreError};
use crate::verdict::Verified;

pub const BUCKETS: usize = 4096;
pub const SLOTS: usize = 16;
const ID_BYTES: usize = 16;
pub const RECORD_BYTES: usize = ID_BYTES + 8;
const PREFIX: &str = "wba.replay.";
const CAS_ATTEMPTS: usize = 16;

/// A signature's replay identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayId([u8; ID_BYTES]);

impl ReplayId {
    /// The identity of a verified signature: agent plus nonce, or agent plus signature bytes.
    pub fn of(v: &Verified) -> Self {
        let mut h = Sha256::new();
        h.update(v.agent_url.as_bytes());
        h.update([0]);
        match &v.nonce {
            Some(n) => {
                h.update(b"n");
                h.update(n.as_bytes());
            }
            None => {
                h.update(b"s");
                h.update(&v.signature);
            }
        }
        let digest = h.finalize();
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&digest[..ID_BYTES]);
        ReplayId(id)
    }

    fn bucket(&self) -> usize {
        usize::from(u16::from_be_bytes([self.0[0], self.0[1]])) % BUCKETS
    }
}

/// The result of a check-and-record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayCheck {
    /// First use: recorded.
    Fresh,
    /// First use, recorded by evicting a live record (the bucket was full).
    FreshEvicted,
    /// Seen before and not yet expired.
    Replayed,
    /// Could not be recorded (shared data contended or refused): treat as a replay, so that a
    /// flood of copies of one signature cannot slip through by contention.
    Unavailable,
}

/// Checks whether `id` was seen and records it until `until` (unix seconds).
pub fn check_and_record(
    store: &mut dyn SharedStore,
    id: ReplayId,
    until: i64,
    now: i64,
) -> ReplayCheck {
    let key = format!("{PREFIX}{}", id.bucket());
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = store.get(&key);
        let mut records: Vec<([u8; ID_BYTES], i64)> = bytes
            .unwrap_or_default()
            .chunks_exact(RECORD_BYTES)
            .filter_map(|r| {
                let (rid, exp) = r.split_at(ID_BYTES);
                let rid: [u8; ID_BYTES] = rid.try_into().ok()?;
                let exp = i64::from_be_bytes(exp.try_into().ok()?);
                Some((rid, exp))
            })
            .filter(|(_, exp)| *exp >= now)
            .collect();
        if records.iter().any(|(rid, _)| *rid == id.0) {
            return ReplayCheck::Replayed;
        }
        let mut evicted = false;
        if records.len() >= SLOTS {
            if let Some(i) = records
                .iter()
                .enumerate()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(i, _)| i)
            {
                records.swap_remove(i);
                evicted = true;
            }
        }
        records.push((id.0, until));
        let mut out = Vec::with_capacity(records.len() * RECORD_BYTES);
        for (rid, exp) in &records {
            out.extend_from_slice(rid);
            out.extend_from_slice(&exp.to_be_bytes());
        }
        match store.set(&key, &out, Some(cas.unwrap_or(0))) {
            Ok(()) if evicted => return ReplayCheck::FreshEvicted,
            Ok(()) => return ReplayCheck::Fresh,
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Unavailable) => return ReplayCheck::Unavailable,
        }
    }
    ReplayCheck::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: i64 = 1_800_000_000;

    fn verified(agent: &str, nonce: Option<&str>, sig: &[u8]) -> Verified {
        Verified {
            agent_url: agent.into(),
            agent_name: "A".into(),
            key_id: "k".into(),
            label: "sig1".into(),
            covered: String::new(),
            created: NOW,
            expires: NOW + 60,
            nonce: nonce.map(Into::into),
            signature: sig.to_vec(),
        }
    }

    #[test]
    fn second_use_is_a_replay_until_expiry() {
        let mut s = MemoryStore::default();
        let id = ReplayId::of(&verified("https://a", Some("n1"), b"x"));
        assert_eq!(
            check_and_record(&mut s, id, NOW + 60, NOW),
            ReplayCheck::Fresh
        );
        assert_eq!(
            check_and_record(&mut s, id, NOW + 60, NOW + 1),
            ReplayCheck::Replayed
        );
        assert_eq!(
            check_and_record(&mut s, id, NOW + 60, NOW + 60),
            ReplayCheck::Replayed
        );
        assert_eq!(
            check_and_record(&mut s, id, NOW + 200, NOW + 61),
            ReplayCheck::Fresh
        );
    }

    #[test]
    fn identity_is_nonce_or_signature_scoped_to_the_agent() {
        let a = ReplayId::of(&verified("https://a", Some("n1"), b"x"));
        assert_eq!(
            a,
            ReplayId::of(&verified("https://a", Some("n1"), b"other"))
        );
        assert_ne!(a, ReplayId::of(&verified("https://b", Some("n1"), b"x")));
        let s1 = ReplayId::of(&verified("https://a", None, b"x"));
        assert_ne!(s1, ReplayId::of(&verified("https://a", None, b"y")));
        assert_ne!(s1, a);
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = MemoryStore::default();
        let mut evictions = 0;
        for i in 0..(BUCKETS * SLOTS * 2) {
            let id = ReplayId::of(&verified("https://a", Some(&i.to_string()), b""));
            match check_and_record(&mut s, id, NOW + 60 + i as i64, NOW) {
                ReplayCheck::Fresh => {}
                ReplayCheck::FreshEvicted => evictions += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(s.len() <= BUCKETS);
        assert!(evictions >= BUCKETS * SLOTS);
        for i in 0..BUCKETS {
            let (v, _) = s.get(&format!("{PREFIX}{i}"));
            assert!(v.map_or(0, |v| v.len()) <= SLOTS * RECORD_BYTES);
        }
    }
}
