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
//!
//! `--target etcd` drives an etcd cluster's v3 JSON gateway with the same
//! load shape (the same keys, values of the same size, the same clients
//! and the same report), so that slurp can be compared with its nearest
//! peer on one machine in one run. Puts are `/v3/kv/put` (durable: etcd
//! commits through its Raft log and fsyncs before answering) and gets are
//! `/v3/kv/range` with etcd's default linearizable consistency; etcd has
//! no search, so a mix that asks for one is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
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

/// The system `slurp bench` drives.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// A slurp node through its HTTP API (`/v1/...`), with a token.
    #[default]
    Slurp,
    /// An etcd v3 JSON gateway (`/v3/kv/put`, linearizable `/v3/kv/range`),
    /// for comparison; no token, no search.
    Etcd,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Slurp => "slurp",
            Target::Etcd => "etcd",
        }
    }
}

/// Flags of `slurp bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The node to drive: a slurp node's API, or with `--target etcd` the
    /// base URL of an etcd member's JSON gateway (its client URL, e.g.
    /// `http://127.0.0.1:2379`).
    #[arg(long, env = "SLURP_NODE", default_value = "http://127.0.0.1:7070")]
    pub node: String,
    /// What `--node` is: a slurp node, or an etcd member to compare with.
    #[arg(long, value_enum, default_value_t = Target::Slurp)]
    pub target: Target,
    /// API token (a role that can write developer records, e.g. admin);
    /// not sent to etcd.
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

/// Puts per etcd transaction while loading (etcd refuses more than its
/// `--max-txn-ops`, 128 by default).
const ETCD_LOAD_BATCH: usize = 100;
/// Contexts per slurp batch while loading.
const SLURP_LOAD_BATCH: usize = 500;

/// Refuses a mix the target cannot serve, before anything is loaded.
fn check_target(target: Target, mix: &[(Op, u32)]) -> Result<()> {
    if target == Target::Etcd && mix.iter().any(|(op, w)| *op == Op::Search && *w > 0) {
        bail!("etcd has no search: with --target etcd, --mix may only weigh get and put");
    }
    Ok(())
}

/// Standard base64 with padding (RFC 4648, section 4), the encoding etcd's
/// JSON gateway expects for keys and values.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        // n input bytes give n + 1 significant characters, then padding.
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(group >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The body of etcd's `/v3/kv/put`.
fn etcd_put_body(key: &str, value: &str) -> serde_json::Value {
    json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())})
}

/// The body of etcd's `/v3/kv/range` for one key. It leaves
/// `serializable` unset, so the read is linearizable (etcd's default).
fn etcd_range_body(key: &str) -> serde_json::Value {
    json!({"key": base64(key.as_bytes())})
}

/// The body of etcd's `/v3/kv/txn` that puts every pair unconditionally.
fn etcd_txn_body(puts: &[(String, String)]) -> serde_json::Value {
    let ops: Vec<_> = puts
        .iter()
        .map(|(k, v)| json!({"request_put": etcd_put_body(k, v)}))
        .collect();
    json!({"success": ops})
}

/// The requests of each operation against one target. Both targets use
/// the same keys (the bench's addresses) and values of the same size.
#[derive(Clone)]
struct Driver {
    client: Client,
    target: Target,
    prefix: String,
    shape: TextShape,
}

