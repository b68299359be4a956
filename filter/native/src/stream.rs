//! One request: its state between hooks, and the core's [`Host`] over Envoy's callbacks.
//!
//! Every decision is the core's ([`request_filter`]); this maps its [`Action`]s onto the
//! stream: pass (`Continue`, or `continue_decoding` after a pause), answer (`send_response`),
//! pause for keys (a per-stream scheduler the main thread commits when they are there), hold
//! the body while hashing it for `Content-Digest` (`StopIterationAndBuffer` until its end,
//! with the buffer limit raised above `max_body_bytes`), or ask the fleet's replay store (a
//! per-stream callout).
//!
//! `send_response` and `continue_decoding` can run other hooks of the same stream before they
//! return, so they are called only after the stream's state is released: each hook decides
//! (state borrowed), then acts (nothing borrowed). They, and `http_callout`, can even end and
//! destroy the stream before they return: the stream is then [`Stream::gone`] and calls Envoy
//! no more (its memory lives until the hook returns, see `abi::stream_rc`).

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use wba_filter::config::Config;
use wba_filter::content_digest::BodyHasher;
use wba_filter::host::{HeadersUnavailable, Host};
use wba_filter::plan::Rejection;
use wba_filter::replay::{NoReplay, ReplayGuard};
use wba_filter::replay_store::{StoreAnswer, StoreQuery};
use wba_filter::request_filter::{self, Action, Body, PendingBody, LOG_KEYS, PROOF_LOG_KEY};
use wba_filter::stats::Counter;

use crate::abi::{BodyStatus, CalloutAnswer, FilterHandle, HeadersStatus, TrailersStatus};
use crate::config::{FilterConfig, Metrics, Shared};
use crate::fetcher::{now_ms, EVENT_KEYS};

/// `%RESPONSE_CODE_DETAILS%` of the module's local replies.
const DETAILS: &str = "web_bot_auth";
/// `%RESPONSE_CODE_DETAILS%` of the 500 after an internal error.
pub(crate) const PANIC_DETAILS: &str = "web_bot_auth_internal_error";
/// Filter-state keys: the same the wasm module's properties become (`wasm.` + key), so one
/// access-log format serves both.
const FILTER_STATE_PREFIX: &str = "wasm.";

/// Where a request is. Only a decision changes it (each sets the next phase); an event a
/// phase does not expect leaves it as it is.
enum Phase {
    /// Headers not decided yet: no body or trailers may pass.
    Start,
    /// Paused until its agent's keys are fetched.
    Waiting,
    /// Verified; its body is being hashed for the `Content-Digest` the signature covers.
    Body {
        pending: Box<PendingBody>,
        hasher: Box<BodyHasher>,
    },
    /// Verified; the fleet's replay store is asked (callout `id`).
    Store { id: u64, query: Box<StoreQuery> },
    /// Passed on.
    Passed,
    /// Answered locally.
    Answered,
}

impl Phase {
    /// Takes out the held body for its decision, leaving `Answered` (nothing passes) until the
    /// decision sets the next phase; any other phase stays as it is (`None`).
    fn take_body(&mut self) -> Option<(Box<PendingBody>, Box<BodyHasher>)> {
        match std::mem::replace(self, Phase::Answered) {
            Phase::Body { pending, hasher } => Some((pending, hasher)),
            other => {
                *self = other;
                None
            }
        }
    }

    /// Takes out the store query for the decision on the answer to callout `id`, as
    /// [`Phase::take_body`] (an answer to any other callout leaves the phase).
    fn take_store(&mut self, id: u64) -> Option<Box<StoreQuery>> {
        match std::mem::replace(self, Phase::Answered) {
            Phase::Store { id: sent, query } if sent == id => Some(query),
            other => {
                *self = other;
                None
            }
        }
    }
}

struct State {
    phase: Phase,
    /// No (more) body will come: the headers or a body frame ended the stream, or trailers came.
    body_ended: bool,
}

/// What a hook does once the state is released.
enum Step {
    /// The request goes on.
    Pass,
    /// Answer it.
    Answer(Rejection),
    /// Stay stopped: something (keys, body, the store) is still to come.
    Hold,
}

/// A stream of a configuration: the verifier's, or the inert `hold` companion's.
pub struct Stream {
    shared: Option<Arc<Shared>>,
    filter: FilterHandle,
    token: u64,
    state: RefCell<State>,
    /// A panic was caught in one of its hooks: its later request hooks stop, the others do
    /// nothing.
    poisoned: Cell<bool>,
    /// A local reply was sent or the request was passed on: the 500 after a panic is not.
    concluded: Cell<bool>,
    /// Filter-state keys written (Envoy keeps them read-only: each once), bits by position in
    /// [`LOG_KEYS`] then [`PROOF_LOG_KEY`].
    logged: Cell<u8>,
    /// Its scheduler is registered with the fetcher.
    registered: Cell<bool>,
    /// Envoy completed the stream (a client that went away, say): late scheduler events and
    /// callout answers are ignored.
    completed: Cell<bool>,
    /// Envoy destroyed the stream (maybe inside a callback of a hook still running): no more
    /// callbacks with its handle.
    gone: Cell<bool>,
    /// A store callout is being sent: an answer that comes inside the send waits here.
    calling_out: Cell<bool>,
    early_answer: Cell<Option<(u64, CalloutAnswer)>>,
}

impl Stream {
    pub fn new(config: &FilterConfig, filter: FilterHandle) -> Stream {
        let shared = match config {
            FilterConfig::Verify(s) => Some(s.clone()),
            FilterConfig::Hold => None,
        };
        let token = shared.as_ref().map_or(0, |s| s.next_token());
        Stream {
            shared,
            filter,
            token,
            state: RefCell::new(State {
                phase: Phase::Start,
                body_ended: false,
            }),
            poisoned: Cell::new(false),
            concluded: Cell::new(false),
            logged: Cell::new(0),
            registered: Cell::new(false),
            completed: Cell::new(false),
            gone: Cell::new(false),
            calling_out: Cell::new(false),
            early_answer: Cell::new(None),
        }
    }

    pub fn poisoned(&self) -> bool {
        self.poisoned.get()
    }

    /// Envoy destroyed it (`filter_destroy`): its handle is no longer to be used.
    pub fn gone(&self) -> bool {
        self.gone.get()
    }

