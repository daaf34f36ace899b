//! `slurp chaos`: a bounded, seeded workload of puts, deletes and reads
//! over the HTTP APIs of several nodes, recorded as a history and checked
//! with [`crate::history::check`] once the nodes have converged.
//!
//! It is the client half of the fault-injection suite with real processes
//! (`testnet/chaos.sh`, `docs/reliability.md`): while it runs, a fault loop
//! kills, stops and restarts the nodes. Every operation goes to one node,
//! chosen at random, with no failover (the history names the node that
//! coordinated it); an operation that gets no answer is recorded as failed
//! and, for a write, of unknown effect.
//!
//! When the workload is over (and, with `--wait-for FILE`, once that file
//! exists: the fault loop writes it when the faults are over and every
//! node answers again), it polls the nodes until they hold the same data,
//! for at most `--converge-timeout`: every node's whole-store digest
//! (`anti_entropy.store_digest` in `GET /v1/cluster`) and every replica's
//! history of each address of the run (`GET /v1/contexts/history` through
//! that node, which merges its own copy with one other replica's) agree.
//! Equal digests mean equal sets of versions, so the per-node holdings
//! the checker sees are exact once they agree. Then it runs the checker
//! and prints the figures (`--json` for the whole report, `--history
//! FILE` for the history and the final state). The exit status is 0 only
//! when the checker finds nothing.
//!
//! Nothing here trusts what a node answers: every field is looked up and
//! an answer that lacks one is an error of that operation, never a panic.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use slurp_protocol::{ContextNode, RoleName, UcxlAddress, VersionId};

use crate::client::{Client, ClientError, Endpoints, ErrorKind};
use crate::history::{self, CheckReport, FinalState, History, NodeState, Op, OpKind, Outcome};
use crate::store::PutRequest;

/// Flags of `slurp chaos`.
#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// The nodes' APIs, separated by commas; each operation goes to one
    /// of them at random.
    #[arg(long, env = "SLURP_NODE")]
    pub nodes: String,
    /// API token accepted by every node (a role that reads and writes
    /// developer records, e.g. admin).
    #[arg(long, env = "SLURP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seed of the workload: which operations, on which addresses, through
    /// which nodes, with which quorums.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Operations to run at most.
    #[arg(long, default_value_t = 1000)]
    pub ops: usize,
    /// Start no operation after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Distinct addresses the workload writes.
    #[arg(long, default_value_t = 16)]
    pub addresses: usize,
    /// Project segment of the addresses (the seed names the task, so runs
    /// with different seeds never share an address).
    #[arg(long, default_value = "chaos")]
    pub prefix: String,
    /// Per-request timeout (a request to a stopped node fails after it).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// After the workload, wait until this file exists before waiting for
    /// convergence (the fault loop writes it when the faults are over).
    #[arg(long)]
    pub wait_for: Option<PathBuf>,
    /// How long to wait for `--wait-for`, then for the nodes to converge.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub converge_timeout: Duration,
    /// Write the history and the final state here, as JSON.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Print the whole report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One node of the run.
struct Target {
    url: String,
    client: Client,
    peer_id: String,
}

/// What the cluster says of itself.
struct Quorums {
    rf: u8,
    w: u8,
    r: u8,
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur
            .get(p)
            .with_context(|| format!("the answer has no `{}`", path.join(".")))?;
    }
    Ok(cur)
}

fn text(v: &Value, path: &[&str]) -> Result<String> {
    field(v, path)?
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("`{}` is not a string", path.join(".")))
}

fn number(v: &Value, path: &[&str]) -> Result<u64> {
    field(v, path)?
        .as_u64()
        .with_context(|| format!("`{}` is not a number", path.join(".")))
}

/// The version of an answer's `version` field.
fn version_of(v: &Value) -> Result<VersionId> {
    text(v, &["version"])?
        .parse()
        .context("the answer's version is not a version id")
}

/// The tombstone named by a "was deleted" error (`... (tombstone V)`).
fn tombstone_of(e: &ClientError) -> Option<VersionId> {
    let rest = e.message.rsplit_once("(tombstone ")?.1;
    rest.strip_suffix(')')?.parse().ok()
}

