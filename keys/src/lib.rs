//! The `wba` tool for agent developers: generate a key, publish its directory, sign requests,
//! and explain why a request does or does not verify; and `wba replay-server`, replay protection
//! across a fleet of Envoys on Redis. Every protocol step is the verifier
//! core's (`wba_filter`); this crate reads files, talks HTTP and prints.

pub mod directory;
pub mod explain;
pub mod keyfile;
pub mod rawrequest;
pub mod replay_server;
pub mod request;
pub mod serve;
pub mod sign;
