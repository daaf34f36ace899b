//! The context commands: `put`, `get`, `delete`, `list`, `history`,
//! `search`, `resolve`, `links`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use slurp_node::client::ErrorKind;
use slurp_protocol::api::{ContextResponse, PutContextRequest, SearchRequest};
use slurp_protocol::{ContextNode, RoleName, Temporal, UcxlAddress};

use super::output::{client, plural, print};
use crate::{ClientArgs, PutArgs, SearchArgs, invalid, usage};

/// A context as `slurp get` shows it.
fn show_context(v: &ContextResponse) -> String {
    let ctx = &v.context;
    let mut out = format!(
        "{}\n  version {} (#{})\n  summary: {}",
        v.address, v.version, v.ordinal, ctx.summary
    );
    if !ctx.purpose.is_empty() {
        out.push_str(&format!("\n  purpose: {}", ctx.purpose));
    }
    for (label, items) in [("tags", &ctx.tags), ("technologies", &ctx.technologies)] {
        if !items.is_empty() {
            out.push_str(&format!("\n  {label}: {}", items.join(", ")));
        }
    }
    for i in &ctx.insights {
        out.push_str(&format!("\n  - {i}"));
    }
    let roles: Vec<&str> = ctx.encrypted_for.iter().map(RoleName::as_str).collect();
    out.push_str(&format!("\n  for: {}", roles.join(", ")));
    out
}

fn read_context_file(path: &PathBuf) -> Result<ContextNode> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?
    };
    serde_json::from_str(&text)
        .map_err(|e| invalid(format!("{} is not a context: {e}", path.display())))
}

/// Adds the items of `more` that `list` lacks, keeping the order.
fn add_missing(list: &mut Vec<String>, more: Vec<String>) {
    for m in more {
        if !list.contains(&m) {
            list.push(m);
        }
    }
}