    /// After a panic in one of its hooks: answer 500 unless already answered or passed on;
    /// from now on its request hooks stop and its other hooks do nothing.
    pub fn on_panic(&self) {
        self.poisoned.set(true);
        if let Some(shared) = &self.shared {
            shared.metrics.count(self.filter, Counter::HostError);
        }
        if !self.concluded.replace(true) && !self.gone.get() {
            self.filter.send_response(500, &[], "", PANIC_DETAILS);
        }
    }

    pub fn on_request_headers(&self, end_of_stream: bool) -> HeadersStatus {
        // Benchmark builds: every request passes untouched (its headers are never decided, so
        // its body and trailers hooks pass too, instead of refusing them as out of order).
        if cfg!(feature = "bench-noop") {
            return HeadersStatus::CONTINUE;
        }
        let Some(shared) = self.shared.clone() else {
            return HeadersStatus::CONTINUE;
        };
        self.fault_panic();
        let step = {
            // Borrowed, or headers again (Envoy sends them once): whatever decides the request
            // is elsewhere; this hook lets nothing pass.
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return HeadersStatus::STOP_ITERATION;
            };
            if !matches!(st.phase, Phase::Start) {
                return HeadersStatus::STOP_ITERATION;
            }
            st.body_ended = end_of_stream;
            self.headers_step(&shared, &mut st, true)
        };
        match self.act(step, false) {
            Step::Hold | Step::Answer(_) => HeadersStatus::STOP_ITERATION,
            Step::Pass => HeadersStatus::CONTINUE,
        }
    }

    pub fn on_request_body(&self, end_of_stream: bool) -> BodyStatus {
        if cfg!(feature = "bench-noop") {
            return BodyStatus::CONTINUE;
        }
        let Some(shared) = self.shared.clone() else {
            return BodyStatus::CONTINUE;
        };
        let step = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return BodyStatus::STOP_ITERATION_AND_BUFFER;
            };
            let st = &mut *st;
            if end_of_stream {
                st.body_ended = true;
            }
            match &mut st.phase {
                Phase::Passed => return BodyStatus::CONTINUE,
                Phase::Answered => return BodyStatus::STOP_ITERATION_NO_BUFFER,
                Phase::Waiting | Phase::Store { .. } => {
                    return BodyStatus::STOP_ITERATION_AND_BUFFER
                }
                Phase::Start => self.refuse(
                    &shared,
                    st,
                    "a request body came before its headers were decided",
                ),
                Phase::Body { hasher, .. } => {
                    self.filter
                        .request_body(false, |chunk| hasher.update(chunk));
                    let too_large = hasher.len() > shared.config.max_body_bytes as u64;
                    if !too_large && !st.body_ended {
                        return BodyStatus::STOP_ITERATION_AND_BUFFER;
                    }
                    self.body_decision(&shared, st)
                }
            }
        };
        match self.act(step, false) {
            Step::Pass => BodyStatus::CONTINUE,
            Step::Answer(_) => BodyStatus::STOP_ITERATION_NO_BUFFER,
            Step::Hold => BodyStatus::STOP_ITERATION_AND_BUFFER,
        }
    }

    pub fn on_request_trailers(&self) -> TrailersStatus {
        if cfg!(feature = "bench-noop") {
            return TrailersStatus::CONTINUE;
        }
        let Some(shared) = self.shared.clone() else {
            return TrailersStatus::CONTINUE;
        };
        // Trailers go on with the request if any of it does, now or once it is resumed (some
        // upstreams merge them into the headers): ours go first, whatever the phase.
        let stripped = self.strip_trailers(&shared.config);
        let step = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return TrailersStatus::STOP_ITERATION;
            };
            let st = &mut *st;
            // Trailers end the body.
            st.body_ended = true;
            match st.phase {
                Phase::Answered => return TrailersStatus::STOP_ITERATION,
                _ if !stripped => self.refuse(
                    &shared,
                    st,
                    "the filter could not read the request trailers",
                ),
                Phase::Passed => return TrailersStatus::CONTINUE,
                Phase::Waiting | Phase::Store { .. } => return TrailersStatus::STOP_ITERATION,
                Phase::Start => self.refuse(
                    &shared,
                    st,
                    "request trailers came before the headers were decided",
                ),
                Phase::Body { .. } => self.body_decision(&shared, st),
            }
        };
        match self.act(step, false) {
            Step::Pass => TrailersStatus::CONTINUE,
            Step::Answer(_) | Step::Hold => TrailersStatus::STOP_ITERATION,
        }
    }

    /// Removes the request trailers named with the header prefix (any case, `_` for `-`);
    /// false when Envoy cannot hand the trailers over.
    fn strip_trailers(&self, config: &Config) -> bool {
        let Some(trailers) = self.filter.request_trailers() else {
            return false;
        };
        let names = trailers.iter().map(|(n, _)| n.as_str());
        for name in request_filter::trailers_to_strip(config, names) {
            self.filter.remove_request_trailer(name);
        }
        true
    }

    /// The stream's scheduler fired: the keys it waited for are there (or will not come).
    pub fn on_scheduled(&self, event: u64) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if event != EVENT_KEYS || self.completed.get() {
            return;
        }
        let step = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return;
            };
            if !matches!(st.phase, Phase::Waiting) {
                return;
            }
            self.headers_step(&shared, &mut st, false)
        };
        self.act(step, true);
    }

    /// The replay store answered (or the callout failed).
    pub fn on_callout_done(&self, id: u64, answer: &CalloutAnswer) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        if self.completed.get() {
            return;
        }
        if self.calling_out.get() {
            // Inside the send (the hook that sends decides once it returns).
            self.early_answer.set(Some((id, answer.clone())));
            return;
        }
        let step = {
            let Ok(mut st) = self.state.try_borrow_mut() else {
                return;
            };
            // An answer no store query waits for (a late or stray one) changes nothing.
            let Some(query) = st.phase.take_store(id) else {
                return;
            };
            let mut host = self.host(&shared.metrics);
            let answer = StoreAnswer::from_response(answer.status(), &answer.body);
            let action = with_replay(&shared, |replay| {
                request_filter::on_store_answer(&mut host, &shared.config, replay, &query, &answer)
            });
            self.advance(&shared, &mut st, &mut host, action, true)
        };
        self.act(step, true);
    }

    pub fn on_stream_complete(&self) {
        self.completed.set(true);
    }

    /// `filter_destroy` (maybe inside a callback of one of its hooks, which then makes no
    /// more): a stream that registered a scheduler deletes it; a waiting one is forgotten by
    /// the main thread.
    pub fn destroy(&self) {
        if self.gone.replace(true) {
            return;
        }
        self.completed.set(true);
        if let (Some(shared), true) = (&self.shared, self.registered.get()) {
            // Borrowed only when Envoy destroys the stream inside a callout a decision sends;
            // then assume waiting (forget it).
            let waiting = self
                .state
                .try_borrow()
                .map_or(true, |st| matches!(st.phase, Phase::Waiting));
            shared.fetcher.stream_gone(self.token, waiting);
        }
    }

    fn host<'a>(&'a self, metrics: &'a Metrics) -> NativeHost<'a> {
        NativeHost {
            filter: self.filter,
            metrics,
            logged: &self.logged,
            sent: None,
        }
    }

    /// The verdict of a held body, complete or too large (its hasher says which).
    fn body_decision(&self, shared: &Shared, st: &mut State) -> Step {
        let Some((pending, hasher)) = st.phase.take_body() else {
            return Step::Hold;
        };
        let mut host = self.host(&shared.metrics);
        let action = with_replay(shared, |replay| {
            let body = Body::hashed(&hasher, &shared.config);
            request_filter::on_request_body(&mut host, &shared.config, replay, &pending, body)
        });
        self.advance(shared, st, &mut host, action, false)
    }

    /// Refuses a request whose state cannot account for what came (500, `host_error`): nothing
    /// of it was checked, so nothing of it passes.
    fn refuse(&self, shared: &Shared, st: &mut State, detail: &str) -> Step {
        let mut host = self.host(&shared.metrics);
        let action = request_filter::fail_closed(&mut host, detail);
        self.advance(shared, st, &mut host, action, false)
    }

    /// Runs the core on the request's headers: on arrival (`may_wait`), or again once the
    /// keys it waited for are there (then the body Envoy kept meanwhile is buffered).
    fn headers_step(&self, shared: &Shared, st: &mut State, may_wait: bool) -> Step {
        let mut host = self.host(&shared.metrics);
        let action = with_replay(shared, |replay| {
            request_filter::on_request_headers(
                &mut host,
                &shared.config,
                &mut shared.keys.reader(),
                replay,
                may_wait,
            )
        });
        self.advance(shared, st, &mut host, action, !may_wait)
    }

    /// Carries an action of the core as far as it goes without waiting; `buffered`: Envoy may
    /// hold body this filter buffered (the request was paused before).
    fn advance(
        &self,
        shared: &Shared,
        st: &mut State,
        host: &mut NativeHost,
        mut action: Action,
        buffered: bool,
    ) -> Step {
        let config = &shared.config;
        loop {
            action = match action {
                Action::Continue => {
                    st.phase = Phase::Passed;
                    return Step::Pass;
                }
                Action::Stop => {
                    st.phase = Phase::Answered;
                    // The core answers before it stops; a missing answer still must not pass.
                    return Step::Answer(host.sent.take().unwrap_or_else(|| Rejection {
                        status: 500,
                        headers: Vec::new(),
                        body: String::new(),
                    }));
                }
                Action::Wait(agent) => match self.filter.new_scheduler() {
                    Some(scheduler) => {
                        shared.fetcher.wait(agent, self.token, scheduler);
                        self.registered.set(true);
                        st.phase = Phase::Waiting;
                        return Step::Hold;
                    }
                    None => request_filter::fail_closed(host, "the request could not be paused"),
                },
                Action::NeedBody(pending) => {
                    let mut hasher = pending.hasher();
                    if buffered {
                        self.filter.request_body(true, |chunk| hasher.update(chunk));
                    }
                    if st.body_ended || hasher.len() > config.max_body_bytes as u64 {
                        with_replay(shared, |replay| {
                            let body = Body::hashed(&hasher, config);
                            request_filter::on_request_body(host, config, replay, &pending, body)
                        })
                    } else {
                        self.raise_buffer_limit(config);
                        st.phase = Phase::Body {
                            pending,
                            hasher: Box::new(hasher),
                        };
                        return Step::Hold;
                    }
                }
                Action::AskStore(query) => {
                    let Some(settings) = &config.replay_store else {
                        action = request_filter::fail_closed(host, "no replay store is configured");
                        continue;
                    };
                    let call = query.request(settings);
                    self.calling_out.set(true);
                    let sent = self.filter.http_callout(
                        &call.cluster,
                        &call.headers,
                        &[],
                        call.timeout_ms,
                    );
                    self.calling_out.set(false);
                    let early = self.early_answer.take();
                    if self.gone.get() {
                        // Envoy ended the stream inside the send: nothing more to decide or call.
                        st.phase = Phase::Answered;
                        return Step::Hold;
                    }
                    let answer = match (sent, early) {
                        (Ok(id), Some((answered, a))) if answered == id => {
                            StoreAnswer::from_response(a.status(), &a.body)
                        }
                        (Ok(id), _) => {
                            st.phase = Phase::Store { id, query };
                            return Step::Hold;
                        }
                        (Err(e), _) => StoreAnswer::Failed(format!(
                            "cannot reach the replay store cluster {:?}: {e}",
                            call.cluster
                        )),
                    };
                    with_replay(shared, |replay| {
                        request_filter::on_store_answer(host, config, replay, &query, &answer)
                    })
                }
            };
        }
    }

    /// The body is held for its `Content-Digest` (the signature verified and covers it, the
    /// body is still to come): let Envoy buffer `max_body_bytes` (and one more, to see "too
    /// large") instead of answering 413 first. Only then: a request that waits for keys or
    /// the store buffers under the operator's limit.
    fn raise_buffer_limit(&self, config: &Config) {
        let want = (config.max_body_bytes as u64).saturating_add(1);
        let limit = self.filter.buffer_limit();
        // 0: no limit.
        if limit != 0 && limit < want {
            self.filter.set_buffer_limit(want);
        }
    }

    /// Carries out a step with the state released: answers, or resumes a paused request
    /// (`resume`: the hook is not the one the request is stopped in).
    fn act(&self, step: Step, resume: bool) -> Step {
        if self.gone.get() {
            return step;
        }
        match &step {
            Step::Answer(r) => {
                self.concluded.set(true);
                self.filter
                    .send_response(r.status, &r.headers, &r.body, DETAILS);
            }
            Step::Pass => {
                self.concluded.set(true);
                if resume {
                    self.filter.continue_decoding();
                }
            }
            Step::Hold => {}
        }
        step
    }

    /// Test builds only: a request with `x-wba-test-panic` panics here.
    fn fault_panic(&self) {
        if cfg!(any(test, feature = "fault-panic"))
            && self
                .filter
                .request_headers()
                .is_some_and(|h| h.iter().any(|(n, _)| n == "x-wba-test-panic"))
        {
            #[allow(clippy::panic)]
            {
                panic!("x-wba-test-panic (fault-panic test build)");
            }
        }
    }
}

