//! The store's write and read costs, each beside its floor in the same run.
//!
//! - `raw_redb/commit_1kib`: one durable redb transaction holding one 1 KiB
//!   value at an increasing key — the floor for a single put.
//!   `..._hashed_keys`: the same at keys spread like the store's
//!   (slot-prefixed), in a table populated like the store's.
//! - `store/put_1kib`: one durable put of a sealed 1 KiB record (random
//!   bytes standing in for an envelope, with its RecordMeta). Target: p50 at
//!   most 1.5x the floor.
//! - `raw_redb/commit_32x1kib`: 32 values per durable transaction — the
//!   floor for group commit, as values per second (`..._hashed_keys` as
//!   above).
//! - `store/group_commit_32_writers`: 32 concurrent tokio writers, each
//!   putting 8 versions in sequence. Target: at least 0.75x the floor's
//!   rate.
//! - `store/latest`: the newest version of one address.
//! - `hints/put_many_32x1kib` and `hints/put_many_hinted_32x1kib`: one
//!   durable `put_many` of 32 new versions, without and with a hint per
//!   version (hinted handoff); the plain call is the floor, the
//!   difference is what the hints cost. Also printed paired (the two calls
//!   in alternation).
//! - `hints/page_256_of_10k`: one page of 256 hints of one target in a
//!   table of 10,000; `hints/hint_targets_10k`: the full scan behind
//!   `hint_targets` over the same table (throughput in hints).
//! - `zstd/*`: what trying compression costs per envelope size and shape,
//!   beside the commit it would delay (the rule in `docs/storage.md`).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::RngCore;
use redb::TableDefinition;
use slurp_protocol::{Hlc, RecordMeta, RoleName, Slot, VersionId, WriterId};
use slurp_storage::{Latest, NewVersion, Store, StoreConfig};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
const KEYS: u64 = 1000;

