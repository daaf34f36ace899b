//! Bulk commands: `batch import` (JSON lines in, batched writes) and
//! `export` (a listing walked page by page, read in batches, JSON lines
//! out).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use slurp_protocol::ContextNode;
use slurp_protocol::api::{BatchGetRequest, BatchPutItem, BatchPutRequest, ItemError};

use super::output::{client, plural, print};
use crate::{ClientArgs, invalid};

/// Reads an import file: one context per line, or one batch item
/// (`{"context": ..., "roles": [...], "change_reason": ..., "ttl_secs": N}`)
/// per line; blank lines are skipped. Every line is checked before
/// anything is sent, and every bad line is named.
fn read_import_file(file: &PathBuf) -> Result<Vec<(usize, BatchPutItem)>> {
    let f = std::fs::File::open(file)
        .map_err(|e| invalid(format!("cannot read {}: {e}", file.display())))?;
    let mut items = Vec::new();
    let mut bad = Vec::new();
    for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| invalid(format!("{}:{}: {e}", file.display(), n + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(&line).and_then(|v| {
            if v.get("context").is_some() {
                serde_json::from_value::<BatchPutItem>(v)
            } else {
                serde_json::from_value::<ContextNode>(v).map(|context| BatchPutItem {
                    context,
                    roles: None,
                    change_reason: None,
                    ttl_secs: None,
                })
            }
        });
        match parsed {
            Ok(item) => items.push((n + 1, item)),
            Err(e) => {
                // serde_json counts lines within the one line it was given.
                let what = e.to_string();
                let what = what.split(" at line ").next().unwrap_or(&what).to_string();
                let col = if e.column() > 0 {
                    format!(" (column {})", e.column())
                } else {
                    String::new()
                };
                bad.push(format!("{}:{}: {what}{col}", file.display(), n + 1));
            }
        }
    }
    if !bad.is_empty() {
        let more = bad.len().saturating_sub(20);
        let mut msg = format!(
            "{} of {} is not a context (nothing was imported):\n  {}",
            plural(bad.len() as u64, "line", "lines"),
            file.display(),
            bad.iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
        if more > 0 {
            msg.push_str(&format!("\n  ... and {more} more"));
        }
        return Err(invalid(msg));
    }
    Ok(items)
}

/// A line of the import file that could not be stored.
#[derive(Serialize)]
struct LineError {
    line: usize,
    error: ItemError,
}

/// What `batch import` prints.
#[derive(Serialize)]
struct ImportSummary {
    stored: usize,
    failed: usize,
    errors: Vec<LineError>,
}

/// `slurp batch import`.
pub async fn import(file: PathBuf, chunk: usize, atomic: bool, c: ClientArgs) -> Result<()> {
    let items = read_import_file(&file)?;
    let client = client(&c)?;
    let bar = indicatif::ProgressBar::new(items.len() as u64);
    if c.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {rate} eta {eta}")
            .map(|s| {
                s.with_key(
                    "rate",
                    |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", st.per_sec());
                    },
                )
            })
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut errors = Vec::new();
    for part in items.chunks(chunk.max(1)) {
        let req = BatchPutRequest {
            items: part.iter().map(|(_, i)| i.clone()).collect(),
            atomic,
        };
        let v = client.batch_put(&req).await?;
        ok += v.succeeded;
        failed += v.failed;
        for r in v.results {
            if let Some(error) = r.error {
                let line = part.get(r.index).map(|(n, _)| *n).unwrap_or(0);
                errors.push(LineError { line, error });
            }
        }
        bar.inc(part.len() as u64);
    }
    bar.finish_and_clear();
    let v = ImportSummary {
        stored: ok,
        failed,
        errors,
    };
    let file_name = file.display().to_string();
    print(&c, &v, |v| {
        let mut out = format!(
            "imported {}, {} failed",
            plural(ok as u64, "context", "contexts"),
            v.failed
        );
        for e in v.errors.iter().take(20) {
            out.push_str(&format!("\n  {file_name}:{}: {}", e.line, e.error.message));
        }
        out
    })?;
    if failed > 0 {
        return Err(invalid(format!(
            "{} of {} could not be stored",
            plural(failed as u64, "line", "lines"),
            file.display()
        )));
    }
    Ok(())
}

/// What `export --output FILE` prints.
#[derive(Serialize)]
struct ExportSummary {
    exported: u64,
    file: String,
}

/// `slurp export`.
pub async fn export(pattern: String, output: Option<PathBuf>, c: ClientArgs) -> Result<()> {
    let client = client(&c)?;
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let bar = indicatif::ProgressBar::new_spinner();
    if output.is_none() || c.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut after: Option<String> = None;
    let mut n = 0u64;
    loop {
        let page = client.list(&pattern, 500, after.as_deref()).await?;
        let addresses: Vec<String> = page.entries.into_iter().map(|e| e.address).collect();
        if !addresses.is_empty() {
            let got = client.batch_get(&BatchGetRequest { addresses }).await?;
            for ok in got.results.into_iter().filter_map(|r| r.ok) {
                // A line is the context as written, without the version
                // the store gave it; keys sorted.
                let mut ctx = serde_json::to_value(&ok.context)?;
                if let Some(o) = ctx.as_object_mut() {
                    o.remove("version");
                }
                writeln!(out, "{}", serde_json::to_string(&ctx)?)?;
                n += 1;
                bar.set_message(format!("{n} contexts"));
                bar.tick();
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    if let Some(p) = &output {
        let v = ExportSummary {
            exported: n,
            file: p.display().to_string(),
        };
        print(&c, &v, |_| {
            format!(
                "exported {} to {}",
                plural(n, "context", "contexts"),
                p.display()
            )
        })?;
    }
    Ok(())
}
