//! Trusted agents' keys as requests see them: pinned keys plus fetched key sets. A fetched set
//! lives in shared data (one JSON entry per agent, written with compare-and-swap, so every
//! worker sees it); each VM keeps a decoded copy, re-read only when the entry's generation
//! changes, so the request path never parses JSON or decodes keys.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::agent_url::AgentId;
use crate::config::{AgentConfig, Config, DirectorySettings};
use crate::fetch::{backoff, FetchFailure, Fetched, FetchedKey, Proof};
use crate::jwk::Key;
use crate::keyring::{KeySource, Lookup};
use crate::shared::{SharedStore, StoreError};
use crate::verdict::{Failure, Reason};

/// Shared-data key prefix of the per-agent entries.
pub const ENTRY_PREFIX: &str = "wba.dir.";
/// Compare-and-swap attempts before giving up on a write.
const CAS_ATTEMPTS: usize = 16;

/// A key of a shared entry: its public JWK JSON and its possession proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub jwk: String,
    pub proof: Proof,
}

/// What every worker knows about one agent's fetched key set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The accepted keys, each with its possession proof.
    pub keys: Vec<StoredKey>,
    /// A fetch has succeeded at least once.
    pub loaded: bool,
    /// Unix seconds of the last success.
    pub fetched_at: i64,
    /// Refresh after this (unix seconds).
    pub fresh_until: i64,
    /// Unix seconds of the last completed attempt, success or failure.
    pub attempted_at: i64,
    /// Consecutive failures.
    pub failures: u32,
    /// No fetch before this (negative cache and backoff), unix seconds.
    pub retry_at: i64,
    /// The last failure's kind token.
    pub last_failure: Option<String>,
    /// A worker is fetching until this (unix milliseconds).
    pub lease_until_ms: i64,
    /// Bumped by every write that changes keys or fetch state.
    pub generation: u64,
}

