//! Replay protection: each verified signature's identity (its `nonce`, or without one what it
//! signed: its key and signature base; scoped to the agent) is recorded in shared data until the signature
//! expires, atomically (compare-and-swap on an entry that exists), so a second use on any
//! worker is caught.
//!
//! The table is `capacity / SLOTS` bucket entries of at most [`SLOTS`] records of
//! [`RECORD_BYTES`] bytes. Which bucket a signature lands in is a keyed hash under a random
//! per-deployment secret that every worker shares (created with the table), so a signer cannot
//! aim its signatures at another agent's bucket. Expired records are dropped on every write.
//! A live record is never evicted: when a signature's bucket is full of live records, that
//! signature is refused ([`ReplayCheck::Full`], counted), so no traffic of one agent can make
//! a captured request of another verify again.
//!
//! Envoy's shared data cannot create an entry atomically (a write to an absent key always
//! succeeds, whatever its version), so the buckets are created by [`ReplayTable::open`] when
//! the configuration loads, and a request only ever writes with the version of a bucket that
//! exists: two workers recording the same signature at once cannot both succeed.

use sha2::{Digest, Sha256};

use crate::shared::{SharedStore, StoreError};
use crate::verdict::{ReplayKey, Verified};

/// Records per bucket.
pub const SLOTS: usize = 16;
const ID_BYTES: usize = 16;
/// A record: the identity, then its expiry (unix seconds, big-endian).
pub const RECORD_BYTES: usize = ID_BYTES + 8;
const PREFIX: &str = "wba.replay.";
const SECRET_KEY: &str = "wba.replay.secret";
/// Bytes of the bucket secret.
pub const SECRET_BYTES: usize = 32;
/// The first byte of every bucket (a bucket is never empty, so that it reads as present).
const FORMAT: u8 = 1;
const CAS_ATTEMPTS: usize = 16;

/// A signature's replay identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayId([u8; ID_BYTES]);

impl ReplayId {
    /// The identity of a verified signature: agent plus nonce, or, without one, agent, key and
    /// what was signed (the digest of the signature base: never the signature's encoding,
    /// which ECDSA's malleability and RSA-PSS's randomness make many).
    pub fn of(v: &Verified) -> Self {
        match &v.replay_key {
            ReplayKey::Nonce(n) => Self::nonce(&v.agent_url, n),
            ReplayKey::Signed(signed) => Self::content(&v.agent_url, &v.key_id, signed),
        }
    }

    /// Every identity an accepted request records, each with the time (unix seconds) until
    /// which it is kept, its `expires` plus `skew`: its verified signature's, then those of the
    /// request's other signatures that verified ([`Verified::others`]), any of which could be
    /// replayed alone.
    ///
    /// Two signatures with one identity (the same nonce under the agent's old and new key,
    /// during a rotation) are one credential: recorded once, until the later expiry.
    pub fn all(v: &Verified, skew: i64) -> Vec<(Self, i64)> {
        let mut ids: Vec<(Self, i64)> = Vec::with_capacity(1 + v.others.len());
        for s in std::iter::once(v).chain(&v.others) {
            let (id, until) = (Self::of(s), s.expires.saturating_add(skew));
            match ids.iter_mut().find(|(known, _)| *known == id) {
                Some((_, u)) => *u = (*u).max(until),
                None => ids.push((id, until)),
            }
        }
        ids
    }

    fn nonce(agent: &str, nonce: &str) -> Self {
        Self::digest(&[agent.as_bytes(), &[0], b"n", nonce.as_bytes()])
    }

    fn content(agent: &str, key_id: &str, signed: &[u8; 32]) -> Self {
        Self::digest(&[
            agent.as_bytes(),
            &[0],
            b"c",
            key_id.as_bytes(),
            &[0],
            signed,
        ])
    }

    fn digest(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        let digest = h.finalize();
        let mut id = [0u8; ID_BYTES];
        id.copy_from_slice(&digest[..ID_BYTES]);
        ReplayId(id)
    }

    /// Lowercase hex, as the replay store names it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The result of a check-and-record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayCheck {
    /// First use: recorded.
    Fresh,
    /// Seen before and not yet expired.
    Replayed,
    /// First use, but its bucket is full of live records: refused, since recording it would
    /// mean forgetting another signature that could then be replayed.
    Full,
    /// Could not be recorded (the bucket is missing, shared data contended or refused):
    /// refused, so that a flood of copies of one signature cannot slip through by contention.
    Unavailable,
}

