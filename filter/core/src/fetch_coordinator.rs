//! Key fetches and the requests that wait for them, as a state machine that returns commands:
//! which fetch to send, which paused requests to run again, what to count and log. A front end
//! feeds it events (a request waits, a tick, a fetch answered or could not be sent, a request
//! went away) and carries out the commands with its host's calls; it decides nothing itself.
//!
//! One coordinator per place that makes fetches: each proxy-wasm VM's root context (the VMs
//! share the key entries and a fetch lease through Envoy's shared data, so one worker fetches
//! while the others wait), or the native module's main thread (one per filter configuration,
//! its store private).

use std::collections::{HashMap, HashSet};

use crate::config::Config;
use crate::fetch::{evaluate, fetch_request, FailureKind, FetchFailure, FetchRequest};
use crate::fetch::{FetchResponse, Fetched, Proof};
use crate::key_cache::{Claim, KeyCache};
use crate::shared::{SharedStore, StoreError};
use crate::stats::Counter;

/// Tick this often while requests wait or fetches are in flight (to notice other workers'
/// results and expired waits).
pub const BUSY_TICK_MS: u64 = 10;
/// Tick this often otherwise: background refresh checks.
pub const IDLE_TICK_MS: u64 = 1000;
/// Upper bound of the refresh jitter, seconds before freshness ends.
const MAX_JITTER_SECONDS: u64 = 30;

/// What the front end must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<W> {
    /// Send this request for `agent`'s keys; report the answer with
    /// [`Coordinator::answered`] under the token the host gives it (after
    /// [`Coordinator::dispatched`]), or [`Coordinator::dispatch_failed`] if it cannot be sent.
    Dispatch {
        agent: String,
        request: FetchRequest,
    },
    /// Run these paused requests again (`on_request_headers` with `may_wait` false), each once.
    Resume(Vec<W>),
    /// Add this to a counter.
    Count(Counter, u64),
    /// The keys-held gauge's new value.
    KeysHeld(u64),
    /// One warning line for the log.
    Warn(String),
}

/// A paused request.
#[derive(Debug, Clone)]
struct Waiting<W> {
    waiter: W,
    since_ms: i64,
}

/// The fetch side of one filter configuration: its key cache, the requests waiting for keys,
/// the fetches in flight.
#[derive(Debug)]
pub struct Coordinator<W> {
    config: Config,
    cache: KeyCache,
    /// Paused requests by the front end's id for them: one that goes away is forgotten in
    /// constant time, however many wait (a flood of reset streams stays linear).
    waiting: HashMap<u64, Waiting<W>>,
    /// The ids waiting for each agent (normalized URL), in arrival order; ids forgotten since
    /// are dropped when the list is next read (resume, tick).
    by_agent: HashMap<String, Vec<u64>>,
    /// Fetches sent: host token -> agent.
    in_flight: HashMap<u64, String>,
    /// The agents of `in_flight` (a set: thousands of agents are fetched at start).
    fetching: HashSet<String>,
    /// Spreads refreshes of several fetchers (workers) apart.
    salt: u32,
    /// Other fetchers record results in the same store (proxy-wasm VMs): look at it on ticks.
    shared: bool,
}

impl<W: Clone> Coordinator<W> {
    /// One of several fetchers sharing `store` (each proxy-wasm VM); `salt` makes this
    /// fetcher's refresh jitter its own (workers do not refresh in lockstep).
    pub fn new(config: &Config, salt: u32) -> Self {
        Coordinator {
            config: config.clone(),
            cache: KeyCache::new(config),
            waiting: HashMap::new(),
            by_agent: HashMap::new(),
            in_flight: HashMap::new(),
            fetching: HashSet::new(),
            salt,
            shared: true,
        }
    }

    /// The only fetcher of its store (the native module's main thread): nobody else records
    /// results, so ticks do not look for them.
    pub fn alone(config: &Config) -> Self {
        Coordinator {
            shared: false,
            ..Self::new(config, 0)
        }
    }

