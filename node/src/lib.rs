//! The slurp node: the composition of the protocol, storage, crypto and
//! index crates into a running service, and the client that talks to it.

pub mod cache;
pub mod config;
pub mod metrics;
pub mod tokens;
pub mod workers;