/// The shared replay table as one VM sees it: the bucket secret and the bucket count.
#[derive(Clone, PartialEq, Eq)]
pub struct ReplayTable {
    secret: [u8; SECRET_BYTES],
    buckets: usize,
}

impl std::fmt::Debug for ReplayTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("ReplayTable")
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl ReplayTable {
    /// Opens the table of `capacity` records (whole buckets) in `store`: takes the secret
    /// already there or, for the first VM, `fresh_secret` (random bytes from the host), and
    /// creates the buckets that do not exist yet. Called when the configuration loads.
    pub fn open(
        store: &mut dyn SharedStore,
        capacity: usize,
        fresh_secret: [u8; SECRET_BYTES],
    ) -> Result<Self, StoreError> {
        let buckets = (capacity / SLOTS).max(1);
        store.create_if_absent(SECRET_KEY, &fresh_secret)?;
        let secret: [u8; SECRET_BYTES] = store
            .get(SECRET_KEY)
            .0
            .and_then(|s| s.try_into().ok())
            .ok_or(StoreError::Unavailable)?;
        let table = ReplayTable { secret, buckets };
        // Tables of different sizes (plugins with different capacities) use different keys.
        let ready = format!("{PREFIX}{buckets}.ready");
        if store.get(&ready).1.is_none() {
            for i in 0..buckets {
                store.create_if_absent(&table.bucket_key(i), &[FORMAT])?;
            }
            store.create_if_absent(&ready, b"1")?;
        }
        Ok(table)
    }

    /// A table for a configuration without replay protection, never consulted (and never
    /// created in shared data).
    pub fn unused() -> Self {
        ReplayTable {
            secret: [0; SECRET_BYTES],
            buckets: 1,
        }
    }

    /// Live records the table holds at most.
    pub fn capacity(&self) -> usize {
        self.buckets * SLOTS
    }

    fn bucket_key(&self, bucket: usize) -> String {
        format!("{PREFIX}{}.{bucket}", self.buckets)
    }

    fn bucket_of(&self, id: &ReplayId) -> usize {
        bucket_of(&self.secret, self.buckets, id)
    }

    /// This table over `store`, as the request path checks signatures against it.
    pub fn guard<'a>(&'a self, store: &'a mut dyn SharedStore) -> InStore<'a> {
        InStore { table: self, store }
    }

    /// Checks whether `id` was seen and records it until `until` (unix seconds).
    pub fn check_and_record(
        &self,
        store: &mut dyn SharedStore,
        id: ReplayId,
        until: i64,
        now: i64,
    ) -> ReplayCheck {
        let key = self.bucket_key(self.bucket_of(&id));
        for _ in 0..CAS_ATTEMPTS {
            let (Some(bytes), Some(cas)) = store.get(&key) else {
                // Never create a bucket here: see the module documentation.
                return ReplayCheck::Unavailable;
            };
            let mut records = live_records(&bytes, now);
            if records.iter().any(|(rid, _)| *rid == id.0) {
                return ReplayCheck::Replayed;
            }
            if records.len() >= SLOTS {
                return ReplayCheck::Full;
            }
            records.push((id.0, until));
            match store.set(&key, &encode(&records), Some(cas)) {
                Ok(()) => return ReplayCheck::Fresh,
                Err(StoreError::CasMismatch) => continue,
                Err(StoreError::Unavailable) => return ReplayCheck::Unavailable,
            }
        }
        ReplayCheck::Unavailable
    }
}

impl ReplayTable {
    /// Removes the record of `id` (see [`ReplayGuard::release`]), with compare-and-swap.
    pub fn release(&self, store: &mut dyn SharedStore, id: ReplayId, now: i64) {
        let key = self.bucket_key(self.bucket_of(&id));
        for _ in 0..CAS_ATTEMPTS {
            let (Some(bytes), Some(cas)) = store.get(&key) else {
                return;
            };
            let mut records = live_records(&bytes, now);
            let before = records.len();
            records.retain(|(rid, _)| *rid != id.0);
            if records.len() == before {
                return;
            }
            match store.set(&key, &encode(&records), Some(cas)) {
                Err(StoreError::CasMismatch) => continue,
                _ => return,
            }
        }
    }
}

