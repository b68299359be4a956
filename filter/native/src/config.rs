//! One filter configuration: what every stream of it shares (any thread), created on the main
//! thread by `config_new` and shut down by `config_destroy`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use wba_filter::config::{Config, Role};
use wba_filter::fetch_coordinator::Coordinator;
use wba_filter::keys::KeySnapshots;
use wba_filter::replay::{MemoryReplay, SECRET_BYTES};
use wba_filter::shared::MemoryStore;
use wba_filter::stats::{Counter, KEYS_GAUGE};

use crate::abi::{self, CalloutAnswer, ConfigHandle, FilterHandle, LogLevel, MetricId};
use crate::fetcher::{self, Fetcher};

/// The `filter_name` this module answers to.
pub const FILTER_NAME: &str = "web_bot_auth";

/// What `config_new` returns to Envoy.
pub enum FilterConfig {
    /// The verifier.
    Verify(Arc<Shared>),
    /// `{"role": "hold"}`: the wasm module's companion, which this module does not need (it
    /// buffers signed bodies itself); accepted so one configuration serves both, and inert.
    Hold,
}

// Envoy hands the configuration to every worker's streams and calls its config hooks on the
// main thread: it must be shareable across threads (checked here, since Envoy holds it as a
// raw pointer the compiler cannot see through).
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    shareable::<FilterConfig>();
};

/// Whether the "no hold companion needed" line was logged (once per process).
static HOLD_NOTED: AtomicBool = AtomicBool::new(false);

impl FilterConfig {
    /// Parses and sets up a configuration; `None` (refused) after one error line.
    pub fn new(handle: ConfigHandle, name: &[u8], json: &[u8]) -> Option<FilterConfig> {
        if name != FILTER_NAME.as_bytes() {
            abi::log(
                LogLevel::ERROR,
                &format!(
                    "web-bot-auth: this module provides the filter {FILTER_NAME:?}, not {:?} (filter_name)",
                    String::from_utf8_lossy(name)
                ),
            );
            return None;
        }
        let config = match Config::from_json(json) {
            Ok(c) => c,
            Err(e) => {
                abi::log(LogLevel::ERROR, &e.to_string());
                return None;
            }
        };
        if config.role == Role::Hold {
            if !HOLD_NOTED.swap(true, Ordering::Relaxed) {
                abi::log(
                    LogLevel::INFO,
                    "web-bot-auth: {\"role\": \"hold\"} is the wasm module's companion; the native module buffers signed bodies itself and needs none (this filter does nothing)",
                );
            }
            return Some(FilterConfig::Hold);
        }
        match Shared::new(handle, config) {
            Ok(shared) => Some(FilterConfig::Verify(shared)),
            Err(e) => {
                abi::log(
                    LogLevel::ERROR,
                    &format!("invalid web-bot-auth configuration: {e}"),
                );
                None
            }
        }
    }

    /// `config_destroy`: stops the background thread (before the scheduler it uses goes).
    pub fn shutdown(self) {
        if let FilterConfig::Verify(shared) = self {
            shared.fetcher.stop();
        }
    }

    /// A config-scheduler event (main thread).
    pub fn on_scheduled(&self, event: u64) {
        if let FilterConfig::Verify(shared) = self {
            fetcher::on_event(shared, event);
        }
    }

    /// A key fetch answered (main thread).
    pub fn on_callout_done(&self, id: u64, answer: CalloutAnswer, cut: bool) {
        if let FilterConfig::Verify(shared) = self {
            fetcher::on_answer(shared, id, answer, cut);
        }
    }

    /// The largest key directory body kept from a fetch answer.
    pub fn max_directory_bytes(&self) -> usize {
        match self {
            FilterConfig::Verify(shared) => {
                usize::try_from(shared.config.directory.max_bytes).unwrap_or(usize::MAX)
            }
            FilterConfig::Hold => 0,
        }
    }
}

