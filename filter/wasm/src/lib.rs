//! The proxy-wasm front end: Envoy's Wasm host calls only, every decision in the
//! `wba-filter` core. One root context per VM (one VM per worker) owns the configuration,
//! the key cache and the key fetches; an HTTP context per request hands everything to
//! [`wba_filter::request_filter`]. A request whose agent's keys are missing is paused; the root
//! fetches them on its next tick (fetches are always dispatched from the root, which outlives
//! any request) and then finishes every waiting request in its own context.
//!
//! A request whose signature covers `Content-Digest` is decided only once its body is checked,
//! and nothing of it leaves before. Envoy's Wasm host turns a filter's pause on request headers
//! into StopAllIterationAndWatermark: a filter that holds a request's headers receives none of
//! its body until it lets them go (Envoy buffers the body in front of it, up to the buffer
//! limit). So the body is read by a second entry of this module placed *before* this one in the
//! chain, its hold companion (`{"role": "hold"}`, same VM): it lets headers and body pass, and
//! hashes the body of a stream its filter asked it to. This (`verify`) filter holds such a
//! request's headers, but only once it has found the companion of this very stream among the
//! ones that ran just before it ([`find_companion`]); when the companion has seen the whole
//! body (or more than `max_body_bytes`), the root decides in this filter's context and either
//! resumes the request (headers, then the buffered body and trailers) or answers it. Without a
//! companion of the stream before the filter (none in the chain, or one placed after it), the
//! request is refused at once, 500 `body_not_held`, before anything of it left.

// Envoy runs this module as wasm32 only; natively (`cargo test --workspace`) the crate is empty.
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};

use wba_filter::config::{Config, Role};
use wba_filter::content_digest::BodyHasher;
use wba_filter::fetch::FetchResponse;
use wba_filter::fetch_coordinator::{Command, Coordinator, BUSY_TICK_MS, IDLE_TICK_MS};
use wba_filter::header_map::decode_header_map;
use wba_filter::host::{HeadersUnavailable, Host};
use wba_filter::keys::StoreSynced;
use wba_filter::replay::{ReplayTable, SECRET_BYTES};
use wba_filter::replay_store::{StoreAnswer, StoreQuery};
use wba_filter::request_filter::{self, Action as FilterAction, Body, PendingBody};
use wba_filter::shared::{SharedStore, StoreError};
use wba_filter::stats::{Counter, KEYS_GAUGE};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root::new(id)) });
}}

/// A request paused for its agent's keys.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    context_id: u32,
    /// The request has no body (its headers ended the stream).
    end_of_stream: bool,
}

/// Filter state through which a filter recognizes the companion of its own stream: the
/// entries of one stream share its filter state, those of other streams do not (context ids
/// say nothing about which stream a context belongs to).
const STREAM_MARK: &str = "wba.hold";
/// How many of the companions that most recently saw a request's headers a VM remembers.
const RECENT_COMPANIONS: usize = 8;
/// How many of those a filter tries (two host calls each) before it refuses a signed body.
const MAX_TRIES: usize = 4;
/// A `Content-Digest` naming every algorithm the verifier checks: the hashers of a body
/// watched before anyone knows which digests its signature covers.
const EVERY_DIGEST: &str = "sha-256=:AA==:, sha-512=:AA==:";

thread_local! {
    /// The companions that most recently saw a request's headers in this VM (one VM per worker
    /// thread). A stream's own companion is normally the newest when the stream's filter runs:
    /// nothing else runs in between unless a filter placed between the two pauses.
    static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
    /// A random value of this VM, in every stream mark (context ids are only unique per VM).
    static VM_TOKEN: Cell<Option<u64>> = const { Cell::new(None) };
    /// Whether a signed body refused for want of a companion was already logged in this VM.
    static WARNED_UNHELD: Cell<bool> = const { Cell::new(false) };
    /// Whether a signed body refused because it passed the companion too early was logged.
    static WARNED_PASSED: Cell<bool> = const { Cell::new(false) };
}

/// A ring of the companions that most recently saw a request's headers. Weak: a companion's
/// context owns its [`Slot`], which goes with the stream.
#[derive(Default)]
struct Recent {
    slots: [Weak<Slot>; RECENT_COMPANIONS],
    next: usize,
}

impl Recent {
    fn remember(&mut self, slot: &Rc<Slot>) {
        self.slots[self.next] = Rc::downgrade(slot);
        self.next = (self.next + 1) % RECENT_COMPANIONS;
    }

