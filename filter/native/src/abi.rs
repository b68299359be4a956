//! The Envoy 1.40 dynamic-module ABI ("v0.2.0"): C types, the callbacks this module calls
//! (resolved with `dlsym` at load, never linked), safe wrappers over them, and the hooks the
//! module exports. Every `unsafe` of the crate is in this file.
//!
//! Callbacks are looked up in `envoy_dynamic_module_on_program_init` into one [`HostApi`]
//! table: the `.so` has no undefined `envoy_*` symbols, so a missing callback is reported by
//! this module by name instead of failing `dlopen`, and unit tests install a fake table.
//!
//! Every exported hook runs under `catch_unwind`. A panic in a request's hook answers that
//! request 500 (unless it was already answered or passed on) and poisons the stream: its
//! later request hooks stop, its other hooks do nothing. A panic while loading or configuring refuses the load or
//! the configuration.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::OnceLock;

use crate::config::FilterConfig;
use crate::stream::Stream;

// ---------------------------------------------------------------------------------------
// C types (abi.h). Pointers to Envoy objects are opaque; pointers to ours are what we boxed.

pub type ConfigEnvoyPtr = *mut c_void;
pub type FilterEnvoyPtr = *mut c_void;
pub type ConfigModulePtr = *const c_void;
pub type FilterModulePtr = *const c_void;
pub type SchedulerPtr = *mut c_void;
pub type ConfigSchedulerPtr = *mut c_void;

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, lent for a call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> Self {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    /// `(NULL, 0)`: for `http_set_header`, "remove the header".
    fn null() -> Self {
        ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        }
    }
}

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy, valid for a documented time.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl EnvoyHttpHeader {
    const EMPTY: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
}

/// C enums are `int`-sized. Values Envoy hands us are kept as integers with named constants
/// (an unexpected value in a Rust enum would be undefined behaviour).
macro_rules! c_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$cm:meta])* $c:ident = $v:expr),* $(,)? }) => {
        $(#[$m])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(pub u32);
        impl $name { $($(#[$cm])* pub const $c: $name = $name($v);)* }
    };
}

c_enum!(HeaderType {
    REQUEST_HEADER = 0,
    REQUEST_TRAILER = 1
});
c_enum!(BodyType {
    RECEIVED_REQUEST_BODY = 0,
    BUFFERED_REQUEST_BODY = 1
});
c_enum!(LogLevel {
    DEBUG = 1,
    INFO = 2,
    WARN = 3,
    ERROR = 4
});
c_enum!(CalloutInitResult {
    SUCCESS = 0,
    MISSING_REQUIRED_HEADERS = 1,
    CLUSTER_NOT_FOUND = 2,
    DUPLICATE_CALLOUT_ID = 3,
    CANNOT_CREATE_REQUEST = 4,
});
c_enum!(CalloutResult {
    SUCCESS = 0,
    RESET = 1,
    EXCEED_RESPONSE_BUFFER_LIMIT = 2,
});
c_enum!(MetricsResult { SUCCESS = 0 });
c_enum!(HeadersStatus {
    CONTINUE = 0,
    STOP_ITERATION = 1
});
c_enum!(BodyStatus {
    CONTINUE = 0,
    STOP_ITERATION_AND_BUFFER = 1,
    STOP_ITERATION_NO_BUFFER = 3,
});
c_enum!(TrailersStatus {
    CONTINUE = 0,
    STOP_ITERATION = 1
});

impl std::fmt::Display for CalloutInitResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            CalloutInitResult::SUCCESS => f.write_str("success"),
            CalloutInitResult::MISSING_REQUIRED_HEADERS => f.write_str("missing required headers"),
            CalloutInitResult::CLUSTER_NOT_FOUND => f.write_str("cluster not found"),
            CalloutInitResult::DUPLICATE_CALLOUT_ID => f.write_str("duplicate callout id"),
            CalloutInitResult::CANNOT_CREATE_REQUEST => f.write_str("cannot create the request"),
            CalloutInitResult(other) => write!(f, "init result {other}"),
        }
    }
}

/// The ABI version string of Envoy 1.40 (Envoy compares it and only warns on a mismatch).
pub const ABI_VERSION: &CStr = c"v0.2.0";

// ---------------------------------------------------------------------------------------
// The callbacks (Envoy exports), resolved once into a table.

macro_rules! host_api {
    ($($field:ident = $sym:literal : fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// The Envoy callbacks this module calls, as function pointers.
        #[derive(Clone, Copy)]
        pub struct HostApi {
            $(pub $field: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        /// The callbacks this module calls, by symbol name.
        pub const USED_CALLBACKS: &[&CStr] = &[$($sym),*];

        impl HostApi {
            /// Looks every callback up with `lookup`; the first missing one is the error.
            fn resolve(lookup: impl Fn(&CStr) -> *mut c_void) -> Result<HostApi, String> {
                Ok(HostApi {
                    $($field: {
                        let p = lookup($sym);
                        if p.is_null() {
                            return Err($sym.to_string_lossy().into_owned());
                        }
                        // SAFETY: `p` is the address of the Envoy function exported under
                        // this name, whose C signature (abi.h of Envoy 1.40, ABI v0.2.0) is
                        // the one written here; the ABI check in program_init refuses any
                        // other Envoy before the table is used.
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) $(-> $ret)?>(p)
                        }
                    },)*
                })
            }
        }
    };
}

host_api! {
    log = c"envoy_dynamic_module_callback_log": fn(LogLevel, ModuleBuffer);
    log_enabled = c"envoy_dynamic_module_callback_log_enabled": fn(LogLevel) -> bool;
    is_validation_mode = c"envoy_dynamic_module_callback_is_validation_mode": fn() -> bool;
    get_headers_size = c"envoy_dynamic_module_callback_http_get_headers_size":
        fn(FilterEnvoyPtr, HeaderType) -> usize;
    get_headers = c"envoy_dynamic_module_callback_http_get_headers":
        fn(FilterEnvoyPtr, HeaderType, *mut EnvoyHttpHeader) -> bool;
    set_header = c"envoy_dynamic_module_callback_http_set_header":
        fn(FilterEnvoyPtr, HeaderType, ModuleBuffer, ModuleBuffer) -> bool;
    send_response = c"envoy_dynamic_module_callback_http_send_response":
        fn(FilterEnvoyPtr, u32, *mut ModuleHttpHeader, usize, ModuleBuffer, ModuleBuffer);
    continue_decoding = c"envoy_dynamic_module_callback_http_filter_continue_decoding":
        fn(FilterEnvoyPtr);
    get_buffer_limit = c"envoy_dynamic_module_callback_http_get_buffer_limit":
        fn(FilterEnvoyPtr) -> u64;
    set_buffer_limit = c"envoy_dynamic_module_callback_http_set_buffer_limit":
        fn(FilterEnvoyPtr, u64);
    get_body_chunks_size = c"envoy_dynamic_module_callback_http_get_body_chunks_size":
        fn(FilterEnvoyPtr, BodyType) -> usize;
    get_body_chunks = c"envoy_dynamic_module_callback_http_get_body_chunks":
        fn(FilterEnvoyPtr, BodyType, *mut EnvoyBuffer) -> bool;
    set_filter_state_bytes = c"envoy_dynamic_module_callback_http_set_filter_state_bytes":
        fn(FilterEnvoyPtr, ModuleBuffer, ModuleBuffer) -> bool;
    define_counter = c"envoy_dynamic_module_callback_http_filter_config_define_counter":
        fn(ConfigEnvoyPtr, ModuleBuffer, *mut ModuleBuffer, usize, *mut usize) -> MetricsResult;
    define_gauge = c"envoy_dynamic_module_callback_http_filter_config_define_gauge":
        fn(ConfigEnvoyPtr, ModuleBuffer, *mut ModuleBuffer, usize, *mut usize) -> MetricsResult;
    increment_counter = c"envoy_dynamic_module_callback_http_filter_increment_counter":
        fn(FilterEnvoyPtr, usize, *mut ModuleBuffer, usize, u64) -> MetricsResult;
    set_gauge = c"envoy_dynamic_module_callback_http_filter_set_gauge":
        fn(FilterEnvoyPtr, usize, *mut ModuleBuffer, usize, u64) -> MetricsResult;
    config_increment_counter = c"envoy_dynamic_module_callback_http_filter_config_increment_counter":
        fn(ConfigEnvoyPtr, usize, *mut ModuleBuffer, usize, u64) -> MetricsResult;
    config_set_gauge = c"envoy_dynamic_module_callback_http_filter_config_set_gauge":
        fn(ConfigEnvoyPtr, usize, *mut ModuleBuffer, usize, u64) -> MetricsResult;
    http_callout = c"envoy_dynamic_module_callback_http_filter_http_callout":
        fn(FilterEnvoyPtr, *mut u64, ModuleBuffer, *mut ModuleHttpHeader, usize, ModuleBuffer, u64)
            -> CalloutInitResult;
    config_http_callout = c"envoy_dynamic_module_callback_http_filter_config_http_callout":
        fn(ConfigEnvoyPtr, *mut u64, ModuleBuffer, *mut ModuleHttpHeader, usize, ModuleBuffer, u64)
            -> CalloutInitResult;
    scheduler_new = c"envoy_dynamic_module_callback_http_filter_scheduler_new":
        fn(FilterEnvoyPtr) -> SchedulerPtr;
    scheduler_commit = c"envoy_dynamic_module_callback_http_filter_scheduler_commit":
        fn(SchedulerPtr, u64);
    scheduler_delete = c"envoy_dynamic_module_callback_http_filter_scheduler_delete":
        fn(SchedulerPtr);
    config_scheduler_new = c"envoy_dynamic_module_callback_http_filter_config_scheduler_new":
        fn(ConfigEnvoyPtr) -> ConfigSchedulerPtr;
    config_scheduler_commit = c"envoy_dynamic_module_callback_http_filter_config_scheduler_commit":
        fn(ConfigSchedulerPtr, u64);
    config_scheduler_delete = c"envoy_dynamic_module_callback_http_filter_config_scheduler_delete":
        fn(ConfigSchedulerPtr);
}

static HOST: OnceLock<HostApi> = OnceLock::new();

fn host() -> Option<&'static HostApi> {
    HOST.get()
}