/// The bucket of `id` among `buckets`: a keyed hash, so that signers cannot choose it.
fn bucket_of(secret: &[u8; SECRET_BYTES], buckets: usize, id: &ReplayId) -> usize {
    let digest = Sha256::new()
        .chain_update(secret)
        .chain_update(id.0)
        .finalize();
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    let bucket = u64::from_be_bytes(head) % buckets.max(1) as u64;
    usize::try_from(bucket).unwrap_or(0)
}

/// Where the request path records verified signatures: the shared-data table (proxy-wasm),
/// the process's own table (native), or nothing.
pub trait ReplayGuard {
    /// Checks whether `id` was seen and records it until `until` (unix seconds).
    fn check_and_record(&mut self, id: ReplayId, until: i64, now: i64) -> ReplayCheck;
    /// Removes the record of `id` that this request made ([`ReplayCheck::Fresh`]) when the
    /// request is refused after all (its body did not match, it went away): a refused request
    /// leaves no record. Best effort: a record that cannot be removed stays until it expires.
    fn release(&mut self, id: ReplayId, now: i64);
    /// Whether `id` is recorded and live (a lookup: nothing is recorded).
    fn seen(&mut self, id: ReplayId, now: i64) -> bool;
}

/// A [`ReplayTable`] in a [`SharedStore`] (Envoy's shared data, for the proxy-wasm module).
pub struct InStore<'a> {
    table: &'a ReplayTable,
    store: &'a mut dyn SharedStore,
}

impl ReplayGuard for InStore<'_> {
    fn check_and_record(&mut self, id: ReplayId, until: i64, now: i64) -> ReplayCheck {
        self.table.check_and_record(self.store, id, until, now)
    }

    fn release(&mut self, id: ReplayId, now: i64) {
        self.table.release(self.store, id, now);
    }

    fn seen(&mut self, id: ReplayId, now: i64) -> bool {
        let key = self.table.bucket_key(self.table.bucket_of(&id));
        self.store
            .get(&key)
            .0
            .is_some_and(|bytes| live_records(&bytes, now).iter().any(|(r, _)| *r == id.0))
    }
}

/// For a configuration without replay protection: never consulted by the request path, and
/// refusing if it were (nothing is recorded, so nothing may pass as fresh).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl ReplayGuard for NoReplay {
    fn check_and_record(&mut self, _id: ReplayId, _until: i64, _now: i64) -> ReplayCheck {
        ReplayCheck::Unavailable
    }

    fn release(&mut self, _id: ReplayId, _now: i64) {}

    fn seen(&mut self, _id: ReplayId, _now: i64) -> bool {
        false
    }
}

/// The replay table in process memory, shared by every thread (the native module): the same
/// buckets and answers as [`ReplayTable`] (keyed bucket choice, no eviction of a live record,
/// [`ReplayCheck::Full`]), each bucket behind its own lock, with no bytes to encode.
pub struct MemoryReplay {
    secret: [u8; SECRET_BYTES],
    buckets: Vec<std::sync::Mutex<Vec<Record>>>,
}

/// A live record: the identity and its expiry (unix seconds).
type Record = ([u8; ID_BYTES], i64);

impl std::fmt::Debug for MemoryReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryReplay")
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl MemoryReplay {
    /// A table of `capacity` records (whole buckets of [`SLOTS`]), buckets chosen under
    /// `secret` (random bytes, drawn once per configuration).
    pub fn new(capacity: usize, secret: [u8; SECRET_BYTES]) -> Self {
        let buckets = (capacity / SLOTS).max(1);
        MemoryReplay {
            secret,
            // Empty until used: a table of a million records costs 2 MiB until traffic fills it.
            buckets: (0..buckets)
                .map(|_| std::sync::Mutex::new(Vec::new()))
                .collect(),
        }
    }

    /// Live records the table holds at most.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * SLOTS
    }
}

impl ReplayGuard for &MemoryReplay {
    fn check_and_record(&mut self, id: ReplayId, until: i64, now: i64) -> ReplayCheck {
        let i = bucket_of(&self.secret, self.buckets.len(), &id);
        let Some(bucket) = self.buckets.get(i) else {
            return ReplayCheck::Unavailable;
        };
        // A poisoned bucket is still a consistent list (each change is one push or retain).
        let mut records = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        records.retain(|(_, exp)| *exp >= now);
        if records.iter().any(|(rid, _)| *rid == id.0) {
            return ReplayCheck::Replayed;
        }
        if records.len() >= SLOTS {
            return ReplayCheck::Full;
        }
        records.push((id.0, until));
        ReplayCheck::Fresh
    }

