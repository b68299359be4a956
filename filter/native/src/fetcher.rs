//! Key fetches, on Envoy's main thread. Streams that must wait for an agent's keys register a
//! per-stream scheduler here and post a message; the main thread (config-scheduler events)
//! feeds the core's fetch [`Coordinator`], sends its fetches as config-level callouts (which
//! outlive any request, and must be made on the main thread), publishes the new keys to the
//! streams, and resumes the waiting streams through their schedulers.
//!
//! No timer exists for HTTP filters: a module thread (the ticker) commits a tick event to the
//! config scheduler every 10 ms while requests wait or fetches are in flight, every second
//! otherwise (background refreshes). It exists only for configurations that fetch keys, never
//! in `--mode validate`, and is joined in `config_destroy`.

use std::collections::{HashMap, VecDeque};
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wba_filter::fetch::FetchResponse;
use wba_filter::fetch_coordinator::{Command, Coordinator, BUSY_TICK_MS, IDLE_TICK_MS};
use wba_filter::shared::MemoryStore;

use crate::abi::{self, CalloutAnswer, CalloutResult, ConfigScheduler, LogLevel, StreamScheduler};
use crate::config::Shared;

/// Config-scheduler event: a stream posted a message (handle it now).
pub const EVENT_WAKE: u64 = 1;
/// Config-scheduler event: the ticker's period elapsed.
pub const EVENT_TICK: u64 = 2;
/// Stream-scheduler event: the keys the stream waited for are there (or will not come).
pub const EVENT_KEYS: u64 = 1;

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A poisoned lock only means a panic (caught at a hook) between two whole updates.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a stream tells the main thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The stream `token` waits for `agent`'s keys since `since_ms`.
    Wait {
        agent: String,
        token: u64,
        since_ms: i64,
    },
    /// The stream `token` went away while waiting.
    Gone(u64),
}

/// The main thread's state.
struct Main {
    coordinator: Coordinator<u64>,
    /// Private to this configuration: the coordinator's lease and result entries.
    store: MemoryStore,
    /// While a fetch is being sent: answers that came before the send returned its id.
    early: Option<Vec<(u64, FetchResponse)>>,
}

/// The fetch side of a configuration.
pub struct Fetcher {
    main: Mutex<Main>,
    inbox: Mutex<Vec<Message>>,
    /// Schedulers of the streams that waited, by token: committed (main) and deleted (the
    /// stream's end) under this lock, so a deleted scheduler is never committed.
    waiters: Mutex<HashMap<u64, StreamScheduler>>,
    scheduler: Option<Arc<ConfigScheduler>>,
    ticker: Mutex<Option<Ticker>>,
    tick: Arc<TickState>,
}

struct Ticker {
    thread: JoinHandle<()>,
}

/// Shared with the ticker thread.
struct TickState {
    stop: Mutex<bool>,
    wake: Condvar,
    busy: AtomicBool,
}

impl Fetcher {
    pub fn new(
        coordinator: Coordinator<u64>,
        store: MemoryStore,
        scheduler: Option<ConfigScheduler>,
    ) -> Fetcher {
        Fetcher {
            main: Mutex::new(Main {
                coordinator,
                store,
                early: None,
            }),
            inbox: Mutex::new(Vec::new()),
            waiters: Mutex::new(HashMap::new()),
            scheduler: scheduler.map(Arc::new),
            ticker: Mutex::new(None),
            tick: Arc::new(TickState {
                stop: Mutex::new(false),
                wake: Condvar::new(),
                busy: AtomicBool::new(false),
            }),
        }
    }

    /// Fetches every agent's keys now, and starts the ticker.
    pub fn start(&self) {
        let Some(scheduler) = self.scheduler.clone() else {
            return;
        };
        scheduler.commit(EVENT_TICK);
        let tick = self.tick.clone();
        let spawned = std::thread::Builder::new()
            .name("wba-ticker".into())
            .spawn(move || loop {
                let period = if tick.busy.load(Ordering::Relaxed) {
                    BUSY_TICK_MS
                } else {
                    IDLE_TICK_MS
                };
                let stop = lock(&tick.stop);
                let (stop, _) = tick
                    .wake
                    .wait_timeout(stop, Duration::from_millis(period))
                    .unwrap_or_else(PoisonError::into_inner);
                if *stop {
                    return;
                }
                drop(stop);
                scheduler.commit(EVENT_TICK);
            });
        match spawned {
            Ok(thread) => *lock(&self.ticker) = Some(Ticker { thread }),
            Err(e) => abi::log(
                LogLevel::ERROR,
                &format!("web-bot-auth: cannot start the key refresh thread: {e}; keys are fetched only when requests wait for them"),
            ),
        }
    }

    /// Stops and joins the ticker.
    pub fn stop(&self) {
        *lock(&self.tick.stop) = true;
        self.tick.wake.notify_all();
        if let Some(t) = lock(&self.ticker).take() {
            let _ = t.thread.join();
        }
    }

