//! The host calls the request path needs, behind a trait: Envoy implements it through
//! proxy-wasm, tests with a recording double.

use crate::stats::Counter;

/// What the filter asks of its host for one request.
pub trait Host {
    /// All request headers, pseudo-headers (`:method`, `:path`...) included, names lowercase.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Removes every line of a request header.
    fn remove_request_header(&mut self, name: &str);
    /// Sets (replaces) a request header.
    fn set_request_header(&mut self, name: &str, value: &str);
    /// Wall-clock time in unix seconds.
    fn now(&self) -> i64;
    /// Answers the request locally instead of forwarding it.
    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str);
    fn increment(&mut self, counter: Counter);
    /// Records a value for access logs (filter state).
    fn set_log_value(&mut self, key: &str, value: &str);
}