fn random(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// A version of one of `KEYS` addresses (`i % KEYS`); after the warm-up
/// every put adds a version to an existing address.
fn record(i: u64, logical: u32, writer: &WriterId) -> NewVersion {
    let k = i % KEYS;
    let path = format!("src/module{}/file{k}.rs", k % 17);
    let key = format!("ucxl://agent:developer@proj:task/{path}");
    NewVersion {
        meta: RecordMeta {
            key,
            path,
            version: VersionId {
                hlc: Hlc {
                    wall_ms: 1_700_000_000_000 + i,
                    logical,
                },
                writer: writer.clone(),
            },
            parent_version: None,
            readers: vec![
                RoleName::new("developer").unwrap(),
                RoleName::new("architect").unwrap(),
                RoleName::new("admin").unwrap(),
            ],
            influences: vec![],
            influenced_by: vec![],
            expires_at_ms: None,
            tombstone: false,
        },
        envelope: random(1024),
    }
}

/// A key spread like the store's version keys (slot-prefixed, so writes
/// land on random pages of a populated table).
fn hashed_key(i: u64) -> Vec<u8> {
    let key = format!("ucxl://agent:developer@proj:task/file{}", i % KEYS);
    let mut k = Slot::of(&key).0.to_be_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn raw_commit(db: &redb::Database, keys: impl Iterator<Item = Vec<u8>>, value: &[u8]) {
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(RAW).unwrap();
        for k in keys {
            t.insert(k.as_slice(), value).unwrap();
        }
    }
    txn.commit().unwrap();
}

fn raw_redb(c: &mut Criterion) {
    let dir = bench_dir();
    let db = redb::Database::create(dir.path().join("raw.redb")).unwrap();
    let value = random(1024);
    // Populate like the store's warm-up, so both trees have the same shape.
    raw_commit(&db, (0..KEYS).map(hashed_key), &value);
    let n = AtomicU64::new(KEYS);
    let seq = AtomicU64::new(u64::MAX / 2);
    let mut g = c.benchmark_group("raw_redb");
    g.bench_function("commit_1kib", |b| {
        b.iter(|| {
            let i = seq.fetch_add(1, Ordering::Relaxed);
            raw_commit(&db, std::iter::once(i.to_be_bytes().to_vec()), &value)
        })
    });
    g.bench_function("commit_1kib_hashed_keys", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            raw_commit(&db, std::iter::once(hashed_key(i)), &value)
        })
    });
    g.throughput(Throughput::Elements(32));
    g.bench_function("commit_32x1kib", |b| {
        b.iter(|| {
            let i = seq.fetch_add(32, Ordering::Relaxed);
            raw_commit(&db, (i..i + 32).map(|j| j.to_be_bytes().to_vec()), &value)
        })
    });
    g.bench_function("commit_32x1kib_hashed_keys", |b| {
        b.iter(|| {
            let i = n.fetch_add(32, Ordering::Relaxed);
            raw_commit(&db, (i..i + 32).map(hashed_key), &value)
        })
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let dir = bench_dir();
    let store = Store::open(dir.path().join("store.redb"), StoreConfig::default()).unwrap();
    let writer = WriterId::new("bench").unwrap();
    let n = AtomicU64::new(0);
    let logical = AtomicU32::new(0);
    // Every address exists before measuring, so puts update, not create.
    let warm: Vec<_> = (0..KEYS).map(|i| record(i, 0, &writer)).collect();
    for r in store.put_many_blocking(warm) {
        r.unwrap();
    }
    let mut g = c.benchmark_group("store");
    g.bench_function("put_1kib", |b| {
        b.iter_batched(
            || {
                record(
                    n.fetch_add(1, Ordering::Relaxed),
                    logical.fetch_add(1, Ordering::Relaxed) + 1,
                    &writer,
                )
            },
            |v| store.put_blocking(v).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let writers: Arc<Vec<WriterId>> = Arc::new(
        (0..32)
            .map(|w| WriterId::new(format!("bench-w{w}")).unwrap())
            .collect(),
    );
    // 32 writers, each putting 8 versions one after another: the queue
    // refills while a batch commits, as under steady load.
    const PER_WRITER: u64 = 8;
    g.throughput(Throughput::Elements(32 * PER_WRITER));
    g.bench_function("group_commit_32_writers", |b| {
        b.iter_batched(
            || {
                (0..32usize)
                    .map(|w| {
                        (0..PER_WRITER)
                            .map(|_| {
                                record(
                                    n.fetch_add(1, Ordering::Relaxed),
                                    logical.fetch_add(1, Ordering::Relaxed) + 1,
                                    &writers[w],
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>()
            },
            |per_writer| {
                rt.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for versions in per_writer {
                        let store = store.clone();
                        tasks.spawn(async move {
                            for v in versions {
                                store.put(v).await.unwrap();
                            }
                        });
                    }
                    while let Some(r) = tasks.join_next().await {
                        r.unwrap();
                    }
                })
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.throughput(Throughput::Elements(1));
    let key = record(7, 0, &writer).meta.key;
    g.bench_function("latest", |b| {
        b.iter(|| match store.latest(black_box(&key)).unwrap() {
            Latest::Live { record, .. } => black_box(record.envelope.len()),
            other => panic!("{other:?}"),
        })
    });
    g.finish();
}

fn hints(c: &mut Criterion) {
    let dir = bench_dir();
    let store = Store::open(dir.path().join("hints.redb"), StoreConfig::default()).unwrap();
    let writer = WriterId::new("hints").unwrap();
    // 2,500 versions, each hinted for 4 targets: 10,000 hints.
    const TARGETS: [&str; 4] = ["peer-a", "peer-b", "peer-c", "peer-d"];
    let base: Vec<_> = (0..2_500u64)
        .map(|i| record(i * (KEYS + 1), 0, &writer))
        .collect();
    for target in TARGETS {
        for r in store.put_many_hinted_blocking(base.clone(), target) {
            r.unwrap();
        }
    }
    let n = AtomicU64::new(1_000_000);
    let batch = || {
        (0..32)
            .map(|_| record(n.fetch_add(1, Ordering::Relaxed), 1, &writer))
            .collect::<Vec<_>>()
    };
    let mut g = c.benchmark_group("hints");
    g.throughput(Throughput::Elements(32));
    g.bench_function("put_many_32x1kib", |b| {
        b.iter_batched(
            batch,
            |vs| {
                for r in store.put_many_blocking(vs) {
                    r.unwrap();
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // peer-e's hints accumulate, as for a peer that stays down: each call
    // adds 32 hints at random places of its range.
    g.bench_function("put_many_hinted_32x1kib", |b| {
        b.iter_batched(
            batch,
            |vs| {
                for r in store.put_many_hinted_blocking(vs, "peer-e") {
                    r.unwrap();
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
    // The same two, in alternation, so that load from other processes hits
    // both alike.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut plain, mut hinted) = (vec![], vec![]);
    for _ in 0..150 {
        let vs = batch();
        let t = std::time::Instant::now();
        for r in store.put_many_blocking(vs) {
            r.unwrap();
        }
        plain.push(t.elapsed().as_secs_f64());
        let vs = batch();
        let t = std::time::Instant::now();
        for r in store.put_many_hinted_blocking(vs, "peer-e") {
            r.unwrap();
        }
        hinted.push(t.elapsed().as_secs_f64());
    }
    let (plain, hinted) = (median(plain), median(hinted));
    eprintln!(
        "paired put_many of 32 x 1 KiB p50: plain {:.0} us, hinted {:.0} us; hinted/plain {:.2}x",
        plain * 1e6,
        hinted * 1e6,
        hinted / plain
    );
    let peer_e = store.hints("peer-e", None, usize::MAX).unwrap().hints;
    store.remove_hints_blocking(&peer_e).unwrap();
    // Reads over exactly the 10,000 hints of the four targets.
    assert_eq!(store.stats().unwrap().hints, 10_000);
    let mut g = c.benchmark_group("hints");
    g.throughput(Throughput::Elements(256));
    let middle = store.hints("peer-b", None, 1_000).unwrap().next.unwrap();
    g.bench_function("page_256_of_10k", |b| {
        b.iter(|| {
            let page = store.hints("peer-b", Some(&middle), 256).unwrap();
            black_box(page.hints.len())
        })
    });
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("hint_targets_10k", |b| {
        b.iter(|| black_box(store.hint_targets().unwrap().len()))
    });
    g.finish();
}

/// An age-shaped envelope: a text header with one base64 stanza per
/// recipient, then binary ciphertext.
fn age_like(recipients: usize, payload: usize) -> Vec<u8> {
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b64 = |n: usize| -> String {
        random(n)
            .into_iter()
            .map(|b| B64[(b & 63) as usize] as char)
            .collect()
    };
    let mut out = b"age-encryption.org/v1\n".to_vec();
    for _ in 0..recipients {
        out.extend_from_slice(format!("-> X25519 {}\n{}\n", b64(43), b64(43)).as_bytes());
    }
    out.extend_from_slice(format!("--- {}\n", b64(43)).as_bytes());
    out.extend_from_slice(&random(payload));
    out
}

fn zstd_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("zstd");
    let cases = [
        ("random_1kib", random(1024)),
        ("random_16kib", random(16 * 1024)),
        ("random_256kib", random(256 * 1024)),
        ("age_4_recipients_1kib", age_like(4, 1024)),
        ("age_4_recipients_16kib", age_like(4, 16 * 1024)),
    ];
    for (name, data) in &cases {
        for level in [1, 3] {
            let out = zstd::bulk::compress(data, level).unwrap();
            eprintln!(
                "zstd level {level} {name}: {} -> {} bytes ({:+.1}%)",
                data.len(),
                out.len(),
                (out.len() as f64 / data.len() as f64 - 1.0) * 100.0
            );
            let mut z = zstd::bulk::Compressor::new(level).unwrap();
            g.bench_function(format!("{name}_level{level}"), |b| {
                b.iter(|| z.compress(black_box(data)).unwrap().len())
            });
        }
    }
    g.finish();
}

/// The same comparisons as above, measured in alternation (floor, ours,
/// floor, ours, ...) so that load from other processes hits both alike;
/// prints the median of each and their ratio. On a busy machine these
/// ratios are steadier than the separate criterion figures.
fn paired(_c: &mut Criterion) {
    let dir = bench_dir();
    let raw = redb::Database::create(dir.path().join("paired-raw.redb")).unwrap();
    let value = random(1024);
    raw_commit(&raw, (0..KEYS).map(hashed_key), &value);
    let store = Store::open(dir.path().join("paired-store.redb"), StoreConfig::default()).unwrap();
    let writer = WriterId::new("paired").unwrap();
    for r in store.put_many_blocking((0..KEYS).map(|i| record(i, 0, &writer)).collect()) {
        r.unwrap();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut n, mut seq, mut logical) = (KEYS, u64::MAX / 2, 1u32);
    let (mut f1, mut o1, mut fh1) = (vec![], vec![], vec![]);
    for _ in 0..300 {
        let t = std::time::Instant::now();
        raw_commit(&raw, std::iter::once(seq.to_be_bytes().to_vec()), &value);
        f1.push(t.elapsed().as_secs_f64());
        seq += 1;
        let t = std::time::Instant::now();
        raw_commit(&raw, std::iter::once(hashed_key(n)), &value);
        fh1.push(t.elapsed().as_secs_f64());
        n += 1;
        let v = record(n, logical, &writer);
        logical += 1;
        let t = std::time::Instant::now();
        store.put_blocking(v).unwrap();
        o1.push(t.elapsed().as_secs_f64());
    }
    let (f1, fh1, o1) = (median(f1), median(fh1), median(o1));
    eprintln!(
        "paired single put p50: raw {:.0} us, raw hashed keys {:.0} us, store {:.0} us; \
         store/raw {:.2}x, store/raw hashed {:.2}x",
        f1 * 1e6,
        fh1 * 1e6,
        o1 * 1e6,
        o1 / f1,
        o1 / fh1
    );
    let writers: Vec<WriterId> = (0..32)
        .map(|w| WriterId::new(format!("paired-w{w}")).unwrap())
        .collect();
    let (mut f32, mut fh32, mut o32) = (vec![], vec![], vec![]);
    for _ in 0..20 {
        // 8 transactions of 32, against 32 writers putting 8 each.
        let t = std::time::Instant::now();
        for _ in 0..8 {
            raw_commit(
                &raw,
                (seq..seq + 32).map(|j| j.to_be_bytes().to_vec()),
                &value,
            );
            seq += 32;
        }
        f32.push(256.0 / t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        for _ in 0..8 {
            raw_commit(&raw, (n..n + 32).map(hashed_key), &value);
            n += 32;
        }
        fh32.push(256.0 / t.elapsed().as_secs_f64());
        let per_writer: Vec<Vec<NewVersion>> = (0..32)
            .map(|w| {
                (0..8)
                    .map(|_| {
                        n += 1;
                        logical += 1;
                        record(n, logical, &writers[w])
                    })
                    .collect()
            })
            .collect();
        let t = std::time::Instant::now();
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for versions in per_writer {
                let store = store.clone();
                tasks.spawn(async move {
                    for v in versions {
                        store.put(v).await.unwrap();
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        });
        o32.push(256.0 / t.elapsed().as_secs_f64());
    }
    let (f32, fh32, o32) = (median(f32), median(fh32), median(o32));
    eprintln!(
        "paired group commit: raw 32/txn {:.0} values/s, raw hashed keys {:.0} values/s, \
         store 32 writers {:.0} values/s; store/raw {:.2}x, store/raw hashed {:.2}x",
        f32,
        fh32,
        o32,
        o32 / f32,
        o32 / fh32
    );
}

/// Compaction is a one-off, not a loop: build a store of 4,000 versions
/// of 4 KiB (16 MiB), let half of them expire, sweep, then time a forced
/// compaction (reads and writes wait for all of it) and print the result.
fn compaction_once(_c: &mut Criterion) {
    let dir = bench_dir();
    let store = Store::open(dir.path().join("compact.redb"), StoreConfig::default()).unwrap();
    let writer = WriterId::new("compact").unwrap();
    // Half the versions expire two seconds after they are written.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 2_000;
    for chunk in 0..40u64 {
        let batch = (0..100u64)
            .map(|j| {
                let i = chunk * 100 + j;
                let mut v = record(i * (KEYS + 1), 0, &writer);
                v.envelope = random(4096);
                if i % 2 == 0 {
                    v.meta.expires_at_ms = Some(soon);
                }
                v
            })
            .collect::<Vec<_>>();
        for r in store.put_many_blocking(batch) {
            r.unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    while store.sweep_expired_blocking(512).unwrap().more {}
    let r = store.compact_blocking(true).unwrap();
    eprintln!(
        "compaction of a {:.1} MiB file with {:.1} MiB free: {:?}, file now {:.1} MiB",
        r.file_bytes_before as f64 / 1048576.0,
        r.free_bytes_before as f64 / 1048576.0,
        r.duration,
        r.file_bytes_after as f64 / 1048576.0
    );
}

criterion_group!(
    benches,
    paired,
    compaction_once,
    raw_redb,
    store,
    hints,
    zstd_cost
);
criterion_main!(benches);