impl Driver {
    /// Writes keys `0..keys`, in batches.
    async fn load(&self, keys: usize, rng: &mut impl Rng) -> Result<()> {
        match self.target {
            Target::Slurp => {
                for chunk in (0..keys).collect::<Vec<_>>().chunks(SLURP_LOAD_BATCH) {
                    let items: Vec<_> = chunk
                        .iter()
                        .map(|i| json!({"context": context(&self.prefix, *i, self.shape, rng)}))
                        .collect();
                    let v = self
                        .client
                        .post("/v1/batch/put", &json!({"items": items}))
                        .await?;
                    if v["failed"].as_u64().unwrap_or(0) > 0 {
                        bail!("loading failed: {}", v["results"]);
                    }
                }
            }
            Target::Etcd => {
                for chunk in (0..keys).collect::<Vec<_>>().chunks(ETCD_LOAD_BATCH) {
                    let puts: Vec<_> = chunk
                        .iter()
                        .map(|i| (address(&self.prefix, *i), text(rng, self.shape)))
                        .collect();
                    let v = self
                        .client
                        .post("/v3/kv/txn", &etcd_txn_body(&puts))
                        .await
                        .context("loading etcd")?;
                    if v["succeeded"].as_bool() != Some(true) {
                        bail!("loading etcd: the transaction did not succeed: {v}");
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads key `i`; a key that does not exist is an error.
    async fn get(&self, i: usize) -> Result<serde_json::Value> {
        let key = address(&self.prefix, i);
        match self.target {
            Target::Slurp => Ok(self.client.get("/v1/contexts", &[("address", key)]).await?),
            Target::Etcd => {
                let v = self
                    .client
                    .post("/v3/kv/range", &etcd_range_body(&key))
                    .await?;
                // etcd answers a missing key with an empty range, not 404.
                if v["kvs"].as_array().is_none_or(|kvs| kvs.is_empty()) {
                    bail!("{key} is not in etcd");
                }
                Ok(v)
            }
        }
    }

    /// Writes key `i` with a fresh value.
    async fn put(&self, i: usize, rng: &mut impl Rng) -> Result<serde_json::Value> {
        match self.target {
            Target::Slurp => {
                let ctx = context(&self.prefix, i, self.shape, rng);
                Ok(self
                    .client
                    .post("/v1/contexts", &json!({"context": ctx}))
                    .await?)
            }
            Target::Etcd => {
                let body = etcd_put_body(&address(&self.prefix, i), &text(rng, self.shape));
                Ok(self.client.post("/v3/kv/put", &body).await?)
            }
        }
    }

    /// Searches for one domain word (slurp only; [`check_target`] keeps
    /// searches away from etcd).
    async fn search(&self, rng: &mut impl Rng) -> Result<serde_json::Value> {
        let word = VOCABULARY.choose(rng).copied().unwrap_or("cache");
        match self.target {
            Target::Slurp => Ok(self
                .client
                .post("/v1/search", &json!({"text": word, "limit": 10}))
                .await?),
            Target::Etcd => bail!("etcd has no search"),
        }
    }
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
    check_target(args.target, &mix)?;
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    let token = match args.target {
        Target::Slurp => args.token.clone(),
        Target::Etcd => None,
    };
    let client = Client::new(&args.node, token, Duration::from_secs(60))?;
    let keys = args.keys.max(1);
    let shape = TextShape {
        bytes: args.value_size,
        domain_ratio: args.domain_ratio,
        filler_words: args.filler_words,
    };
    let driver = Driver {
        client,
        target: args.target,
        prefix: args.prefix.clone(),
        shape,
    };
    if !args.no_load {
        let start = Instant::now();
        driver.load(keys, &mut rand::thread_rng()).await?;
        if !args.json {
            eprintln!(
                "loaded {keys} keys into {} in {:.1?}",
                args.target.name(),
                start.elapsed()
            );
        }
    }
    let total_weight: u32 = mix.iter().map(|(_, w)| *w).sum();
    let mix = Arc::new(mix);
    let deadline = Instant::now() + args.duration;
    let next_fresh = Arc::new(std::sync::atomic::AtomicUsize::new(keys));
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let driver = driver.clone();
        let mix = mix.clone();
        let distinct_puts = args.distinct_puts;
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
                    Op::Get => driver.get(rng.gen_range(0..keys)).await,
                    Op::Put => {
                        let i = if distinct_puts {
                            next_fresh.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        } else {
                            rng.gen_range(0..keys)
                        };
                        driver.put(i, &mut rng).await
                    }
                    Op::Search => driver.search(&mut rng).await,
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
        "target": args.target.name(),
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
            "{}: {} ops in {:.1}s with {} clients: {:.0} ops/s, {} errors",
            args.target.name(),
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

    /// `slurp bench`'s flags as the binary parses them.
    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).map(|c| c.bench)
    }

    #[test]
    fn target_parsing() {
        assert_eq!(parse(&[]).unwrap().target, Target::Slurp);
        assert_eq!(parse(&["--target", "slurp"]).unwrap().target, Target::Slurp);
        let etcd = parse(&["--target", "etcd", "--node", "http://127.0.0.1:2379"]).unwrap();
        assert_eq!(etcd.target, Target::Etcd);
        assert_eq!(etcd.node, "http://127.0.0.1:2379");
        assert!(parse(&["--target", "redis"]).is_err());
    }

    #[test]
    fn etcd_refuses_searches_only() {
        let mix = |s| parse_mix(s).unwrap();
        assert!(check_target(Target::Etcd, &mix("get=100")).is_ok());
        assert!(check_target(Target::Etcd, &mix("put=100")).is_ok());
        assert!(check_target(Target::Etcd, &mix("get=50,put=50,search=0")).is_ok());
        let err = check_target(Target::Etcd, &mix("get=80,search=20")).unwrap_err();
        assert!(err.to_string().contains("etcd has no search"), "{err}");
        assert!(check_target(Target::Slurp, &mix("get=80,put=15,search=5")).is_ok());
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        // Every alphabet character, including the two past the alphanumerics.
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(base64(&[0x00, 0x10, 0x83]), "ABCD");
    }

    /// Decodes standard padded base64; the bench never needs to, the tests
    /// use it to check that encoding loses nothing.
    fn decode_base64(s: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not a base64 character: {c}"),
        };
        let mut out = Vec::new();
        for quad in s.as_bytes().chunks(4) {
            let digits: Vec<u8> = quad
                .iter()
                .filter(|&&c| c != b'=')
                .map(|&c| value(c))
                .collect();
            let mut group = 0u32;
            for (i, d) in digits.iter().enumerate() {
                group |= u32::from(*d) << (18 - 6 * i);
            }
            for i in 0..digits.len() - 1 {
                out.push((group >> (16 - 8 * i)) as u8);
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let encoded = base64(&bytes);
            proptest::prop_assert_eq!(encoded.len(), bytes.len().div_ceil(3) * 4);
            proptest::prop_assert_eq!(decode_base64(&encoded), bytes);
        }
    }

    #[test]
    fn etcd_bodies_carry_base64_key_and_value() {
        let key = address("bench", 7);
        let value = "w1 cache w2".to_string();
        let put = etcd_put_body(&key, &value);
        assert_eq!(
            put,
            json!({"key": base64(key.as_bytes()), "value": base64(value.as_bytes())})
        );
        assert_eq!(decode_base64(put["key"].as_str().unwrap()), key.as_bytes());
        assert_eq!(
            decode_base64(put["value"].as_str().unwrap()),
            value.as_bytes()
        );

        // A range names one key and stays linearizable: no `serializable`,
        // no `range_end` (which would turn it into a scan).
        let range = etcd_range_body(&key);
        assert_eq!(range, json!({"key": base64(key.as_bytes())}));

        let txn = etcd_txn_body(&[(key.clone(), value.clone()), ("k2".into(), "v2".into())]);
        assert_eq!(
            txn,
            json!({"success": [
                {"request_put": etcd_put_body(&key, &value)},
                {"request_put": {"key": "azI=", "value": "djI="}},
            ]})
        );
    }

    #[test]
    fn etcd_values_have_the_requested_size() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        let shape = TextShape {
            bytes: 1024,
            domain_ratio: 0.1,
            filler_words: 5000,
        };
        let put = etcd_put_body(&address("bench", 1), &text(&mut rng, shape));
        assert_eq!(decode_base64(put["value"].as_str().unwrap()).len(), 1024);
    }
}
