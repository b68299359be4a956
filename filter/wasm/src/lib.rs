//! The proxy-wasm front end: Envoy's Wasm host calls only, every decision in the
//! `wba-filter` core. One root context per VM (one VM per worker) owns the configuration,
//! the key cache and the key fetches; an HTTP context per request hands everything to
//! [`wba_filter::request_filter`]. A request whose agent's keys are missing is paused; the root
//! fetches them on its next tick (fetches are always dispatched from the root, which outlives
//! any request) and then finishes every waiting request in its own context.
//!
//! A request whose signature covers `Content-Digest` is decided only once its body is checked.
//! Envoy's Wasm host gives a filter that holds a request's headers none of its body, so that
//! takes two entries of this module in the filter chain: this (`verify`) filter lets headers
//! and body pass, hashing the body, into the `hold` filter right after it, which keeps them
//! from the upstream; when the body is complete the root decides in the hold filter's context
//! (result headers, or a local reply) and releases it.

// Envoy runs this module as wasm32 only; natively (`cargo test --workspace`) the crate is empty.
#![cfg(target_arch = "wasm32")]

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
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

/// Filter state through which the verify filter asks the hold filter after it to hold a
/// stream: its value is the verify filter's context id.
const HOLD_PROPERTY: &str = "wba.hold";

thread_local! {
    /// Whether a plugin with the `hold` role runs in this VM (one VM per worker thread).
    static HOLDER_PRESENT: Cell<bool> = const { Cell::new(false) };
    /// Streams held for their body: verify filter context id -> hold filter context id.
    static HOLDERS: RefCell<HashMap<u32, u32>> = RefCell::new(HashMap::new());
    /// Streams marked for holding whose hold filter has not claimed them yet: while there are
    /// none, the hold filter lets a request on without a host call.
    static UNCLAIMED: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
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
    /// Requests whose verdict waits for their body, by (verify filter) context id.
    held: HashMap<u32, Held>,
    /// Whether the missing hold filter was already logged.
    warned_no_holder: bool,
    /// Questions to the fleet's replay store in flight, by call token.
    store_queries: HashMap<u32, StoreCall>,
}

/// A request held for the replay store's answer.
struct StoreCall {
    /// The verify filter's context of the request (its end cancels the question).
    owner: u32,
    /// The context to decide in: the request's, or its hold filter's for a held body.
    act_in: u32,
    query: Box<StoreQuery>,
}

/// A request whose verdict waits for its body, which streams past hashed.
struct Held {
    pending: Box<PendingBody>,
    hasher: BodyHasher,
    /// The body is complete or past `max_body_bytes`: the next tick decides.
    ready: bool,
}

impl Vm {
    fn busy(&self) -> bool {
        self.fetcher.busy() || !self.held.is_empty() || !self.store_queries.is_empty()
    }
}

struct Root {
    id: u32,
    vm: Option<Rc<RefCell<Vm>>>,
    /// A plugin with the `hold` role: its requests get a [`Holder`].
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
            let mut host = EnvoyHost::deferred(&v.metrics);
            let mut keys = StoreSynced {
                cache: v.fetcher.cache_mut(),
                store: &EnvoyStore,
            };
            let mut action = request_filter::on_request_headers(
                &mut host,
                &v.config,
                &mut keys,
                &mut v.replay.guard(&mut EnvoyStore),
                false,
            );
            if let FilterAction::NeedBody(pending) = action {
                // Resuming lets the headers on into the hold filter and the body (buffered by
                // Envoy meanwhile) through this filter.
                action = body_needed(
                    &mut host,
                    v,
                    waiter.context_id,
                    waiter.end_of_stream,
                    pending,
                );
            }
            let id = waiter.context_id;
            let action = held_for_store(&mut host, v, id, id, action);
            (action, host.sent)
        };
        conclude(action, sent);
    }

    /// Decides, in each hold filter's context, the held requests whose body is complete (or
    /// too large), and releases the ones that pass.
    fn release_held(&self, vm: &Rc<RefCell<Vm>>) {
        let ready: Vec<(u32, Held)> = match vm.try_borrow_mut() {
            Ok(mut v) => v.held.extract_if(|_, h| h.ready).collect(),
            Err(_) => return,
        };
        for (id, held) in ready {
            let holder = HOLDERS.with(|h| h.borrow_mut().remove(&id));
            UNCLAIMED.with(|u| u.borrow_mut().remove(&id));
            let (action, sent) = {
                let Ok(mut v) = vm.try_borrow_mut() else {
                    return;
                };
                let v = &mut *v;
                let Some(holder) = holder else {
                    // The headers went on unheld: no hold filter follows this one in its chain.
                    if hostcalls::set_effective_context(id).is_ok() {
                        let mut host = EnvoyHost::deferred(&v.metrics);
                        no_holder_at(&mut host, v);
                        if let Some((status, headers, body)) = host.sent {
                            send(status, &headers, &body);
                        }
                    }
                    continue;
                };
                if hostcalls::set_effective_context(holder).is_err() {
                    continue;
                }
                let mut host = EnvoyHost::deferred(&v.metrics);
                let body = Body::hashed(&held.hasher, &v.config);
                let action = request_filter::on_request_body(
                    &mut host,
                    &v.config,
                    &mut v.replay.guard(&mut EnvoyStore),
                    &held.pending,
                    body,
                );
                let action = held_for_store(&mut host, v, id, holder, action);
                (action, host.sent)
            };
            conclude(action, sent);
        }
        let _ = hostcalls::set_effective_context(self.id);
    }

    /// Dispatches fetches that are due and this worker may make; finishes requests that waited
    /// too long or whose keys another worker fetched.
    /// Decides held bodies that are complete, then lets the fetch coordinator look at shared
    /// data, waits and due refreshes.
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
            HOLDER_PRESENT.with(|p| p.set(true));
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
            warned_no_holder: false,
            store_queries: HashMap::new(),
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
            return Some(Box::new(Holder { id: context_id }));
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
            vm.held.remove(&self.id);
            vm.store_queries.retain(|_, c| c.owner != self.id);
        }
        HOLDERS.with(|h| h.borrow_mut().remove(&self.id));
        UNCLAIMED.with(|u| u.borrow_mut().remove(&self.id));
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
        let action = held_for_store(&mut host, vm, self.id, self.id, action);
        match action {
            FilterAction::Continue => Action::Continue,
            FilterAction::Stop | FilterAction::NeedBody(_) | FilterAction::AskStore(_) => {
                Action::Pause
            }
            FilterAction::Wait(url) => {
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

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body_passing(body_size, end_of_stream);
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the body.
        self.body_passing(0, true);
        Action::Continue
    }
}