    fn release(&mut self, id: ReplayId, now: i64) {
        let i = bucket_of(&self.secret, self.buckets.len(), &id);
        if let Some(bucket) = self.buckets.get(i) {
            bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|(rid, exp)| *rid != id.0 && *exp >= now);
        }
    }

    fn seen(&mut self, id: ReplayId, now: i64) -> bool {
        let i = bucket_of(&self.secret, self.buckets.len(), &id);
        self.buckets.get(i).is_some_and(|bucket| {
            bucket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .any(|(rid, exp)| *rid == id.0 && *exp >= now)
        })
    }
}

/// The records of a bucket that have not expired at `now`.
fn live_records(bytes: &[u8], now: i64) -> Vec<([u8; ID_BYTES], i64)> {
    bytes
        .get(1..)
        .unwrap_or_default()
        .chunks_exact(RECORD_BYTES)
        .filter_map(|r| {
            let (rid, exp) = r.split_at(ID_BYTES);
            let rid: [u8; ID_BYTES] = rid.try_into().ok()?;
            let exp = i64::from_be_bytes(exp.try_into().ok()?);
            Some((rid, exp))
        })
        .filter(|(_, exp)| *exp >= now)
        .collect()
}

fn encode(records: &[([u8; ID_BYTES], i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + records.len() * RECORD_BYTES);
    out.push(FORMAT);
    for (rid, exp) in records {
        out.extend_from_slice(rid);
        out.extend_from_slice(&exp.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::MemoryStore;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: i64 = 1_800_000_000;

    /// A verified signature whose base digests to `signed` (repeated byte).
    fn verified(agent: &str, nonce: Option<&str>, signed: &[u8]) -> Verified {
        Verified {
            agent_url: agent.into(),
            agent_name: "A".into(),
            key_id: "k".into(),
            label: "sig1".into(),
            covered: String::new(),
            covers_content_digest: false,
            created: NOW,
            expires: NOW + 60,
            replay_key: match nonce {
                Some(n) => ReplayKey::Nonce(n.into()),
                None => ReplayKey::Signed([signed.first().copied().unwrap_or(0); 32]),
            },
            others: Vec::new(),
        }
    }

    fn nonce_id(agent: &str, nonce: &str) -> ReplayId {
        ReplayId::of(&verified(agent, Some(nonce), b""))
    }

    fn table(store: &mut MemoryStore, capacity: usize, secret: u8) -> ReplayTable {
        ReplayTable::open(store, capacity, [secret; SECRET_BYTES]).unwrap()
    }

    #[test]
    fn memory_table_answers_as_the_shared_one() {
        let mut s = MemoryStore::default();
        let shared = table(&mut s, 32, 3);
        let memory = MemoryReplay::new(32, [3; SECRET_BYTES]);
        assert_eq!(memory.capacity(), shared.capacity());
        let mut m = &memory;
        // The same secret and bucket count put every id in the same bucket, so the two
        // tables fill, refuse and expire identically.
        for i in 0..200 {
            let id = nonce_id("https://a", &format!("n{i}"));
            let now = NOW + i / 50;
            let until = now + 2;
            assert_eq!(
                m.check_and_record(id, until, now),
                shared.check_and_record(&mut s, id, until, now),
                "id {i}"
            );
            assert_eq!(
                m.check_and_record(id, until, now),
                shared.check_and_record(&mut s, id, until, now),
                "id {i}, again"
            );
        }
        assert_eq!(
            NoReplay.check_and_record(nonce_id("https://a", "x"), NOW, NOW),
            ReplayCheck::Unavailable
        );
    }

    #[test]
    fn a_released_record_is_gone_from_both_tables_and_only_it() {
        let mut s = MemoryStore::default();
        let shared = table(&mut s, 16, 4);
        let memory = MemoryReplay::new(16, [4; SECRET_BYTES]);
        let mut m = &memory;
        let (a, b) = (nonce_id("https://a", "a"), nonce_id("https://a", "b"));
        for id in [a, b] {
            assert_eq!(m.check_and_record(id, NOW + 60, NOW), ReplayCheck::Fresh);
            assert_eq!(
                shared.check_and_record(&mut s, id, NOW + 60, NOW),
                ReplayCheck::Fresh
            );
        }
        assert!(m.seen(a, NOW) && shared.guard(&mut s).seen(a, NOW));
        m.release(a, NOW);
        shared.guard(&mut s).release(a, NOW);
        // A lookup records nothing.
        assert!(!m.seen(a, NOW) && !shared.guard(&mut s).seen(a, NOW));
        assert!(!m.seen(a, NOW));
        // An expired record is not seen.
        assert!(!m.seen(b, NOW + 61) && !shared.guard(&mut s).seen(b, NOW + 61));
        // Released: fresh again; the other record stays.
        assert_eq!(m.check_and_record(a, NOW + 60, NOW), ReplayCheck::Fresh);
        assert_eq!(m.check_and_record(b, NOW + 60, NOW), ReplayCheck::Replayed);
        assert_eq!(
            shared.check_and_record(&mut s, a, NOW + 60, NOW),
            ReplayCheck::Fresh
        );
        assert_eq!(
            shared.check_and_record(&mut s, b, NOW + 60, NOW),
            ReplayCheck::Replayed
        );
        // Releasing what is not there changes nothing.
        NoReplay.release(a, NOW);
        shared
            .guard(&mut s)
            .release(nonce_id("https://a", "zz"), NOW);
        assert_eq!(
            shared.check_and_record(&mut s, a, NOW + 60, NOW),
            ReplayCheck::Replayed
        );
    }

    #[test]
    fn second_use_is_a_replay_until_expiry() {
        let mut s = MemoryStore::default();
        let t = table(&mut s, 4096, 1);
        let id = nonce_id("https://a", "n1");
        assert_eq!(
            t.check_and_record(&mut s, id, NOW + 60, NOW),
            ReplayCheck::Fresh
        );
        assert_eq!(
            t.check_and_record(&mut s, id, NOW + 60, NOW + 1),
            ReplayCheck::Replayed
        );
        assert_eq!(
            t.check_and_record(&mut s, id, NOW + 60, NOW + 60),
            ReplayCheck::Replayed
        );
        assert_eq!(
            t.check_and_record(&mut s, id, NOW + 200, NOW + 61),
            ReplayCheck::Fresh
        );
    }

    #[test]
    fn identity_is_nonce_or_what_was_signed_scoped_to_the_agent() {
        let a = ReplayId::of(&verified("https://a", Some("n1"), b"x"));
        assert_eq!(
            a,
            ReplayId::of(&verified("https://a", Some("n1"), b"other"))
        );
        assert_ne!(a, ReplayId::of(&verified("https://b", Some("n1"), b"x")));
        let s1 = ReplayId::of(&verified("https://a", None, b"x"));
        assert_ne!(s1, ReplayId::of(&verified("https://a", None, b"y")));
        assert_ne!(s1, a);
        // The same content under another key is another signature.
        let mut other_key = verified("https://a", None, b"x");
        other_key.key_id = "k2".into();
        assert_ne!(s1, ReplayId::of(&other_key));
    }

    #[test]
    fn an_accepted_request_records_each_of_its_signatures() {
        let mut v = verified("https://a", Some("n1"), b"x");
        let mut other = verified("https://b", None, b"y");
        other.expires = NOW + 600;
        v.others = vec![other.clone()];
        let ids = ReplayId::all(&v, 60);
        assert_eq!(
            ids,
            [
                (ReplayId::of(&v), NOW + 60 + 60),
                // Each is the identity that signature has when it verifies alone, kept until
                // its own expiry.
                (ReplayId::of(&other), NOW + 600 + 60)
            ]
        );
    }

    #[test]
    fn every_worker_shares_the_first_secret_and_buckets() {
        let mut s = MemoryStore::default();
        let first = table(&mut s, 64, 1);
        let writes = s.writes;
        // A second VM brings another random secret: the first one stays, nothing is rewritten.
        let second = table(&mut s, 64, 2);
        assert_eq!(first, second);
        assert_eq!(s.writes, writes);
        let id = nonce_id("https://a", "n");
        assert_eq!(
            first.check_and_record(&mut s, id, NOW + 60, NOW),
            ReplayCheck::Fresh
        );
        assert_eq!(
            second.check_and_record(&mut s, id, NOW + 60, NOW),
            ReplayCheck::Replayed
        );
    }

    #[test]
    fn bucket_choice_depends_on_the_secret() {
        let mut s1 = MemoryStore::default();
        let mut s2 = MemoryStore::default();
        let t1 = table(&mut s1, 4096 * SLOTS, 1);
        let t2 = table(&mut s2, 4096 * SLOTS, 2);
        let ids: Vec<ReplayId> = (0..64)
            .map(|i| nonce_id("https://a", &i.to_string()))
            .collect();
        let same = ids
            .iter()
            .filter(|id| t1.bucket_of(id) == t2.bucket_of(id))
            .count();
        assert!(
            same < 4,
            "{same} of 64 in the same bucket under two secrets"
        );
    }

    #[test]
    fn a_missing_bucket_fails_closed_and_is_never_created() {
        let mut s = MemoryStore::default();
        let t = table(&mut s, 16, 1);
        let mut empty = MemoryStore::default();
        assert_eq!(
            t.check_and_record(&mut empty, nonce_id("https://a", "n"), NOW + 60, NOW),
            ReplayCheck::Unavailable
        );
        assert!(empty.is_empty());
    }

    #[test]
    fn a_full_bucket_refuses_and_never_evicts_a_live_record() {
        let mut s = MemoryStore::default();
        // One bucket: every signature lands in it.
        let t = table(&mut s, SLOTS, 1);
        let victim = nonce_id("https://victim", "v");
        assert_eq!(
            t.check_and_record(&mut s, victim, NOW + 60, NOW),
            ReplayCheck::Fresh
        );
        let mut full = 0;
        for i in 0..100 {
            // Another agent's long-lived signatures.
            let id = nonce_id("https://other", &i.to_string());
            match t.check_and_record(&mut s, id, NOW + 86_400, NOW) {
                ReplayCheck::Fresh => {}
                ReplayCheck::Full => full += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(full, 100 - (SLOTS - 1));
        assert_eq!(
            t.check_and_record(&mut s, victim, NOW + 60, NOW + 30),
            ReplayCheck::Replayed,
            "the victim's record survives"
        );
        // Once the victim's record expires its slot frees up (for the rest of its bucket).
        assert_eq!(
            t.check_and_record(
                &mut s,
                nonce_id("https://other", "late"),
                NOW + 86_400,
                NOW + 61
            ),
            ReplayCheck::Fresh
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = MemoryStore::default();
        let t = table(&mut s, 64 * SLOTS, 1);
        for i in 0..(64 * SLOTS * 2) {
            let id = nonce_id("https://a", &i.to_string());
            let r = t.check_and_record(&mut s, id, NOW + 60, NOW);
            assert!(matches!(r, ReplayCheck::Fresh | ReplayCheck::Full), "{r:?}");
        }
        for i in 0..64 {
            let (v, _) = s.get(&t.bucket_key(i));
            assert!(v.map_or(0, |v| v.len()) <= 1 + SLOTS * RECORD_BYTES);
        }
    }

    #[test]
    fn concurrent_writers_cannot_both_record() {
        // Two workers read the same version; the second write is a compare-and-swap mismatch,
        // and its retry sees the first record.
        struct Interleaved {
            inner: MemoryStore,
            stale: Option<(Vec<u8>, u32)>,
        }
        impl SharedStore for Interleaved {
            fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
                match &self.stale {
                    Some((v, c)) => (Some(v.clone()), Some(*c)),
                    None => self.inner.get(key),
                }
            }
            fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
                self.stale = None;
                self.inner.set(key, value, cas)
            }
        }
        let mut inner = MemoryStore::default();
        let t = table(&mut inner, SLOTS, 1);
        let id = nonce_id("https://a", "same");
        let before = inner.get(&t.bucket_key(0));
        assert_eq!(
            t.check_and_record(&mut inner, id, NOW + 60, NOW),
            ReplayCheck::Fresh
        );
        // The other worker read the bucket before that write.
        let mut other = Interleaved {
            inner,
            stale: Some((before.0.unwrap(), before.1.unwrap())),
        };
        assert_eq!(
            t.check_and_record(&mut other, id, NOW + 60, NOW),
            ReplayCheck::Replayed
        );
    }
}