    /// A stream waits for `agent`'s keys: keeps its scheduler, tells the main thread.
    pub fn wait(&self, agent: String, token: u64, scheduler: StreamScheduler) {
        lock(&self.waiters).insert(token, scheduler);
        self.post(Message::Wait {
            agent,
            token,
            since_ms: now_ms(),
        });
    }

    /// A stream ends: deletes its scheduler; if it was still waiting, the main thread forgets it.
    pub fn stream_gone(&self, token: u64, was_waiting: bool) {
        let scheduler = lock(&self.waiters).remove(&token);
        drop(scheduler);
        if was_waiting {
            self.post(Message::Gone(token));
        }
    }

    fn post(&self, message: Message) {
        lock(&self.inbox).push(message);
        if let Some(s) = &self.scheduler {
            s.commit(EVENT_WAKE);
        }
    }

    fn set_busy(&self, busy: bool) {
        if !self.tick.busy.swap(busy, Ordering::Relaxed) && busy {
            // From the idle period to the busy one now, not after up to a second.
            self.tick.wake.notify_all();
        }
    }
}

/// A config-scheduler event (main thread): messages from streams, then a tick.
pub fn on_event(shared: &Shared, _event: u64) {
    let now = now_ms();
    let messages = mem::take(&mut *lock(&shared.fetcher.inbox));
    let commands = {
        let mut guard = lock(&shared.fetcher.main);
        let main = &mut *guard;
        for m in messages {
            match m {
                Message::Wait {
                    agent,
                    token,
                    since_ms,
                } => main.coordinator.wait(agent, token, token, since_ms),
                Message::Gone(token) => main.coordinator.forget(token),
            }
        }
        let commands = main.coordinator.tick(&mut main.store, now);
        publish_if(shared, main, &commands);
        commands
    };
    run(shared, commands, now);
}

/// A fetch answered (main thread).
pub fn on_answer(shared: &Shared, id: u64, answer: CalloutAnswer, cut: bool) {
    let now = now_ms();
    let too_large = cut || answer.result == CalloutResult::EXCEED_RESPONSE_BUFFER_LIMIT;
    let response = FetchResponse {
        status: answer.status(),
        headers: answer.headers,
        body: if too_large { Vec::new() } else { answer.body },
        too_large,
    };
    let commands = {
        let mut guard = lock(&shared.fetcher.main);
        let main = &mut *guard;
        if let Some(early) = main.early.as_mut() {
            // Answered inside the send (Envoy can fail a request at once): handled once the
            // send has returned the id.
            early.push((id, response));
            return;
        }
        let commands = main
            .coordinator
            .answered(&mut main.store, id, &response, now);
        publish_if(shared, main, &commands);
        commands
    };
    run(shared, commands, now);
}

/// After the coordinator changed something, requests verify with its keys from now on
/// (before any waiting request is resumed).
fn publish_if(shared: &Shared, main: &Main, commands: &[Command<u64>]) {
    if !commands.is_empty() {
        shared.keys.publish(main.coordinator.cache().clone());
    }
}

/// Carries out the coordinator's commands (main thread; no lock held across host calls).
fn run(shared: &Shared, commands: Vec<Command<u64>>, now: i64) {
    let mut queue: VecDeque<Command<u64>> = commands.into();
    while let Some(command) = queue.pop_front() {
        match command {
            Command::Dispatch { agent, request } => {
                lock(&shared.fetcher.main).early = Some(Vec::new());
                let sent = shared.handle.http_callout(
                    &request.cluster,
                    &request.headers,
                    request.timeout_ms,
                );
                let mut guard = lock(&shared.fetcher.main);
                let main = &mut *guard;
                let early = main.early.take().unwrap_or_default();
                let more = match sent {
                    Ok(id) => {
                        main.coordinator.dispatched(&agent, id);
                        let mut more = Vec::new();
                        for (answered, response) in early {
                            more.extend(main.coordinator.answered(
                                &mut main.store,
                                answered,
                                &response,
                                now,
                            ));
                        }
                        more
                    }
                    Err(e) => main.coordinator.dispatch_failed(
                        &mut main.store,
                        &agent,
                        format!(
                            "cannot send the fetch through cluster {:?}: {e}",
                            request.cluster
                        ),
                        now,
                    ),
                };
                publish_if(shared, main, &more);
                queue.extend(more);
            }
            Command::Resume(tokens) => {
                let waiters = lock(&shared.fetcher.waiters);
                for t in tokens {
                    if let Some(s) = waiters.get(&t) {
                        s.commit(EVENT_KEYS);
                    }
                }
            }
            Command::Count(counter, n) => shared.metrics.count_config(shared.handle, counter, n),
            Command::KeysHeld(n) => shared.metrics.keys_held(shared.handle, n),
            Command::Warn(line) => abi::log(LogLevel::WARN, &line),
        }
    }
    let busy = lock(&shared.fetcher.main).coordinator.busy();
    shared.fetcher.set_busy(busy);
}