    /// The keys as this fetcher knows them.
    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    /// The cache, for a front end whose requests verify with it in place (a proxy-wasm VM).
    pub fn cache_mut(&mut self) -> &mut KeyCache {
        &mut self.cache
    }

    /// Creates the shared entries the fetch lease and results are written to (when the
    /// configuration loads; see [`KeyCache::prepare`]).
    pub fn prepare(&self, store: &mut dyn SharedStore) -> Result<(), StoreError> {
        self.cache.prepare(store)
    }

    /// Whether any agent's keys are fetched at all (else no tick is ever needed).
    pub fn fetches(&self) -> bool {
        self.cache.fetched_agents().next().is_some()
    }

    /// Requests wait or fetches are in flight: tick every [`BUSY_TICK_MS`], else every
    /// [`IDLE_TICK_MS`].
    pub fn busy(&self) -> bool {
        !self.waiting.is_empty() || !self.in_flight.is_empty()
    }

    /// A request paused for `agent`'s keys ([`crate::request_filter::Action::Wait`]), under
    /// an `id` of the front end's that no other waiting request has; the next tick fetches them.
    pub fn wait(&mut self, agent: String, id: u64, waiter: W, now_ms: i64) {
        self.by_agent.entry(agent).or_default().push(id);
        self.waiting.insert(
            id,
            Waiting {
                waiter,
                since_ms: now_ms,
            },
        );
    }

