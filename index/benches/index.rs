//! Search latency, indexing throughput and rebuild time at 100,000 contexts.
//!
//! Setup (outside every measured loop) builds a corpus of 100,000 contexts
//! of realistic size (about 300-byte summary, a purpose, 2-3 insights, a few
//! tags and technologies; one in five readable only by architects), indexes
//! it once in slurp's index and once in a plain engine index (one text
//! field, no filters) and prints the one-off figures the at-rest decision
//! rests on: rebuild time and memory. Then, in the same run:
//!
//! - `search/floor_plain_top10`: the plain engine's top-10 for one word, the
//!   floor no full search can beat;
//! - `search/full_*`: `ContextIndex::search` as `developer` (role filter),
//!   top 10 with snippets and facet counts, for a one-word and a two-word
//!   query;
//! - `search/scoped_half_*`: the one-word search with half the slots in
//!   scope (`ContextIndex::search_scoped`), as one range and as every other
//!   partition of 1,024 (512 ranges), with the merged statistics a
//!   distributed search supplies; and the scoped statistics export;
//! - `index/upsert_10k`: 10,000 upserts and a commit into a fresh index
//!   (throughput in documents per second), beside `index/floor_plain_10k`,
//!   the same text into a plain index with the same writer settings;
//! - `rebuild/100k`: `ContextIndex::rebuild` of the whole corpus, beside
//!   `rebuild/floor_plain_100k`, the plain index with the rebuild's writer
//!   settings.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use slurp_index::{ContextIndex, IndexConfig, IndexEntry, RebuildProgress, SearchQuery, SlotScope};
use slurp_protocol::{
    ContextNode, Hlc, Partition, PartitionScheme, RoleName, UcxlAddress, VersionId, WriterId,
};
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{Schema, TEXT};
use tantivy::{Index, TantivyDocument};

const DOCS: usize = 100_000;

/// Words of the domain, mixed into the generated text so queries for them
/// hit a realistic share of documents.
const DOMAIN: &[&str] = &[
    "cache",
    "token",
    "session",
    "login",
    "retry",
    "backoff",
    "shard",
    "lock",
    "queue",
    "replica",
    "merge",
    "segment",
    "index",
    "schema",
    "role",
    "policy",
    "audit",
    "key",
    "rotate",
    "envelope",
    "quorum",
    "partition",
    "gossip",
    "tombstone",
    "version",
    "clock",
    "writer",
    "reader",
    "budget",
    "latency",
    "handler",
    "request",
    "response",
    "config",
    "parser",
    "storage",
    "network",
    "timeout",
    "error",
    "metrics",
];
const SYLLABLES: &[&str] = &[
    "ka", "to", "ri", "mu", "sen", "dor", "lex", "vin", "pa", "qua", "zel", "mor", "tin", "bra",
    "cho", "fen", "gil", "hud", "jor", "nex",
];
const TAGS: &[&str] = &[
    "security",
    "api",
    "storage",
    "perf",
    "ux",
    "infra",
    "auth",
    "billing",
    "search",
    "ops",
    "legacy",
    "experimental",
    "core",
    "docs",
    "tests",
];
const TECHS: &[&str] = &[
    "rust", "go", "python", "postgres", "redis", "kafka", "grpc", "react", "tantivy", "redb",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Skewed towards small indexes, like word frequencies.
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((u * u * u) * n as f64) as usize
    }
}

fn vocabulary() -> Vec<String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..5_000)
        .map(|_| {
            let n = 2 + rng.below(2);
            (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect()
        })
        .collect()
}

fn sentence(rng: &mut Rng, vocab: &[String], bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        // About one word in forty is a domain word: a query for one of them
        // matches a few percent of the corpus, as a real query would.
        if rng.below(40) == 0 {
            s.push_str(DOMAIN[rng.below(DOMAIN.len())]);
        } else {
            s.push_str(&vocab[rng.skewed(vocab.len())]);
        }
    }
    s
}

fn role(s: &str) -> RoleName {
    RoleName::new(s).expect("valid role")
}