/// Resolves the callbacks in the running process (`dlsym(RTLD_DEFAULT, ..)`: the global scope,
/// which holds the Envoy executable's exports even though this module is loaded `RTLD_LOCAL`).
fn resolve_in_process() -> Result<HostApi, String> {
    HostApi::resolve(|name| {
        // SAFETY: `name` is a NUL-terminated string; dlsym only reads it and returns an
        // address or NULL.
        unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
    })
}

/// Installs a callback table (the fake Envoy of the unit tests). False if one is installed.
#[cfg(test)]
pub(crate) fn install(api: HostApi) -> bool {
    HOST.set(api).is_ok()
}

// ---------------------------------------------------------------------------------------
// Safe wrappers.

/// Bytes Envoy lent us as a slice (`(NULL, n)` is an empty slice, never dereferenced).
///
/// # Safety
/// `ptr` must be NULL or point to `len` readable bytes that stay valid and unchanged for `'a`.
unsafe fn lent<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: non-null, `len` readable bytes for 'a (the caller's contract).
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

/// Logs at `level` through Envoy (the `dynamic_modules` logger), when that level is on.
pub fn log(level: LogLevel, message: &str) {
    let Some(h) = host() else {
        return;
    };
    // SAFETY: plain calls; the message buffer outlives the call (Envoy copies it).
    unsafe {
        if (h.log_enabled)(level) {
            (h.log)(level, ModuleBuffer::of(message.as_bytes()));
        }
    }
}

/// Envoy runs with `--mode validate` (main thread only): start no background work.
pub fn is_validation_mode() -> bool {
    // SAFETY: no arguments; called on the main thread (config_new).
    host().is_some_and(|h| unsafe { (h.is_validation_mode)() })
}

/// Envoy's per-stream filter object (valid from `filter_new` until `filter_destroy`; used only
/// on the stream's worker, inside its hooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterHandle(FilterEnvoyPtr);

impl FilterHandle {
    /// The request headers (pseudo-headers included), bytes decoded lossily (HTTP/1.1 allows
    /// bytes 0x80-0xFF in values; such a covered field then fails verification: the safe
    /// side). `None` when Envoy has none to give.
    pub fn request_headers(self) -> Option<Vec<(String, String)>> {
        self.header_map(HeaderType::REQUEST_HEADER)
    }

    /// The request trailers (inside the trailers hook: Envoy has them only from then on),
    /// decoded lossily. `Some(empty)` when the request has none; `None` when Envoy could not
    /// hand over those it has.
    pub fn request_trailers(self) -> Option<Vec<(String, String)>> {
        self.header_map(HeaderType::REQUEST_TRAILER)
    }

    fn header_map(self, kind: HeaderType) -> Option<Vec<(String, String)>> {
        let h = host()?;
        // SAFETY: `self.0` is live (see the type); Envoy fills at most `size` entries whose
        // pointers stay valid until this hook returns or the map is changed; both are copied
        // out before either happens.
        unsafe {
            let size = (h.get_headers_size)(self.0, kind);
            let mut raw = vec![EnvoyHttpHeader::EMPTY; size];
            if size > 0 && !(h.get_headers)(self.0, kind, raw.as_mut_ptr()) {
                return None;
            }
            Some(
                raw.iter()
                    .map(|e| {
                        (
                            String::from_utf8_lossy(lent(e.key_ptr, e.key_length)).into_owned(),
                            String::from_utf8_lossy(lent(e.value_ptr, e.value_length)).into_owned(),
                        )
                    })
                    .collect(),
            )
        }
    }

    /// Sets (replaces every line of) a request header.
    pub fn set_request_header(self, name: &str, value: &str) {
        self.set(HeaderType::REQUEST_HEADER, name, Some(value));
    }

    /// Removes every line of a request header.
    pub fn remove_request_header(self, name: &str) {
        self.set(HeaderType::REQUEST_HEADER, name, None);
    }

    /// Removes every line of a request trailer (inside the trailers hook).
    pub fn remove_request_trailer(self, name: &str) {
        self.set(HeaderType::REQUEST_TRAILER, name, None);
    }

    /// Sets, or removes (`None`: a NULL value is the documented "remove" form), every line of
    /// `name` in the map `kind`.
    fn set(self, kind: HeaderType, name: &str, value: Option<&str>) {
        if let Some(h) = host() {
            let value = value.map_or_else(ModuleBuffer::null, |v| ModuleBuffer::of(v.as_bytes()));
            // SAFETY: live handle; the key and value outlive the call (Envoy copies them).
            unsafe {
                (h.set_header)(self.0, kind, ModuleBuffer::of(name.as_bytes()), value);
            }
        }
    }

    /// Answers the request locally. May run other hooks of this stream before it returns:
    /// call it with no borrow of the stream's state held.
    pub fn send_response(
        self,
        status: u16,
        headers: &[(String, String)],
        body: &str,
        details: &str,
    ) {
        let Some(h) = host() else {
            return;
        };
        let mut raw = module_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        // SAFETY: live handle; the header array and the buffers it points into, the body and
        // the details all outlive the call (Envoy copies them).
        unsafe {
            (h.send_response)(
                self.0,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                ModuleBuffer::of(body.as_bytes()),
                ModuleBuffer::of(details.as_bytes()),
            );
        }
    }

    /// Resumes a request the module stopped. May run other hooks of this stream: call it with
    /// no borrow of the stream's state held.
    pub fn continue_decoding(self) {
        if let Some(h) = host() {
            // SAFETY: live handle.
            unsafe { (h.continue_decoding)(self.0) }
        }
    }

    pub fn buffer_limit(self) -> u64 {
        // SAFETY: live handle.
        host().map_or(0, |h| unsafe { (h.get_buffer_limit)(self.0) })
    }

    pub fn set_buffer_limit(self, limit: u64) {
        if let Some(h) = host() {
            // SAFETY: live handle.
            unsafe { (h.set_buffer_limit)(self.0, limit) }
        }
    }