/// Why a configuration could not be set up (after it parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    NoRandom(String),
    KeyEntries(String),
    NoScheduler,
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::NoRandom(e) => {
                write!(
                    f,
                    "cannot create the replay table: no random bytes from the OS ({e})"
                )
            }
            SetupError::KeyEntries(e) => write!(f, "cannot create the key cache entries: {e}"),
            SetupError::NoScheduler => f.write_str("Envoy gave no config scheduler"),
        }
    }
}

/// Everything the streams of one configuration share.
pub struct Shared {
    pub handle: ConfigHandle,
    pub config: Config,
    pub metrics: Metrics,
    /// The keys requests verify with, published by the main thread after each fetch.
    pub keys: KeySnapshots,
    /// `None` when `replay_protection` is off.
    pub replay: Option<MemoryReplay>,
    pub fetcher: Fetcher,
    next_token: AtomicU64,
}

impl Shared {
    fn new(handle: ConfigHandle, config: Config) -> Result<Arc<Shared>, SetupError> {
        let metrics = Metrics::define(handle);
        wba_filter::ed25519::prepare();
        let replay = if config.replay_protection {
            let mut secret = [0u8; SECRET_BYTES];
            getrandom::getrandom(&mut secret).map_err(|e| SetupError::NoRandom(e.to_string()))?;
            Some(MemoryReplay::new(config.replay_capacity, secret))
        } else {
            None
        };
        // One fetcher per configuration: nothing to spread apart (salt 0).
        let coordinator: Coordinator<u64> = Coordinator::alone(&config);
        let mut store = MemoryStore::default();
        coordinator
            .prepare(&mut store)
            .map_err(|e| SetupError::KeyEntries(e.to_string()))?;
        let keys = KeySnapshots::new(coordinator.cache().clone());
        metrics.keys_held(handle, coordinator.cache().keys_held() as u64);
        let fetches = coordinator.fetches();
        // `envoy --mode validate` runs no event loop: no background work.
        let background = !abi::is_validation_mode();
        let scheduler = if background {
            Some(handle.new_scheduler().ok_or(SetupError::NoScheduler)?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            handle,
            config,
            metrics,
            keys,
            replay,
            fetcher: Fetcher::new(coordinator, store, scheduler),
            next_token: AtomicU64::new(1),
        });
        if background && fetches {
            shared.fetcher.start();
        }
        Ok(shared)
    }

    /// A number for a new stream (its waiter token).
    pub fn next_token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }
}

/// The ids of the filter's stats (same names as the wasm module's; Envoy shows them under
/// `dynamicmodulescustom.`).
pub struct Metrics {
    /// Indexed by [`Counter::index`].
    counters: Vec<Option<MetricId>>,
    keys: Option<MetricId>,
}

impl Metrics {
    fn define(handle: ConfigHandle) -> Metrics {
        Metrics {
            counters: Counter::all()
                .into_iter()
                .map(|c| handle.define_counter(&c.name()))
                .collect(),
            keys: handle.define_gauge(KEYS_GAUGE),
        }
    }

    fn id(&self, counter: Counter) -> Option<MetricId> {
        self.counters.get(counter.index()).copied().flatten()
    }

    /// Counts on a stream (its worker).
    pub fn count(&self, filter: FilterHandle, counter: Counter) {
        if let Some(id) = self.id(counter) {
            filter.increment_counter(id, 1);
        }
    }

    /// Counts from the config (any thread).
    pub fn count_config(&self, handle: ConfigHandle, counter: Counter, by: u64) {
        if let (Some(id), true) = (self.id(counter), by > 0) {
            handle.increment_counter(id, by);
        }
    }

    /// The keys-held gauge (any thread).
    pub fn keys_held(&self, handle: ConfigHandle, n: u64) {
        if let Some(id) = self.keys {
            handle.set_gauge(id, n);
        }
    }
}