    /// The request waiting under `id` went away: it stops waiting.
    pub fn forget(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// Whether some request waits for `agent`.
    fn awaited(&self, agent: &str) -> bool {
        self.by_agent.contains_key(agent)
    }

    /// Notices other fetchers' results, expires requests that waited too long, and sends the
    /// fetches that are due (background refreshes and waited-for agents).
    pub fn tick(&mut self, store: &mut dyn SharedStore, now_ms: i64) -> Vec<Command<W>> {
        let now = now_ms / 1000;
        let mut commands = Vec::new();
        let mut ready: Vec<String> = Vec::new();
        // Results other workers stored since the last tick.
        // Ids forgotten since the last tick leave their agents' lists (linear per tick, not
        // per departed request).
        let waiting = &self.waiting;
        self.by_agent.retain(|_, ids| {
            ids.retain(|id| waiting.contains_key(id));
            !ids.is_empty()
        });
        if self.shared {
            for agent in self.cache.sync_all(store) {
                if self.awaited(&agent) {
                    ready.push(agent);
                }
            }
        }
        // A fetch answers within its timeout (a reset is an answer too): this is the safety
        // net for one whose answer never comes.
        let limit = i64::try_from(self.config.directory.timeout_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(2)
            .saturating_add(1000);
        let expired: Vec<W> = self
            .waiting
            .extract_if(|_, w| now_ms.saturating_sub(w.since_ms) > limit)
            .map(|(_, w)| w.waiter)
            .collect();
        let salt = self.salt;
        let mut due = self.cache.due_for_refresh(now, |u| jitter(u, salt));
        let mut seen: HashSet<&str> = due.iter().map(String::as_str).collect();
        seen.extend(ready.iter().map(String::as_str));
        let waited: Vec<String> = self
            .by_agent
            .keys()
            .filter(|a| !seen.contains(a.as_str()))
            .cloned()
            .collect();
        due.extend(waited);
        let lease_ms = i64::try_from(self.config.directory.timeout_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(500);
        for agent in due {
            if self.fetching.contains(&agent) {
                continue;
            }
            match self.cache.claim(store, &agent, now, now_ms, lease_ms) {
                Claim::Claimed => match self.request_for(&agent) {
                    Ok(request) => commands.push(Command::Dispatch { agent, request }),
                    Err(failure) => {
                        self.record(store, &agent, &Err(failure), now, &mut commands);
                        ready.push(agent);
                    }
                },
                Claim::Busy => {}
                Claim::Refused => {
                    if self.awaited(&agent) {
                        ready.push(agent);
                    }
                }
            }
        }
        for agent in ready {
            self.resume(&agent, &mut commands);
        }
        if !expired.is_empty() {
            commands.push(Command::Resume(expired));
        }
        commands
    }

    /// The fetch [`Command::Dispatch`] asked for was sent; its answer comes under `token`.
    pub fn dispatched(&mut self, agent: &str, token: u64) {
        self.in_flight.insert(token, agent.to_string());
        self.fetching.insert(agent.to_string());
    }

    /// The fetch could not be sent: a failed fetch (backs off), and its waiters run again.
    pub fn dispatch_failed(
        &mut self,
        store: &mut dyn SharedStore,
        agent: &str,
        detail: String,
        now_ms: i64,
    ) -> Vec<Command<W>> {
        let mut commands = Vec::new();
        let failure = unreachable(detail);
        self.record(store, agent, &Err(failure), now_ms / 1000, &mut commands);
        self.resume(agent, &mut commands);
        commands
    }

    /// A fetch answered (or failed: no status). Unknown tokens are ignored.
    pub fn answered(
        &mut self,
        store: &mut dyn SharedStore,
        token: u64,
        response: &FetchResponse,
        now_ms: i64,
    ) -> Vec<Command<W>> {
        let mut commands = Vec::new();
        let Some(agent) = self.in_flight.remove(&token) else {
            return commands;
        };
        self.fetching.remove(&agent);
        let now = now_ms / 1000;
        let Some(agent_config) = self.cache.agent(&agent).map(|a| a.config.clone()) else {
            return commands;
        };
        let result = evaluate(
            &agent_config,
            response,
            &self.config.directory,
            self.config.policy.clock_skew_seconds,
            now,
        );
        self.record(store, &agent, &result, now, &mut commands);
        self.resume(&agent, &mut commands);
        commands
    }

    /// Whether `token` is a fetch of this coordinator (a host that shares one callback
    /// between fetches and other calls asks first).
    pub fn is_fetch(&self, token: u64) -> bool {
        self.in_flight.contains_key(&token)
    }

    fn request_for(&self, agent: &str) -> Result<FetchRequest, FetchFailure> {
        let config = self
            .cache
            .agent(agent)
            .map(|a| &a.config)
            .ok_or_else(|| unreachable("not a configured agent".into()))?;
        fetch_request(config, &self.config.directory)
            .ok_or_else(|| unreachable("no cluster configured".into()))
    }

    fn resume(&mut self, agent: &str, commands: &mut Vec<Command<W>>) {
        if let Some(ids) = self.by_agent.remove(agent) {
            let waiters: Vec<W> = ids
                .into_iter()
                .filter_map(|id| self.waiting.remove(&id))
                .map(|w| w.waiter)
                .collect();
            if !waiters.is_empty() {
                commands.push(Command::Resume(waiters));
            }
        }
    }

    /// Stores a fetch result (for every worker, through `store`), counts it, and warns of a
    /// failure (one line each).
    fn record(
        &mut self,
        store: &mut dyn SharedStore,
        agent: &str,
        result: &Result<Fetched, FetchFailure>,
        now: i64,
        commands: &mut Vec<Command<W>>,
    ) {
        let settings = self.config.directory.clone();
        let recorded = self.cache.record(store, agent, result, &settings, now);
        let mut add = |counter: Counter, n: usize| {
            if n > 0 {
                commands.push(Command::Count(
                    counter,
                    u64::try_from(n).unwrap_or(u64::MAX),
                ));
            }
        };
        match result {
            Ok(f) => {
                add(Counter::FetchOk, 1);
                // Per key in use: its own possession proof.
                for p in Proof::ALL {
                    add(
                        Counter::Proof(p),
                        f.keys.iter().filter(|k| k.proof == p).count(),
                    );
                }
                // Not failures: counted, not logged (`wba explain --directory` says why).
                add(Counter::KeySkipped, f.skipped.len());
                add(Counter::BareJwk, usize::from(f.bare_jwk));
            }
            Err(e) => {
                add(Counter::FetchFailed(e.kind), 1);
                let retry = self
                    .cache
                    .agent(agent)
                    .map_or(0, |a| a.entry.retry_at - now);
                commands.push(Command::Warn(format!(
                    "web-bot-auth: key fetch for {agent} failed ({e}); keeping {} cached keys; next attempt in {retry}s",
                    recorded.keys_after
                )));
            }
        }
        commands.push(Command::KeysHeld(
            u64::try_from(self.cache.keys_held()).unwrap_or(0),
        ));
    }
}

fn unreachable(detail: String) -> FetchFailure {
    FetchFailure {
        kind: FailureKind::Unreachable,
        detail,
        retry_after: None,
    }
}

/// A small, stable per-(agent, fetcher) jitter so fetchers do not refresh in lockstep.
fn jitter(url: &str, salt: u32) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(salt);
    for b in url.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::try_from(h % MAX_JITTER_SECONDS).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{build_key_set, DIRECTORY_MEDIA_TYPE};
    use crate::jwk::Jwk;
    use crate::shared::MemoryStore;
    use ed25519_dalek::SigningKey;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const NOW_MS: i64 = 1_800_000_000_000;
    const AGENT: &str = "https://a.example";

    fn config() -> Config {
        Config::from_json(br#"{"agents":[{"name":"A","url":"https://a.example","cluster":"dir"}]}"#)
            .unwrap()
    }

    fn coordinator(store: &mut MemoryStore, salt: u32) -> Coordinator<u32> {
        let c = Coordinator::new(&config(), salt);
        c.prepare(store).unwrap();
        c
    }

    fn keys_response() -> FetchResponse {
        let jwk = Jwk::from_ed25519(SigningKey::from_bytes(&[1; 32]).verifying_key().as_bytes());
        FetchResponse {
            status: Some(200),
            headers: vec![
                ("content-type".into(), DIRECTORY_MEDIA_TYPE.into()),
                ("cache-control".into(), "max-age=600".into()),
            ],
            body: build_key_set(&[jwk]).unwrap().into_bytes(),
            too_large: false,
        }
    }

    fn dispatches(commands: &[Command<u32>]) -> Vec<&str> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Dispatch { agent, .. } => Some(agent.as_str()),
                _ => None,
            })
            .collect()
    }