    /// Feeds the request body Envoy holds (`buffered`: what it buffered for us so far;
    /// otherwise the frame of the current body hook) to `each`, chunk by chunk.
    pub fn request_body(self, buffered: bool, mut each: impl FnMut(&[u8])) {
        let Some(h) = host() else {
            return;
        };
        let kind = if buffered {
            BodyType::BUFFERED_REQUEST_BODY
        } else {
            BodyType::RECEIVED_REQUEST_BODY
        };
        // SAFETY: live handle; Envoy fills at most `n` chunk views, valid until the body is
        // changed or this hook returns; they are read here, before either.
        unsafe {
            let n = (h.get_body_chunks_size)(self.0, kind);
            if n == 0 {
                return;
            }
            let mut chunks = vec![EnvoyBuffer::EMPTY; n];
            if !(h.get_body_chunks)(self.0, kind, chunks.as_mut_ptr()) {
                return;
            }
            for c in &chunks {
                each(lent(c.ptr, c.length));
            }
        }
    }

    /// Stores a read-only string in the stream's filter state (`%FILTER_STATE(key:PLAIN)%`).
    /// Envoy refuses a second value for the same key: set each key once.
    pub fn set_filter_state(self, key: &str, value: &str) -> bool {
        // SAFETY: live handle; both buffers outlive the call (Envoy copies them).
        host().is_some_and(|h| unsafe {
            (h.set_filter_state_bytes)(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        })
    }

    pub fn increment_counter(self, id: MetricId, by: u64) {
        if let Some(h) = host() {
            // SAFETY: live handle; no labels (NULL, 0).
            unsafe {
                (h.increment_counter)(self.0, id.0, std::ptr::null_mut(), 0, by);
            }
        }
    }

    pub fn set_gauge(self, id: MetricId, value: u64) {
        if let Some(h) = host() {
            // SAFETY: live handle; no labels (NULL, 0).
            unsafe {
                (h.set_gauge)(self.0, id.0, std::ptr::null_mut(), 0, value);
            }
        }
    }

    /// Sends an HTTP request through `cluster` on behalf of this stream; the answer comes to
    /// `on_http_filter_http_callout_done` on this stream's worker (maybe before this returns).
    pub fn http_callout(
        self,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<u64, CalloutInitResult> {
        let h = host().ok_or(CalloutInitResult::CANNOT_CREATE_REQUEST)?;
        // SAFETY: live handle (see the type), inside a hook on the stream's worker.
        unsafe { send_callout(h.http_callout, self.0, cluster, headers, body, timeout_ms) }
    }

    /// A scheduler that runs `on_http_filter_scheduled` on this stream's worker, from any thread.
    pub fn new_scheduler(self) -> Option<StreamScheduler> {
        let h = host()?;
        // SAFETY: live handle, on the stream's worker inside a hook.
        let p = unsafe { (h.scheduler_new)(self.0) };
        (!p.is_null()).then_some(StreamScheduler(p))
    }
}

/// The stream-level and config-level callout callbacks: one C signature, their first argument
/// the stream's or the configuration's Envoy object.
type CalloutFn = unsafe extern "C" fn(
    *mut c_void,
    *mut u64,
    ModuleBuffer,
    *mut ModuleHttpHeader,
    usize,
    ModuleBuffer,
    u64,
) -> CalloutInitResult;

/// Sends a callout through `send` for `owner`; returns its id.
///
/// # Safety
/// `owner` is a live Envoy object of the kind `send` takes, and this runs on the thread its
/// callouts may be sent from.
unsafe fn send_callout(
    send: CalloutFn,
    owner: *mut c_void,
    cluster: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout_ms: u64,
) -> Result<u64, CalloutInitResult> {
    let mut raw = module_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let mut id: u64 = 0;
    // SAFETY: `owner` as the caller guarantees; `id` is a valid out-pointer; the header array, what it points into, the cluster name and the body outlive
    // the call (Envoy copies them).
    let r = unsafe {
        send(
            owner,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            raw.as_mut_ptr(),
            raw.len(),
            ModuleBuffer::of(body),
            timeout_ms,
        )
    };
    if r == CalloutInitResult::SUCCESS {
        Ok(id)
    } else {
        Err(r)
    }
}

/// Module-owned header views over borrowed strings (kept alive by the caller for the call).
fn module_headers<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<ModuleHttpHeader> {
    pairs
        .map(|(n, v)| ModuleHttpHeader {
            key_ptr: n.as_ptr().cast(),
            key_length: n.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        })
        .collect()
}

/// A metric defined at config time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricId(usize);

/// Envoy's filter-config object (valid from `config_new` until `config_destroy`).
#[derive(Clone, Copy, Debug)]
pub struct ConfigHandle(ConfigEnvoyPtr);

// SAFETY: the config-level callbacks used through this handle from other threads (counters,
// gauges) are documented thread-safe; the main-thread-only ones (callouts, scheduler_new,
// define_*) are called only from config_new / on_http_filter_config_scheduled /
// config callout answers, all on the main thread.
unsafe impl Send for ConfigHandle {}
// SAFETY: as for Send; the handle itself is an immutable pointer value.
unsafe impl Sync for ConfigHandle {}

impl ConfigHandle {
    /// Defines a counter (only during `config_new`).
    pub fn define_counter(self, name: &str) -> Option<MetricId> {
        self.define(name, false)
    }

    /// Defines a gauge (only during `config_new`).
    pub fn define_gauge(self, name: &str) -> Option<MetricId> {
        self.define(name, true)
    }

    fn define(self, name: &str, gauge: bool) -> Option<MetricId> {
        let h = host()?;
        let f = if gauge {
            h.define_gauge
        } else {
            h.define_counter
        };
        let mut id: usize = 0;
        // SAFETY: live handle, main thread inside config_new; no labels; `id` is a valid
        // out-pointer; the name outlives the call.
        let r = unsafe {
            f(
                self.0,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (r == MetricsResult::SUCCESS).then_some(MetricId(id))
    }

    /// Increments a counter from any thread.
    pub fn increment_counter(self, id: MetricId, by: u64) {
        if let Some(h) = host() {
            // SAFETY: live handle; documented thread-safe; no labels.
            unsafe {
                (h.config_increment_counter)(self.0, id.0, std::ptr::null_mut(), 0, by);
            }
        }
    }

    /// Sets a gauge from any thread.
    pub fn set_gauge(self, id: MetricId, value: u64) {
        if let Some(h) = host() {
            // SAFETY: live handle; documented thread-safe; no labels.
            unsafe {
                (h.config_set_gauge)(self.0, id.0, std::ptr::null_mut(), 0, value);
            }
        }
    }

    /// Sends an HTTP request owned by the config (it outlives any stream). Main thread only;
    /// the answer comes to `on_http_filter_config_http_callout_done` (maybe before this returns).
    pub fn http_callout(
        self,
        cluster: &str,
        headers: &[(String, String)],
        timeout_ms: u64,
    ) -> Result<u64, CalloutInitResult> {
        let h = host().ok_or(CalloutInitResult::CANNOT_CREATE_REQUEST)?;
        // SAFETY: live handle (config_new to config_destroy); config callouts are sent on the
        // main thread only (see the type).
        unsafe {
            send_callout(
                h.config_http_callout,
                self.0,
                cluster,
                headers,
                &[],
                timeout_ms,
            )
        }
    }

    /// A scheduler that runs `on_http_filter_config_scheduled` on the main thread, from any
    /// thread. Main thread (config_new) only.
    pub fn new_scheduler(self) -> Option<ConfigScheduler> {
        let h = host()?;
        // SAFETY: live handle, main thread.
        let p = unsafe { (h.config_scheduler_new)(self.0) };
        (!p.is_null()).then_some(ConfigScheduler(p))
    }
}

/// A per-stream scheduler; deleted (once) when dropped.
#[derive(Debug)]
pub struct StreamScheduler(SchedulerPtr);

// SAFETY: Envoy documents `scheduler_commit` as callable from any thread (a no-op once the
// stream is gone); deletion happens once, in Drop, by whoever owns the value.
unsafe impl Send for StreamScheduler {}
// SAFETY: `commit` (the only `&self` use) is thread-safe, see above.
unsafe impl Sync for StreamScheduler {}

impl StreamScheduler {
    /// Runs `on_http_filter_scheduled(event)` on the stream's worker, later.
    pub fn commit(&self, event: u64) {
        if let Some(h) = host() {
            // SAFETY: not deleted yet (Drop deletes, and takes the value).
            unsafe { (h.scheduler_commit)(self.0, event) }
        }
    }
}

impl Drop for StreamScheduler {
    fn drop(&mut self) {
        if let Some(h) = host() {
            // SAFETY: created by scheduler_new, deleted exactly once here.
            unsafe { (h.scheduler_delete)(self.0) }
        }
    }
}

/// The config's scheduler; deleted (once) when dropped.
#[derive(Debug)]
pub struct ConfigScheduler(ConfigSchedulerPtr);

// SAFETY: `config_scheduler_commit` is documented callable from any thread (module threads
// included); deletion happens once, in Drop.
unsafe impl Send for ConfigScheduler {}
// SAFETY: `commit` (the only `&self` use) is thread-safe, see above.
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    /// Runs `on_http_filter_config_scheduled(event)` on the main thread, later.
    pub fn commit(&self, event: u64) {
        if let Some(h) = host() {
            // SAFETY: not deleted yet (Drop deletes, and takes the value).
            unsafe { (h.config_scheduler_commit)(self.0, event) }
        }
    }
}

impl Drop for ConfigScheduler {
    fn drop(&mut self) {
        if let Some(h) = host() {
            // SAFETY: created by config_scheduler_new, deleted exactly once here.
            unsafe { (h.config_scheduler_delete)(self.0) }
        }
    }
}

/// An HTTP callout's answer, copied out of Envoy's buffers (valid only during the hook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalloutAnswer {
    pub result: CalloutResult,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CalloutAnswer {
    /// The `:status` of a successful answer.
    pub fn status(&self) -> Option<u16> {
        if self.result != CalloutResult::SUCCESS {
            return None;
        }
        self.headers
            .iter()
            .find(|(n, _)| n == ":status")
            .and_then(|(_, v)| v.trim().parse().ok())
    }
}

/// Copies a callout answer; the body is cut at `max_body` bytes (`true` if it was longer).
///
/// # Safety
/// `headers` is NULL or `n_headers` valid entries, `chunks` NULL or `n_chunks` valid entries,
/// all readable for the duration of the call.
unsafe fn copy_answer(
    result: CalloutResult,
    headers: *const EnvoyHttpHeader,
    n_headers: usize,
    chunks: *const EnvoyBuffer,
    n_chunks: usize,
    max_body: usize,
) -> (CalloutAnswer, bool) {
    let mut answer = CalloutAnswer {
        result,
        headers: Vec::new(),
        body: Vec::new(),
    };
    let mut cut = false;
    if !headers.is_null() {
        // SAFETY: the caller's contract.
        let hs = unsafe { std::slice::from_raw_parts(headers, n_headers) };
        for e in hs {
            // SAFETY: each entry points to bytes valid for the call (Envoy's answer).
            let (k, v) = unsafe {
                (
                    lent(e.key_ptr, e.key_length),
                    lent(e.value_ptr, e.value_length),
                )
            };
            answer.headers.push((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        }
    }
    if !chunks.is_null() {
        // SAFETY: the caller's contract.
        let cs = unsafe { std::slice::from_raw_parts(chunks, n_chunks) };
        for c in cs {
            // SAFETY: each chunk points to bytes valid for the call.
            let bytes = unsafe { lent(c.ptr, c.length) };
            let room = max_body.saturating_sub(answer.body.len());
            if bytes.len() > room {
                cut = true;
            }
            answer
                .body
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }
    (answer, cut)
}

// ---------------------------------------------------------------------------------------
// Hooks (module exports). Each converts Envoy's pointers, then hands over to safe code under
// `catch_unwind`.

/// Runs `f`, turning a panic into `fallback` after `on_panic` (itself guarded) and a log line.
fn guarded<R>(what: &str, fallback: R, on_panic: impl FnOnce(), f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                log(
                    LogLevel::ERROR,
                    &format!("web-bot-auth: internal error (panic) in {what}"),
                );
                on_panic();
            }));
            fallback
        }
    }
}

/// # Safety
/// `p` is a pointer `config_new` returned and `config_destroy` has not consumed.
unsafe fn config_ref<'a>(p: ConfigModulePtr) -> Option<&'a FilterConfig> {
    // SAFETY: `p` came from `Box::into_raw(Box<FilterConfig>)` and is alive (the caller's
    // contract); Envoy passes it only while its config object lives.
    unsafe { p.cast::<FilterConfig>().as_ref() }
}

/// A stream, shared by Envoy and the hooks running for it.
///
/// `filter_new` hands Envoy one reference (`Rc::into_raw`), which `filter_destroy` takes
/// back; each hook holds another while it runs. Envoy may destroy a stream inline, inside a
/// callback one of its hooks makes (`send_response`, `continue_decoding` and `http_callout`
/// can end the stream before they return): the stream is then marked gone (it calls Envoy no
/// more) and freed only when the outermost hook returns, never under a hook that uses it.
///
/// # Safety
/// `p` is NULL or a pointer `filter_new` returned whose `filter_destroy` has not run (so
/// Envoy's reference is still counted).
unsafe fn stream_rc(p: FilterModulePtr) -> Option<Rc<Stream>> {
    if p.is_null() {
        return None;
    }
    let p = p.cast::<Stream>();
    // SAFETY: `p` came from `Rc::into_raw` in filter_new and Envoy's reference keeps it alive
    // (the caller's contract); this adds the hook's own reference, dropped when it returns.
    // Only shared references are made: hooks of one stream can nest and its state is in cells.
    unsafe {
        Rc::increment_strong_count(p);
        Some(Rc::from_raw(p))
    }
}

/// A stream hook: no-op fallback after poisoning; a panic answers 500 and poisons.
fn stream_hook<R>(p: FilterModulePtr, what: &str, passive: R, f: impl FnOnce(&Stream) -> R) -> R
where
    R: Copy,
{
    // SAFETY: Envoy passes the pointer filter_new returned, until filter_destroy.
    let Some(stream) = (unsafe { stream_rc(p) }) else {
        return passive;
    };
    if stream.poisoned() || stream.gone() {
        return passive;
    }
    guarded(what, passive, || stream.on_panic(), || f(&stream))
}

/// The request-path variant: it stops whenever the stream cannot decide: after a panic (the
/// 500 went out, or the request was answered or passed already), once Envoy destroyed the
/// stream, and without its stream (NULL: nothing of the request is known, it is refused).
fn request_hook<R: Copy>(
    fe: FilterEnvoyPtr,
    p: FilterModulePtr,
    what: &str,
    stopped: R,
    f: impl FnOnce(&Stream) -> R,
) -> R {
    // SAFETY: Envoy passes the pointer filter_new returned, until filter_destroy.
    let Some(stream) = (unsafe { stream_rc(p) }) else {
        refuse_without_stream(fe, what);
        return stopped;
    };
    if stream.gone() || stream.poisoned() {
        return stopped;
    }
    guarded(what, stopped, || stream.on_panic(), || f(&stream))
}

/// A request hook Envoy calls with no stream of this module (NULL): nothing of the request was
/// checked, so none of it passes: 500 (when Envoy names its filter object), and the hook stops.
fn refuse_without_stream(fe: FilterEnvoyPtr, what: &str) {
    let _ = catch_unwind(|| {
        log(
            LogLevel::ERROR,
            &format!(
                "web-bot-auth: {what} without a stream of this module (NULL): refused with 500"
            ),
        );
        if !fe.is_null() {
            FilterHandle(fe).send_response(500, &[], "", crate::stream::PANIC_DETAILS);
        }
    });
}

/// Loads the module: resolves the callbacks and checks that this Envoy's ABI is 1.40.0's.
/// NULL refuses the load (Envoy: "Failed to initialize dynamic module").
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let ok = catch_unwind(|| {
        if let Err(e) = crate::abi_check::check_running_envoy() {
            eprintln!("{e}");
            return false;
        }
        match resolve_in_process() {
            Ok(api) => {
                // A second load in one process (the same file) resolves the same table.
                let _ = HOST.set(api);
                true
            }
            Err(missing) => {
                eprintln!("web_bot_auth: this Envoy does not export the callback {missing}; refusing to load");
                false
            }
        }
    });
    match ok {
        Ok(true) => ABI_VERSION.as_ptr(),
        _ => std::ptr::null(),
    }
}

