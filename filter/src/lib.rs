//! Web Bot Auth verifier core: RFC 9421 HTTP Message Signatures as profiled for bots and
//! agents. Pure logic, no proxy-wasm calls, so it is tested natively and in wasm32.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod agent_url;
pub mod base;
pub mod component;
pub mod jwk;
pub mod request;
pub mod signature;
pub mod signature_agent;
pub mod signature_input;
pub mod keyring;
pub mod policy;
pub mod verdict;
pub mod verify;
pub mod sign;
pub mod directory;
pub mod config;
pub mod plan;
pub mod host;
pub mod request_filter;
pub mod stats;

#[cfg(feature = "envoy")]
mod envoy;
