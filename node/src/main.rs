//! The `slurp` binary: runs a node and, from the same executable, talks to
//! one as a client.

use anyhow::Result;
use clap::Parser;

/// A peer-to-peer, encrypted store for codebase context.
#[derive(Parser, Debug)]
#[command(name = "slurp", version, about)]
struct Cli {}

fn main() -> Result<()> {
    let _cli = Cli::parse();
    println!("slurp {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
