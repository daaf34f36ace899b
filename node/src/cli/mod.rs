//! The client commands of the `slurp` binary, one module per command
//! group.
//!
//! `main.rs` parses the command line and classifies errors; each module
//! here sends a group's requests through the typed client
//! (`slurp_node::client`) and prints the typed answer, as text or, under
//! `--json`, as the answer itself. Nothing here is part of the library.

pub mod audit;
pub mod batch;
pub mod cluster;
pub mod context;
pub mod keys;
pub mod node;
pub mod output;
pub mod status;
pub mod token;