    /// The remembered companions whose stream is still there and that no filter claimed yet,
    /// newest first, at most [`MAX_TRIES`].
    fn candidates(&self) -> Vec<Rc<Slot>> {
        (1..=RECENT_COMPANIONS)
            .map(|back| &self.slots[(self.next + RECENT_COMPANIONS - back) % RECENT_COMPANIONS])
            .filter_map(Weak::upgrade)
            .filter(|s| !s.done.get() && !s.claimed.get())
            .take(MAX_TRIES)
            .collect()
    }
}

/// A companion's part of its stream, which the stream's filter links to once it needs the body.
struct Slot {
    /// The companion's context id.
    id: u32,
    /// Some of the body (or its end) passed while no filter watched it: the companion cannot
    /// vouch for the whole body any more.
    body_seen: Cell<bool>,
    /// The stream is over.
    done: Cell<bool>,
    /// A filter linked it (once: a companion serves one filter, which may have let it go
    /// since, with the body already past).
    claimed: Cell<bool>,
    /// The body watched for the stream's filter, while linked.
    watch: RefCell<Option<Watch>>,
}

/// A body hashed for a filter as it passes its companion.
struct Watch {
    /// The filter's context id (its root is woken when the body is complete).
    filter: u32,
    hasher: BodyHasher,
    max_body_bytes: u64,
    /// The body is complete or past `max_body_bytes`: the filter's root decides at its next
    /// tick.
    ready: bool,
}

impl Slot {
    fn new(id: u32) -> Self {
        Slot {
            id,
            body_seen: Cell::new(false),
            done: Cell::new(false),
            claimed: Cell::new(false),
            watch: RefCell::new(None),
        }
    }

    /// Links the companion to a filter, whose body it now hashes.
    fn link(&self, watch: Watch) {
        self.claimed.set(true);
        self.watch.replace(Some(watch));
    }

    fn ready(&self) -> bool {
        self.watch.borrow().as_ref().is_some_and(|w| w.ready)
    }

    /// A piece of the body (`size` bytes, in the current context's body buffer) passing the
    /// companion: hashed when a filter watches it.
    fn passing(&self, size: usize, end_of_stream: bool) {
        let mut watch = self.watch.borrow_mut();
        let Some(w) = watch.as_mut() else {
            self.body_seen.set(true);
            return;
        };
        if w.ready {
            return;
        }
        if size > 0 {
            // Not buffering here: the buffer is this piece of the body.
            if let Ok(Some(piece)) = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
                w.hasher.update(&piece);
            }
        }
        if end_of_stream || w.hasher.len() > w.max_body_bytes {
            w.ready = true;
            wake(w.filter, self.id);
        }
    }
}

/// Wakes the root of the filter whose context is `filter` (a tick period is set for the root of
/// the current context, so from the filter's), then returns to context `own`.
fn wake(filter: u32, own: u32) {
    if hostcalls::set_effective_context(filter).is_ok() {
        let _ = hostcalls::set_tick_period(Duration::from_millis(1));
    }
    let _ = hostcalls::set_effective_context(own);
}

/// What [`find_companion`] found.
enum Link {
    /// This stream's companion, not linked yet, which has seen none of the body.
    Found(Rc<Slot>),
    /// No companion of this stream ran before this filter: none in the chain, one after the
    /// filter, or one beyond the few most recent (a filter between the two paused).
    Missing,
    /// This stream's companion let some of the body pass before this filter asked for it.
    BodyPassed,
}

/// Finds the companion of the current stream (this filter's, context `own`) among the few that
/// most recently saw a request's headers, checking each through the stream's filter state: a
/// mark this filter sets in its own stream is read back in the candidate's context, where it is
/// there only if the candidate belongs to the same stream. No host call when no companion ran
/// in this VM; otherwise one, plus two per candidate tried (the first, normally).
fn find_companion(own: u32) -> Link {
    let candidates = RECENT.with(|r| r.borrow().candidates());
    if candidates.is_empty() {
        return Link::Missing;
    }
    let mark = stream_mark(own);
    if hostcalls::set_property(vec![STREAM_MARK], Some(mark.as_bytes())).is_err() {
        return Link::Missing;
    }
    let found = candidates.into_iter().find(|c| {
        hostcalls::set_effective_context(c.id).is_ok()
            && hostcalls::get_property(vec![STREAM_MARK])
                .ok()
                .flatten()
                .is_some_and(|v| v == mark.as_bytes())
    });
    let _ = hostcalls::set_effective_context(own);
    match found {
        Some(slot) if slot.body_seen.get() => Link::BodyPassed,
        Some(slot) => Link::Found(slot),
        None => Link::Missing,
    }
}