/// What a read, or a refused delete, saw.
fn seen(e: ClientError) -> Outcome {
    match (e.kind, e.status) {
        (ErrorKind::NotFound, Some(404)) => Outcome::NotFound,
        (ErrorKind::NotFound, Some(410)) => match tombstone_of(&e) {
            Some(version) => Outcome::Deleted { version },
            None => failed(&e),
        },
        _ => failed(&e),
    }
}

fn failed(e: &dyn std::fmt::Display) -> Outcome {
    Outcome::Failed {
        error: e.to_string(),
    }
}

fn quorum(rng: &mut StdRng) -> Option<u8> {
    match rng.gen_range(0..10) {
        0 => Some(1),
        1 => Some(3),
        _ => None,
    }
}

/// One operation of the workload, run and recorded.
async fn run_op(
    rng: &mut StdRng,
    targets: &[Target],
    addresses: &[String],
    q: &Quorums,
    n: usize,
    start: Instant,
) -> Op {
    let node = rng.gen_range(0..targets.len());
    let address = &addresses[rng.gen_range(0..addresses.len())];
    let kind = match rng.gen_range(0..20) {
        0..=8 => OpKind::Put,
        9..=12 => OpKind::Delete,
        _ => OpKind::Read,
    };
    let (r, w) = (quorum(rng), quorum(rng));
    let client = &targets[node].client;
    let mut query = vec![("address", address.clone())];
    if let Some(r) = r {
        query.push(("r", r.to_string()));
    }
    let invoked = start.elapsed().as_micros() as u64;
    let outcome = match kind {
        OpKind::Put => {
            let path = match w {
                Some(w) => format!("/v1/contexts?w={w}"),
                None => "/v1/contexts".to_string(),
            };
            let roles = vec![RoleName::new("developer").expect("a valid role name")];
            let context = match UcxlAddress::parse(address) {
                Ok(a) => ContextNode::new(a, format!("chaos write {n}"), roles),
                Err(e) => return record(kind, address, node, (r, w), q, invoked, failed(&e)),
            };
            match client.post(&path, &PutRequest::new(context)).await {
                Ok(v) => match version_of(&v) {
                    Ok(version) => Outcome::Written { version },
                    Err(e) => failed(&e),
                },
                Err(e) => failed(&e),
            }
        }
        OpKind::Delete => {
            if let Some(w) = w {
                query.push(("w", w.to_string()));
            }
            match client.delete("/v1/contexts", &query).await {
                Ok(v) => match version_of(&v) {
                    Ok(version) => Outcome::Written { version },
                    Err(e) => failed(&e),
                },
                Err(e) => seen(e),
            }
        }
        OpKind::Read => match client.get("/v1/contexts", &query).await {
            Ok(v) => match version_of(&v) {
                Ok(version) => Outcome::Found { version },
                Err(e) => failed(&e),
            },
            Err(e) => seen(e),
        },
    };
    let mut op = record(kind, address, node, (r, w), q, invoked, outcome);
    op.completed = start.elapsed().as_micros() as u64;
    op
}

fn record(
    kind: OpKind,
    address: &str,
    node: usize,
    (r, w): (Option<u8>, Option<u8>),
    q: &Quorums,
    invoked: u64,
    outcome: Outcome,
) -> Op {
    Op {
        kind,
        address: address.to_string(),
        node: format!("node{}", node + 1),
        r: r.unwrap_or(q.r).min(q.rf),
        w: match kind {
            OpKind::Read => 0,
            _ => w.unwrap_or(q.w).min(q.rf),
        },
        invoked,
        completed: invoked,
        outcome,
    }
}