impl Request {
    /// Hashes a piece of a held request's body on its way into the hold filter; once the body
    /// is complete or too large, wakes the root to decide.
    fn body_passing(&mut self, size: usize, end_of_stream: bool) {
        let Ok(mut vm) = self.vm.try_borrow_mut() else {
            return;
        };
        let max = vm.config.max_body_bytes as u64;
        let Some(held) = vm.held.get_mut(&self.id) else {
            return;
        };
        if held.ready {
            return;
        }
        if size > 0 {
            // Not buffering here: the buffer is this piece of the body.
            if let Ok(Some(piece)) = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size) {
                held.hasher.update(&piece);
            }
        }
        if end_of_stream || held.hasher.len() > max {
            held.ready = true;
            let _ = hostcalls::set_tick_period(Duration::from_millis(1));
        }
    }
}

/// A request whose verdict waits for its body (in the current context, `context_id`): decided
/// at once when it has no body; otherwise marked for the hold filter, whose presence this
/// filter needs (fails closed without one), and let through it.
fn body_needed(
    host: &mut EnvoyHost,
    vm: &mut Vm,
    context_id: u32,
    end_of_stream: bool,
    pending: Box<PendingBody>,
) -> FilterAction {
    if end_of_stream {
        let config = &vm.config;
        let body = Body::Complete(&[]);
        return request_filter::on_request_body(
            host,
            config,
            &mut vm.replay.guard(&mut EnvoyStore),
            &pending,
            body,
        );
    }
    if !HOLDER_PRESENT.with(Cell::get) {
        return no_holder_at(host, vm);
    }
    let mark = context_id.to_string();
    if hostcalls::set_property(vec![HOLD_PROPERTY], Some(mark.as_bytes())).is_err() {
        return request_filter::fail_closed(host, "the request could not be held for its body");
    }
    UNCLAIMED.with(|u| u.borrow_mut().insert(context_id));
    let hasher = pending.hasher();
    vm.held.insert(
        context_id,
        Held {
            pending,
            hasher,
            ready: false,
        },
    );
    FilterAction::Continue
}

/// A verified request the fleet's replay store must see first ([`FilterAction::AskStore`]):
/// asks it from the current (effective) context and keeps the request held (returns
/// [`FilterAction::Stop`] with nothing sent: nothing to do until the answer, which is decided
/// in `act_in`). A call that cannot be dispatched is a store failure, decided at once. Any other
/// action is returned as is.
fn held_for_store(
    host: &mut EnvoyHost,
    vm: &mut Vm,
    owner: u32,
    act_in: u32,
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
            vm.store_queries.insert(
                token,
                StoreCall {
                    owner,
                    act_in,
                    query,
                },
            );
            FilterAction::Stop
        }
        Err(status) => {
            let why = format!(
                "cannot reach the replay store cluster {:?}: {status:?}",
                call.cluster
            );
            request_filter::on_store_answer(host, &vm.config, &query, &StoreAnswer::Failed(why))
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
        if hostcalls::set_effective_context(call.act_in).is_err() {
            return true;
        }
        let mut host = EnvoyHost::deferred(&v.metrics);
        let action = request_filter::on_store_answer(&mut host, &v.config, &call.query, &answer);
        (action, host.sent)
    };
    conclude(action, sent);
    true
}

/// A signed body with no hold filter to keep the request from the upstream: fail closed, and
/// say once what the chain lacks.
fn no_holder_at(host: &mut EnvoyHost, vm: &mut Vm) -> FilterAction {
    if !vm.warned_no_holder {
        vm.warned_no_holder = true;
        let _ = hostcalls::log(
            LogLevel::Error,
            "web-bot-auth: a signature covers Content-Digest, but no web-bot-auth filter with {\"role\": \"hold\"} follows this one in the filter chain: such requests are refused with 500 (see the README)",
        );
    }
    request_filter::fail_closed(
        host,
        "the signature covers the body, and this proxy is not set up to check signed bodies",
    )
}

/// The `hold` filter's request context: holds a stream the verify filter before it marked,
/// until the verify filter's root decides it in this context.
struct Holder {
    id: u32,
}

impl Context for Holder {
    fn on_done(&mut self) -> bool {
        HOLDERS.with(|h| h.borrow_mut().retain(|_, holder| *holder != self.id));
        true
    }
}

impl HttpContext for Holder {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if UNCLAIMED.with(|u| u.borrow().is_empty()) {
            return Action::Continue;
        }
        let marked = hostcalls::get_property(vec![HOLD_PROPERTY])
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u32>().ok());
        match marked {
            Some(verify_context) if UNCLAIMED.with(|u| u.borrow_mut().remove(&verify_context)) => {
                HOLDERS.with(|h| h.borrow_mut().insert(verify_context, self.id));
                Action::Pause
            }
            _ => Action::Continue,
        }
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
