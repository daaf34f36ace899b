//! `slurp bench`: load a running node with a mix of operations and report
//! throughput and latency percentiles.
//!
//! The benchmark goes through the public HTTP API, like any client, so it
//! measures what a user gets: routing, auth, the cache, sealing and
//! opening, the durable commit and the index. It first loads `--keys`
//! contexts (with summaries of `--value-size` bytes drawn from a small
//! vocabulary, so searches find something), then runs `--clients`
//! concurrent clients for `--duration`, each picking operations by the
//! `--mix` weights. Latencies go into HDR histograms per operation.
//!
//! Text is mostly filler words (`--filler-words` distinct ones) with a
//! share of domain words (`--domain-ratio`), which searches look for, so a
//! search matches a realistic fraction of the corpus rather than all of it;
//! the report gives the average number of matches per search.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use hdrhistogram::Histogram;
use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::json;

use crate::client::Client;

const VOCABULARY: &[&str] = &[
    "authentication",
    "token",
    "cache",
    "replication",
    "partition",
    "index",
    "search",
    "decision",
    "architecture",
    "storage",
    "encryption",
    "rotation",
    "backup",
    "restore",
    "latency",
    "quorum",
    "gossip",
    "schema",
    "migration",
    "handler",
    "router",
    "middleware",
    "session",
    "database",
    "transaction",
    "commit",
    "compaction",
    "segment",
    "merge",
    "tombstone",
    "version",
    "clock",
    "envelope",
    "recipient",
    "identity",
    "audit",
    "metrics",
    "health",
    "worker",
    "throttle",
];

/// Flags of `slurp bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The node to drive.
    #[arg(long, env = "SLURP_NODE", default_value = "http://127.0.0.1:7070")]
    pub node: String,
    /// API token (a role that can write developer records, e.g. admin).
    #[arg(long, env = "SLURP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Operation weights, e.g. `get=80,put=15,search=5`.
    #[arg(long, default_value = "get=80,put=15,search=5")]
    pub mix: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// How long to run the measured phase.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Bytes of summary text per context.
    #[arg(long, default_value_t = 1024)]
    pub value_size: usize,
    /// Contexts loaded before measuring (gets and searches use them).
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Puts write new addresses instead of new versions of loaded ones.
    #[arg(long)]
    pub distinct_puts: bool,
    /// Skip loading (reuse the contexts of an earlier run with the same
    /// `--prefix` and `--keys`).
    #[arg(long)]
    pub no_load: bool,
    /// Share of words drawn from the 40 domain words searches use; the rest
    /// are filler words.
    #[arg(long, default_value_t = 0.1)]
    pub domain_ratio: f64,
    /// Distinct filler words.
    #[arg(long, default_value_t = 5000)]
    pub filler_words: usize,
    /// Project segment of the bench's addresses.
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    Search,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Search => "search",
        }
    }
}

fn parse_mix(s: &str) -> Result<Vec<(Op, u32)>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, w) = part
            .split_once('=')
            .with_context(|| format!("mix entry {part:?}: expected op=weight"))?;
        let op = match name.trim() {
            "get" => Op::Get,
            "put" => Op::Put,
            "search" => Op::Search,
            other => bail!("unknown operation {other:?} in --mix (get, put, search)"),
        };
        let w: u32 = w
            .trim()
            .parse()
            .with_context(|| format!("weight of {name}"))?;
        out.push((op, w));
    }
    if out.iter().map(|(_, w)| *w).sum::<u32>() == 0 {
        bail!("--mix has no positive weight");
    }
    Ok(out)
}

/// How the bench writes text.
#[derive(Clone, Copy)]
struct TextShape {
    bytes: usize,
    domain_ratio: f64,
    filler_words: usize,
}