/// A filter configuration (main thread). NULL refuses it.
///
/// # Safety
/// Envoy passes buffers valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> ConfigModulePtr {
    // SAFETY: Envoy's buffers are valid for the duration of this call; copied before return.
    let (name, json) = unsafe { (lent(name.ptr, name.length), lent(config.ptr, config.length)) };
    let made = guarded(
        "config_new",
        None,
        || {},
        || FilterConfig::new(ConfigHandle(config_envoy), name, json),
    );
    match made {
        Some(c) => Box::into_raw(Box::new(c)).cast_const().cast(),
        None => std::ptr::null(),
    }
}

/// # Safety
/// `config` is a pointer `config_new` returned, passed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    if config.is_null() {
        return;
    }
    // SAFETY: `config` came from Box::into_raw in config_new; Envoy destroys it once.
    let boxed = unsafe { Box::from_raw(config.cast::<FilterConfig>().cast_mut()) };
    guarded("config_destroy", (), || {}, move || boxed.shutdown());
}

/// A stream starts (worker). NULL makes Envoy answer 500.
///
/// # Safety
/// `config` is alive (Envoy's config object outlives its streams).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    filter_envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    // SAFETY: the caller's contract.
    let Some(config) = (unsafe { config_ref(config) }) else {
        return std::ptr::null();
    };
    let made = guarded(
        "filter_new",
        None,
        || {},
        || Some(Stream::new(config, FilterHandle(filter_envoy))),
    );
    match made {
        // Envoy's reference (see `stream_rc`).
        Some(s) => Rc::into_raw(Rc::new(s)).cast(),
        None => std::ptr::null(),
    }
}