/// Test builds: the fake Envoy checks when the module frees a stream.
#[cfg(test)]
impl Drop for Stream {
    fn drop(&mut self) {
        crate::abi::fake::stream_dropped(self.filter);
    }
}

/// Runs `f` with the configuration's replay guard.
fn with_replay<R>(shared: &Shared, f: impl FnOnce(&mut dyn ReplayGuard) -> R) -> R {
    match &shared.replay {
        Some(table) => {
            let mut guard = table;
            f(&mut guard)
        }
        None => f(&mut NoReplay),
    }
}

/// [`Host`] over one stream's Envoy callbacks. Local replies are kept and sent by the hook
/// once the stream's state is released (they can run other hooks of the stream).
struct NativeHost<'a> {
    filter: FilterHandle,
    metrics: &'a Metrics,
    logged: &'a Cell<u8>,
    sent: Option<Rejection>,
}

impl Host for NativeHost<'_> {
    fn request_headers(&self) -> Result<Vec<(String, String)>, HeadersUnavailable> {
        match self.filter.request_headers() {
            // A request always has pseudo-headers: an empty map is not one.
            Some(h) if !h.is_empty() => Ok(h),
            _ => Err(HeadersUnavailable),
        }
    }

    fn remove_request_header(&mut self, name: &str) {
        self.filter.remove_request_header(name);
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        self.filter.set_request_header(name, value);
    }

    fn now(&self) -> i64 {
        now_ms() / 1000
    }

    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str) {
        self.sent = Some(Rejection {
            status,
            headers: headers.to_vec(),
            body: body.to_string(),
        });
    }

    fn increment(&mut self, counter: Counter) {
        self.metrics.count(self.filter, counter);
    }

    fn set_log_value(&mut self, key: &str, value: &str) {
        let Some(bit) = LOG_KEYS
            .iter()
            .chain(std::iter::once(&PROOF_LOG_KEY))
            .position(|k| *k == key)
        else {
            return;
        };
        let mask = 1u8 << bit;
        if self.logged.get() & mask != 0 {
            return;
        }
        self.logged.set(self.logged.get() | mask);
        self.filter
            .set_filter_state(&format!("{FILTER_STATE_PREFIX}{key}"), value);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::abi::fake::{self, Config as FakeConfig, Inside};
    use crate::abi::CalloutResult;
    use crate::fetcher::{EVENT_TICK, EVENT_WAKE};
    use ed25519_dalek::SigningKey;
    use std::time::{SystemTime, UNIX_EPOCH};
    use wba_filter::content_digest;
    use wba_filter::directory::DIRECTORY_MEDIA_TYPE;
    use wba_filter::jwk::Jwk;
    use wba_filter::request_filter::request_from_headers;
    use wba_filter::sign::{sign_request, SignOptions};

    pub const AGENT: &str = "https://a.example";

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    fn jwk() -> String {
        Jwk::from_ed25519(key().verifying_key().as_bytes()).to_json()
    }

    pub fn pinned(mode: &str) -> String {
        format!(
            r#"{{"mode":"{mode}","agents":[{{"name":"A","url":"{AGENT}","keys":[{}]}}]}}"#,
            jwk()
        )
    }

    fn fetched(mode: &str) -> String {
        format!(r#"{{"mode":"{mode}","agents":[{{"name":"A","url":"{AGENT}","cluster":"dir"}}]}}"#)
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    /// Request headers, signed by the agent's key when `signed` (covering `content-digest`
    /// too when the request has one).
    pub fn request(signed: bool, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        // A pseudo-header in `extra` replaces the default one.
        let mut headers: Vec<(String, String)> = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "shop.example"),
            (":path", "/x"),
        ]
        .iter()
        .filter(|(n, _)| !extra.iter().any(|(e, _)| e == n))
        .chain(extra)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        if signed {
            let req = request_from_headers(&headers, "x-web-bot-auth-");
            let mut opts = SignOptions::web_bot_auth(AGENT, now(), 60);
            if extra.iter().any(|(n, _)| *n == "content-digest") {
                opts.components.push("content-digest".into());
            }
            headers.extend(sign_request(&req, &key(), &opts).unwrap().pairs());
        }
        headers
    }

    fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
        h.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    fn header<'a>(s: &'a fake::FakeStream, name: &str) -> Option<&'a str> {
        s.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn state<'a>(s: &'a fake::FakeStream, key: &str) -> Option<&'a str> {
        s.filter_state
            .iter()
            .find(|(n, _)| n == key)
            .map(|(_, v)| v.as_str())
    }

    fn no_violations() {
        assert_eq!(fake::with(|e| e.violations.clone()), Vec::<String>::new());
    }

    #[test]
    fn an_unsigned_request_passes_annotated_and_forged_headers_go() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let h = request(false, &[("x-web-bot-auth-result", "verified")]);
        let s = config.stream(&refs(&h));
        assert_eq!(s.headers(true), HeadersStatus::CONTINUE);
        let done = s.complete();
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("unsigned"));
        assert_eq!(state(&done, "wasm.wba.result"), Some("unsigned"));
        assert!(done.sent.is_empty());
        assert_eq!(fake::with(|e| e.stat("web_bot_auth.outcome.unsigned")), 1);
        no_violations();
    }

    #[test]
    fn every_stat_is_defined_with_the_wasm_names() {
        fake::install();
        let _config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let names = fake::with(|e| e.metric_names.clone());
        for c in Counter::all() {
            assert!(names.contains(&c.name()), "{}", c.name());
        }
        assert!(names.contains(&wba_filter::stats::KEYS_GAUGE.to_string()));
        // The pinned key, from the start.
        assert_eq!(fake::with(|e| e.stat(wba_filter::stats::KEYS_GAUGE)), 1);
    }

    #[test]
    fn a_signed_request_verifies_with_a_pinned_key() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("require")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::CONTINUE);
        let done = s.complete();
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        assert_eq!(header(&done, "x-web-bot-auth-agent"), Some(AGENT));
        assert_eq!(state(&done, "wasm.wba.result"), Some("verified"));
        assert_eq!(state(&done, "wasm.wba.agent"), Some(AGENT));
        assert_eq!(fake::with(|e| e.stat("web_bot_auth.outcome.verified")), 1);
        no_violations();
    }

    #[test]
    fn require_mode_answers_an_unsigned_request_locally() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("require")).unwrap();
        let s = config.stream(&refs(&request(false, &[])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        // Envoy sends no more body to a stream it answered; if it did, none of it passes.
        assert_eq!(s.body(b"x", true), BodyStatus::STOP_ITERATION_NO_BUFFER);
        let done = s.complete();
        assert_eq!(done.sent.len(), 1);
        assert_eq!(done.sent[0].0, 403);
        assert_eq!(done.sent[0].3, "web_bot_auth");
        no_violations();
    }

    #[test]
    fn a_replayed_signature_is_refused() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let h = request(true, &[]);
        let first = config.stream(&refs(&h));
        assert_eq!(first.headers(true), HeadersStatus::CONTINUE);
        first.complete();
        let second = config.stream(&refs(&h));
        assert_eq!(second.headers(true), HeadersStatus::STOP_ITERATION);
        assert_eq!(second.complete().sent[0].0, 429);
    }

    /// Answers the directory fetch the configuration sent, as `dir` would.
    fn answer_fetch(config: &FakeConfig, status: &str) {
        let (id, cluster, headers) = fake::with(|e| e.config_callouts.pop()).expect("a fetch");
        assert_eq!(cluster, "dir");
        assert!(headers.contains(&(":authority".into(), "a.example".into())));
        let body = format!(r#"{{"keys":[{}]}}"#, jwk());
        config.answer(
            id,
            CalloutResult::SUCCESS,
            &[(":status", status), ("content-type", DIRECTORY_MEDIA_TYPE)],
            body.as_bytes(),
        );
    }

    #[test]
    fn a_request_waits_for_its_agents_keys_then_verifies() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("require")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(fake::with(|e| e.schedulers.len()), 1);
        // Body frames wait with it, buffered.
        assert_eq!(s.body(b"abc", true), BodyStatus::STOP_ITERATION_AND_BUFFER);
        // The main thread: the wait message, the fetch.
        config.scheduled(EVENT_WAKE);
        assert_eq!(fake::with(|e| e.config_callouts.len()), 1);
        assert_eq!(s.run_events(), 0, "not before the keys are there");
        answer_fetch(&config, "200");
        assert_eq!(s.run_events(), 1);
        assert_eq!(s.fake(|f| f.continued), 1);
        assert_eq!(fake::with(|e| e.stat("web_bot_auth.directory.fetch_ok")), 1);
        assert_eq!(
            fake::with(|e| e.stat("web_bot_auth.directory.request_waited")),
            1
        );
        assert_eq!(fake::with(|e| e.stat(wba_filter::stats::KEYS_GAUGE)), 1);
        let done = s.complete();
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        assert!(done.sent.is_empty());
        assert_eq!(fake::with(|e| e.schedulers.len()), 0, "scheduler deleted");
        // The next request verifies at once.
        let again = config.stream(&refs(&request(true, &[(":path", "/2")])));
        assert_eq!(again.headers(true), HeadersStatus::CONTINUE);
        no_violations();
    }

    #[test]
    fn a_failed_fetch_resumes_the_waiting_request_which_fails_closed() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("require")).unwrap();
        config.scheduled(EVENT_TICK);
        let (id, _, _) = fake::with(|e| e.config_callouts.pop()).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        config.scheduled(EVENT_WAKE);
        config.answer(id, CalloutResult::RESET, &[], b"");
        assert_eq!(s.run_events(), 1);
        let done = s.complete();
        assert_eq!(done.sent.len(), 1);
        assert!(done.sent[0].0 >= 400);
        assert_eq!(
            fake::with(|e| e.stat("web_bot_auth.directory.fetch_failed.unreachable")),
            1
        );
        assert!(fake::with(|e| e
            .logs
            .iter()
            .any(|(l, m)| *l == 3 && m.contains("key fetch"))));
        no_violations();
    }

    #[test]
    fn an_unknown_cluster_is_a_failed_fetch_at_once() {
        fake::install();
        fake::with(|e| e.config_callout_init = CalloutInitResultCode::CLUSTER_NOT_FOUND);
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        config.scheduled(EVENT_WAKE);
        assert_eq!(s.run_events(), 1);
        let done = s.complete();
        assert_eq!(done.sent.len() + done.continued as usize, 1);
        assert!(fake::with(|e| e
            .logs
            .iter()
            .any(|(_, m)| m.contains("cluster not found"))));
        no_violations();
    }

    struct CalloutInitResultCode;
    impl CalloutInitResultCode {
        const CLUSTER_NOT_FOUND: u32 = 2;
    }

    #[test]
    fn a_stream_that_goes_away_while_waiting_is_forgotten() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        config.scheduled(EVENT_WAKE);
        s.complete();
        assert_eq!(fake::with(|e| e.schedulers.len()), 0);
        config.scheduled(EVENT_WAKE);
        answer_fetch(&config, "200");
        // Nothing committed to the deleted scheduler (the fake records that as a violation).
        no_violations();
    }

    #[test]
    fn a_completed_stream_ignores_a_late_resume() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        config.scheduled(EVENT_WAKE);
        // The client goes away; Envoy completes the stream before destroying it.
        s.stream_complete();
        answer_fetch(&config, "200");
        assert_eq!(s.run_events(), 1);
        let done = s.complete();
        assert_eq!((done.continued, done.sent.len()), (0, 0));
        no_violations();
    }

    #[test]
    fn a_signed_body_is_buffered_hashed_and_checked() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let body = b"hello, body";
        let digest = content_digest::sha256(body);
        let s = config.stream(&refs(&request(true, &[("content-digest", &digest)])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert!(
            s.fake(|f| f.buffer_limit) > 1024,
            "raised above max_body_bytes"
        );
        assert_eq!(
            s.body(&body[..5], false),
            BodyStatus::STOP_ITERATION_AND_BUFFER
        );
        assert_eq!(s.body(&body[5..], true), BodyStatus::CONTINUE);
        let done = s.complete();
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        assert!(done.sent.is_empty());
        no_violations();
    }

    #[test]
    fn a_body_signature_already_used_is_refused_on_its_headers() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let body = b"hello, body";
        let digest = content_digest::sha256(body);
        let headers = request(true, &[("content-digest", &digest)]);
        // A copy that goes away before its body is complete records nothing.
        let gone = config.stream(&refs(&headers));
        assert_eq!(gone.headers(false), HeadersStatus::STOP_ITERATION);
        assert!(gone.complete().sent.is_empty());
        let first = config.stream(&refs(&headers));
        assert_eq!(first.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(first.body(body, true), BodyStatus::CONTINUE);
        let done = first.complete();
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        // Accepted: a copy is refused on its headers, before any of its body is buffered.
        let copy = config.stream(&refs(&headers));
        assert_eq!(copy.headers(false), HeadersStatus::STOP_ITERATION);
        let refused = copy.complete();
        assert_eq!(refused.sent.first().map(|s| s.0), Some(429));
        assert!(refused.buffered.is_empty());
        no_violations();
    }

    #[test]
    fn a_body_that_does_not_match_its_digest_is_refused() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let digest = content_digest::sha256(b"the signed body");
        let s = config.stream(&refs(&request(true, &[("content-digest", &digest)])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(
            s.body(b"another body", false),
            BodyStatus::STOP_ITERATION_AND_BUFFER
        );
        // Trailers end the body.
        assert_eq!(s.trailers(), TrailersStatus::STOP_ITERATION);
        let done = s.complete();
        assert_eq!(done.sent.len(), 1);
        assert_eq!(state(&done, "wasm.wba.result"), Some("invalid"));
        no_violations();
    }

    #[test]
    fn a_signed_empty_body_is_decided_on_the_headers() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let digest = content_digest::sha256(b"");
        let s = config.stream(&refs(&request(true, &[("content-digest", &digest)])));
        assert_eq!(s.headers(true), HeadersStatus::CONTINUE);
        assert_eq!(
            header(&s.complete(), "x-web-bot-auth-result"),
            Some("verified")
        );
    }

    #[test]
    fn a_signed_body_after_a_wait_hashes_what_was_buffered() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let body = b"0123456789";
        let digest = content_digest::sha256(body);
        let s = config.stream(&refs(&request(true, &[("content-digest", &digest)])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(
            s.body(&body[..4], false),
            BodyStatus::STOP_ITERATION_AND_BUFFER
        );
        config.scheduled(EVENT_WAKE);
        answer_fetch(&config, "200");
        assert_eq!(s.run_events(), 1);
        assert_eq!(s.fake(|f| f.continued), 0, "the body is still to come");
        assert_eq!(s.body(&body[4..], true), BodyStatus::CONTINUE);
        let done = s.complete();
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        no_violations();
    }

    fn with_store(on_error: &str) -> String {
        pinned("enforce").replacen(
            r#"{"mode""#,
            &format!(r#"{{"replay_store":{{"cluster":"replay","on_error":"{on_error}"}},"mode""#),
            1,
        )
    }

    #[test]
    fn a_signed_body_then_the_store() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        let body = b"pay 10";
        let digest = content_digest::sha256(body);
        let s = config.stream(&refs(&request(true, &[("content-digest", &digest)])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(s.body(body, true), BodyStatus::STOP_ITERATION_AND_BUFFER);
        let (id, _, _) = s.fake(|f| f.callouts.pop()).expect("the store is asked");
        s.callout_done(id, CalloutResult::SUCCESS, Some("201"), b"");
        let done = s.complete();
        assert_eq!(done.continued, 1);
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        no_violations();
    }

    #[test]
    fn the_replay_store_is_asked_and_its_answer_decides() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        for (status, passes) in [("201", true), ("409", false), ("500", false)] {
            let path = format!("/{status}");
            let s = config.stream(&refs(&request(true, &[(":path", &path)])));
            assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
            let (id, cluster, headers) = s.fake(|f| f.callouts.pop()).unwrap();
            assert_eq!(cluster, "replay");
            assert!(headers.contains(&(":method".into(), "POST".into())));
            s.callout_done(id, CalloutResult::SUCCESS, Some(status), b"");
            let done = s.complete();
            assert_eq!(done.continued == 1, passes, "{status}");
            assert_eq!(done.sent.len() == 1, !passes, "{status}");
        }
        no_violations();
    }

    #[test]
    fn a_store_answer_inside_the_callout_call_is_used() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        for (status, passes) in [("201", true), ("503", false)] {
            let path = format!("/{status}");
            let s = config.stream(&refs(&request(true, &[(":path", &path)])));
            s.fake(|f| f.inline_status = Some(status.into()));
            let expected = if passes {
                HeadersStatus::CONTINUE
            } else {
                HeadersStatus::STOP_ITERATION
            };
            assert_eq!(s.headers(true), expected, "{status}");
            let done = s.complete();
            assert_eq!(done.sent.len() == 1, !passes);
            assert_eq!(done.continued, 0, "decided in the headers hook itself");
        }
        no_violations();
    }

    #[test]
    fn a_fetch_answer_inside_the_callout_call_is_used() {
        fake::install();
        fake::with(|e| e.config_inline_status = Some("503".into()));
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        config.scheduled(EVENT_WAKE);
        assert_eq!(s.run_events(), 1, "resumed after the inline failure");
        assert_eq!(
            fake::with(|e| e.stat("web_bot_auth.directory.fetch_failed.status")),
            1
        );
        s.complete();
        no_violations();
    }

    #[test]
    fn a_store_that_cannot_be_reached_fails_closed_at_once() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        s.fake(|f| f.callout_init = 2);
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        assert_eq!(s.complete().sent[0].0, 503);
    }

    /// No misuse, and every stream object freed.
    fn no_violations_nothing_left() {
        no_violations();
        assert_eq!(
            fake::with(|e| e.live_streams),
            0,
            "a stream was never freed"
        );
    }

    #[test]
    fn envoy_may_destroy_a_stream_inside_its_local_reply() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("require")).unwrap();
        let s = config.stream(&refs(&request(false, &[])));
        s.fake(|f| f.destroy_inside = Some(Inside::SendResponse));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        assert!(fake::with(|e| e.destroyed.contains(&s.n)));
        assert_eq!(s.complete().sent[0].0, 403);
        no_violations_nothing_left();
    }

    #[test]
    fn envoy_may_destroy_a_stream_inside_continue_decoding() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        // Resumed, the upstream fails at once and Envoy ends the stream inside the call.
        s.fake(|f| f.destroy_inside = Some(Inside::ContinueDecoding));
        config.scheduled(EVENT_WAKE);
        answer_fetch(&config, "200");
        assert_eq!(s.run_events(), 1);
        assert_eq!(s.complete().continued, 1);
        no_violations_nothing_left();
    }

    #[test]
    fn envoy_may_destroy_a_stream_inside_a_store_callout() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        // Destroyed inside the send, with and without an answer inside it first.
        for inline in [None, Some("201"), Some("409")] {
            let path = format!("/{inline:?}");
            let s = config.stream(&refs(&request(true, &[(":path", &path)])));
            s.fake(|f| {
                f.destroy_inside = Some(Inside::HttpCallout);
                f.inline_status = inline.map(String::from);
            });
            assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
            let done = s.complete();
            assert_eq!((done.continued, done.sent.len()), (0, 0));
        }
        no_violations_nothing_left();
    }

    #[test]
    fn envoy_may_destroy_a_stream_inside_the_reply_to_a_store_answer() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        let (id, _, _) = s.fake(|f| f.callouts.pop()).unwrap();
        s.fake(|f| f.destroy_inside = Some(Inside::SendResponse));
        s.callout_done(id, CalloutResult::SUCCESS, Some("409"), b"");
        assert_eq!(s.complete().sent[0].0, 429);
        no_violations_nothing_left();
    }

    #[test]
    fn a_stray_callout_answer_leaves_a_held_body_held_and_checked() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let digest = content_digest::sha256(b"the signed body");
        let s = config.stream(&refs(&request(true, &[("content-digest", &digest)])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        // No callout was sent: an answer now changes nothing.
        s.callout_done(77, CalloutResult::SUCCESS, Some("201"), b"");
        assert_eq!(
            s.body(b"another body", true),
            BodyStatus::STOP_ITERATION_NO_BUFFER
        );
        let done = s.complete();
        assert_eq!(done.sent[0].0, 403);
        assert_eq!(state(&done, "wasm.wba.reason"), Some("digest_mismatch"));
        no_violations_nothing_left();
    }

    #[test]
    fn a_stray_callout_answer_leaves_a_waiting_request_waiting() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("require")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        s.callout_done(77, CalloutResult::SUCCESS, Some("201"), b"");
        assert_eq!(s.body(b"abc", true), BodyStatus::STOP_ITERATION_AND_BUFFER);
        assert_eq!(s.fake(|f| f.continued), 0);
        config.scheduled(EVENT_WAKE);
        answer_fetch(&config, "200");
        assert_eq!(s.run_events(), 1);
        let done = s.complete();
        assert_eq!(done.continued, 1);
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        no_violations_nothing_left();
    }

    #[test]
    fn a_body_or_trailers_before_the_headers_are_decided_are_refused() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("observe")).unwrap();
        let s = config.stream(&refs(&request(false, &[])));
        assert_eq!(
            s.body(b"x", false),
            BodyStatus::STOP_ITERATION_NO_BUFFER,
            "no headers hook came"
        );
        assert_eq!(s.trailers(), TrailersStatus::STOP_ITERATION);
        let done = s.complete();
        assert_eq!(done.sent.len(), 1);
        assert_eq!(done.sent[0].0, 500);
        let s = config.stream(&refs(&request(false, &[])));
        assert_eq!(s.trailers(), TrailersStatus::STOP_ITERATION);
        assert_eq!(s.complete().sent[0].0, 500);
        assert_eq!(fake::with(|e| e.stat("web_bot_auth.host_error")), 2);
        no_violations_nothing_left();
    }

    #[test]
    fn only_a_body_held_for_its_digest_raises_the_buffer_limit() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let body = b"0123456789";
        let digest = content_digest::sha256(body);
        // Waiting for keys: the operator's limit stays, whatever the signature covers.
        let plain = config.stream(&refs(&request(true, &[])));
        let signed_body = config.stream(&refs(&request(
            true,
            &[(":path", "/b"), ("content-digest", &digest)],
        )));
        for s in [&plain, &signed_body] {
            assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
            assert_eq!(s.fake(|f| f.buffer_limit), 1024, "not while waiting");
        }
        config.scheduled(EVENT_WAKE);
        answer_fetch(&config, "200");
        assert_eq!(plain.run_events(), 1);
        assert_eq!(plain.fake(|f| f.buffer_limit), 1024);
        // Verified over its Content-Digest: now the body is held for checking.
        assert_eq!(signed_body.run_events(), 1);
        assert!(signed_body.fake(|f| f.buffer_limit) > 1024);
        assert_eq!(signed_body.body(body, true), BodyStatus::CONTINUE);
        plain.complete();
        signed_body.complete();
        // Waiting for the replay store: the operator's limit stays.
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(
            s.fake(|f| f.buffer_limit),
            1024,
            "not while asking the store"
        );
        s.complete();
        no_violations_nothing_left();
    }

    /// Trailers a client may send: ours forged in two spellings, and one of its own.
    const FORGED_TRAILERS: [(&str, &str); 3] = [
        ("x-web-bot-auth-result", "verified"),
        ("grpc-status", "0"),
        ("X_Web_Bot_Auth_Agent", "https://evil.example"),
    ];

    fn trailers_left(s: &fake::FakeStream) -> Vec<(String, String)> {
        s.trailers.clone().unwrap_or_default()
    }

    fn only_theirs() -> Vec<(String, String)> {
        vec![("grpc-status".into(), "0".into())]
    }

    #[test]
    fn forged_trailers_are_stripped_in_every_phase_that_lets_trailers_on() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        // Passed on its headers.
        let s = config.stream(&refs(&request(false, &[])));
        assert_eq!(s.headers(false), HeadersStatus::CONTINUE);
        assert_eq!(s.body(b"x", false), BodyStatus::CONTINUE);
        assert_eq!(s.trailers_of(&FORGED_TRAILERS), TrailersStatus::CONTINUE);
        assert_eq!(trailers_left(&s.complete()), only_theirs());
        // A body held for its Content-Digest: the trailers end it, and go on with it.
        let body = b"pay 10";
        let digest = content_digest::sha256(body);
        let s = config.stream(&refs(&request(true, &[("content-digest", &digest)])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(s.body(body, false), BodyStatus::STOP_ITERATION_AND_BUFFER);
        assert_eq!(s.trailers_of(&FORGED_TRAILERS), TrailersStatus::CONTINUE);
        let done = s.complete();
        assert_eq!(header(&done, "x-web-bot-auth-result"), Some("verified"));
        assert_eq!(trailers_left(&done), only_theirs());
        // Waiting for keys: held with the request, released with it.
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(
            s.trailers_of(&FORGED_TRAILERS),
            TrailersStatus::STOP_ITERATION
        );
        config.scheduled(EVENT_WAKE);
        answer_fetch(&config, "200");
        assert_eq!(s.run_events(), 1);
        let done = s.complete();
        assert_eq!(done.continued, 1);
        assert_eq!(trailers_left(&done), only_theirs());
        // Waiting for the replay store: the same.
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(
            s.trailers_of(&FORGED_TRAILERS),
            TrailersStatus::STOP_ITERATION
        );
        let (id, _, _) = s.fake(|f| f.callouts.pop()).unwrap();
        s.callout_done(id, CalloutResult::SUCCESS, Some("201"), b"");
        let done = s.complete();
        assert_eq!(done.continued, 1);
        assert_eq!(trailers_left(&done), only_theirs());
        no_violations_nothing_left();
    }

    #[test]
    fn trailers_that_cannot_be_read_refuse_the_request() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("observe")).unwrap();
        let s = config.stream(&refs(&request(false, &[])));
        assert_eq!(s.headers(false), HeadersStatus::CONTINUE);
        s.fake(|f| f.trailers_unreadable = true);
        assert_eq!(
            s.trailers_of(&FORGED_TRAILERS),
            TrailersStatus::STOP_ITERATION
        );
        assert_eq!(s.complete().sent[0].0, 500);
        no_violations_nothing_left();
    }

    #[test]
    fn only_the_answer_to_the_store_callout_decides() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &with_store("reject")).unwrap();
        let s = config.stream(&refs(&request(true, &[])));
        assert_eq!(s.headers(true), HeadersStatus::STOP_ITERATION);
        let (id, _, _) = s.fake(|f| f.callouts.pop()).unwrap();
        // An answer to some other callout (a stale or stray one) changes nothing.
        s.callout_done(id + 100, CalloutResult::SUCCESS, Some("201"), b"");
        assert_eq!(s.fake(|f| f.continued), 0);
        s.callout_done(id, CalloutResult::SUCCESS, Some("409"), b"");
        let done = s.complete();
        assert_eq!(done.continued, 0);
        assert_eq!(done.sent.len(), 1);
        assert_eq!(done.sent[0].0, 429);
        no_violations_nothing_left();
    }

    #[test]
    fn a_request_hook_without_its_stream_refuses_the_request() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        // Unsigned: a stream would pass it; without one nothing is known of it.
        let s = config.unknown_stream(&refs(&request(false, &[])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        assert_eq!(s.body(b"x", false), BodyStatus::STOP_ITERATION_NO_BUFFER);
        assert_eq!(s.trailers(), TrailersStatus::STOP_ITERATION);
        // The other hooks have nothing to act on.
        s.callout_done(1, CalloutResult::SUCCESS, Some("201"), b"");
        s.stream_complete();
        let done = s.complete();
        assert!(!done.sent.is_empty());
        assert!(done.sent.iter().all(|r| r.0 == 500), "{:?}", done.sent);
        assert_eq!(done.continued, 0);
        // Without Envoy's filter object either, it can only stop.
        let (fe, p) = (std::ptr::null_mut(), std::ptr::null());
        assert_eq!(
            crate::abi::envoy_dynamic_module_on_http_filter_request_headers(fe, p, true),
            HeadersStatus::STOP_ITERATION
        );
        assert_eq!(
            crate::abi::envoy_dynamic_module_on_http_filter_request_body(fe, p, true),
            BodyStatus::STOP_ITERATION_NO_BUFFER
        );
        assert_eq!(
            crate::abi::envoy_dynamic_module_on_http_filter_request_trailers(fe, p),
            TrailersStatus::STOP_ITERATION
        );
        no_violations_nothing_left();
    }

    #[test]
    fn a_panic_answers_500_and_poisons_only_that_stream() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", &pinned("enforce")).unwrap();
        let s = config.stream(&refs(&request(false, &[("x-wba-test-panic", "1")])));
        assert_eq!(s.headers(false), HeadersStatus::STOP_ITERATION);
        // Poisoned: the 500 went out, and nothing of the request passes after it.
        assert_eq!(
            s.body(b"x", false),
            BodyStatus::STOP_ITERATION_NO_BUFFER,
            "poisoned: stopped"
        );
        assert_eq!(s.trailers(), TrailersStatus::STOP_ITERATION);
        let done = s.complete();
        assert_eq!(done.sent.len(), 1);
        assert_eq!(done.sent[0].0, 500);
        assert_eq!(done.continued, 0);
        assert_eq!(fake::with(|e| e.stat("web_bot_auth.host_error")), 1);
        let next = config.stream(&refs(&request(false, &[])));
        assert_eq!(next.headers(true), HeadersStatus::CONTINUE);
    }

    #[test]
    fn a_bad_configuration_or_name_is_refused_with_one_line() {
        fake::install();
        assert!(FakeConfig::new("web_bot_auth", r#"{"bogus":1}"#).is_none());
        assert!(FakeConfig::new("other", &pinned("enforce")).is_none());
        let errors: Vec<String> = fake::with(|e| {
            e.logs
                .iter()
                .filter(|(l, _)| *l == 4)
                .map(|(_, m)| m.clone())
                .collect()
        });
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("invalid web-bot-auth configuration"));
        assert!(errors[1].contains("filter_name"));
    }

    #[test]
    fn the_hold_companion_is_accepted_and_inert() {
        fake::install();
        let config = FakeConfig::new("web_bot_auth", r#"{"role":"hold"}"#).unwrap();
        let s = config.stream(&refs(&request(false, &[])));
        assert_eq!(s.headers(false), HeadersStatus::CONTINUE);
        assert_eq!(s.body(b"x", true), BodyStatus::CONTINUE);
        let done = s.complete();
        assert!(done.filter_state.is_empty());
    }

    #[test]
    fn outside_validation_mode_a_fetching_config_ticks_and_stops() {
        fake::install();
        fake::with(|e| e.validation_mode = false);
        let config = FakeConfig::new("web_bot_auth", &fetched("enforce")).unwrap();
        assert_eq!(fake::with(|e| e.config_schedulers), 1);
        // The first fetch is asked for at once.
        assert!(fake::with(|e| e.config_events.contains(&EVENT_TICK)));
        drop(config);
        assert_eq!(
            fake::with(|e| e.config_schedulers),
            0,
            "deleted after the ticker stopped"
        );
    }
}