/// What every node holds of `addresses`, or why it cannot be known now.
async fn final_state(targets: &[Target], addresses: &[String]) -> Result<FinalState> {
    let mut nodes = Vec::new();
    // Which nodes replicate each address, by peer id.
    let mut replicas: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in addresses {
        let v = targets[0]
            .client
            .get("/v1/cluster/placement", &[("address", a.clone())])
            .await
            .with_context(|| format!("placement of {a}"))?;
        let ids = field(&v, &["replicas"])?
            .as_array()
            .context("`replicas` is not a list")?
            .iter()
            .map(|r| text(r, &["id"]))
            .collect::<Result<Vec<_>>>()?;
        replicas.insert(a, ids);
    }
    for (i, t) in targets.iter().enumerate() {
        let status = t
            .client
            .get("/v1/cluster", &[])
            .await
            .with_context(|| format!("cluster status of {}", t.url))?;
        let digest = format!(
            "{}:{}",
            number(&status, &["anti_entropy", "store_versions"])?,
            text(&status, &["anti_entropy", "store_digest"])?
        );
        let mut holdings = BTreeMap::new();
        for a in addresses {
            if !replicas[a.as_str()].contains(&t.peer_id) {
                continue;
            }
            let versions = match t
                .client
                .get("/v1/contexts/history", &[("address", a.clone())])
                .await
            {
                Ok(v) => field(&v, &["versions"])?
                    .as_array()
                    .context("`versions` is not a list")?
                    .iter()
                    .map(|e| {
                        let tomb = field(e, &["tombstone"])?.as_bool().unwrap_or(false);
                        Ok((text(e, &["version"])?, tomb))
                    })
                    .collect::<Result<BTreeMap<_, _>>>()?,
                Err(e) if e.status == Some(404) => BTreeMap::new(),
                Err(e) => return Err(e).with_context(|| format!("history of {a} on {}", t.url)),
            };
            holdings.insert(a.clone(), versions);
        }
        nodes.push(NodeState {
            node: format!("node{}", i + 1),
            digest: Some(digest),
            holdings,
        });
    }
    Ok(FinalState { nodes })
}

fn agree(s: &FinalState) -> bool {
    let first = &s.nodes[0];
    s.nodes
        .iter()
        .all(|n| n.digest == first.digest && n.holdings == first.holdings)
}