    fn resumed(commands: &[Command<u32>]) -> Vec<u32> {
        commands
            .iter()
            .flat_map(|c| match c {
                Command::Resume(w) => w.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn the_first_tick_fetches_every_fetched_agent_once() {
        let mut store = MemoryStore::default();
        let mut c = coordinator(&mut store, 1);
        assert!(c.fetches());
        let commands = c.tick(&mut store, NOW_MS);
        assert_eq!(dispatches(&commands), [AGENT]);
        let Some(Command::Dispatch { request, .. }) = commands.first() else {
            panic!("{commands:?}");
        };
        assert_eq!(request.cluster, "dir");
        c.dispatched(AGENT, 7);
        assert!(c.busy());
        // In flight: not sent again.
        assert!(dispatches(&c.tick(&mut store, NOW_MS + 10)).is_empty());
    }

    #[test]
    fn waiters_resume_once_when_the_keys_arrive() {
        let mut store = MemoryStore::default();
        let mut c = coordinator(&mut store, 1);
        c.wait(AGENT.into(), 1, 1, NOW_MS);
        c.wait(AGENT.into(), 2, 2, NOW_MS);
        let commands = c.tick(&mut store, NOW_MS);
        assert_eq!(dispatches(&commands), [AGENT]);
        assert!(resumed(&commands).is_empty());
        c.dispatched(AGENT, 7);
        c.forget(2);
        let commands = c.answered(&mut store, 7, &keys_response(), NOW_MS + 5);
        assert_eq!(resumed(&commands), [1]);
        assert!(commands.contains(&Command::Count(Counter::FetchOk, 1)));
        assert!(commands.contains(&Command::KeysHeld(1)));
        assert_eq!(c.cache().keys_held(), 1);
        assert!(!c.busy());
        // An unknown or repeated token changes nothing.
        assert!(c
            .answered(&mut store, 7, &keys_response(), NOW_MS)
            .is_empty());
        // Fresh keys: nothing is due until their freshness (minus jitter) runs out.
        assert!(dispatches(&c.tick(&mut store, NOW_MS + 1000)).is_empty());
        assert_eq!(dispatches(&c.tick(&mut store, NOW_MS + 600_000)), [AGENT]);
    }

    #[test]
    fn a_request_that_goes_away_is_forgotten_alone() {
        let mut store = MemoryStore::default();
        let mut c = coordinator(&mut store, 1);
        for id in 0..1000u32 {
            c.wait(AGENT.into(), id.into(), id, NOW_MS);
        }
        // Every other request leaves (reset streams), in any order.
        for id in (0..1000u64).filter(|id| id % 2 == 1).rev() {
            c.forget(id);
        }
        c.forget(5000); // never waited: nothing happens
        let commands = c.tick(&mut store, NOW_MS);
        assert_eq!(dispatches(&commands), [AGENT]);
        c.dispatched(AGENT, 7);
        let commands = c.answered(&mut store, 7, &keys_response(), NOW_MS + 5);
        let expected: Vec<u32> = (0..1000).filter(|id| id % 2 == 0).collect();
        assert_eq!(resumed(&commands), expected);
        assert!(!c.busy());
        // All forgotten: the agent is no longer waited for, so nothing is resumed.
        c.wait(AGENT.into(), 1, 1, NOW_MS);
        c.forget(1);
        assert!(!c.busy());
    }

    #[test]
    fn a_failed_fetch_resumes_its_waiters_warns_and_backs_off() {
        let mut store = MemoryStore::default();
        let mut c = coordinator(&mut store, 1);
        c.wait(AGENT.into(), 1, 1, NOW_MS);
        let commands = c.tick(&mut store, NOW_MS);
        assert_eq!(dispatches(&commands), [AGENT]);
        let commands = c.dispatch_failed(&mut store, AGENT, "no such cluster".into(), NOW_MS);
        assert_eq!(resumed(&commands), [1]);
        assert!(commands.contains(&Command::Count(
            Counter::FetchFailed(FailureKind::Unreachable),
            1
        )));
        assert!(commands
            .iter()
            .any(|c| matches!(c, Command::Warn(w) if w.contains("no such cluster"))));
        // Backing off: the next tick sends nothing, and a new waiter is resumed at once.
        c.wait(AGENT.into(), 3, 3, NOW_MS + 10);
        let commands = c.tick(&mut store, NOW_MS + 10);
        assert!(dispatches(&commands).is_empty());
        assert_eq!(resumed(&commands), [3]);
    }

    #[test]
    fn a_fetch_without_an_answer_releases_its_waiters_after_twice_the_timeout() {
        let mut store = MemoryStore::default();
        let mut c = coordinator(&mut store, 1);
        c.wait(AGENT.into(), 1, 1, NOW_MS);
        let _ = c.tick(&mut store, NOW_MS);
        c.dispatched(AGENT, 9);
        assert!(resumed(&c.tick(&mut store, NOW_MS + 4_000)).is_empty());
        assert_eq!(resumed(&c.tick(&mut store, NOW_MS + 5_001)), [1]);
    }

    #[test]
    fn one_worker_fetches_while_another_waits_for_its_result() {
        let mut store = MemoryStore::default();
        let mut first = coordinator(&mut store, 1);
        let mut second = coordinator(&mut store, 2);
        first.wait(AGENT.into(), 1, 1, NOW_MS);
        second.wait(AGENT.into(), 2, 2, NOW_MS);
        assert_eq!(dispatches(&first.tick(&mut store, NOW_MS)), [AGENT]);
        first.dispatched(AGENT, 1);
        // The lease is taken: the second worker waits instead of fetching too.
        let commands = second.tick(&mut store, NOW_MS + 1);
        assert!(dispatches(&commands).is_empty());
        assert!(resumed(&commands).is_empty());
        let commands = first.answered(&mut store, 1, &keys_response(), NOW_MS + 2);
        assert_eq!(resumed(&commands), [1]);
        // The second sees the stored result on its next tick and resumes its own waiter.
        let commands = second.tick(&mut store, NOW_MS + 12);
        assert_eq!(resumed(&commands), [2]);
        assert_eq!(second.cache().keys_held(), 1);
    }
}
