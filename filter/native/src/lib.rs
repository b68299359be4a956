//! Web Bot Auth for Envoy as a native dynamic module (Envoy 1.40, dynamic-modules ABI
//! "v0.2.0"): the same filter as the proxy-wasm module (`filter/wasm`), every decision in the
//! `wba-filter` core, loaded by Envoy as `libweb_bot_auth.so`:
//!
//! ```yaml
//! - name: envoy.filters.http.dynamic_modules
//!   typed_config:
//!     "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
//!     dynamic_module_config: {name: web_bot_auth, do_not_close: true}
//!     filter_name: web_bot_auth
//!     filter_config: {"@type": type.googleapis.com/google.protobuf.StringValue, value: '{"mode": "enforce", ...}'}
//! ```
//!
//! with `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` naming the folder of the `.so` (built by
//! `cargo build -p wba-filter-native --profile native`: `target/native/libweb_bot_auth.so`).
//! `do_not_close` keeps the module mapped while its key refresh thread may run.
//!
//! - The configuration is the wasm plugin's JSON; a `{"role": "hold"}` filter (the wasm
//!   module's companion) is accepted and does nothing: this module holds signed bodies itself.
//! - Stats have the wasm module's names under Envoy's `dynamicmodulescustom.` prefix (e.g.
//!   `dynamicmodulescustom.web_bot_auth.outcome.verified`); access-log values are filter state
//!   under the wasm module's keys (`%FILTER_STATE(wasm.wba.result:PLAIN)%`, `wasm.wba.reason`,
//!   `wasm.wba.agent`, `wasm.wba.key_id`, `wasm.wba.directory_proof`).
//! - It refuses to load in any Envoy whose dynamic-module callbacks are not 1.40.0's
//!   ([`abi_check`]), with one line on stderr.
//!
//! Layout: [`abi`] (the C ABI; all the `unsafe`), [`abi_check`] and [`elf`] (the load-time
//! check), [`config`] (what a filter configuration's streams share), [`stream`] (one request),
//! [`fetcher`] (key fetches on Envoy's main thread).

pub mod abi;
pub mod abi_check;
pub mod config;
pub mod elf;
pub mod fetcher;
pub mod stream;

#[cfg(test)]
mod no_panic;
