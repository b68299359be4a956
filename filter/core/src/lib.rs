//! Web Bot Auth verifier core: RFC 9421 HTTP Message Signatures as profiled for bots and
//! agents. Pure logic, no host ABI: tested natively and in wasm32, and driven by the Envoy
//! front ends (`filter/wasm`, `filter/native`) through [`host::Host`].
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod agent_url;
pub mod algorithm;
pub mod base;
pub mod component;
pub mod config;
pub mod content_digest;
pub mod directory;
#[cfg(feature = "ecdsa")]
pub mod ecdsa_p256;
pub mod ed25519;
pub mod fetch;
pub mod fetch_coordinator;
pub mod header_map;
pub mod host;
pub mod jwk;
pub mod key_cache;
pub mod keyring;
pub mod keys;
pub mod plan;
pub mod policy;
pub mod private_key;
pub mod replay;
pub mod replay_store;
pub mod request;
pub mod request_filter;
#[cfg(feature = "rsa")]
pub mod rsa_pss;
pub mod sf_dictionary;
pub mod shared;
pub mod sign;
pub mod signature;
pub mod signature_agent;
pub mod signature_input;
pub mod stats;
pub mod verdict;
pub mod verify;