/// Runs `slurp chaos`.
pub async fn run(args: ChaosArgs) -> Result<()> {
    if args.clients == 0 || args.addresses == 0 {
        bail!("--clients and --addresses must be positive");
    }
    let endpoints = Endpoints::parse(&args.nodes).map_err(anyhow::Error::msg)?;
    let mut targets = Vec::new();
    let mut quorums = None;
    for url in endpoints.urls() {
        let client = Client::new(url, args.token.clone(), args.timeout)?;
        let status = client
            .get("/v1/cluster", &[])
            .await
            .with_context(|| format!("cluster status of {url}"))?;
        let q = Quorums {
            rf: number(&status, &["replication_factor"])
                .context("a node in a cluster")?
                .try_into()
                .context("replication factor")?,
            w: number(&status, &["write_quorum"])?.try_into()?,
            r: number(&status, &["read_quorum"])?.try_into()?,
        };
        quorums.get_or_insert(q);
        targets.push(Target {
            url: url.clone(),
            client,
            peer_id: text(&status, &["peer_id"])?,
        });
    }
    let q = Arc::new(quorums.context("no node given")?);
    let targets = Arc::new(targets);
    let addresses: Arc<Vec<String>> = Arc::new(
        (0..args.addresses)
            .map(|i| {
                format!(
                    "ucxl://chaos:developer@{}:s{}/*^/src/c{i}.rs",
                    args.prefix, args.seed
                )
            })
            .collect(),
    );
    for a in addresses.iter() {
        UcxlAddress::parse(a).with_context(|| format!("--prefix makes {a}"))?;
    }

    let start = Instant::now();
    let deadline = start + args.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (targets, addresses, q, next) =
            (targets.clone(), addresses.clone(), q.clone(), next.clone());
        let mut rng = StdRng::seed_from_u64(args.seed.wrapping_mul(1_000_003) + c as u64);
        let max = args.ops;
        tasks.push(tokio::spawn(async move {
            let mut ops = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= max || Instant::now() >= deadline {
                    break;
                }
                ops.push(run_op(&mut rng, &targets, &addresses, &q, n, start).await);
            }
            ops
        }));
    }
    let mut ops = Vec::new();
    for t in tasks {
        ops.extend(t.await.context("a client task failed")?);
    }
    ops.sort_by_key(|o| o.invoked);
    let workload = start.elapsed();
    eprintln!(
        "chaos: {} operations in {:.1} s; waiting for the nodes to converge",
        ops.len(),
        workload.as_secs_f64()
    );

    let give_up = Instant::now() + args.converge_timeout;
    if let Some(path) = &args.wait_for {
        while !path.exists() {
            if Instant::now() > give_up {
                bail!(
                    "{} did not appear within {:?}",
                    path.display(),
                    args.converge_timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let healed = Instant::now();
    let history = History {
        replication_factor: q.rf,
        ops,
    };
    let mut last: Result<FinalState> = Err(anyhow::anyhow!("no attempt"));
    let mut converged = None;
    while Instant::now() < give_up {
        last = final_state(&targets, &addresses).await;
        if let Ok(s) = &last
            && agree(s)
        {
            converged = Some(healed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let state = last.context("gathering what the nodes hold")?;
    let report = history::check(&history, &state);
    if let Some(path) = &args.history {
        let doc = json!({"history": history, "final_state": state});
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    print_report(&args, &report, converged, workload)?;
    if converged.is_none() {
        bail!(
            "the nodes did not converge within {:?} of the faults ending",
            args.converge_timeout
        );
    }
    if !report.is_clean() {
        bail!("the checker found violations (seed {})", args.seed);
    }
    Ok(())
}

fn print_report(
    args: &ChaosArgs,
    report: &CheckReport,
    converged: Option<Duration>,
    workload: Duration,
) -> Result<()> {
    let converge_ms = converged.map(|d| d.as_millis() as u64);
    if args.json {
        let doc = json!({
            "seed": args.seed,
            "workload_secs": workload.as_secs_f64(),
            "converge_ms": converge_ms,
            "lost_writes": report.lost_writes(),
            "resurrected_deletes": report.resurrected_deletes(),
            "report": report,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{report}");
        println!(
            "chaos seed={} ops={} acked={} failed={} lost={} resurrected={} stale={} diverged={} converge_ms={}",
            args.seed,
            report.operations,
            report.acknowledged_writes,
            report.failed,
            report.lost_writes(),
            report.resurrected_deletes(),
            report.stale_reads.len(),
            report.diverged.len(),
            converge_ms.map_or("none".to_string(), |m| m.to_string()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, message: &str) -> ClientError {
        ClientError {
            kind: ErrorKind::NotFound,
            status: Some(status),
            code: "x".into(),
            message: message.into(),
        }
    }

    #[test]
    fn a_deleted_answer_names_its_tombstone_and_odd_answers_are_failures() {
        let v = "1700000000000.3@node2";
        let o = seen(err(
            410,
            &format!("ucxl://a:b@c:d/*^/e was deleted (tombstone {v})"),
        ));
        assert_eq!(
            o,
            Outcome::Deleted {
                version: v.parse().unwrap()
            }
        );
        assert_eq!(seen(err(404, "no context at x")), Outcome::NotFound);
        for odd in ["deleted", "(tombstone )", "(tombstone nonsense)", ""] {
            assert!(
                matches!(seen(err(410, odd)), Outcome::Failed { .. }),
                "{odd}"
            );
        }
        let down = ClientError {
            kind: ErrorKind::Unavailable,
            status: None,
            code: "timeout".into(),
            message: "no answer".into(),
        };
        assert!(matches!(seen(down), Outcome::Failed { .. }));
        // Answers without the fields asked for are errors, not panics.
        assert!(version_of(&json!({})).is_err());
        assert!(version_of(&json!({"version": 7})).is_err());
        assert!(version_of(&json!({"version": "x@"})).is_err());
        assert!(number(&json!({"a": {"b": "1"}}), &["a", "b"]).is_err());
        assert!(text(&json!([1, 2]), &["a"]).is_err());
    }
}
