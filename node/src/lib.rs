//! The slurp node: the composition of the protocol, storage, crypto and
//! index crates into a running service, and the client that talks to it.

pub mod api;
pub mod audit;
pub mod bench;
pub mod cache;
pub mod chaos;
pub mod client;
pub mod cluster;
pub mod config;
pub mod error;
pub mod history;
pub mod inbound;
pub mod keys;
pub mod maintenance;
pub mod metrics;
pub mod net;
pub mod node;
pub mod replication;
pub mod rotation;
pub mod store;
pub mod tokens;
pub mod workers;