/// The value a filter (context `id`) marks its stream with: unique in this Envoy while the
/// stream lasts (context ids are unique in a VM, the token tells VMs apart).
fn stream_mark(id: u32) -> String {
    let token = VM_TOKEN.with(|t| match t.get() {
        Some(token) => token,
        None => {
            let mut bytes = [0u8; 8];
            // SAFETY: the host writes exactly `bytes.len()` bytes into the buffer we pass.
            let _ = unsafe { random_get(bytes.as_mut_ptr(), bytes.len()) };
            let token = u64::from_le_bytes(bytes);
            t.set(Some(token));
            token
        }
    });
    format!("{token:016x}.{id}")
}

/// Everything a VM's contexts share.
struct Vm {
    config: Config,
    /// The key cache (synced from shared data), the paused requests and this VM's fetches.
    fetcher: Coordinator<Waiter>,
    replay: ReplayTable,
    /// Metric ids, indexed by [`Counter::index`].
    metrics: Rc<[u32]>,
    keys_gauge: Option<u32>,
    /// Requests held for their body, by (filter) context id.
    held: HashMap<u32, Held>,
    /// Questions to the fleet's replay store in flight, by call token.
    store_queries: HashMap<u32, StoreCall>,
    /// The call token of each request's question in flight, by the request's context id: a
    /// request that goes away is found in constant time (not by a scan of every question).
    store_token_of: HashMap<u32, u32>,
}

/// A request held for the replay store's answer.
struct StoreCall {
    /// The filter's context of the request: its end cancels the question, the answer is
    /// decided in it.
    owner: u32,
    query: Box<StoreQuery>,
}

/// A request held here, its body hashed by its companion as it passes.
struct Held {
    /// What the core waits for; `None` while the request waits for its agent's keys (the
    /// companion hashes the body meanwhile, in case the signature covers it).
    pending: Option<Box<PendingBody>>,
    /// The stream's companion, linked.
    slot: Rc<Slot>,
}

impl Held {
    /// The companion stops watching the body.
    fn unlink(self) {
        self.slot.watch.take();
    }
}

impl Vm {
    fn busy(&self) -> bool {
        self.fetcher.busy() || !self.held.is_empty() || !self.store_queries.is_empty()
    }

    /// Forgets the request in context `id` held for its body, if it was.
    fn unhold(&mut self, id: u32) {
        if let Some(held) = self.held.remove(&id) {
            held.unlink();
        }
    }
}

struct Root {
    id: u32,
    vm: Option<Rc<RefCell<Vm>>>,
    /// A plugin with the `hold` role: its requests get a [`Companion`].
    hold: bool,
}

impl Root {
    fn new(id: u32) -> Self {
        Root {
            id,
            vm: None,
            hold: false,
        }
    }
}

fn now_ms() -> i64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn count(metrics: &[u32], counter: Counter) {
    add(metrics, counter, 1);
}

