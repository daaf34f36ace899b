//! How the CLI writes its answers: text for people, or under `--json` the
//! typed answer as pretty JSON, and the small text helpers the command
//! groups share.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use slurp_node::client::Client;

use crate::ClientArgs;

/// The client of the nodes `c` names.
pub fn client(c: &ClientArgs) -> Result<Client> {
    Ok(Client::with_endpoints(&c.node, c.token.clone(), c.timeout)?)
}

/// Writes a line to standard output. A closed pipe is an ordinary end for
/// a Unix tool (`slurp ... | head -1`): it comes back as a `BrokenPipe`
/// error, which `main` turns into a quiet death by SIGPIPE.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        o.write_all(b"\n")?;
    }
    o.flush()
}

/// Prints `v` as text, or as JSON under `--json`.
pub fn print<T: Serialize>(c: &ClientArgs, v: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    print_as(c.json, v, text)
}

/// Prints `v` as JSON when `json`, else the text `text` makes of it
/// (nothing when that is empty).
///
/// The JSON goes through `serde_json::Value`, so its keys are sorted as
/// they always were, whatever the order of the type's fields.
pub fn print_as<T: Serialize>(json: bool, v: &T, text: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        out(&serde_json::to_string_pretty(&serde_json::to_value(v)?)?)?;
    } else {
        let t = text(v);
        if !t.is_empty() {
            out(&t)?;
        }
    }
    Ok(())
}

/// `1 hit`, `2 hits`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A value as the text output shows it: `null` when absent.
pub fn or_null<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |v| v.to_string())
}