/// Envoy is done with the stream; maybe inline, inside a callback a hook of it made (then the
/// stream is freed when that hook returns).
///
/// # Safety
/// `filter` is a pointer `filter_new` returned, passed once.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
    if filter.is_null() {
        return;
    }
    // SAFETY: `filter` came from Rc::into_raw in filter_new; Envoy destroys it once: this
    // takes Envoy's reference back (hooks still running hold their own).
    let stream = unsafe { Rc::from_raw(filter.cast::<Stream>()) };
    guarded("filter_destroy", (), || {}, move || stream.destroy());
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    fe: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> HeadersStatus {
    request_hook(
        fe,
        filter,
        "request_headers",
        HeadersStatus::STOP_ITERATION,
        |s| s.on_request_headers(end_of_stream),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    fe: FilterEnvoyPtr,
    filter: FilterModulePtr,
    end_of_stream: bool,
) -> BodyStatus {
    request_hook(
        fe,
        filter,
        "request_body",
        BodyStatus::STOP_ITERATION_NO_BUFFER,
        |s| s.on_request_body(end_of_stream),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    fe: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> TrailersStatus {
    request_hook(
        fe,
        filter,
        "request_trailers",
        TrailersStatus::STOP_ITERATION,
        |s| s.on_request_trailers(),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _end_of_stream: bool,
) -> HeadersStatus {
    HeadersStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _end_of_stream: bool,
) -> BodyStatus {
    BodyStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
) -> TrailersStatus {
    TrailersStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _fe: FilterEnvoyPtr,
    filter: FilterModulePtr,
) {
    stream_hook(filter, "stream_complete", (), |s| s.on_stream_complete());
}

/// The answer to a per-stream callout (the replay store).
///
/// # Safety
/// Envoy passes `n_headers` headers and `n_chunks` body chunks (or NULLs) valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _fe: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout_id: u64,
    result: CalloutResult,
    headers: *const EnvoyHttpHeader,
    n_headers: usize,
    chunks: *const EnvoyBuffer,
    n_chunks: usize,
) {
    // The store's answer is a status and a short text: what matters fits in 4 KiB.
    // SAFETY: the caller's contract.
    let (answer, _) = unsafe { copy_answer(result, headers, n_headers, chunks, n_chunks, 4096) };
    stream_hook(filter, "http_callout_done", (), |s| {
        s.on_callout_done(callout_id, &answer)
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _fe: FilterEnvoyPtr,
    filter: FilterModulePtr,
    event_id: u64,
) {
    stream_hook(filter, "scheduled", (), |s| s.on_scheduled(event_id));
}

// Streamed callouts and watermarks: not used (required exports).

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHttpHeader,
    _n: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _chunks: *const EnvoyBuffer,
    _n: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHttpHeader,
    _n: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _fe: FilterEnvoyPtr,
    _filter: FilterModulePtr,
) {
}

/// An event committed to the config scheduler (main thread): key fetch work.
///
/// # Safety
/// `config` is a pointer `config_new` returned, alive.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _ce: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    event_id: u64,
) {
    // SAFETY: the caller's contract.
    let Some(config) = (unsafe { config_ref(config) }) else {
        return;
    };
    guarded(
        "config_scheduled",
        (),
        || {},
        || config.on_scheduled(event_id),
    );
}

/// The answer to a config-level callout (a key fetch; main thread).
///
/// # Safety
/// `config` is alive; Envoy passes `n_headers` headers and `n_chunks` chunks (or NULLs) valid
/// for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _ce: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    callout_id: u64,
    result: CalloutResult,
    headers: *const EnvoyHttpHeader,
    n_headers: usize,
    chunks: *const EnvoyBuffer,
    n_chunks: usize,
) {
    // SAFETY: the caller's contract.
    let Some(config) = (unsafe { config_ref(config) }) else {
        return;
    };
    let max = config.max_directory_bytes();
    // SAFETY: the caller's contract.
    let (answer, cut) = unsafe { copy_answer(result, headers, n_headers, chunks, n_chunks, max) };
    guarded(
        "config_http_callout_done",
        (),
        || {},
        || config.on_callout_done(callout_id, answer, cut),
    );
}

/// A fake Envoy for unit tests: the callback table over per-thread state (each test runs on
/// its own thread), and a driver that calls the module's hooks as Envoy would. Pointers to
/// Envoy objects are numbers (stream `n` is address `n`).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;
    use std::cell::RefCell;
    use std::collections::{HashMap, HashSet};

    type Headers = Vec<(String, String)>;
    /// A local reply: status, headers, body, details.
    pub type Sent = (u32, Headers, String, String);
    /// A callout: id, cluster, headers.
    pub type Callout = (u64, String, Headers);

    #[derive(Debug, Default, Clone)]
    pub struct FakeStream {
        pub headers: Vec<(String, String)>,
        /// (status, headers, body, details)
        pub sent: Vec<Sent>,
        pub continued: u32,
        pub filter_state: Vec<(String, String)>,
        pub buffer_limit: u64,
        /// The frame of the current body hook, and what Envoy buffered for the filter.
        pub received: Vec<u8>,
        pub buffered: Vec<u8>,
        /// (id, cluster, headers)
        pub callouts: Vec<Callout>,
        /// What `http_callout` answers (0: success).
        pub callout_init: u32,
        /// An answer (status) Envoy gives inside `http_callout`, before it returns.
        pub inline_status: Option<String>,
        /// The request trailers (`None`: none came, Envoy has no trailer map).
        pub trailers: Option<Vec<(String, String)>>,
        /// Envoy cannot hand the trailers over (it counts them, `get_headers` fails).
        pub trailers_unreadable: bool,
        /// Envoy completes and destroys the stream inside this callback, before it returns
        /// (a local reply or a reset that ends the stream at once).
        pub destroy_inside: Option<Inside>,
        /// The module's pointer for this stream (set by the driver).
        module: usize,
    }

    /// A callback inside which Envoy can end the stream.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Inside {
        SendResponse,
        ContinueDecoding,
        HttpCallout,
    }

    #[derive(Debug, Default)]
    pub struct FakeEnvoy {
        pub streams: HashMap<usize, FakeStream>,
        pub metric_names: Vec<String>,
        pub values: HashMap<usize, u64>,
        pub logs: Vec<(u32, String)>,
        pub validation_mode: bool,
        pub config_events: Vec<u64>,
        /// (stream, event) committed to stream schedulers.
        pub stream_events: Vec<(usize, u64)>,
        /// Live stream schedulers: scheduler -> stream.
        pub schedulers: HashMap<usize, usize>,
        pub config_schedulers: usize,
        /// (id, cluster, headers)
        pub config_callouts: Vec<Callout>,
        pub config_callout_init: u32,
        /// An answer (status) Envoy gives inside a config callout, before it returns.
        pub config_inline_status: Option<String>,
        config_module: usize,
        /// Misuses of the ABI the fake noticed (a real Envoy would misbehave).
        pub violations: Vec<String>,
        /// Streams Envoy destroyed (`filter_destroy` called): a callback on one is a misuse.
        pub destroyed: HashSet<usize>,
        /// Streams whose hooks the fake re-entered from inside a callback (count by stream):
        /// the module's stream must stay alive while any of them runs.
        reentered: HashMap<usize, u32>,
        /// The module's stream objects alive (made by `filter_new`, not yet freed).
        pub live_streams: usize,
        next: usize,
    }

    impl FakeEnvoy {
        fn next(&mut self) -> usize {
            self.next += 1;
            self.next
        }

        /// A stat's value by name.
        pub fn stat(&self, name: &str) -> u64 {
            self.metric_names
                .iter()
                .position(|n| n == name)
                .and_then(|i| self.values.get(&i).copied())
                .unwrap_or(0)
        }
    }

    thread_local! {
        static ENVOY: RefCell<FakeEnvoy> = RefCell::new(FakeEnvoy {
            validation_mode: true,
            ..FakeEnvoy::default()
        });
    }

    pub fn with<R>(f: impl FnOnce(&mut FakeEnvoy) -> R) -> R {
        ENVOY.with(|e| f(&mut e.borrow_mut()))
    }

    fn id(p: *mut c_void) -> usize {
        p.addr()
    }

    /// The stream of a filter callback; a callback on a destroyed stream is a misuse.
    fn stream_of<'a>(
        e: &'a mut FakeEnvoy,
        f: FilterEnvoyPtr,
        what: &str,
    ) -> Option<&'a mut FakeStream> {
        if e.destroyed.contains(&id(f)) {
            e.violations
                .push(format!("{what} on stream {} after filter_destroy", id(f)));
            return None;
        }
        e.streams.get_mut(&id(f))
    }

    /// The header map of a stream a header callback names.
    fn map_of<'a>(
        e: &'a mut FakeEnvoy,
        f: FilterEnvoyPtr,
        kind: HeaderType,
        what: &str,
    ) -> Option<&'a mut Vec<(String, String)>> {
        if kind != HeaderType::REQUEST_HEADER && kind != HeaderType::REQUEST_TRAILER {
            e.violations.push(format!("{what}: header type {}", kind.0));
            return None;
        }
        let s = stream_of(e, f, what)?;
        if kind == HeaderType::REQUEST_HEADER {
            Some(&mut s.headers)
        } else {
            s.trailers.as_mut()
        }
    }

    /// Calls hooks of stream `n` from inside a callback it made (as Envoy can).
    fn reenter(n: usize, f: impl FnOnce()) {
        with(|e| *e.reentered.entry(n).or_default() += 1);
        f();
        with(|e| *e.reentered.entry(n).or_default() -= 1);
    }

    /// Envoy ends stream `n` inside a callback (`Inside`): completes and destroys it.
    fn destroy_inline(n: usize, module: usize) {
        reenter(n, || {
            let p = std::ptr::with_exposed_provenance::<c_void>(module);
            envoy_dynamic_module_on_http_filter_stream_complete(ptr(n), p);
            with(|e| e.destroyed.insert(n));
            // SAFETY: the stream's module pointer, destroyed once (the driver skips it later).
            unsafe { envoy_dynamic_module_on_http_filter_destroy(p) };
        });
    }

    /// Envoy ends the stream inside `inside` if the test asked for it.
    fn maybe_destroy(f: FilterEnvoyPtr, inside: Inside) {
        let module = with(|e| {
            let s = e.streams.get_mut(&id(f))?;
            if s.destroy_inside != Some(inside) || e.destroyed.contains(&id(f)) {
                return None;
            }
            s.destroy_inside = None;
            Some(s.module)
        });
        if let Some(module) = module {
            destroy_inline(id(f), module);
        }
    }

    /// The module freed a stream object (test builds call this from its `Drop`): never while
    /// a hook of it is still running up the stack (a callback it made re-entered the module).
    pub(crate) fn stream_dropped(filter: FilterHandle) {
        let n = id(filter.0);
        with(|e| {
            e.live_streams = e.live_streams.saturating_sub(1);
            if e.reentered.get(&n).copied().unwrap_or(0) > 0 {
                e.violations.push(format!(
                    "stream {n} freed inside a callback of its own hook (use after free up the stack)"
                ));
            }
        });
    }

    fn ptr(n: usize) -> *mut c_void {
        std::ptr::without_provenance_mut(n)
    }

    /// # Safety
    /// `b` must be NULL or valid for its length.
    unsafe fn text(b: ModuleBuffer) -> String {
        // SAFETY: the caller's contract.
        String::from_utf8_lossy(unsafe { lent(b.ptr, b.length) }).into_owned()
    }

    /// # Safety
    /// `h` must be NULL or `n` valid headers.
    unsafe fn pairs(h: *mut ModuleHttpHeader, n: usize) -> Vec<(String, String)> {
        if h.is_null() {
            return Vec::new();
        }
        // SAFETY: the caller's contract.
        let hs = unsafe { std::slice::from_raw_parts(h, n) };
        hs.iter()
            .map(|e| {
                // SAFETY: the module's header views point to live strings during the call.
                unsafe {
                    (
                        String::from_utf8_lossy(lent(e.key_ptr, e.key_length)).into_owned(),
                        String::from_utf8_lossy(lent(e.value_ptr, e.value_length)).into_owned(),
                    )
                }
            })
            .collect()
    }

    unsafe extern "C" fn log(level: LogLevel, m: ModuleBuffer) {
        // SAFETY: the module passes a valid buffer.
        let m = unsafe { text(m) };
        with(|e| e.logs.push((level.0, m)));
    }
    unsafe extern "C" fn log_enabled(_: LogLevel) -> bool {
        true
    }
    unsafe extern "C" fn is_validation_mode() -> bool {
        with(|e| e.validation_mode)
    }
    unsafe extern "C" fn get_headers_size(f: FilterEnvoyPtr, kind: HeaderType) -> usize {
        with(|e| map_of(e, f, kind, "get_headers_size").map_or(0, |m| m.len()))
    }
    unsafe extern "C" fn get_headers(
        f: FilterEnvoyPtr,
        kind: HeaderType,
        out: *mut EnvoyHttpHeader,
    ) -> bool {
        with(|e| {
            let unreadable = kind == HeaderType::REQUEST_TRAILER
                && e.streams.get(&id(f)).is_some_and(|s| s.trailers_unreadable);
            let Some(m) = map_of(e, f, kind, "get_headers") else {
                return false;
            };
            if unreadable {
                return false;
            }
            for (i, (k, v)) in m.iter().enumerate() {
                // SAFETY: the module allocated `get_headers_size` entries; the strings live
                // in the thread's fake until the module changes the map (it copies first).
                unsafe {
                    out.add(i).write(EnvoyHttpHeader {
                        key_ptr: k.as_ptr().cast(),
                        key_length: k.len(),
                        value_ptr: v.as_ptr().cast(),
                        value_length: v.len(),
                    });
                }
            }
            true
        })
    }
    unsafe extern "C" fn set_header(
        f: FilterEnvoyPtr,
        kind: HeaderType,
        k: ModuleBuffer,
        v: ModuleBuffer,
    ) -> bool {
        // SAFETY: valid buffers from the module (a NULL value means remove).
        let (key, value) = unsafe { (text(k), (!v.ptr.is_null()).then(|| text(v))) };
        with(|e| {
            let Some(m) = map_of(e, f, kind, "set_header") else {
                return false;
            };
            m.retain(|(n, _)| !n.eq_ignore_ascii_case(&key));
            if let Some(v) = value {
                m.push((key, v));
            }
            true
        })
    }
    unsafe extern "C" fn send_response(
        f: FilterEnvoyPtr,
        status: u32,
        h: *mut ModuleHttpHeader,
        n: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    ) {
        // SAFETY: valid views from the module.
        let (h, body, details) = unsafe { (pairs(h, n), text(body), text(details)) };
        with(|e| {
            if let Some(s) = stream_of(e, f, "send_response") {
                s.sent.push((status, h, body, details));
            }
        });
        maybe_destroy(f, Inside::SendResponse);
    }
    unsafe extern "C" fn continue_decoding(f: FilterEnvoyPtr) {
        with(|e| {
            if let Some(s) = stream_of(e, f, "continue_decoding") {
                s.continued += 1;
            }
        });
        maybe_destroy(f, Inside::ContinueDecoding);
    }
    unsafe extern "C" fn get_buffer_limit(f: FilterEnvoyPtr) -> u64 {
        with(|e| stream_of(e, f, "get_buffer_limit").map_or(0, |s| s.buffer_limit))
    }
    unsafe extern "C" fn set_buffer_limit(f: FilterEnvoyPtr, l: u64) {
        with(|e| {
            if let Some(s) = stream_of(e, f, "set_buffer_limit") {
                s.buffer_limit = l;
            }
        });
    }
    fn body_of(s: &FakeStream, kind: BodyType) -> &Vec<u8> {
        if kind == BodyType::BUFFERED_REQUEST_BODY {
            &s.buffered
        } else {
            &s.received
        }
    }
    unsafe extern "C" fn get_body_chunks_size(f: FilterEnvoyPtr, kind: BodyType) -> usize {
        with(|e| {
            stream_of(e, f, "get_body_chunks_size")
                .map_or(0, |s| usize::from(!body_of(s, kind).is_empty()))
        })
    }
    unsafe extern "C" fn get_body_chunks(
        f: FilterEnvoyPtr,
        kind: BodyType,
        out: *mut EnvoyBuffer,
    ) -> bool {
        with(|e| {
            let Some(s) = stream_of(e, f, "get_body_chunks") else {
                return false;
            };
            let b = body_of(s, kind);
            if !b.is_empty() {
                // SAFETY: the module allocated one entry (chunks_size); the bytes live in
                // the fake until the driver changes them.
                unsafe {
                    out.write(EnvoyBuffer {
                        ptr: b.as_ptr().cast(),
                        length: b.len(),
                    })
                };
            }
            true
        })
    }
    unsafe extern "C" fn set_filter_state_bytes(
        f: FilterEnvoyPtr,
        k: ModuleBuffer,
        v: ModuleBuffer,
    ) -> bool {
        // SAFETY: valid buffers from the module.
        let (k, v) = unsafe { (text(k), text(v)) };
        with(|e| {
            let Some(s) = stream_of(e, f, "set_filter_state") else {
                return false;
            };
            // Envoy's read-only filter state: a second value for a key is a bug.
            if s.filter_state.iter().any(|(n, _)| *n == k) {
                e.violations.push(format!("filter state {k} set twice"));
                return false;
            }
            s.filter_state.push((k, v));
            true
        })
    }
    unsafe extern "C" fn define(
        _: ConfigEnvoyPtr,
        name: ModuleBuffer,
        _: *mut ModuleBuffer,
        _: usize,
        out: *mut usize,
    ) -> MetricsResult {
        // SAFETY: valid buffer and out-pointer from the module.
        let name = unsafe { text(name) };
        let i = with(|e| {
            e.metric_names.push(name);
            e.metric_names.len() - 1
        });
        // SAFETY: valid out-pointer.
        unsafe { out.write(i) };
        MetricsResult::SUCCESS
    }
    unsafe extern "C" fn add(
        p: *mut c_void,
        i: usize,
        _: *mut ModuleBuffer,
        _: usize,
        v: u64,
    ) -> MetricsResult {
        with(|e| {
            if e.destroyed.contains(&id(p)) {
                e.violations.push(format!(
                    "increment_counter on stream {} after filter_destroy",
                    id(p)
                ));
            }
            *e.values.entry(i).or_default() += v
        });
        MetricsResult::SUCCESS
    }
    unsafe extern "C" fn set(
        _: *mut c_void,
        i: usize,
        _: *mut ModuleBuffer,
        _: usize,
        v: u64,
    ) -> MetricsResult {
        with(|e| e.values.insert(i, v));
        MetricsResult::SUCCESS
    }
    unsafe extern "C" fn http_callout(
        f: FilterEnvoyPtr,
        out: *mut u64,
        cluster: ModuleBuffer,
        h: *mut ModuleHttpHeader,
        n: usize,
        _: ModuleBuffer,
        _: u64,
    ) -> CalloutInitResult {
        // SAFETY: valid views from the module.
        let (cluster, h) = unsafe { (text(cluster), pairs(h, n)) };
        let r = with(|e| {
            let cid = e.next() as u64;
            let s = stream_of(e, f, "http_callout")?;
            if s.callout_init != 0 {
                return Some((s.callout_init, 0, None, 0));
            }
            s.callouts.push((cid, cluster, h));
            Some((0, cid, s.inline_status.take(), s.module))
        });
        let Some((init, cid, inline, module)) = r else {
            return CalloutInitResult::CANNOT_CREATE_REQUEST;
        };
        if let Some(status) = inline {
            let hs = [status_header(&status)];
            // SAFETY: the stream's module pointer, alive; views valid for the call.
            reenter(id(f), || unsafe {
                envoy_dynamic_module_on_http_filter_http_callout_done(
                    f,
                    std::ptr::with_exposed_provenance::<c_void>(module),
                    cid,
                    CalloutResult::SUCCESS,
                    hs.as_ptr(),
                    1,
                    std::ptr::null(),
                    0,
                )
            });
        }
        maybe_destroy(f, Inside::HttpCallout);
        // SAFETY: valid out-pointer.
        unsafe { out.write(cid) };
        CalloutInitResult(init)
    }
    unsafe extern "C" fn config_http_callout(
        _: ConfigEnvoyPtr,
        out: *mut u64,
        cluster: ModuleBuffer,
        h: *mut ModuleHttpHeader,
        n: usize,
        _: ModuleBuffer,
        _: u64,
    ) -> CalloutInitResult {
        // SAFETY: valid views from the module.
        let (cluster, h) = unsafe { (text(cluster), pairs(h, n)) };
        let (init, cid, inline, module) = with(|e| {
            let cid = e.next() as u64;
            if e.config_callout_init != 0 {
                return (e.config_callout_init, 0, None, 0);
            }
            e.config_callouts.push((cid, cluster, h));
            (0, cid, e.config_inline_status.take(), e.config_module)
        });
        if let Some(status) = inline {
            let hs = [status_header(&status)];
            // SAFETY: the config's module pointer, alive; views valid for the call.
            unsafe {
                envoy_dynamic_module_on_http_filter_config_http_callout_done(
                    ptr(0xC0),
                    std::ptr::with_exposed_provenance::<c_void>(module),
                    cid,
                    CalloutResult::SUCCESS,
                    hs.as_ptr(),
                    1,
                    std::ptr::null(),
                    0,
                )
            };
        }
        // SAFETY: valid out-pointer.
        unsafe { out.write(cid) };
        CalloutInitResult(init)
    }
    fn status_header(status: &str) -> EnvoyHttpHeader {
        EnvoyHttpHeader {
            key_ptr: ":status".as_ptr().cast(),
            key_length: 7,
            value_ptr: status.as_ptr().cast(),
            value_length: status.len(),
        }
    }

    unsafe extern "C" fn scheduler_new(f: FilterEnvoyPtr) -> SchedulerPtr {
        with(|e| {
            if stream_of(e, f, "scheduler_new").is_none() {
                return std::ptr::null_mut();
            }
            let s = e.next();
            e.schedulers.insert(s, id(f));
            ptr(s)
        })
    }
    unsafe extern "C" fn scheduler_commit(s: SchedulerPtr, event: u64) {
        with(|e| match e.schedulers.get(&id(s)) {
            Some(stream) => {
                let stream = *stream;
                e.stream_events.push((stream, event));
            }
            None => e.violations.push("commit to a deleted scheduler".into()),
        });
    }
    unsafe extern "C" fn scheduler_delete(s: SchedulerPtr) {
        with(|e| {
            if e.schedulers.remove(&id(s)).is_none() {
                e.violations.push("scheduler deleted twice".into());
            }
        });
    }
    unsafe extern "C" fn config_scheduler_new(_: ConfigEnvoyPtr) -> ConfigSchedulerPtr {
        with(|e| {
            e.config_schedulers += 1;
            ptr(e.next())
        })
    }
    unsafe extern "C" fn config_scheduler_commit(_: ConfigSchedulerPtr, event: u64) {
        // The ticker thread commits too: its own (unused) fake state.
        with(|e| e.config_events.push(event));
    }
    unsafe extern "C" fn config_scheduler_delete(_: ConfigSchedulerPtr) {
        with(|e| e.config_schedulers -= 1);
    }

    /// Installs the fake table (once per test process) and resets this thread's fake Envoy.
    pub fn install() {
        let _ = super::install(HostApi {
            log,
            log_enabled,
            is_validation_mode,
            get_headers_size,
            get_headers,
            set_header,
            send_response,
            continue_decoding,
            get_buffer_limit,
            set_buffer_limit,
            get_body_chunks_size,
            get_body_chunks,
            set_filter_state_bytes,
            define_counter: define,
            define_gauge: define,
            increment_counter: add,
            set_gauge: set,
            config_increment_counter: add,
            config_set_gauge: set,
            http_callout,
            config_http_callout,
            scheduler_new,
            scheduler_commit,
            scheduler_delete,
            config_scheduler_new,
            config_scheduler_commit,
            config_scheduler_delete,
        });
        with(|e| {
            *e = FakeEnvoy {
                validation_mode: true,
                ..FakeEnvoy::default()
            }
        });
    }

    /// A configuration as Envoy makes it (`None`: refused).
    pub struct Config(ConfigModulePtr);

    impl Config {
        pub fn new(name: &str, json: &str) -> Option<Config> {
            let b = |s: &str| EnvoyBuffer {
                ptr: s.as_ptr().cast(),
                length: s.len(),
            };
            // SAFETY: buffers valid for the call.
            let p = unsafe {
                envoy_dynamic_module_on_http_filter_config_new(ptr(0xC0), b(name), b(json))
            };
            if !p.is_null() {
                with(|e| e.config_module = p.expose_provenance());
            }
            (!p.is_null()).then_some(Config(p))
        }

        pub fn scheduled(&self, event: u64) {
            // SAFETY: alive until drop.
            unsafe {
                envoy_dynamic_module_on_http_filter_config_scheduled(ptr(0xC0), self.0, event)
            }
        }

        /// Answers a config callout: status and headers, one body chunk.
        pub fn answer(
            &self,
            id: u64,
            result: CalloutResult,
            headers: &[(&str, &str)],
            body: &[u8],
        ) {
            let hs: Vec<EnvoyHttpHeader> = headers
                .iter()
                .map(|(k, v)| EnvoyHttpHeader {
                    key_ptr: k.as_ptr().cast(),
                    key_length: k.len(),
                    value_ptr: v.as_ptr().cast(),
                    value_length: v.len(),
                })
                .collect();
            let chunk = [EnvoyBuffer {
                ptr: body.as_ptr().cast(),
                length: body.len(),
            }];
            // SAFETY: alive; views valid for the call.
            unsafe {
                envoy_dynamic_module_on_http_filter_config_http_callout_done(
                    ptr(0xC0),
                    self.0,
                    id,
                    result,
                    hs.as_ptr(),
                    hs.len(),
                    chunk.as_ptr(),
                    1,
                )
            }
        }

        pub fn stream(&self, headers: &[(&str, &str)]) -> Stream {
            let n = with(|e| {
                let n = e.next() + 0x1000;
                e.streams.insert(
                    n,
                    FakeStream {
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        // Below max_body_bytes, as Envoy's default can be.
                        buffer_limit: 1024,
                        ..FakeStream::default()
                    },
                );
                n
            });
            // SAFETY: the config is alive.
            let p = unsafe { envoy_dynamic_module_on_http_filter_new(self.0, ptr(n)) };
            assert!(!p.is_null());
            with(|e| {
                e.live_streams += 1;
                e.streams.get_mut(&n).expect("stream").module = p.expose_provenance()
            });
            Stream { n, p }
        }

        /// A stream whose module pointer is NULL (as if `filter_new` had given none).
        pub fn unknown_stream(&self, headers: &[(&str, &str)]) -> Stream {
            let s = self.stream(headers);
            // Envoy's side stays; the module's stream is freed now, and hooks get NULL.
            // SAFETY: from filter_new, destroyed once.
            unsafe { envoy_dynamic_module_on_http_filter_destroy(s.p) };
            Stream {
                n: s.n,
                p: std::ptr::null(),
            }
        }
    }

    impl Drop for Config {
        fn drop(&mut self) {
            // SAFETY: from config_new, destroyed once.
            unsafe { envoy_dynamic_module_on_http_filter_config_destroy(self.0) }
        }
    }

    /// A stream as Envoy drives it.
    pub struct Stream {
        pub n: usize,
        p: FilterModulePtr,
    }

    impl Stream {
        pub fn fake<R>(&self, f: impl FnOnce(&mut FakeStream) -> R) -> R {
            with(|e| f(e.streams.get_mut(&self.n).expect("stream")))
        }

        pub fn headers(&self, end_of_stream: bool) -> HeadersStatus {
            envoy_dynamic_module_on_http_filter_request_headers(ptr(self.n), self.p, end_of_stream)
        }

        /// One body frame; buffered as Envoy would when the filter says so.
        pub fn body(&self, chunk: &[u8], end_of_stream: bool) -> BodyStatus {
            self.fake(|s| s.received = chunk.to_vec());
            let r = envoy_dynamic_module_on_http_filter_request_body(
                ptr(self.n),
                self.p,
                end_of_stream,
            );
            self.fake(|s| {
                let frame = std::mem::take(&mut s.received);
                if r == BodyStatus::STOP_ITERATION_AND_BUFFER {
                    s.buffered.extend(frame);
                }
            });
            r
        }

        /// Trailers end the request (Envoy's map, as the stream has it: none unless set).
        pub fn trailers(&self) -> TrailersStatus {
            self.fake(|s| {
                s.trailers.get_or_insert_with(Vec::new);
            });
            envoy_dynamic_module_on_http_filter_request_trailers(ptr(self.n), self.p)
        }

        /// These trailers end the request.
        pub fn trailers_of(&self, trailers: &[(&str, &str)]) -> TrailersStatus {
            self.fake(|s| {
                s.trailers = Some(
                    trailers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            });
            self.trailers()
        }

        /// Runs the scheduler events committed to this stream.
        pub fn run_events(&self) -> usize {
            let mine: Vec<u64> = with(|e| {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    e.stream_events.drain(..).partition(|(s, _)| *s == self.n);
                e.stream_events = rest;
                mine.into_iter().map(|(_, ev)| ev).collect()
            });
            for ev in &mine {
                envoy_dynamic_module_on_http_filter_scheduled(ptr(self.n), self.p, *ev);
            }
            mine.len()
        }

        pub fn callout_done(
            &self,
            id: u64,
            result: CalloutResult,
            status: Option<&str>,
            body: &[u8],
        ) {
            let hs: Vec<EnvoyHttpHeader> = status
                .iter()
                .map(|v| EnvoyHttpHeader {
                    key_ptr: ":status".as_ptr().cast(),
                    key_length: 7,
                    value_ptr: v.as_ptr().cast(),
                    value_length: v.len(),
                })
                .collect();
            let chunk = [EnvoyBuffer {
                ptr: body.as_ptr().cast(),
                length: body.len(),
            }];
            // SAFETY: alive; views valid for the call.
            unsafe {
                envoy_dynamic_module_on_http_filter_http_callout_done(
                    ptr(self.n),
                    self.p,
                    id,
                    result,
                    hs.as_ptr(),
                    hs.len(),
                    chunk.as_ptr(),
                    1,
                )
            }
        }

        /// Envoy completes the stream (the module's state lives on until `destroy`).
        pub fn stream_complete(&self) {
            envoy_dynamic_module_on_http_filter_stream_complete(ptr(self.n), self.p);
        }

        /// Envoy completes and destroys the stream (unless it did already, inline).
        pub fn complete(self) -> FakeStream {
            if !with(|e| e.destroyed.contains(&self.n)) {
                envoy_dynamic_module_on_http_filter_stream_complete(ptr(self.n), self.p);
                with(|e| e.destroyed.insert(self.n));
                // SAFETY: from filter_new, destroyed once.
                unsafe { envoy_dynamic_module_on_http_filter_destroy(self.p) };
            }
            with(|e| e.streams.remove(&self.n).expect("stream"))
        }
    }
}