/// Adds `n` in one host call (a fetched set may hold dozens of keys).
fn add(metrics: &[u32], counter: Counter, n: u64) {
    if let Some(&id) = metrics.get(counter.index()) {
        if id != u32::MAX && n > 0 {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// A header map's pairs, read through the raw ABI and [`decode_header_map`] rather than the
/// SDK's `get_map`, which panics on non-UTF-8 bytes (why: wba_filter::header_map). `None` when the
/// host refuses or hands over something that is not a header map.
fn header_pairs(map: MapType) -> Option<Vec<(String, String)>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a buffer it allocated through this module's
    // `proxy_on_memory_allocate` (a boxed slice of `size` bytes), which we take back.
    let bytes = unsafe {
        if proxy_get_header_map_pairs(map, &mut data, &mut size) != Status::Ok {
            return None;
        }
        if data.is_null() {
            return Some(Vec::new());
        }
        Vec::from_raw_parts(data, size, size)
    };
    decode_header_map(&bytes)
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
extern "C" {
    /// WASI `random_get`, which Envoy's Wasm runtimes provide (bytes from the host's CSPRNG).
    fn random_get(buf: *mut u8, buf_len: usize) -> i32;
}

/// Random bytes for the replay table's bucket secret.
fn random_secret() -> Option<[u8; SECRET_BYTES]> {
    let mut secret = [0u8; SECRET_BYTES];
    // SAFETY: the host writes exactly `SECRET_BYTES` bytes into the buffer we pass.
    let errno = unsafe { random_get(secret.as_mut_ptr(), secret.len()) };
    (errno == 0 && secret != [0u8; SECRET_BYTES]).then_some(secret)
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(vm) = self.vm.clone() else { return };
        if store_answered(&vm, token, body_size) {
            let _ = hostcalls::set_effective_context(self.id);
            return;
        }
        let commands = {
            let Ok(mut vm) = vm.try_borrow_mut() else {
                return;
            };
            if !vm.fetcher.is_fetch(u64::from(token)) {
                return;
            }
            let headers = header_pairs(MapType::HttpCallResponseHeaders).unwrap_or_default();
            let status = headers
                .iter()
                .find(|(n, _)| n == ":status")
                .and_then(|(_, v)| v.parse::<u16>().ok());
            let max = usize::try_from(vm.config.directory.max_bytes).unwrap_or(usize::MAX);
            let too_large = body_size > max;
            let body = if too_large || body_size == 0 {
                Vec::new()
            } else {
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            let response = FetchResponse {
                status,
                headers,
                body,
                too_large,
            };
            vm.fetcher
                .answered(&mut EnvoyStore, u64::from(token), &response, now_ms())
        };
        self.execute(&vm, commands);
    }
}

impl Root {
    /// Carries out what the fetch coordinator asks: sends fetches (owned by the root, so a
    /// fetch outlives the request that caused it), finishes paused requests each in its own
    /// context, counts and logs.
    fn execute(&self, vm: &Rc<RefCell<Vm>>, commands: Vec<Command<Waiter>>) {
        let mut queue = std::collections::VecDeque::from(commands);
        while let Some(command) = queue.pop_front() {
            match command {
                Command::Resume(waiters) => {
                    for w in &waiters {
                        self.finish(vm, w);
                    }
                    let _ = hostcalls::set_effective_context(self.id);
                }
                Command::Dispatch { agent, request } => {
                    let _ = hostcalls::set_effective_context(self.id);
                    let headers: Vec<(&str, &str)> = request
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    let sent = hostcalls::dispatch_http_call(
                        &request.cluster,
                        headers,
                        None,
                        Vec::new(),
                        Duration::from_millis(request.timeout_ms),
                    );
                    let Ok(mut v) = vm.try_borrow_mut() else {
                        continue;
                    };
                    match sent {
                        Ok(token) => v.fetcher.dispatched(&agent, u64::from(token)),
                        Err(status) => {
                            let detail = format!(
                                "cannot dispatch to cluster {:?}: {status:?}",
                                request.cluster
                            );
                            let more = v.fetcher.dispatch_failed(
                                &mut EnvoyStore,
                                &agent,
                                detail,
                                now_ms(),
                            );
                            queue.extend(more);
                        }
                    }
                }
                Command::Count(counter, n) => {
                    if let Ok(v) = vm.try_borrow() {
                        add(&v.metrics, counter, n);
                    }
                }
                Command::KeysHeld(n) => {
                    if let Some(g) = vm.try_borrow().ok().and_then(|v| v.keys_gauge) {
                        let _ = hostcalls::record_metric(g, n);
                    }
                }
                Command::Warn(line) => {
                    let _ = hostcalls::log(LogLevel::Warn, &line);
                }
            }
        }
    }

    fn finish(&self, vm: &Rc<RefCell<Vm>>, waiter: &Waiter) {
        // The request may be gone (client closed): then there is nothing to do.
        if hostcalls::set_effective_context(waiter.context_id).is_err() {
            return;
        }
        let (action, sent) = {
            let Ok(mut v) = vm.try_borrow_mut() else {
                return;
            };
            let v = &mut *v;
            let id = waiter.context_id;
            let mut host = EnvoyHost::deferred(&v.metrics);
            let mut keys = StoreSynced {
                cache: v.fetcher.cache_mut(),
                store: &EnvoyStore,
            };
            let action = request_filter::on_request_headers(
                &mut host,
                &v.config,
                &mut keys,
                &mut v.replay.guard(&mut EnvoyStore),
                false,
            );
            let action = match action {
                // Still held here: its body passed the companion meanwhile, hashed when the
                // companion was linked as the request began to wait.
                FilterAction::NeedBody(pending) => {
                    body_needed(&mut host, v, id, waiter.end_of_stream, pending)
                }
                other => {
                    v.unhold(id);
                    other
                }
            };
            let action = held_for_store(&mut host, v, id, action);
            (action, host.sent)
        };
        conclude(action, sent);
    }

    /// Decides, each in its filter's context, the held requests whose body is complete (or
    /// too large), and resumes the ones that pass.
    fn release_held(&self, vm: &Rc<RefCell<Vm>>) {
        let ready: Vec<(u32, Held)> = match vm.try_borrow_mut() {
            Ok(mut v) => v
                .held
                .extract_if(|_, h| h.pending.is_some() && h.slot.ready())
                .collect(),
            Err(_) => return,
        };
        for (id, held) in ready {
            let (action, sent) = {
                let Ok(mut v) = vm.try_borrow_mut() else {
                    return;
                };
                let v = &mut *v;
                if hostcalls::set_effective_context(id).is_err() {
                    held.unlink();
                    continue;
                }
                let mut host = EnvoyHost::deferred(&v.metrics);
                let action = decide_held(&mut host, v, held);
                let action = held_for_store(&mut host, v, id, action);
                (action, host.sent)
            };
            conclude(action, sent);
        }
        let _ = hostcalls::set_effective_context(self.id);
    }

    /// Decides held bodies that are complete, then lets the fetch coordinator look at shared
    /// data, waits and due refreshes: dispatches fetches that are due and this worker may make,
    /// finishes requests that waited too long or whose keys another worker fetched.
    fn tick(&self, vm: &Rc<RefCell<Vm>>) {
        self.release_held(vm);
        let commands = match vm.try_borrow_mut() {
            Ok(mut v) => v.fetcher.tick(&mut EnvoyStore, now_ms()),
            Err(_) => return,
        };
        self.execute(vm, commands);
        let _ = hostcalls::set_effective_context(self.id);
        let busy = vm.try_borrow().map(|v| v.busy()).unwrap_or(true);
        let period = if busy { BUSY_TICK_MS } else { IDLE_TICK_MS };
        let _ = hostcalls::set_tick_period(Duration::from_millis(period));
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let config = match Config::from_json(&bytes) {
            Ok(c) => c,
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &e.to_string());
                return false;
            }
        };
        if config.role == Role::Hold {
            self.hold = true;
            return true;
        }
        let metrics = Counter::all()
            .into_iter()
            .map(|c| hostcalls::define_metric(MetricType::Counter, &c.name()).unwrap_or(u32::MAX))
            .collect::<Vec<u32>>()
            .into();
        let keys_gauge = hostcalls::define_metric(MetricType::Gauge, KEYS_GAUGE).ok();
        wba_filter::ed25519::prepare();
        let replay = if config.replay_protection {
            let opened = random_secret()
                .ok_or_else(|| "no random bytes from the host (WASI random_get)".to_string())
                .and_then(|secret| {
                    ReplayTable::open(&mut EnvoyStore, config.replay_capacity, secret)
                        .map_err(|e| e.to_string())
                });
            match opened {
                Ok(t) => t,
                Err(e) => {
                    let _ = hostcalls::log(
                        LogLevel::Error,
                        &format!("invalid web-bot-auth configuration: cannot create the replay table: {e}"),
                    );
                    return false;
                }
            }
        } else {
            ReplayTable::unused()
        };
        let fetcher = Coordinator::new(&config, self.id);
        if let Err(e) = fetcher.prepare(&mut EnvoyStore) {
            let _ = hostcalls::log(
                LogLevel::Error,
                &format!("invalid web-bot-auth configuration: cannot create the shared key cache entries: {e}"),
            );
            return false;
        }
        let fetches = fetcher.fetches();
        self.vm = Some(Rc::new(RefCell::new(Vm {
            config,
            fetcher,
            replay,
            metrics,
            keys_gauge,
            held: HashMap::new(),
            store_queries: HashMap::new(),
            store_token_of: HashMap::new(),
        })));
        // Fetch every agent's keys right away; then tick for background refreshes.
        let _ = hostcalls::set_tick_period(if fetches {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(IDLE_TICK_MS)
        });
        true
    }

    fn on_tick(&mut self) {
        if let Some(vm) = self.vm.clone() {
            self.tick(&vm);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.hold {
            return Some(Box::new(Companion {
                id: context_id,
                slot: None,
            }));
        }
        let vm = self.vm.clone()?;
        Some(Box::new(Request { id: context_id, vm }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    id: u32,
    vm: Rc<RefCell<Vm>>,
}

impl Context for Request {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        store_answered(&self.vm, token, body_size);
    }

    fn on_done(&mut self) -> bool {
        // A paused request that goes away stops waiting (Envoy cancels its calls).
        if let Ok(mut vm) = self.vm.try_borrow_mut() {
            vm.fetcher.forget(u64::from(self.id));
            vm.unhold(self.id);
            if let Some(token) = vm.store_token_of.remove(&self.id) {
                vm.store_queries.remove(&token);
            }
        }
        true
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            // Not reachable in practice (callbacks do not nest); never pass unchecked.
            send(503, &[], "");
            return Action::Pause;
        };
        let vm = &mut *vm;
        let mut host = EnvoyHost::direct(&vm.metrics);
        let action = request_filter::on_request_headers(
            &mut host,
            &vm.config,
            &mut StoreSynced {
                cache: vm.fetcher.cache_mut(),
                store: &EnvoyStore,
            },
            &mut vm.replay.guard(&mut EnvoyStore),
            true,
        );
        let action = match action {
            FilterAction::NeedBody(pending) => {
                body_needed(&mut host, vm, self.id, end_of_stream, pending)
            }
            other => other,
        };
        let action = held_for_store(&mut host, vm, self.id, action);
        match action {
            FilterAction::Continue => Action::Continue,
            FilterAction::Stop | FilterAction::NeedBody(_) | FilterAction::AskStore(_) => {
                Action::Pause
            }
            FilterAction::Wait(url) => {
                if !end_of_stream {
                    watch_while_waiting(vm, self.id);
                }
                let waiter = Waiter {
                    context_id: self.id,
                    end_of_stream,
                };
                vm.fetcher.wait(url, u64::from(self.id), waiter, now_ms());
                // Wake the root now rather than at its next idle tick.
                let _ = hostcalls::set_tick_period(Duration::from_millis(1));
                Action::Pause
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers named like our headers go, as inbound headers do: some upstreams merge
        // trailers into headers. A held request's trailers come here once it is resumed.
        let Ok(vm) = self.vm.try_borrow() else {
            send(503, &[], "");
            return Action::Pause;
        };
        let Some(trailers) = header_pairs(MapType::HttpRequestTrailers) else {
            let mut host = EnvoyHost::direct(&vm.metrics);
            request_filter::fail_closed(&mut host, "the request trailers could not be read");
            return Action::Pause;
        };
        let names = trailers.iter().map(|(n, _)| n.as_str());
        for name in request_filter::trailers_to_strip(&vm.config, names) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestTrailers, name, None);
        }
        Action::Continue
    }
}

/// A request whose verdict waits for its body (in the current context, `id`): decided at once
/// when it has no body; otherwise held here while the companion of this stream (linked now, or
/// when the request began to wait for keys) hashes the body ([`FilterAction::Stop`], nothing
/// sent: the root decides when the body is complete), or refused when there is no such
/// companion.
fn body_needed(
    host: &mut EnvoyHost,
    vm: &mut Vm,
    id: u32,
    end_of_stream: bool,
    pending: Box<PendingBody>,
) -> FilterAction {
    let watched = vm.held.remove(&id);
    if end_of_stream {
        if let Some(held) = watched {
            held.unlink();
        }
        let body = Body::Complete(&[]);
        return request_filter::on_request_body(
            host,
            &vm.config,
            &mut vm.replay.guard(&mut EnvoyStore),
            &pending,
            body,
        );
    }
    let slot = match watched {
        Some(held) => held.slot,
        None => match find_companion(id) {
            Link::Found(slot) => {
                slot.link(Watch {
                    filter: id,
                    hasher: pending.hasher(),
                    max_body_bytes: vm.config.max_body_bytes as u64,
                    ready: false,
                });
                slot
            }
            Link::Missing => return unheld(host, &vm.config, Unheld::Missing),
            Link::BodyPassed => return unheld(host, &vm.config, Unheld::BodyPassed),
        },
    };
    let held = Held {
        pending: Some(pending),
        slot,
    };
    if held.slot.ready() {
        // The whole body passed while the request waited for keys.
        return decide_held(host, vm, held);
    }
    vm.held.insert(id, held);
    FilterAction::Stop
}

/// A request with a body that waits for its agent's keys (context `id`): its signature may
/// cover the body, which passes the companion meanwhile (this filter, paused, sees none of it),
/// so the companion of this stream, if there is one, hashes it for every algorithm the
/// verifier checks. Without one, a signature that turns out to cover the body is refused then.
fn watch_while_waiting(vm: &mut Vm, id: u32) {
    if let Link::Found(slot) = find_companion(id) {
        slot.link(Watch {
            filter: id,
            hasher: BodyHasher::for_field(EVERY_DIGEST),
            max_body_bytes: vm.config.max_body_bytes as u64,
            ready: false,
        });
        vm.held.insert(
            id,
            Held {
                pending: None,
                slot,
            },
        );
    }
}

/// Decides a held request whose body its companion has seen whole (or past
/// `max_body_bytes`), in the current context (the request's filter's).
fn decide_held(host: &mut EnvoyHost, vm: &mut Vm, held: Held) -> FilterAction {
    let (Some(pending), Some(watch)) = (held.pending, held.slot.watch.take()) else {
        return request_filter::fail_closed(host, "the request's body was not watched");
    };
    let body = Body::hashed(&watch.hasher, &vm.config);
    request_filter::on_request_body(
        host,
        &vm.config,
        &mut vm.replay.guard(&mut EnvoyStore),
        &pending,
        body,
    )
}

/// Why a signed body cannot be held.
enum Unheld {
    Missing,
    BodyPassed,
}

/// Refuses a signed body this chain cannot hold (500 `body_not_held`, before anything of it
/// left), and says once per VM what to change.
fn unheld(host: &mut EnvoyHost, config: &Config, why: Unheld) -> FilterAction {
    let (warned, line, detail) = match why {
        Unheld::Missing => (
            &WARNED_UNHELD,
            "web-bot-auth: a signature covers Content-Digest, but no web-bot-auth entry with {\"role\": \"hold\"} ran before this filter in the request's filter chain: such requests are refused with 500 (body_not_held). Put the hold entry BEFORE the filter, in the same vm_id; a hold entry after the filter (the order of earlier versions) cannot keep the body from the upstream (see the README, Signed bodies)",
            "the signature covers the body, and no hold entry before this filter in its chain can keep the request from the upstream while the body is checked",
        ),
        Unheld::BodyPassed => (
            &WARNED_PASSED,
            "web-bot-auth: a signature covers Content-Digest, but some of the body passed the hold entry before the filter asked it to hash the body (a filter between the two held the request's headers): such requests are refused with 500 (body_not_held). Put the hold entry right before the filter (see the README, Signed bodies)",
            "the signature covers the body, and some of the body passed the hold entry before this filter could have it checked",
        ),
    };
    if !warned.with(|w| w.replace(true)) {
        let _ = hostcalls::log(LogLevel::Error, line);
    }
    request_filter::refuse_unheld(host, config, detail)
}

/// A verified request the fleet's replay store must see first ([`FilterAction::AskStore`]):
/// asks it from the current (effective) context, the request's (`owner`), and keeps the
/// request held (returns [`FilterAction::Stop`] with nothing sent: nothing to do until the
/// answer). A call that cannot be dispatched is a store failure, decided at once. Any other
/// action is returned as is.
fn held_for_store(
    host: &mut EnvoyHost,
    vm: &mut Vm,
    owner: u32,
    action: FilterAction,
) -> FilterAction {
    let FilterAction::AskStore(query) = action else {
        return action;
    };
    let Some(settings) = &vm.config.replay_store else {
        return request_filter::fail_closed(host, "no replay store is configured");
    };
    let call = query.request(settings);
    let headers: Vec<(&str, &str)> = call
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let timeout = Duration::from_millis(call.timeout_ms);
    match hostcalls::dispatch_http_call(&call.cluster, headers, None, Vec::new(), timeout) {
        Ok(token) => {
            vm.store_queries.insert(token, StoreCall { owner, query });
            vm.store_token_of.insert(owner, token);
            FilterAction::Stop
        }
        Err(status) => {
            let why = format!(
                "cannot reach the replay store cluster {:?}: {status:?}",
                call.cluster
            );
            request_filter::on_store_answer(
                host,
                &vm.config,
                &mut vm.replay.guard(&mut EnvoyStore),
                &query,
                &StoreAnswer::Failed(why),
            )
        }
    }
}

/// Decides the request a replay store answer is for, if `token` is a store call of this VM.
fn store_answered(vm: &Rc<RefCell<Vm>>, token: u32, body_size: usize) -> bool {
    let (action, sent) = {
        let Ok(mut v) = vm.try_borrow_mut() else {
            return false;
        };
        let v = &mut *v;
        let Some(call) = v.store_queries.remove(&token) else {
            return false;
        };
        v.store_token_of.remove(&call.owner);
        let status = header_pairs(MapType::HttpCallResponseHeaders)
            .unwrap_or_default()
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, s)| s.parse::<u16>().ok());
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size.min(256))
            .ok()
            .flatten()
            .unwrap_or_default();
        let answer = StoreAnswer::from_response(status, &body);
        if hostcalls::set_effective_context(call.owner).is_err() {
            return true;
        }
        let mut host = EnvoyHost::deferred(&v.metrics);
        let action = request_filter::on_store_answer(
            &mut host,
            &v.config,
            &mut v.replay.guard(&mut EnvoyStore),
            &call.query,
            &answer,
        );
        (action, host.sent)
    };
    conclude(action, sent);
    true
}

