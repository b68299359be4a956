//! How the request path reaches the key cache, whatever the front end keeps it in: the
//! proxy-wasm module has one [`KeyCache`] per VM, synced from Envoy's shared data; the native
//! module has one per filter configuration in process memory, published as snapshots
//! ([`KeySnapshots`]) by the thread that fetches.

use std::sync::{Arc, PoisonError, RwLock};

use crate::key_cache::KeyCache;
use crate::shared::SharedStore;

/// The key cache a request verifies with.
pub trait Keys {
    /// The view the request verifies with.
    fn cache(&self) -> &KeyCache;
    /// Looks again at the state shared with the other workers for this agent (normalized
    /// URL); true if the view changed (then the request verifies again).
    fn refresh(&mut self, agent: &str) -> bool;
}

/// A VM's own cache, synced from shared data (the proxy-wasm front end).
pub struct StoreSynced<'a> {
    pub cache: &'a mut KeyCache,
    pub store: &'a dyn SharedStore,
}

impl Keys for StoreSynced<'_> {
    fn cache(&self) -> &KeyCache {
        self.cache
    }
    fn refresh(&mut self, agent: &str) -> bool {
        self.cache.sync(self.store, agent)
    }
}

/// A cache nobody else updates (tests, tools): refreshing never changes it.
impl Keys for KeyCache {
    fn cache(&self) -> &KeyCache {
        self
    }
    fn refresh(&mut self, _agent: &str) -> bool {
        false
    }
}

/// The latest key cache of a filter configuration, shared by every thread of the process:
/// the fetching side publishes a new snapshot after each fetch; a request takes the current
/// one (a reference count, no copy) and verifies without holding any lock.
#[derive(Debug)]
pub struct KeySnapshots {
    current: RwLock<Arc<KeyCache>>,
}

impl KeySnapshots {
    pub fn new(cache: KeyCache) -> Self {
        KeySnapshots {
            current: RwLock::new(Arc::new(cache)),
        }
    }

    /// Makes `cache` the view of every request from now on.
    pub fn publish(&self, cache: KeyCache) {
        let fresh = Arc::new(cache);
        // A poisoned lock only means a writer panicked between two whole assignments.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    fn load(&self) -> Arc<KeyCache> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current snapshot, for one request.
    pub fn reader(&self) -> SnapshotKeys<'_> {
        SnapshotKeys {
            owner: self,
            view: self.load(),
        }
    }
}

/// One request's view of a [`KeySnapshots`].
#[derive(Debug)]
pub struct SnapshotKeys<'a> {
    owner: &'a KeySnapshots,
    view: Arc<KeyCache>,
}

impl Keys for SnapshotKeys<'_> {
    fn cache(&self) -> &KeyCache {
        &self.view
    }
    fn refresh(&mut self, _agent: &str) -> bool {
        let latest = self.owner.load();
        let changed = !Arc::ptr_eq(&latest, &self.view);
        self.view = latest;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn a_reader_sees_what_is_published_after_a_refresh() {
        let config = Config::from_json(br#"{"agents":[]}"#).unwrap();
        let snapshots = KeySnapshots::new(KeyCache::new(&config));
        let mut reader = snapshots.reader();
        assert!(!reader.refresh("https://a.example"));
        let before: *const KeyCache = reader.cache();
        snapshots.publish(KeyCache::new(&config));
        // Unchanged until it looks again: one request verifies with one view.
        assert!(std::ptr::eq(reader.cache(), before));
        assert!(reader.refresh("https://a.example"));
        assert!(!std::ptr::eq(reader.cache(), before));
        assert!(!reader.refresh("https://a.example"));
    }
}