/// Applies the flags of `put` to a context: the scalar fields given
/// replace, the list items are added, `--roles` replaces the roles.
fn apply_put_flags(ctx: &mut ContextNode, a: &PutArgs) -> Result<()> {
    if let Some(s) = &a.summary {
        ctx.summary = s.clone();
    }
    if let Some(p) = &a.purpose {
        ctx.purpose = p.clone();
    }
    add_missing(&mut ctx.tags, a.tags.clone());
    add_missing(&mut ctx.technologies, a.technologies.clone());
    add_missing(&mut ctx.insights, a.insights.clone());
    if !a.roles.is_empty() {
        ctx.encrypted_for = a
            .roles
            .iter()
            .map(|r| RoleName::new(r.trim()))
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}

/// `slurp put`.
pub async fn put(a: PutArgs) -> Result<()> {
    const CMD: &[&str] = &["put"];
    let client = client(&a.c)?;
    // With --merge: read the latest version, apply the flags to it and
    // write it back only if it is still the latest (compare-and-set).
    let attempts = if a.merge { 5 } else { 1 };
    let mut last_conflict = None;
    for _ in 0..attempts {
        let (mut ctx, expect_latest) = match (&a.file, &a.address) {
            (Some(f), _) => {
                let mut ctx = read_context_file(f)?;
                if let Some(addr) = &a.address {
                    ctx.address = UcxlAddress::parse(addr)?;
                    if ctx.path.is_empty() {
                        ctx.path = ctx.address.path.clone();
                    }
                }
                (ctx, None)
            }
            (None, Some(addr)) => {
                let address = UcxlAddress::parse(addr)?;
                let current = if a.merge {
                    let latest = address.with_temporal(Temporal::Latest).to_string();
                    match client.get_context(&latest, None).await {
                        Ok(v) => Some(v),
                        Err(e) if e.kind == ErrorKind::NotFound => None,
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    None
                };
                match current {
                    Some(v) => {
                        let mut ctx = v.context;
                        ctx.address = address.clone();
                        ctx.version = None;
                        (ctx, Some(v.version))
                    }
                    None => {
                        let summary = a.summary.clone().ok_or_else(|| {
                            usage(
                                CMD,
                                if a.merge {
                                    "there is no context to merge into at this address: --summary is required to create one"
                                } else {
                                    "--summary is required without --file"
                                },
                            )
                        })?;
                        let role = address.role.as_str().to_string();
                        let ctx = ContextNode::new(address, summary, vec![RoleName::new(role)?]);
                        (ctx, a.merge.then(String::new))
                    }
                }
            }
            (None, None) => {
                return Err(usage(
                    CMD,
                    "give an address with --summary, or --file (see `slurp put --help`)",
                ));
            }
        };
        apply_put_flags(&mut ctx, &a)?;
        let req = PutContextRequest {
            context: ctx,
            change_reason: a.reason.clone(),
            ttl_secs: a.ttl,
            expect_latest,
        };
        match client.put(&req, a.w).await {
            Ok(v) => {
                return print(&a.c, &v, |v| {
                    format!("stored {} version {}", v.address, v.version)
                });
            }
            Err(e) if a.merge && e.code == "conflict" => last_conflict = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_conflict
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("the merge did not complete"))
        .context(format!(
            "other writes kept landing first; gave up after {attempts} attempts"
        )))
}

/// `slurp get`.
pub async fn get(address: String, r: Option<usize>, c: ClientArgs) -> Result<()> {
    UcxlAddress::parse(&address)?;
    let v = client(&c)?.get_context(&address, r).await?;
    print(&c, &v, show_context)
}

/// `slurp delete`.
pub async fn delete(address: String, w: Option<usize>, c: ClientArgs) -> Result<()> {
    let v = client(&c)?.delete_context(&address, w).await?;
    print(&c, &v, |v| format!("deleted (tombstone {})", v.version))
}

/// `slurp list`.
pub async fn list(
    pattern: String,
    limit: usize,
    after: Option<String>,
    c: ClientArgs,
) -> Result<()> {
    let v = client(&c)?.list(&pattern, limit, after.as_deref()).await?;
    print(&c, &v, |v| {
        let mut out: Vec<String> = v
            .entries
            .iter()
            .map(|e| {
                format!(
                    "{}  ({})",
                    e.address,
                    plural(e.versions, "version", "versions")
                )
            })
            .collect();
        if let Some(n) = &v.next {
            out.push(format!("more: --after '{n}'"));
        }
        out.join("\n")
    })
}

/// `slurp history`.
pub async fn history(address: String, c: ClientArgs) -> Result<()> {
    let v = client(&c)?.history(&address).await?;
    print(&c, &v, |v| {
        v.versions
            .iter()
            .map(|e| {
                format!(
                    "#{} {}{}",
                    e.ordinal,
                    e.version,
                    if e.tombstone { "  (deleted)" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// `slurp search`.
pub async fn search(a: SearchArgs) -> Result<()> {
    let req = SearchRequest {
        text: a.text.join(" "),
        tags: a.tags,
        technologies: a.technologies,
        path_prefix: a.path,
        limit: a.limit,
        offset: a.offset,
    };
    let v = client(&a.c)?.search(&req).await?;
    let offset = a.offset as u64;
    print(&a.c, &v, |v| {
        let nodes = v.nodes as u64;
        let total = v.total_hits;
        let shown = v.hits.len() as u64;
        let mut out = format!(
            "{} ({} µs{})\n",
            plural(total, "hit", "hits"),
            v.took_micros,
            if nodes > 1 {
                format!(", {nodes} nodes")
            } else {
                String::new()
            }
        );
        if shown > 0 && (offset > 0 || shown < total) {
            let first = offset + 1;
            let last = offset + shown;
            out.push_str(&format!("showing {first}-{last} of {total}"));
            if last < total {
                out.push_str(&format!(" (next: --offset {last})"));
            }
            out.push('\n');
        }
        if v.partial {
            out.push_str(&format!(
                "warning: partial results, {} partitions had no reachable replica\n",
                v.missing_partitions.len()
            ));
        }
        for w in &v.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        for h in &v.hits {
            // The score as its JSON text reads as a double, as it always
            // was shown.
            let score: f64 = h.score.to_string().parse().unwrap_or(0.0);
            out.push_str(&format!(
                "{:>6.2}  {}\n        {}\n",
                score, h.address, h.context.summary
            ));
        }
        for (label, facets) in [
            ("tags", &v.facets.tags),
            ("technologies", &v.facets.technologies),
        ] {
            let f: Vec<String> = facets
                .iter()
                .map(|f| format!("{} ({})", f.value, f.count))
                .collect();
            if !f.is_empty() {
                out.push_str(&format!("{label}: {}\n", f.join(", ")));
            }
        }
        out.trim_end().to_string()
    })
}

/// `slurp resolve`.
pub async fn resolve(address: String, c: ClientArgs) -> Result<()> {
    let v = client(&c)?.resolve(&address).await?;
    print(&c, &v, |v| {
        let mut out = format!(
            "{}\n  summary: {}\n    from {}",
            v.address, v.summary, v.summary_source
        );
        if !v.purpose.is_empty() {
            out.push_str(&format!(
                "\n  purpose: {}\n    from {}",
                v.purpose,
                v.purpose_source.as_deref().unwrap_or("")
            ));
        }
        for (field, items) in [
            ("technologies", &v.technologies),
            ("tags", &v.tags),
            ("insights", &v.insights),
        ] {
            for f in items {
                out.push_str(&format!("\n  {field}: {}  (from {})", f.value, f.source));
            }
        }
        out
    })
}

/// `slurp links`.
pub async fn links(address: String, hops: u32, c: ClientArgs) -> Result<()> {
    let v = client(&c)?.links(&address, hops).await?;
    print(&c, &v, |v| {
        let mut out: Vec<String> = v
            .nodes
            .iter()
            .map(|n| format!("[{}] {}  {}", n.hops, n.address, n.summary))
            .collect();
        for e in &v.edges {
            out.push(format!("{} -> {}", e.from, e.to));
        }
        out.join("\n")
    })
}