/// The hold companion's request context (`{"role": "hold"}`, placed before the filter): lets
/// headers, body and trailers pass, remembers itself for the filter of its stream
/// ([`find_companion`]) when the request has a body, and hashes the body once that filter
/// linked it. Nothing else: no host call for a request whose filter does not need its body.
struct Companion {
    id: u32,
    slot: Option<Rc<Slot>>,
}

impl Context for Companion {
    fn on_done(&mut self) -> bool {
        if let Some(slot) = self.slot.take() {
            slot.done.set(true);
        }
        true
    }
}

impl HttpContext for Companion {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            let slot = Rc::new(Slot::new(self.id));
            RECENT.with(|r| r.borrow_mut().remember(&slot));
            self.slot = Some(slot);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(slot) = &self.slot {
            slot.passing(body_size, end_of_stream);
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the body.
        if let Some(slot) = &self.slot {
            slot.passing(0, true);
        }
        Action::Continue
    }
}

/// Acts, in the current context, on a decision the core made outside the request's own
/// callback: sends the local response it deferred, or resumes a request that passes.
fn conclude(action: FilterAction, sent: Option<LocalResponse>) {
    match (action, sent) {
        (_, Some((status, headers, body))) => send(status, &headers, &body),
        (FilterAction::Continue, None) => {
            let _ = hostcalls::resume_http_request();
        }
        _ => {}
    }
}

