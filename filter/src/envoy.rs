//! The proxy-wasm glue: a root context that loads the configuration and defines the stats,
//! and an HTTP context per request that hands everything to [`crate::request_filter`].

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

use crate::config::Config;
use crate::host::Host;
use crate::keyring::KeyRing;
use crate::request_filter::{self, Action as FilterAction};
use crate::stats::Counter;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::<Root>::default() });
}}

/// What every request of this plugin shares.
struct Shared {
    config: Config,
    keys: KeyRing,
    /// Metric ids, indexed by [`Counter::index`].
    metrics: Vec<u32>,
}

#[derive(Default)]
struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

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
        let mut metrics = Vec::new();
        for c in Counter::all() {
            metrics
                .push(hostcalls::define_metric(MetricType::Counter, &c.name()).unwrap_or(u32::MAX));
        }
        let keys = config.pinned_keys();
        self.shared = Some(Rc::new(Shared {
            config,
            keys,
            metrics,
        }));
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Request { shared }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    shared: Rc<Shared>,
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        let mut host = EnvoyHost {
            metrics: &shared.metrics,
        };
        match request_filter::on_request_headers(&mut host, &shared.config, &shared.keys) {
            FilterAction::Continue => Action::Continue,
            FilterAction::Stop => Action::Pause,
        }
    }
}

/// [`Host`] over the proxy-wasm host calls of the current request.
struct EnvoyHost<'a> {
    metrics: &'a [u32],
}

impl Host for EnvoyHost<'_> {
    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn remove_request_header(&mut self, name: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
    }

    fn set_request_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn now(&self) -> i64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn send_response(&mut self, status: u16, headers: &[(String, String)], body: &str) {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let _ = hostcalls::send_http_response(u32::from(status), headers, Some(body.as_bytes()));
    }

    fn increment(&mut self, counter: Counter) {
        if let Some(&id) = self.metrics.get(counter.index()) {
            if id != u32::MAX {
                let _ = hostcalls::increment_metric(id, 1);
            }
        }
    }

    fn set_log_value(&mut self, key: &str, value: &str) {
        let _ = hostcalls::set_property(vec![key], Some(value.as_bytes()));
    }
}