fn text(rng: &mut impl Rng, shape: TextShape) -> String {
    let mut s = String::with_capacity(shape.bytes + 16);
    while s.len() < shape.bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        if rng.gen_bool(shape.domain_ratio.clamp(0.0, 1.0)) {
            s.push_str(VOCABULARY.choose(rng).copied().unwrap_or("word"));
        } else {
            s.push_str(&format!("w{}", rng.gen_range(0..shape.filler_words.max(1))));
        }
    }
    s.truncate(shape.bytes.max(1));
    s
}

fn address(prefix: &str, i: usize) -> String {
    format!("ucxl://bench:developer@{prefix}:load/*^/src/module{i}.rs")
}

fn context(prefix: &str, i: usize, shape: TextShape, rng: &mut impl Rng) -> serde_json::Value {
    json!({
        "address": address(prefix, i),
        "path": format!("src/module{i}.rs"),
        "summary": text(rng, shape),
        "tags": [VOCABULARY[i % VOCABULARY.len()]],
        "technologies": ["rust"],
        "encrypted_for": ["developer"],
    })
}

struct Stats {
    hist: Histogram<u64>,
    errors: u64,
    /// Searches only: matches reported and time spent in the index.
    matches: u64,
    index_hist: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Runs the benchmark and prints the report.
pub async fn run(args: BenchArgs) -> Result<()> {
    let mix = parse_mix(&args.mix)?;
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let client = Client::new(&args.node, args.token.clone(), Duration::from_secs(60))?;
    let keys = args.keys.max(1);
    let shape = TextShape {
        bytes: args.value_size,
        domain_ratio: args.domain_ratio,
        filler_words: args.filler_words,
    };
    if !args.no_load {
        let start = Instant::now();
        let mut rng = rand::thread_rng();
        for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
            let items: Vec<_> = chunk
                .iter()
                .map(|i| json!({"context": context(&args.prefix, *i, shape, &mut rng)}))
                .collect();
            let v = client
                .post("/v1/batch/put", &json!({"items": items}))
                .await?;
            if v["failed"].as_u64().unwrap_or(0) > 0 {
                bail!("loading failed: {}", v["results"]);
            }
        }
        if !args.json {
            eprintln!("loaded {keys} contexts in {:.1?}", start.elapsed());
        }
    }
    let total_weight: u32 = mix.iter().map(|(_, w)| *w).sum();
    let mix = Arc::new(mix);
    let deadline = Instant::now() + args.duration;
    let next_fresh = Arc::new(std::sync::atomic::AtomicUsize::new(keys));
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let client = client.clone();
        let mix = mix.clone();
        let args = args.clone();
        let next_fresh = next_fresh.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats: Vec<(Op, Stats)> = [Op::Get, Op::Put, Op::Search]
                .into_iter()
                .map(|op| {
                    (
                        op,
                        Stats {
                            hist: histogram(),
                            errors: 0,
                            matches: 0,
                            index_hist: histogram(),
                        },
                    )
                })
                .collect();
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
            while Instant::now() < deadline {
                let mut pick = rng.gen_range(0..total_weight);
                let mut op = mix[0].0;
                for (o, w) in mix.iter() {
                    if pick < *w {
                        op = *o;
                        break;
                    }
                    pick -= w;
                }
                let start = Instant::now();
                let r = match op {
                    Op::Get => {
                        let i = rng.gen_range(0..keys);
                        client
                            .get("/v1/contexts", &[("address", address(&args.prefix, i))])
                            .await
                    }
                    Op::Put => {
                        let i = if args.distinct_puts {
                            next_fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        } else {
                            rng.gen_range(0..keys)
                        };
                        let ctx = context(&args.prefix, i, shape, &mut rng);
                        client.post("/v1/contexts", &json!({"context": ctx})).await
                    }
                    Op::Search => {
                        let word = VOCABULARY.choose(&mut rng).copied().unwrap_or("cache");
                        client
                            .post("/v1/search", &json!({"text": word, "limit": 10}))
                            .await
                    }
                };
                let micros = start.elapsed().as_micros() as u64;
                let s = &mut stats
                    .iter_mut()
                    .find(|(o, _)| *o == op)
                    .expect("every op has stats")
                    .1;
                match r {
                    Ok(v) => {
                        let _ = s.hist.record(micros.max(1));
                        if op == Op::Search {
                            s.matches += v["total_hits"].as_u64().unwrap_or(0);
                            let _ = s
                                .index_hist
                                .record(v["index_micros"].as_u64().unwrap_or(0).max(1));
                        }
                    }
                    Err(_) => s.errors += 1,
                }
            }
            stats
        }));
    }
    let started = Instant::now();
    let mut merged: Vec<(Op, Stats)> = Vec::new();
    for t in tasks {
        for (op, s) in t.await? {
            match merged.iter_mut().find(|(o, _)| *o == op) {
                Some((_, m)) => {
                    m.hist.add(&s.hist).ok();
                    m.index_hist.add(&s.index_hist).ok();
                    m.errors += s.errors;
                    m.matches += s.matches;
                }
                None => merged.push((op, s)),
            }
        }
    }
    let secs = started
        .elapsed()
        .as_secs_f64()
        .max(args.duration.as_secs_f64() * 0.5);
    let total: u64 = merged.iter().map(|(_, s)| s.hist.len()).sum();
    let errors: u64 = merged.iter().map(|(_, s)| s.errors).sum();
    let ops: Vec<serde_json::Value> = merged
        .iter()
        .filter(|(_, s)| !s.hist.is_empty() || s.errors > 0)
        .map(|(op, s)| {
            json!({
                "op": op.name(),
                "count": s.hist.len(),
                "errors": s.errors,
                "ops_per_sec": s.hist.len() as f64 / secs,
                "p50_us": s.hist.value_at_quantile(0.5),
                "p90_us": s.hist.value_at_quantile(0.9),
                "p99_us": s.hist.value_at_quantile(0.99),
                "max_us": s.hist.max(),
                "avg_matches": (*op == Op::Search && !s.hist.is_empty())
                    .then(|| s.matches / s.hist.len()),
                "index_p50_us": (*op == Op::Search && !s.index_hist.is_empty())
                    .then(|| s.index_hist.value_at_quantile(0.5)),
            })
        })
        .collect();
    let report = json!({
        "node": args.node,
        "mix": args.mix,
        "clients": args.clients,
        "duration_secs": secs,
        "value_size": args.value_size,
        "domain_ratio": args.domain_ratio,
        "filler_words": args.filler_words,
        "keys": keys,
        "total_ops": total,
        "errors": errors,
        "ops_per_sec": total as f64 / secs,
        "ops": ops,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} ops in {:.1}s with {} clients: {:.0} ops/s, {} errors",
            total,
            secs,
            args.clients,
            total as f64 / secs,
            errors
        );
        println!(
            "{:<8} {:>9} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "op", "count", "ops/s", "p50 µs", "p90 µs", "p99 µs", "errors"
        );
        for o in &ops {
            let n = |k: &str| o[k].as_u64().unwrap_or(0);
            println!(
                "{:<8} {:>9} {:>10.0} {:>9} {:>9} {:>9} {:>7}",
                o["op"].as_str().unwrap_or(""),
                n("count"),
                o["ops_per_sec"].as_f64().unwrap_or(0.0),
                n("p50_us"),
                n("p90_us"),
                n("p99_us"),
                n("errors")
            );
            if let Some(m) = o["avg_matches"].as_u64() {
                println!(
                    "         searches matched {m} contexts on average; index time p50 {} µs",
                    n("index_p50_us")
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_parsing() {
        let m = parse_mix("get=80,put=15,search=5").unwrap();
        assert_eq!(m, vec![(Op::Get, 80), (Op::Put, 15), (Op::Search, 5)]);
        assert!(parse_mix("get=0").is_err());
        assert!(parse_mix("fly=1").is_err());
        assert!(parse_mix("get").is_err());
    }
}