fn send(status: u16, headers: &[(String, String)], body: &str) {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let _ = hostcalls::send_http_response(u32::from(status), headers, Some(body.as_bytes()));
}

/// A local response: status, headers, body.
type LocalResponse = (u16, Vec<(String, String)>, String);

/// [`Host`] over the proxy-wasm host calls of the current (effective) request.
struct EnvoyHost {
    metrics: Rc<[u32]>,
    /// When set, local responses are kept here and sent by the caller (outside any borrow).
    defer: bool,
    sent: Option<LocalResponse>,
}

impl EnvoyHost {
    fn direct(metrics: &Rc<[u32]>) -> Self {
        EnvoyHost {
            metrics: metrics.clone(),
            defer: false,
            sent: None,
        }
    }

    fn deferred(metrics: &Rc<[u32]>) -> Self {
        EnvoyHost {
            metrics: metrics.clone(),
            defer: true,
            sent: None,
        }
    }
}

impl Host for EnvoyHost {
    fn request_headers(&self) -> Result<Vec<(String, String)>, HeadersUnavailable> {
        // A build for the end-to-end test of this path: the host never hands the headers over.
        if cfg!(feature = "fault-unreadable-headers") {
            return Err(HeadersUnavailable);
        }
        match header_pairs(MapType::HttpRequestHeaders) {
            // A request always has pseudo-headers: an empty map is not one.
            Some(h) if !h.is_empty() => Ok(h),
            _ => Err(HeadersUnavailable),
        }
    }

    fn remove_request_header(&mut self, name: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn now(&self) -> i64 {
        now_ms() / 1000
    }

    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str) {
        if self.defer {
            self.sent = Some((status, headers.to_vec(), body.to_string()));
        } else {
            send(status, headers, body);
        }
    }

    fn increment(&mut self, counter: Counter) {
        count(&self.metrics, counter);
    }

    fn set_log_value(&mut self, key: &str, value: &str) {
        let _ = hostcalls::set_property(vec![key], Some(value.as_bytes()));
    }
}

/// [`SharedStore`] over proxy-wasm shared data (shared by every VM with the same `vm_id`).
struct EnvoyStore;

impl SharedStore for EnvoyStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}