fn corpus(n: usize) -> Vec<IndexEntry> {
    let vocab = vocabulary();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let writer = WriterId::new("bench-node").expect("valid writer");
    (0..n)
        .map(|i| {
            let path = format!("src/mod{}/sub{}/file{i}.rs", i % 50, i % 7);
            let address = UcxlAddress::new("agent", "developer", "proj", "main", &path)
                .expect("valid address");
            let mut c = ContextNode::new(address, sentence(&mut rng, &vocab, 300), vec![]);
            c.purpose = sentence(&mut rng, &vocab, 120);
            c.insights = (0..2 + rng.below(2))
                .map(|_| sentence(&mut rng, &vocab, 100))
                .collect();
            c.tags = (0..1 + rng.below(3))
                .map(|_| TAGS[rng.skewed(TAGS.len())].to_string())
                .collect();
            c.technologies = (0..1 + rng.below(2))
                .map(|_| TECHS[rng.skewed(TECHS.len())].to_string())
                .collect();
            c.generated_at = 1_700_000_000_000 + i as u64 * 1_000;
            let readers = if i % 5 == 0 {
                vec![role("admin"), role("architect")]
            } else {
                vec![role("admin"), role("architect"), role("developer")]
            };
            IndexEntry::new(
                VersionId {
                    hlc: Hlc {
                        wall_ms: 1 + i as u64,
                        logical: 0,
                    },
                    writer: writer.clone(),
                },
                readers,
                c,
            )
        })
        .collect()
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn rebuild(index: &ContextIndex, entries: &[IndexEntry]) -> RebuildProgress {
    index
        .rebuild(
            entries.iter().cloned().map(Ok::<_, std::io::Error>),
            &mut |_: &RebuildProgress| {},
        )
        .expect("rebuild")
}

/// The plain engine index: one text field holding the same text, no
/// filters, no stored fields. The floor every figure is compared with.
fn plain_index(
    entries: &[IndexEntry],
    threads: usize,
    heap: usize,
) -> (Index, tantivy::schema::Field) {
    let mut b = Schema::builder();
    let body = b.add_text_field("body", TEXT);
    let index = Index::create_in_ram(b.build());
    let mut w = index
        .writer_with_num_threads(threads, heap)
        .expect("plain writer");
    for e in entries {
        let mut doc = TantivyDocument::default();
        doc.add_text(body, &e.context.summary);
        doc.add_text(body, &e.context.purpose);
        for i in &e.context.insights {
            doc.add_text(body, i);
        }
        w.add_document(doc).expect("add");
    }
    w.commit().expect("commit");
    w.wait_merging_threads().expect("merges");
    (index, body)
}

fn benches(c: &mut Criterion) {
    let t = Instant::now();
    let entries = corpus(DOCS);
    eprintln!("setup: generated {DOCS} contexts in {:?}", t.elapsed());
    let text_bytes: usize = entries
        .iter()
        .map(|e| {
            e.context.summary.len()
                + e.context.purpose.len()
                + e.context.insights.iter().map(String::len).sum::<usize>()
        })
        .sum();
    eprintln!(
        "setup: {:.1} MB of text, {} bytes per context",
        text_bytes as f64 / 1e6,
        text_bytes / DOCS
    );

    let index = ContextIndex::open_in_memory(IndexConfig::default()).expect("open");
    let rss_before = rss_bytes();
    let t = Instant::now();
    let p = rebuild(&index, &entries);
    let rebuild_time = t.elapsed();
    let rss_after = rss_bytes();
    let status = index.status().expect("status");
    eprintln!(
        "measure: rebuild of {} contexts took {:?} ({:.0} docs/s, {} segments)",
        p.indexed,
        rebuild_time,
        p.indexed as f64 / rebuild_time.as_secs_f64(),
        status.segments
    );
    eprintln!(
        "measure: index data {:.1} MB in memory; process RSS grew {:.1} MB during the rebuild",
        status.index_bytes as f64 / 1e6,
        rss_after.saturating_sub(rss_before) as f64 / 1e6
    );
    let config = IndexConfig::default();
    let (plain, body) = plain_index(&entries, config.rebuild_threads, config.rebuild_heap_bytes);
    let plain_reader = plain.reader().expect("reader");
    let plain_parser = QueryParser::for_index(&plain, vec![body]);

    let mut g = c.benchmark_group("search");
    g.measurement_time(Duration::from_secs(3));
    let plain_query = plain_parser.parse_query("cache").expect("parse");
    g.bench_function("floor_plain_top10", |b| {
        b.iter(|| {
            let searcher = plain_reader.searcher();
            let top = searcher
                .search(
                    plain_query.as_ref(),
                    &TopDocs::with_limit(10).order_by_score(),
                )
                .expect("search");
            black_box(top)
        })
    });
    for (name, text) in [
        ("full_one_word", "cache"),
        ("full_two_words", "token session"),
    ] {
        let q = SearchQuery::new(role("developer"), text);
        let r = index.search(&q).expect("search");
        eprintln!(
            "query {text:?}: {} of {DOCS} match for developer, {} tag facets",
            r.total_hits,
            r.facets.tags.len()
        );
        g.bench_function(name, |b| {
            b.iter(|| black_box(index.search(&q).expect("search")))
        });
    }
    let q = SearchQuery::new(role("developer"), "cache");
    g.bench_function("term_statistics_one_word", |b| {
        b.iter(|| black_box(index.term_statistics(&q).expect("statistics")))
    });
    let scheme = PartitionScheme::default();
    let half_range = SlotScope::from_ranges([0..=u16::MAX / 2]);
    let half_scattered = SlotScope::from_partitions(
        &scheme,
        (0..scheme.count())
            .filter(|p| p % 2 == 0)
            .map(|p| Partition(p as u16)),
    );
    let other_half = SlotScope::from_partitions(
        &scheme,
        (0..scheme.count())
            .filter(|p| p % 2 == 1)
            .map(|p| Partition(p as u16)),
    );
    // The first statistics request of a scope computes its totals (one pass
    // over the role's documents in scope); later ones reuse them until the
    // next commit.
    let t = Instant::now();
    let mut merged = index
        .term_statistics_scoped(&q, &half_scattered)
        .expect("statistics");
    eprintln!(
        "measure: first statistics of a 512-range scope (totals pass) took {:?}",
        t.elapsed()
    );
    merged
        .merge(
            &index
                .term_statistics_scoped(&q, &other_half)
                .expect("statistics"),
        )
        .expect("merge");
    for (name, scope) in [
        ("scoped_half_one_range_one_word", &half_range),
        ("scoped_half_512_ranges_one_word", &half_scattered),
    ] {
        let r = index
            .search_scoped(&q, scope, Some(&merged))
            .expect("search");
        eprintln!(
            "{name}: {} of {DOCS} match for developer in {} ranges",
            r.total_hits,
            scope.ranges().len()
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    index
                        .search_scoped(&q, scope, Some(&merged))
                        .expect("search"),
                )
            })
        });
    }
    g.bench_function("term_statistics_scoped_half_512_ranges_one_word", |b| {
        b.iter(|| {
            black_box(
                index
                    .term_statistics_scoped(&q, &half_scattered)
                    .expect("statistics"),
            )
        })
    });
    let mut bare = SearchQuery::new(role("developer"), "cache");
    bare.snippets = false;
    bare.facets = false;
    g.bench_function("full_one_word_no_snippets_no_facets", |b| {
        b.iter(|| black_box(index.search(&bare).expect("search")))
    });
    g.finish();

    let t = Instant::now();
    index.optimize().expect("optimize");
    let optimized = index.status().expect("status");
    eprintln!(
        "measure: optimize to {} segment took {:?}; index data {:.1} MB",
        optimized.segments,
        t.elapsed(),
        optimized.index_bytes as f64 / 1e6
    );

    let mut g = c.benchmark_group("index");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("floor_plain_10k", |b| {
        b.iter(|| {
            black_box(plain_index(
                &entries[..10_000],
                config.writer_threads,
                config.writer_heap_bytes,
            ))
        })
    });
    g.bench_function("upsert_10k", |b| {
        b.iter_batched(
            || {
                ContextIndex::open_in_memory(IndexConfig {
                    commit_every_ops: 100_000,
                    ..IndexConfig::default()
                })
                .expect("open")
            },
            |fresh| {
                for e in &entries[..10_000] {
                    fresh.upsert(e).expect("upsert");
                }
                fresh.commit().expect("commit");
                fresh
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("rebuild");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(DOCS as u64));
    g.bench_function("floor_plain_100k", |b| {
        b.iter(|| {
            black_box(plain_index(
                &entries,
                config.rebuild_threads,
                config.rebuild_heap_bytes,
            ))
        })
    });
    g.bench_function("100k", |b| b.iter(|| black_box(rebuild(&index, &entries))));
    g.finish();
    eprintln!(
        "measure: after repeated rebuilds the process holds {:.1} MB more than before the first \
         (index data {:.1} MB)",
        rss_bytes().saturating_sub(rss_before) as f64 / 1e6,
        index.status().expect("status").index_bytes as f64 / 1e6
    );
}

criterion_group!(index_benches, benches);
criterion_main!(index_benches);