/// The shared-data key of an agent's entry. Plugins (listeners) share an entry only when they
/// would accept exactly the same key sets from the same fetch: the key is a digest of
/// everything that shapes acceptance (the fetch: cluster, identity, URL with its query; the
/// bounds: every `directory` setting; and the clock skew that proofs are judged with).
/// Otherwise a plugin with `max_keys: 2` would adopt the 30 keys another plugin accepted.
pub fn entry_key(agent: &AgentConfig, settings: &DirectorySettings, clock_skew: i64) -> String {
    // Destructured so that a new setting cannot be forgotten here.
    let DirectorySettings {
        timeout_ms,
        max_bytes,
        max_keys,
        min_refresh_seconds,
        max_cache_seconds,
        negative_cache_seconds,
        require_proof,
    } = settings;
    // Length-prefixed strings and fixed-width numbers: unambiguous whatever the strings hold.
    let mut h = Sha256::new();
    for part in [
        "wba.dir.v3",
        agent.cluster.as_deref().unwrap_or_default(),
        agent.agent.id().as_str(),
        agent.agent.fetch_url(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    for n in [
        *timeout_ms,
        *max_bytes,
        *max_keys,
        *min_refresh_seconds,
        *max_cache_seconds,
        *negative_cache_seconds,
        u64::from(*require_proof),
        clock_skew as u64,
    ] {
        h.update(n.to_le_bytes());
    }
    let digest = URL_SAFE_NO_PAD.encode(h.finalize());
    // The URL only helps a human reading shared data; the digest is what keeps entries apart.
    format!("{ENTRY_PREFIX}{}|{digest}", agent.url())
}

fn load(store: &dyn SharedStore, key: &str) -> (DirectoryEntry, Option<u32>) {
    let (bytes, cas) = store.get(key);
    let entry = bytes
        .as_deref()
        .map(DirectoryEntry::from_bytes)
        .unwrap_or_default();
    (entry, cas)
}

impl DirectoryEntry {
    /// JSON through `serde_json::Value` (already in the module for JWKs): a derive would add
    /// its own (de)serializer code to the Wasm module for this one struct.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Two arrays of strings (JWK JSON, proof token) rather than an object per key: less
        // serializer code in the module.
        let keys: Vec<&str> = self.keys.iter().map(|k| k.jwk.as_str()).collect();
        let proofs: Vec<&str> = self.keys.iter().map(|k| k.proof.token()).collect();
        json!({
            "keys": keys,
            "proofs": proofs,
            "loaded": self.loaded,
            "fetched_at": self.fetched_at,
            "fresh_until": self.fresh_until,
            "attempted_at": self.attempted_at,
            "failures": self.failures,
            "retry_at": self.retry_at,
            "last_failure": self.last_failure,
            "lease_until_ms": self.lease_until_ms,
            "generation": self.generation,
        })
        .to_string()
        .into_bytes()
    }

    /// The inverse of [`Self::to_bytes`]; anything unreadable is an empty entry.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let Ok(v) = serde_json::from_slice::<Value>(bytes) else {
            return DirectoryEntry::default();
        };
        let int = |k: &str| v.get(k).and_then(Value::as_i64).unwrap_or(0);
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let proofs = v.get("proofs").and_then(Value::as_array);
        DirectoryEntry {
            keys: v
                .get("keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .filter_map(|(i, jwk)| {
                            Some(StoredKey {
                                jwk: jwk.as_str()?.to_string(),
                                proof: Proof::from_token(proofs?.get(i)?.as_str()?)?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            loaded: v.get("loaded").and_then(Value::as_bool).unwrap_or(false),
            fetched_at: int("fetched_at"),
            fresh_until: int("fresh_until"),
            attempted_at: int("attempted_at"),
            failures: u32::try_from(int("failures")).unwrap_or(0),
            retry_at: int("retry_at"),
            last_failure: text("last_failure"),
            lease_until_ms: int("lease_until_ms"),
            generation: v.get("generation").and_then(Value::as_u64).unwrap_or(0),
        }
    }
}

/// Read-modify-write of an agent's existing entry; `f` returns false to leave it unchanged.
/// An absent entry is never written here (see [`SharedStore::set`]): [`KeyCache::prepare`]
/// creates every entry when the configuration loads.
fn update(
    store: &mut dyn SharedStore,
    key: &str,
    mut f: impl FnMut(&mut DirectoryEntry) -> bool,
) -> Result<DirectoryEntry, StoreError> {
    for _ in 0..CAS_ATTEMPTS {
        let (mut entry, cas) = load(store, key);
        let Some(cas) = cas else {
            return Err(StoreError::Unavailable);
        };
        if !f(&mut entry) {
            return Ok(entry);
        }
        match store.set(key, &entry.to_bytes(), Some(cas)) {
            Ok(()) => return Ok(entry),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::CasMismatch)
}

/// One trusted agent in this VM.
#[derive(Debug, Clone)]
pub struct CachedAgent {
    pub(crate) config: AgentConfig,
    /// Where its entry lives in shared data.
    store_key: String,
    /// Decoded keys of `entry`, with their proofs (empty until a fetch succeeded).
    fetched: Vec<FetchedKey>,
    /// The shared entry as last read, without its key texts.
    pub(crate) entry: DirectoryEntry,
}

impl CachedAgent {
    fn fetches(&self) -> bool {
        self.config.cluster.is_some()
    }
}

/// The outcome of asking for the fetch lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This VM fetches now.
    Claimed,
    /// Another worker is fetching; wait for its result.
    Busy,
    /// Not needed any more (another worker just fetched), not allowed now (backoff) or not
    /// fetchable: decide with what is there.
    Refused,
}

/// What a fetch result changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub keys_before: usize,
    pub keys_after: usize,
}

/// Every trusted agent's keys, as this VM sees them.
///
/// Cloning is cheap (the native module publishes a clone to its workers after each fetch):
/// agents are shared until one changes, and lookups go through an index, so thousands of
/// agents cost neither a copy per fetch nor a scan per request.
#[derive(Debug, Clone, Default)]
pub struct KeyCache {
    agents: Vec<Arc<CachedAgent>>,
    index: Arc<Index>,
}

/// Where each agent is in [`KeyCache::agents`].
#[derive(Debug, Default)]
struct Index {
    /// By the agent as shown (its configured URL's form).
    by_url: HashMap<String, usize>,
    /// By identity (requests look agents up by their Signature-Agent's identity).
    by_id: HashMap<AgentId, usize>,
}

impl KeyCache {
    pub fn new(config: &Config) -> Self {
        let agents: Vec<Arc<CachedAgent>> = config
            .agents
            .iter()
            .map(|a| {
                Arc::new(CachedAgent {
                    config: a.clone(),
                    store_key: entry_key(a, &config.directory, config.policy.clock_skew_seconds),
                    fetched: Vec::new(),
                    entry: DirectoryEntry::default(),
                })
            })
            .collect();
        // The configuration refuses two entries for one agent, so positions are unique.
        let index = Index {
            by_url: agents
                .iter()
                .enumerate()
                .map(|(i, a)| (a.config.url().to_string(), i))
                .collect(),
            by_id: agents
                .iter()
                .enumerate()
                .map(|(i, a)| (a.config.agent.id().clone(), i))
                .collect(),
        };
        KeyCache {
            agents,
            index: Arc::new(index),
        }
    }

    /// Creates the shared entry of every fetched agent that has none yet (so that the fetch
    /// lease and fetch results are always compare-and-swap writes); called when the
    /// configuration loads.
    pub fn prepare(&self, store: &mut dyn SharedStore) -> Result<(), StoreError> {
        for agent in self.fetched_agents() {
            store.create_if_absent(&agent.store_key, &DirectoryEntry::default().to_bytes())?;
        }
        Ok(())
    }

    /// The possession-proof status (`valid`, `absent`, `invalid`) of the fetched key with this
    /// thumbprint, that key's own; `None` for pinned keys (which lookups find first) and
    /// unknown ones.
    pub fn proof_of(&self, url: &str, thumbprint: &str) -> Option<&str> {
        let agent = self.agent(url)?;
        if agent.config.keys.iter().any(|k| k.thumbprint == thumbprint) {
            return None;
        }
        agent
            .fetched
            .iter()
            .find(|f| f.key.thumbprint == thumbprint)
            .map(|f| f.proof.token())
    }

    pub fn agent(&self, url: &str) -> Option<&CachedAgent> {
        let i = *self.index.by_url.get(url)?;
        self.agents.get(i).map(|a| &**a)
    }

    fn agent_mut(&mut self, url: &str) -> Option<&mut CachedAgent> {
        let i = *self.index.by_url.get(url)?;
        // Copies the agent only if a published snapshot still shares it.
        self.agents.get_mut(i).map(Arc::make_mut)
    }

    /// Agents whose keys are fetched.
    pub fn fetched_agents(&self) -> impl Iterator<Item = &CachedAgent> {
        self.agents.iter().map(|a| &**a).filter(|a| a.fetches())
    }

    /// Keys this VM holds (pinned and fetched).
    pub fn keys_held(&self) -> usize {
        self.agents
            .iter()
            .map(|a| a.config.keys.len() + a.fetched.len())
            .sum()
    }

    /// Re-reads `url`'s shared entry; decodes its keys only if its generation changed.
    /// Returns whether this VM's view changed.
    pub fn sync(&mut self, store: &dyn SharedStore, url: &str) -> bool {
        let Some(agent) = self.agent_mut(url) else {
            return false;
        };
        if !agent.fetches() {
            return false;
        }
        let (entry, _) = load(store, &agent.store_key);
        adopt(agent, entry)
    }

    /// Syncs every fetched agent; returns the URLs whose view changed.
    pub fn sync_all(&mut self, store: &dyn SharedStore) -> Vec<String> {
        let urls: Vec<String> = self
            .fetched_agents()
            .map(|a| a.config.url().to_string())
            .collect();
        urls.into_iter().filter(|u| self.sync(store, u)).collect()
    }

    /// Whether a request that failed this way should wait for a fetch of its agent's keys:
    /// never-loaded keys (unless negative-cached), or an unknown key id at most once per
    /// `min_refresh_seconds` (how a rotated-in key is picked up).
    pub fn wants_fetch(
        &self,
        failure: &Failure,
        settings: &DirectorySettings,
        now: i64,
    ) -> Option<String> {
        let url = failure.agent.as_deref()?;
        let agent = self.agent(url)?;
        if !agent.fetches() || now < agent.entry.retry_at {
            return None;
        }
        let min_refresh = i64::try_from(settings.min_refresh_seconds).unwrap_or(i64::MAX);
        let due = match failure.reason {
            Reason::DirectoryUnavailable => !agent.entry.loaded,
            Reason::UnknownKey => {
                agent.entry.attempted_at == 0
                    || now >= agent.entry.attempted_at.saturating_add(min_refresh)
            }
            _ => false,
        };
        due.then(|| url.to_string())
    }

    /// Fetched agents whose keys are due for a background refresh: never loaded, or past
    /// their freshness minus `jitter(url)` seconds (capped at a tenth of the freshness
    /// window), and not backing off.
    pub fn due_for_refresh(&self, now: i64, jitter: impl Fn(&str) -> i64) -> Vec<String> {
        self.fetched_agents()
            .filter(|a| {
                let e = &a.entry;
                // Jitter is at most a tenth of the freshness window, so short windows are
                // not refreshed constantly.
                let window = e.fresh_until.saturating_sub(e.fetched_at).max(0);
                let j = jitter(a.config.url()).min(window / 10);
                now >= e.retry_at && (!e.loaded || now >= e.fresh_until.saturating_sub(j))
            })
            .map(|a| a.config.url().to_string())
            .collect()
    }

    /// Takes the shared fetch lease for `url` (so one worker fetches while the others wait),
    /// unless another worker holds it, the agent is backing off, or another worker recorded a
    /// fetch result since this VM last looked (then that result is what this VM needed: the
    /// decision to fetch was made on a stale view).
    pub fn claim(
        &mut self,
        store: &mut dyn SharedStore,
        url: &str,
        now: i64,
        now_ms: i64,
        lease_ms: i64,
    ) -> Claim {
        let key = match self.agent(url) {
            Some(a) if a.fetches() => a.store_key.clone(),
            _ => return Claim::Refused,
        };
        let seen = self.agent(url).map_or(0, |a| a.entry.generation);
        let mut outcome = Claim::Refused;
        let result = update(store, &key, |e| {
            if e.generation != seen {
                outcome = Claim::Refused;
                return false;
            }
            if e.lease_until_ms > now_ms {
                outcome = Claim::Busy;
                return false;
            }
            if now < e.retry_at {
                outcome = Claim::Refused;
                return false;
            }
            outcome = Claim::Claimed;
            e.lease_until_ms = now_ms.saturating_add(lease_ms);
            true
        });
        match result {
            Ok(entry) => {
                if let Some(agent) = self.agent_mut(url) {
                    adopt(agent, entry);
                }
                outcome
            }
            Err(_) => Claim::Busy,
        }
    }

    /// Records a fetch result for everyone: a success replaces the key set (a key no longer
    /// listed stops verifying); a failure keeps the cached keys and backs off.
    pub fn record(
        &mut self,
        store: &mut dyn SharedStore,
        url: &str,
        result: &Result<Fetched, FetchFailure>,
        settings: &DirectorySettings,
        now: i64,
    ) -> Recorded {
        let Some(key) = self.agent(url).map(|a| a.store_key.clone()) else {
            return Recorded {
                keys_before: 0,
                keys_after: 0,
            };
        };
        let keys_before = self.agent(url).map_or(0, |a| a.fetched.len());
        let written = update(store, &key, |e| {
            e.attempted_at = now;
            e.lease_until_ms = 0;
            e.generation = e.generation.wrapping_add(1);
            match result {
                Ok(f) => {
                    e.keys = f
                        .keys
                        .iter()
                        .map(|k| StoredKey {
                            jwk: k.key.jwk.to_json(),
                            proof: k.proof,
                        })
                        .collect();
                    e.loaded = true;
                    e.fetched_at = now;
                    e.fresh_until = now.saturating_add(f.fresh_for);
                    e.failures = 0;
                    e.retry_at = 0;
                    e.last_failure = None;
                }
                Err(fail) => {
                    e.failures = e.failures.saturating_add(1);
                    e.retry_at =
                        now.saturating_add(backoff(e.failures, fail.retry_after, settings));
                    e.last_failure = Some(fail.kind.token().to_string());
                }
            }
            true
        });
        if let (Ok(entry), Some(agent)) = (written, self.agent_mut(url)) {
            adopt(agent, entry);
        } else if let (Ok(f), Some(agent)) = (result, self.agent_mut(url)) {
            // Shared data refused the write: this VM still uses what it fetched.
            agent.fetched = f.keys.clone();
            agent.entry.loaded = true;
            agent.entry.attempted_at = now;
        }
        Recorded {
            keys_before,
            keys_after: self.agent(url).map_or(0, |a| a.fetched.len()),
        }
    }
}

/// Takes `entry` as this VM's view of `agent`; decodes keys only for a new generation.
fn adopt(agent: &mut CachedAgent, mut entry: DirectoryEntry) -> bool {
    let changed = entry.generation != agent.entry.generation || entry.loaded != agent.entry.loaded;
    if changed {
        let old = std::mem::take(&mut agent.fetched);
        // A key the new set still lists keeps its decoded form and its precomputed table
        // (crate::ed25519): a refresh does not make the next request rebuild it.
        agent.fetched = entry
            .keys
            .iter()
            .filter_map(|stored| {
                let key = Key::from_jwk_json(&stored.jwk).ok()?;
                let key = old
                    .iter()
                    .find(|o| o.key == key)
                    .map_or(key, |o| o.key.clone());
                Some(FetchedKey {
                    key,
                    proof: stored.proof,
                })
            })
            .collect();
    }
    entry.keys = Vec::new();
    agent.entry = entry;
    changed
}

impl KeySource for KeyCache {
    fn lookup(&self, id: &AgentId, keyid: &str) -> Lookup<'_> {
        let Some(agent) = self.index.by_id.get(id).and_then(|&i| self.agents.get(i)) else {
            return Lookup::UnknownAgent;
        };
        let name = agent.config.name.as_str();
        let found = agent
            .config
            .keys
            .iter()
            .chain(agent.fetched.iter().map(|f| &f.key))
            .find(|k| k.thumbprint == keyid);
        match found {
            Some(key) => Lookup::Found {
                key,
                agent_name: name,
            },
            None if agent.fetches() && !agent.entry.loaded && agent.config.keys.is_empty() => {
                Lookup::Unavailable
            }
            None => Lookup::UnknownKey,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FailureKind;
    use crate::jwk::{Jwk, PublicKey};
    use crate::shared::MemoryStore;
    use ed25519_dalek::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW: i64 = 1_800_000_000;
    const URL: &str = "https://agent.example";

    fn key(seed: u8) -> Key {
        Jwk::from_ed25519(
            SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .as_bytes(),
        )
        .to_key()
        .unwrap()
    }

    fn config() -> Config {
        Config::from_json(
            br#"{"agents":[{"name":"A","url":"https://agent.example","cluster":"dir"}]}"#,
        )
        .unwrap()
    }

    /// A store with the entries the configuration creates when it loads.
    fn prepared_store() -> MemoryStore {
        let mut store = MemoryStore::default();
        KeyCache::new(&config()).prepare(&mut store).unwrap();
        store
    }

    #[test]
    fn a_lease_on_a_missing_entry_is_never_taken() {
        // Both workers would read "absent" and an Envoy write to an absent key is
        // unconditional: without the entry, nobody claims (the configuration creates it).
        let mut store = MemoryStore::default();
        let mut w1 = KeyCache::new(&config());
        assert_eq!(w1.claim(&mut store, URL, NOW, 0, 2500), Claim::Busy);
        assert!(store.is_empty());
        w1.prepare(&mut store).unwrap();
        let mut w2 = KeyCache::new(&config());
        w2.prepare(&mut store).unwrap();
        assert_eq!(w1.claim(&mut store, URL, NOW, 0, 2500), Claim::Claimed);
        assert_eq!(w2.claim(&mut store, URL, NOW, 1, 2500), Claim::Busy);
    }

    fn ok(keys: Vec<Key>) -> Result<Fetched, FetchFailure> {
        Ok(Fetched::unproven(keys, 600))
    }

    fn failed(kind: FailureKind) -> Result<Fetched, FetchFailure> {
        Err(FetchFailure {
            kind,
            detail: String::new(),
            retry_after: None,
        })
    }

    fn failure(reason: Reason) -> Failure {
        Failure {
            agent: Some(URL.into()),
            ..Failure::new(reason, "")
        }
    }

    fn id(url: &str) -> AgentId {
        AgentId::parse(url).unwrap()
    }

    fn found(c: &KeyCache, seed: u8) -> bool {
        matches!(
            c.lookup(&id(URL), &key(seed).thumbprint),
            Lookup::Found { .. }
        )
    }

    #[test]
    fn entries_round_trip_through_shared_data_bytes() {
        let e = DirectoryEntry {
            keys: vec![
                StoredKey {
                    jwk: key(1).jwk.to_json(),
                    proof: Proof::Valid,
                },
                StoredKey {
                    jwk: key(2).jwk.to_json(),
                    proof: Proof::Invalid,
                },
            ],
            loaded: true,
            fetched_at: NOW,
            fresh_until: NOW + 600,
            attempted_at: NOW,
            failures: 3,
            retry_at: NOW + 4,
            last_failure: Some("status".into()),
            lease_until_ms: NOW * 1000,
            generation: u64::MAX,
        };
        assert_eq!(DirectoryEntry::from_bytes(&e.to_bytes()), e);
        assert_eq!(
            DirectoryEntry::from_bytes(b"garbage"),
            DirectoryEntry::default()
        );
    }

    #[test]
    fn cold_cache_is_unavailable_and_wants_a_fetch() {
        let c = KeyCache::new(&config());
        let s = DirectorySettings::default();
        assert!(matches!(c.lookup(&id(URL), "k"), Lookup::Unavailable));
        assert_eq!(
            c.wants_fetch(&failure(Reason::DirectoryUnavailable), &s, NOW),
            Some(URL.to_string())
        );
        assert_eq!(c.wants_fetch(&failure(Reason::BadSignature), &s, NOW), None);
        assert_eq!(c.due_for_refresh(NOW, |_| 0), vec![URL.to_string()]);
    }

    #[test]
    fn a_fetch_is_shared_with_other_workers() {
        let s = DirectorySettings::default();
        let mut store = prepared_store();
        let mut w1 = KeyCache::new(&config());
        let mut w2 = KeyCache::new(&config());
        assert_eq!(w1.claim(&mut store, URL, NOW, 0, 2500), Claim::Claimed);
        // While worker 1 fetches, worker 2 waits instead of fetching too.
        assert_eq!(w2.claim(&mut store, URL, NOW, 10, 2500), Claim::Busy);
        w1.record(&mut store, URL, &ok(vec![key(1)]), &s, NOW);
        assert!(found(&w1, 1));
        assert!(!found(&w2, 1));
        assert!(w2.sync(&store, URL));
        assert!(found(&w2, 1));
        // Nothing changed: no decoding on the next sync.
        assert!(!w2.sync(&store, URL));
        assert_eq!(w2.keys_held(), 1);
        // Fresh: no refresh due until fresh_until minus jitter.
        assert!(w1.due_for_refresh(NOW + 500, |_| 30).is_empty());
        assert_eq!(w1.due_for_refresh(NOW + 571, |_| 30), vec![URL.to_string()]);
        // A 600 s window allows at most 60 s of jitter.
        assert_eq!(
            w1.due_for_refresh(NOW + 540, |_| 500),
            vec![URL.to_string()]
        );
        assert!(w1.due_for_refresh(NOW + 539, |_| 500).is_empty());
    }

    #[test]
    fn a_fetch_decided_on_a_stale_view_is_not_made_again() {
        let s = DirectorySettings::default();
        let mut store = prepared_store();
        let mut w1 = KeyCache::new(&config());
        let mut w2 = KeyCache::new(&config());
        // Both workers see the agent as never loaded; worker 1 fetches and records first.
        assert_eq!(w1.claim(&mut store, URL, NOW, 0, 2500), Claim::Claimed);
        w1.record(&mut store, URL, &ok(vec![key(1)]), &s, NOW);
        // Worker 2 decided on its old view: the lease is free again, but the fetch is done.
        assert_eq!(w2.claim(&mut store, URL, NOW, 10, 2500), Claim::Refused);
        assert!(found(&w2, 1), "it adopts the other worker's result instead");
    }

    #[test]
    fn an_expired_lease_can_be_taken_over() {
        let mut store = prepared_store();
        let mut w1 = KeyCache::new(&config());
        let mut w2 = KeyCache::new(&config());
        assert_eq!(w1.claim(&mut store, URL, NOW, 0, 2500), Claim::Claimed);
        assert_eq!(w2.claim(&mut store, URL, NOW, 2501, 2500), Claim::Claimed);
    }

    #[test]
    fn rotation_adds_and_removes_keys() {
        let s = DirectorySettings::default();
        let mut store = prepared_store();
        let mut c = KeyCache::new(&config());
        c.record(&mut store, URL, &ok(vec![key(1)]), &s, NOW);
        assert!(matches!(
            c.lookup(&id(URL), &key(2).thumbprint),
            Lookup::UnknownKey
        ));
        // An unknown key id triggers a refetch at most once per min_refresh_seconds.
        assert_eq!(
            c.wants_fetch(&failure(Reason::UnknownKey), &s, NOW + 10),
            None
        );
        assert_eq!(
            c.wants_fetch(&failure(Reason::UnknownKey), &s, NOW + 60),
            Some(URL.to_string())
        );
        let r = c.record(&mut store, URL, &ok(vec![key(1), key(2)]), &s, NOW + 60);
        assert_eq!((r.keys_before, r.keys_after), (1, 2));
        assert!(found(&c, 2));
        c.record(&mut store, URL, &ok(vec![key(2)]), &s, NOW + 120);
        assert!(
            !found(&c, 1),
            "a key the directory no longer lists stops verifying"
        );
        assert!(found(&c, 2));
    }

    #[test]
    fn a_refresh_keeps_the_keys_it_still_lists_with_their_tables() {
        let s = DirectorySettings::default();
        let mut store = prepared_store();
        let mut c = KeyCache::new(&config());
        c.record(&mut store, URL, &ok(vec![key(1), key(2)]), &s, NOW);
        let ed25519 = |c: &KeyCache, seed: u8| match c.lookup(&id(URL), &key(seed).thumbprint) {
            Lookup::Found { key, .. } => match &key.public {
                PublicKey::Ed25519(k) => Some(k.clone()),
                _ => None,
            },
            _ => None,
        };
        // A verification builds key 1's table.
        let _ = ed25519(&c, 1).unwrap().verify(b"m", &[0; 64]);
        assert!(ed25519(&c, 1).unwrap().has_table());
        c.record(&mut store, URL, &ok(vec![key(1), key(3)]), &s, NOW + 600);
        assert!(
            ed25519(&c, 1).unwrap().has_table(),
            "kept across the refresh"
        );
        assert!(!ed25519(&c, 3).unwrap().has_table());
        assert!(ed25519(&c, 2).is_none(), "dropped from the set");
    }

    #[test]
    fn failures_keep_keys_and_back_off() {
        let s = DirectorySettings::default();
        let mut store = prepared_store();
        let mut c = KeyCache::new(&config());
        c.record(&mut store, URL, &failed(FailureKind::Status), &s, NOW);
        // Negative-cached: an uncached agent does not wait, it is directory_unavailable.
        assert_eq!(
            c.wants_fetch(&failure(Reason::DirectoryUnavailable), &s, NOW),
            None
        );
        assert_eq!(c.claim(&mut store, URL, NOW, 0, 2500), Claim::Refused);
        assert_eq!(c.agent(URL).unwrap().entry.retry_at, NOW + 1);
        c.record(&mut store, URL, &ok(vec![key(1)]), &s, NOW + 5);
        for n in 1..=10 {
            c.record(
                &mut store,
                URL,
                &failed(FailureKind::Unreachable),
                &s,
                NOW + 10 * n,
            );
            assert!(found(&c, 1), "a failed fetch never evicts cached keys");
        }
        let e = &c.agent(URL).unwrap().entry;
        assert_eq!(e.failures, 10);
        assert_eq!(
            e.retry_at,
            NOW + 100 + 60,
            "backoff is capped by negative_cache_seconds"
        );
        assert_eq!(e.last_failure.as_deref(), Some("unreachable"));
    }

    #[test]
    fn pinned_keys_need_no_fetch_and_keys_are_per_agent() {
        let jwk = key(3).jwk.to_json();
        let cfg = Config::from_json(
            format!(
                r#"{{"agents":[{{"name":"P","url":"https://pinned.example","keys":[{jwk}]}},
                {{"name":"A","url":"https://agent.example","cluster":"dir"}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let c = KeyCache::new(&cfg);
        assert!(matches!(
            c.lookup(&id("https://pinned.example"), &key(3).thumbprint),
            Lookup::Found { .. }
        ));
        // The same key id under another agent is not found: lookup is by the pair.
        assert!(matches!(
            c.lookup(&id(URL), &key(3).thumbprint),
            Lookup::Unavailable
        ));
        let pinned_failure = Failure {
            agent: Some("https://pinned.example".into()),
            ..Failure::new(Reason::UnknownKey, "")
        };
        assert_eq!(
            c.wants_fetch(&pinned_failure, &DirectorySettings::default(), NOW),
            None
        );
        assert_eq!(c.due_for_refresh(NOW, |_| 0), vec![URL.to_string()]);
    }

    #[test]
    fn proof_status_is_per_key() {
        let s = DirectorySettings::default();
        let mut store = prepared_store();
        let mut c = KeyCache::new(&config());
        let fetched = Fetched {
            keys: vec![
                FetchedKey {
                    key: key(1),
                    proof: Proof::Valid,
                },
                FetchedKey {
                    key: key(2),
                    proof: Proof::Invalid,
                },
                FetchedKey {
                    key: key(3),
                    proof: Proof::Absent,
                },
            ],
            fresh_for: 600,
            skipped: Vec::new(),
            bare_jwk: false,
        };
        c.record(&mut store, URL, &Ok(fetched), &s, NOW);
        // Another worker reads the statuses from shared data.
        let mut other = KeyCache::new(&config());
        assert!(other.sync(&store, URL));
        for cache in [&c, &other] {
            assert_eq!(cache.proof_of(URL, &key(1).thumbprint), Some("valid"));
            assert_eq!(cache.proof_of(URL, &key(2).thumbprint), Some("invalid"));
            assert_eq!(cache.proof_of(URL, &key(3).thumbprint), Some("absent"));
            assert_eq!(cache.proof_of(URL, &key(4).thumbprint), None);
            assert_eq!(
                cache.proof_of("https://x.example", &key(1).thumbprint),
                None
            );
        }
        // A refresh that changes a key's status changes what is logged for it.
        c.record(&mut store, URL, &ok(vec![key(1)]), &s, NOW + 600);
        assert_eq!(c.proof_of(URL, &key(1).thumbprint), Some("absent"));
        assert_eq!(c.proof_of(URL, &key(2).thumbprint), None);
    }

    #[test]
    fn a_pinned_key_has_no_proof_status() {
        let jwk = key(1).jwk.to_json();
        let cfg = Config::from_json(
            format!(
                r#"{{"agents":[{{"name":"A","url":"https://agent.example","cluster":"dir","keys":[{jwk}]}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let mut store = MemoryStore::default();
        let mut c = KeyCache::new(&cfg);
        c.prepare(&mut store).unwrap();
        c.record(
            &mut store,
            URL,
            &ok(vec![key(1), key(2)]),
            &DirectorySettings::default(),
            NOW,
        );
        assert_eq!(c.proof_of(URL, &key(1).thumbprint), None);
        assert_eq!(c.proof_of(URL, &key(2).thumbprint), Some("absent"));
    }

    fn store_key(plugin_config: &str) -> String {
        let c = Config::from_json(plugin_config.as_bytes()).unwrap();
        KeyCache::new(&c).agents[0].store_key.clone()
    }

    #[test]
    fn entries_are_keyed_by_everything_that_shapes_acceptance() {
        let with = |agent: &str, rest: &str| {
            store_key(&format!(
                r#"{{"agents":[{{"name":"A","cluster":"dir",{agent}}}]{rest}}}"#
            ))
        };
        let dir = r#""url":"https://agent.example""#;
        let base = with(dir, "");
        assert!(base.starts_with("wba.dir.https://agent.example|"), "{base}");
        // The same acceptance: the same entry, whatever else differs.
        for same in [
            with(dir, r#","directory":{"max_keys":32}"#),
            with(r#""url":"https://Agent.Example:443/""#, ""),
            // The origin and its well-known directory are the same agent and the same fetch.
            with(
                r#""url":"https://agent.example/.well-known/http-message-signatures-directory""#,
                "",
            ),
            with(dir, r#","mode":"observe","max_validity_seconds":5"#),
            store_key(
                r#"{"agents":[{"name":"renamed","cluster":"dir","url":"https://agent.example"}]}"#,
            ),
        ] {
            assert_eq!(same, base);
        }
        let mut seen = vec![base];
        for different in [
            with(dir, r#","directory":{"max_keys":2}"#),
            with(dir, r#","directory":{"max_bytes":1000}"#),
            with(dir, r#","directory":{"require_proof":true}"#),
            with(dir, r#","directory":{"timeout_ms":100}"#),
            with(dir, r#","directory":{"min_refresh_seconds":1}"#),
            with(dir, r#","directory":{"max_cache_seconds":600}"#),
            with(dir, r#","directory":{"negative_cache_seconds":1}"#),
            with(dir, r#","clock_skew_seconds":5"#),
            store_key(
                r#"{"agents":[{"name":"A","cluster":"other","url":"https://agent.example"}]}"#,
            ),
            with(r#""url":"https://agent.example:8443""#, ""),
            with(r#""url":"https://agent.example/keys""#, ""),
            with(r#""url":"https://agent.example/keys?v=2""#, ""),
            with(r#""url":"https://agent.example/?v=2""#, ""),
        ] {
            assert!(!seen.contains(&different), "{different}");
            seen.push(different);
        }
        // The query is part of the fetch, not of the identity.
        assert!(seen[seen.len() - 2].starts_with("wba.dir.https://agent.example/keys|"));
        assert!(seen[seen.len() - 1].starts_with("wba.dir.https://agent.example|"));
    }

    #[test]
    fn plugins_with_different_bounds_do_not_adopt_each_others_sets() {
        let s = DirectorySettings::default();
        let loose = config();
        let strict = Config::from_json(
            br#"{"directory":{"max_keys":1},"agents":[{"name":"A","url":"https://agent.example","cluster":"dir"}]}"#,
        )
        .unwrap();
        let mut store = MemoryStore::default();
        let mut a = KeyCache::new(&loose);
        let mut b = KeyCache::new(&strict);
        a.prepare(&mut store).unwrap();
        b.prepare(&mut store).unwrap();
        assert_eq!(store.len(), 2, "one entry per acceptance");
        a.record(&mut store, URL, &ok(vec![key(1), key(2)]), &s, NOW);
        assert!(!b.sync(&store, URL));
        assert!(matches!(
            b.lookup(&id(URL), &key(1).thumbprint),
            Lookup::Unavailable
        ));
        // And each claims its own fetch.
        assert_eq!(a.claim(&mut store, URL, NOW + 600, 0, 2500), Claim::Claimed);
        assert_eq!(b.claim(&mut store, URL, NOW + 600, 0, 2500), Claim::Claimed);
        // The same configuration in another plugin shares the entry.
        let mut a2 = KeyCache::new(&loose);
        a2.prepare(&mut store).unwrap();
        assert_eq!(store.len(), 2);
        assert!(a2.sync(&store, URL));
        assert!(found(&a2, 2));
    }
}
