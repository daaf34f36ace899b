//! The node's own state as a client sees it: `status`, `workers`,
//! `health`, `whoami`.

use std::time::Duration;

use anyhow::Result;
use slurp_protocol::api::WorkerStatus;

use super::output::{client, or_null, print};
use crate::ClientArgs;

/// `slurp status`.
pub async fn status(c: ClientArgs) -> Result<()> {
    let v = client(&c)?.status().await?;
    print(&c, &v, |v| {
        let mut out = format!(
            "slurp {} writer {}\ncluster: {}\nstore: {} keys, {} versions, {} bytes\nindex: {} docs, {} segments\ncache: {} entries, {} bytes\nworkers:",
            v.version,
            v.writer_id,
            match v.cluster.layout_version {
                0 => "no layout (alone)".to_string(),
                l => format!(
                    "layout v{l}, {} members{}",
                    v.cluster.members,
                    if v.cluster.member {
                        ""
                    } else {
                        ", not one of them"
                    }
                ),
            },
            v.store.keys,
            v.store.versions,
            v.store.file_bytes,
            or_null(v.index.docs),
            or_null(v.index.segments),
            v.cache.entries,
            v.cache.bytes,
        );
        out.push_str(&workers_text(&v.workers));
        for b in &v.batches {
            out.push_str(&format!(
                "\nbatch {} {}: {}/{} done, {} failed{}",
                b.id,
                b.kind,
                b.done,
                b.total,
                b.failed,
                if b.finished { "" } else { " (running)" }
            ));
        }
        out
    })
}

/// `slurp workers`: runs one first with `--run NAME`.
pub async fn workers(run: Option<String>, c: ClientArgs) -> Result<()> {
    let client = client(&c)?;
    if let Some(name) = run {
        client.run_worker(&name).await?;
    }
    let v = client.workers().await?;
    print(&c, &v, |v| {
        workers_text(&v.workers)
            .trim_start_matches('\n')
            .to_string()
    })
}

/// `slurp health`.
pub async fn health(c: ClientArgs) -> Result<()> {
    let v = client(&c)?.health().await?;
    print(&c, &v, |v| {
        let mut out = format!("ready: {}", v.ready);
        for (k, c) in v.components.named() {
            out.push_str(&format!(
                "\n  {k:<6} {}  {}",
                if c.ok { "ok " } else { "BAD" },
                c.detail
            ));
        }
        out
    })
}

/// `slurp whoami`.
pub async fn whoami(c: ClientArgs) -> Result<()> {
    let v = client(&c)?.whoami().await?;
    print(&c, &v, |v| {
        format!("token {} role {}", v.token_id, v.role.as_str())
    })
}

/// The workers as an aligned table (one leading newline per row, so it
/// follows a heading), with each worker's last note or error under it.
pub fn workers_text(workers: &[WorkerStatus]) -> String {
    let rows: Vec<[String; 6]> = workers
        .iter()
        .map(|w| {
            let next = match w.next_run_ms {
                Some(at) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    let secs = at.saturating_sub(now).div_ceil(1000);
                    humantime::format_duration(Duration::from_secs(secs)).to_string()
                }
                None => "-".into(),
            };
            [
                w.name.clone(),
                w.state.as_str().to_string(),
                w.runs.to_string(),
                w.items_total.to_string(),
                w.errors.to_string(),
                next,
            ]
        })
        .collect();
    let header = ["NAME", "STATE", "RUNS", "ITEMS", "ERRORS", "NEXT RUN IN"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        format!(
            "\n  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4],
        )
        .trim_end()
        .to_string()
    };
    let mut out = line(header);
    for (r, w) in rows.iter().zip(workers) {
        out.push_str(&line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]));
        if let Some(e) = &w.last_error {
            out.push_str(&format!("\n      last error: {e}"));
        }
    }
    out
}
