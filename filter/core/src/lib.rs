//! Web Bot Auth verifier core: RFC 9421 HTTP Message Signatures as profiled for bots and
//! agents. Pure logic, no host ABI: tested natively and in wasm32, and driven by the Envoy
//! front ends (`filter/wasm`, `filter/native`) through [`host::Host`].
//!
//! What a front end uses:
//! - [`config::Config`]: the plugin configuration, parsed and checked once.
//! - [`request_filter`]: one request's decisions (strip, verify, wait for keys, check the body,
//!   check replays, annotate, enforce) over [`host::Host`], [`keys::Keys`] and
//!   [`replay::ReplayGuard`], returning what the host must do next.
//! - [`fetch_coordinator`]: key fetches and the requests waiting for them, as commands.
//! - [`replay_store`]: the question to the fleet's replay store and its answer.
//! - [`stats::Counter`]: every stat, named once.
//!
//! The rest is the verifier itself (structured fields, signature base, algorithms, key
//! directories) and what the `wba` tool shares with it (signing, key files).

pub mod agent_url;
pub mod algorithm;
pub mod base;
pub mod component;
pub mod config;
pub mod content_digest;
pub mod directory;
#[cfg(feature = "ecdsa")]
pub(crate) mod ecdsa_p256;
pub mod ed25519;
pub mod fetch;
pub mod fetch_coordinator;
pub mod header_map;
pub mod header_prefix;
pub mod host;
pub mod jwk;
pub mod key_cache;
pub mod keyring;
pub mod keys;
pub mod limits;
pub mod pipeline;
pub mod plan;
pub mod policy;
pub mod private_key;
pub mod replay;
pub mod replay_store;
pub mod request;
pub mod request_filter;
#[cfg(feature = "rsa")]
pub mod rsa_pss;
pub(crate) mod sf_dictionary;
pub mod shared;
pub mod sign;
pub mod signature;
pub mod signature_agent;
pub mod signature_input;
pub mod stats;
pub mod verdict;
pub mod verify;
