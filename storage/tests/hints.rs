//! Hinted handoff bookkeeping: hints written with their versions, paged per
//! target, listed by target, removed idempotently, swept with their
//! versions, and checked.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use redb::ReadableDatabase;
use slurp_protocol::VersionId;
use slurp_storage::layout;
use slurp_storage::{
    Hint, HintCursor, HintTarget, HintTargetError, PutOutcome, ReadError, RecordProblem, Store,
    StoreConfig, WriteError,
};

const T0: u64 = 1_700_000_000_000;

/// Every hint of `target`, paged `limit` at a time; also checks that only
/// the last page lacks a cursor.
fn all_hints(store: &Store, target: &str, limit: usize) -> Vec<Hint> {
    let mut out = Vec::new();
    let mut after: Option<HintCursor> = None;
    loop {
        let page = store.hints(target, after.as_ref(), limit).unwrap();
        assert!(page.corrupt.is_empty(), "{:?}", page.corrupt);
        assert!(page.hints.len() <= limit.max(1));
        out.extend(page.hints);
        match page.next {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    out
}

fn ids(hints: &[Hint]) -> Vec<(String, VersionId)> {
    hints
        .iter()
        .map(|h| (h.key.clone(), h.version.clone()))
        .collect()
}

fn hint(target: &str, path: &str, v: &VersionId) -> Hint {
    Hint {
        target: target.to_string(),
        key: key(path),
        version: v.clone(),
        created_ms: 0,
    }
}

#[test]
fn hints_are_written_with_their_versions_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let (a, b, c) = (vid(T0, 0, "w"), vid(T0, 1, "w"), vid(T0, 2, "w"));
    {
        let store = open(&dir, &clock);
        let out = store.put_many_hinted_blocking(
            vec![
                version("src/b.rs", b.clone()),
                version("src/a.rs", a.clone()),
                version("src/a.rs", c.clone()),
            ],
            "peer-b",
        );
        for r in out {
            assert!(matches!(r, Ok(PutOutcome::Inserted { .. })), "{r:?}");
        }
        // A plain put records no hint.
        store
            .put_blocking(version("src/plain.rs", vid(T0, 3, "w")))
            .unwrap();
        let hints = store.hints("peer-b", None, 10).unwrap();
        assert_eq!(hints.next, None);
        // Key order, then version order; the creation time is the clock
        // at the commit.
        assert_eq!(
            hints.hints,
            vec![
                Hint {
                    created_ms: T0,
                    ..hint("peer-b", "src/a.rs", &a)
                },
                Hint {
                    created_ms: T0,
                    ..hint("peer-b", "src/a.rs", &c)
                },
                Hint {
                    created_ms: T0,
                    ..hint("peer-b", "src/b.rs", &b)
                },
            ]
        );
        for h in &hints.hints {
            let got = store.get(&h.key, &h.version).unwrap().unwrap();
            assert_eq!(got.meta.version, h.version);
        }
        assert_eq!(store.stats().unwrap().hints, 3);
    }
    let store = open(&dir, &clock);
    assert_eq!(
        ids(&all_hints(&store, "peer-b", 2)),
        vec![
            (key("src/a.rs"), a.clone()),
            (key("src/a.rs"), c.clone()),
            (key("src/b.rs"), b.clone()),
        ]
    );
    assert!(store.hints("peer-c", None, 10).unwrap().hints.is_empty());
    assert_eq!(store.stats().unwrap().hints, 3);
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(check.hints, 3);
}

#[test]
fn a_version_already_present_is_still_hinted_and_keeps_its_first_hint_time() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let v = vid(T0, 0, "w");
    store.put_blocking(version("x.rs", v.clone())).unwrap();
    clock.set(T0 + 10);
    assert_eq!(
        store.put_many_hinted_blocking(vec![version("x.rs", v.clone())], "peer-b")[0]
            .as_ref()
            .unwrap(),
        &PutOutcome::AlreadyPresent { identical: true }
    );
    let hints = store.hints("peer-b", None, 10).unwrap().hints;
    assert_eq!(
        hints,
        vec![Hint {
            created_ms: T0 + 10,
            ..hint("peer-b", "x.rs", &v)
        }]
    );
    // Offered again later, with different content under the same id: the
    // first content stays, and so does the hint with its first time.
    clock.set(T0 + 20);
    let mut other = version("x.rs", v.clone());
    other.envelope = b"different".to_vec();
    assert_eq!(
        store.put_many_hinted_blocking(vec![other], "peer-b")[0]
            .as_ref()
            .unwrap(),
        &PutOutcome::AlreadyPresent { identical: false }
    );
    assert_eq!(store.hints("peer-b", None, 10).unwrap().hints, hints);
    // Another target gets its own hint for the same version.
    store.put_many_hinted_blocking(vec![version("x.rs", v.clone())], "peer-c")[0]
        .as_ref()
        .unwrap();
    assert_eq!(
        store.hint_targets().unwrap(),
        vec![
            HintTarget {
                target: "peer-b".into(),
                count: 1,
                oldest_ms: T0 + 10
            },
            HintTarget {
                target: "peer-c".into(),
                count: 1,
                oldest_ms: T0 + 20
            },
        ]
    );
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn expired_and_refused_versions_get_no_hint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let mut expired = version("old.rs", vid(T0, 0, "w"));
    expired.meta.expires_at_ms = Some(T0);
    let mut invalid = version("bad.rs", vid(T0, 1, "w"));
    invalid.meta.key = "ucxl://any:developer@proj:task/bad.rs".into();
    let good = version("good.rs", vid(T0, 2, "w"));
    let out = store.put_many_hinted_blocking(vec![expired, invalid, good], "peer-b");
    assert_eq!(out[0].as_ref().unwrap(), &PutOutcome::Expired);
    assert!(matches!(
        out[1],
        Err(WriteError::Invalid {
            problem: RecordProblem::PatternKey,
            ..
        })
    ));
    assert_eq!(
        out[2].as_ref().unwrap(),
        &PutOutcome::Inserted { latest: true }
    );
    assert_eq!(
        ids(&store.hints("peer-b", None, 10).unwrap().hints),
        vec![(key("good.rs"), vid(T0, 2, "w"))]
    );
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn many_hints_page_with_a_cursor_that_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let config = StoreConfig {
        max_batch: 64,
        ..StoreConfig::default()
    };
    let versions: Vec<_> = (0..600u32)
        .map(|i| {
            version(
                &format!("src/f{}.rs", i % 150),
                vid(T0 + u64::from(i), i, "w"),
            )
        })
        .collect();
    let mut expected: Vec<(String, VersionId)> = versions
        .iter()
        .map(|v| (v.meta.key.clone(), v.meta.version.clone()))
        .collect();
    expected.sort();
    let first_part;
    let cursor;
    {
        let store = open_with(&dir, &clock, config.clone());
        // Neighbouring targets, one a prefix of the other, must not leak
        // into each other's pages.
        for target in ["peer-a", "peer-a2", "peer-"] {
            let n = if target == "peer-a" {
                versions.len()
            } else {
                7
            };
            for r in store.put_many_hinted_blocking(versions[..n].to_vec(), target) {
                r.unwrap();
            }
        }
        let page = store.hints("peer-a", None, 250).unwrap();
        assert_eq!(page.hints.len(), 250);
        first_part = page.hints;
        cursor = page.next.expect("more hints after the first page");
    }
    let store = open_with(&dir, &clock, config);
    let mut got = first_part;
    let mut after = Some(cursor);
    while let Some(c) = after.take() {
        let page = store.hints("peer-a", Some(&c), 250).unwrap();
        got.extend(page.hints);
        after = page.next;
    }
    assert_eq!(ids(&got), expected);
    assert!(got.iter().all(|h| h.target == "peer-a"));
    assert_eq!(ids(&all_hints(&store, "peer-a", 1)), expected);
    assert_eq!(all_hints(&store, "peer-a2", 3).len(), 7);
    assert_eq!(all_hints(&store, "peer-", 100).len(), 7);
    // A page that ends exactly at the last hint has no cursor.
    let whole = store.hints("peer-a2", None, 7).unwrap();
    assert_eq!((whole.hints.len(), whole.next), (7, None));
    // A limit of 0 is read as 1.
    assert_eq!(store.hints("peer-a", None, 0).unwrap().hints.len(), 1);
    assert_eq!(store.stats().unwrap().hints, 614);
}

#[test]
fn targets_are_listed_in_order_with_counts_and_oldest_hint() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    assert_eq!(store.hint_targets().unwrap(), vec![]);
    clock.set(T0 + 5);
    let v = |i: u32| version(&format!("f{i}.rs"), vid(T0, i, "w"));
    store.put_many_hinted_blocking(vec![v(1), v(2)], "node-b");
    clock.set(T0 + 1);
    store.put_many_hinted_blocking(vec![v(3)], "node-a");
    clock.set(T0 + 9);
    store.put_many_hinted_blocking(vec![v(4)], "node-a");
    store.put_many_hinted_blocking(vec![v(4)], "node-c");
    assert_eq!(
        store.hint_targets().unwrap(),
        vec![
            HintTarget {
                target: "node-a".into(),
                count: 2,
                oldest_ms: T0 + 1
            },
            HintTarget {
                target: "node-b".into(),
                count: 2,
                oldest_ms: T0 + 5
            },
            HintTarget {
                target: "node-c".into(),
                count: 1,
                oldest_ms: T0 + 9
            },
        ]
    );
}

#[test]
fn removing_hints_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let (a, b, c) = (vid(T0, 0, "w"), vid(T0, 1, "w"), vid(T0, 2, "w"));
    store.put_many_hinted_blocking(
        vec![
            version("a.rs", a.clone()),
            version("b.rs", b.clone()),
            version("c.rs", c.clone()),
        ],
        "peer-b",
    );
    store.put_many_hinted_blocking(vec![version("a.rs", a.clone())], "peer-c");
    let listed = store.hints("peer-b", None, 10).unwrap().hints;
    assert_eq!(store.remove_hints_blocking(&listed[..2]).unwrap(), 2);
    assert_eq!(store.remove_hints_blocking(&listed[..2]).unwrap(), 0);
    // A list naming one hint twice removes it once.
    let twice = vec![listed[2].clone(), listed[2].clone(), listed[0].clone()];
    assert_eq!(store.remove_hints_blocking(&twice).unwrap(), 1);
    assert_eq!(store.remove_hints_blocking(&[]).unwrap(), 0);
    assert!(store.hints("peer-b", None, 10).unwrap().hints.is_empty());
    // The versions stay, and so do other targets' hints for them.
    assert!(store.get(&key("a.rs"), &a).unwrap().is_some());
    assert_eq!(
        ids(&store.hints("peer-c", None, 10).unwrap().hints),
        vec![(key("a.rs"), a.clone())]
    );
    assert_eq!(store.stats().unwrap().hints, 1);
    assert_eq!(store.hint_targets().unwrap().len(), 1);
    assert!(store.check().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_and_plain_writers_share_commits_and_removal_is_async_too() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8u32 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..8u32 {
                let v = version(&format!("w{w}/f{i}.rs"), vid(T0, i, &format!("w{w}")));
                let out = if w % 2 == 0 {
                    store.put_many_hinted(vec![v], &format!("peer-{w}")).await
                } else {
                    store.put_many(vec![v]).await
                };
                assert!(matches!(out[0], Ok(PutOutcome::Inserted { .. })));
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let targets: Vec<(String, u64)> = store
        .hint_targets()
        .unwrap()
        .into_iter()
        .map(|t| (t.target, t.count))
        .collect();
    let want: Vec<(String, u64)> = [0, 2, 4, 6].map(|w| (format!("peer-{w}"), 8)).into();
    assert_eq!(targets, want);
    for h in store.hints("peer-2", None, 100).unwrap().hints {
        assert!(h.key.starts_with(&key("w2/")), "{}", h.key);
    }
    let page = store.hints("peer-4", None, 100).unwrap().hints;
    assert_eq!(store.remove_hints(&page).await.unwrap(), 8);
    assert_eq!(store.remove_hints(&page).await.unwrap(), 0);
    assert_eq!(store.stats().unwrap().hints, 24);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn bad_target_ids_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let v = vid(T0, 0, "w");
    for (target, reason) in [
        ("", "must not be empty"),
        (&"p".repeat(129)[..], "longer than 128 bytes"),
        ("peer\0x", "must not contain a 0x00 byte"),
    ] {
        let out = store.put_many_hinted_blocking(
            vec![version("a.rs", v.clone()), version("b.rs", v.clone())],
            target,
        );
        assert_eq!(out.len(), 2);
        for r in out {
            match r {
                Err(WriteError::HintTarget(HintTargetError { reason: r, .. })) => {
                    assert_eq!(r, reason)
                }
                other => panic!("expected a hint target error, got {other:?}"),
            }
        }
        match store.hints(target, None, 10) {
            Err(ReadError::HintTarget(e)) => assert_eq!(e.reason, reason),
            other => panic!("expected a hint target error, got {other:?}"),
        }
        match store.remove_hints_blocking(&[hint(target, "a.rs", &v)]) {
            Err(WriteError::HintTarget(e)) => assert_eq!(e.reason, reason),
            other => panic!("expected a hint target error, got {other:?}"),
        }
    }
    // Nothing of the refused batches was stored.
    assert!(store.get(&key("a.rs"), &v).unwrap().is_none());
    assert_eq!(store.stats().unwrap().versions, 0);
    // A 128-byte target is fine; a hint with a key that is not a storage
    // key is refused by name.
    let long = "p".repeat(128);
    store.put_many_hinted_blocking(vec![version("a.rs", v.clone())], &long)[0]
        .as_ref()
        .unwrap();
    assert_eq!(store.hints(&long, None, 10).unwrap().hints.len(), 1);
    let mut bad_key = hint(&long, "a.rs", &v);
    bad_key.key = "ucxl://a:b@c:d/*^/x".into();
    assert!(matches!(
        store.remove_hints_blocking(&[bad_key]),
        Err(WriteError::Invalid { .. })
    ));
    assert_eq!(store.stats().unwrap().hints, 1);
}

#[test]
fn sweeping_a_hinted_version_removes_its_hints_in_the_same_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let (a, b) = (vid(T0, 0, "w"), vid(T0, 1, "w"));
    let mut expiring = version("tmp.rs", a.clone());
    expiring.meta.expires_at_ms = Some(T0 + 100);
    let lasting = version("tmp.rs", b.clone());
    for target in ["peer-b", "peer-c"] {
        for r in store.put_many_hinted_blocking(vec![expiring.clone(), lasting.clone()], target) {
            r.unwrap();
        }
    }
    clock.set(T0 + 100);
    // Expired but not yet swept: the hint stays (its version is still
    // stored) and the version no longer reads, which is how a handoff
    // worker learns to drop it.
    assert_eq!(all_hints(&store, "peer-b", 10).len(), 2);
    assert!(store.get(&key("tmp.rs"), &a).unwrap().is_none());
    assert!(store.check().unwrap().is_ok());
    let report = store.sweep_expired_blocking(10).unwrap();
    assert_eq!((report.removed, report.hints_removed), (1, 2));
    for target in ["peer-b", "peer-c"] {
        assert_eq!(
            ids(&all_hints(&store, target, 10)),
            vec![(key("tmp.rs"), b.clone())]
        );
    }
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(check.hints, 2);
}

#[test]
fn check_reports_hints_without_versions_and_pages_report_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let path = dir.path().join("store.redb");
    let v = vid(T0, 0, "w");
    drop(open(&dir, &clock));
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut hints = txn.open_table(layout::HINTS).unwrap();
            let dangling = layout::hint_key("peer-b", &key("gone.rs"), &v);
            hints.insert(dangling.as_slice(), T0).unwrap();
            hints.insert(&b"peer-b\0no-version"[..], T0).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(&dir, &clock);
    let check = store.check().unwrap();
    let tables: Vec<_> = check.problems.iter().map(|p| p.table).collect();
    assert_eq!(tables, vec!["hints", "hints"], "{:?}", check.problems);
    assert!(
        check
            .problems
            .iter()
            .any(|p| p.what.contains("missing version") && p.key == key("gone.rs")),
        "{:?}",
        check.problems
    );
    let page = store.hints("peer-b", None, 10).unwrap();
    assert_eq!(ids(&page.hints), vec![(key("gone.rs"), v.clone())]);
    assert_eq!(page.corrupt.len(), 1);
    assert_eq!(page.corrupt[0].table, "hints");
    // The valid entry can be removed like any hint.
    assert_eq!(store.remove_hints_blocking(&page.hints).unwrap(), 1);
}

#[test]
fn a_schema_1_store_gets_the_hints_table_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let path = dir.path().join("store.redb");
    let v = vid(T0, 0, "w");
    {
        let store = open(&dir, &clock);
        store.put_blocking(version("a.rs", v.clone())).unwrap();
    }
    // Make it what the previous schema wrote: no hints table, version 1.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(layout::HINTS).unwrap());
        txn.open_table(layout::META)
            .unwrap()
            .insert(layout::SCHEMA_VERSION_KEY, 1u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    {
        let store = open(&dir, &clock);
        assert!(store.get(&key("a.rs"), &v).unwrap().is_some());
        assert_eq!(store.stats().unwrap().hints, 0);
        assert!(store.hints("peer-b", None, 10).unwrap().hints.is_empty());
        store.put_many_hinted_blocking(vec![version("a.rs", v.clone())], "peer-b")[0]
            .as_ref()
            .unwrap();
        assert_eq!(store.hint_targets().unwrap().len(), 1);
        assert!(store.check().unwrap().is_ok());
    }
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(layout::META).unwrap();
    let raw = meta.get(layout::SCHEMA_VERSION_KEY).unwrap().unwrap();
    assert_eq!(raw.value(), layout::SCHEMA_VERSION.to_be_bytes().as_slice());
    assert_eq!(layout::SCHEMA_VERSION, 4);
}

// The store against a model of its hints: random hinted and plain puts
// (some expiring, some duplicates), clock moves, sweeps and removals of
// random parts of a target's hints. After every step each target's pages
// (at a random page size) and the target listing agree with the model, and
// the tables are consistent.

const PATHS: [&str; 3] = ["src/a.rs", "src/b.rs", "c.rs"];
const TARGETS: [&str; 3] = ["peer-a", "peer-a2", "peer-b"];

#[derive(Debug, Clone)]
enum Op {
    Put {
        path: usize,
        wall: u64,
        target: Option<usize>,
        ttl: Option<u64>,
    },
    Advance(u64),
    Sweep,
    Remove {
        target: usize,
        pick: Vec<bool>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PATHS.len(), 0u64..8, prop::option::weighted(0.7, 0..TARGETS.len()),
              prop::option::weighted(0.4, 1u64..20))
            .prop_map(|(path, wall, target, ttl)| Op::Put { path, wall, target, ttl }),
        2 => (1u64..8).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
        2 => (0..TARGETS.len(), prop::collection::vec(any::<bool>(), 0..12))
            .prop_map(|(target, pick)| Op::Remove { target, pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn hints_agree_with_the_model(
        ops in proptest::collection::vec(op(), 1..30),
        page in 1usize..5,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let store = open(&dir, &clock);
        let mut now = T0;
        // Stored versions and their expiry (the first write of an id wins).
        let mut versions: BTreeMap<(String, VersionId), Option<u64>> = BTreeMap::new();
        // (target, key, version) -> created_ms.
        let mut hints: BTreeMap<(String, String, VersionId), u64> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put { path, wall, target, ttl } => {
                    let id = vid(T0 + wall, 0, "w");
                    let mut v = version(PATHS[path], id.clone());
                    v.meta.expires_at_ms = ttl.map(|t| T0 + t);
                    let stored = if v.meta.expires_at_ms.is_some_and(|e| e <= now) {
                        false
                    } else {
                        versions.entry((key(PATHS[path]), id.clone())).or_insert(v.meta.expires_at_ms);
                        true
                    };
                    let out = match target {
                        Some(t) => {
                            if stored {
                                hints.entry((TARGETS[t].to_string(), key(PATHS[path]), id)).or_insert(now);
                            }
                            store.put_many_hinted_blocking(vec![v], TARGETS[t])
                        }
                        None => store.put_many_blocking(vec![v]),
                    };
                    prop_assert_eq!(out[0].is_ok(), true);
                    prop_assert_eq!(matches!(out[0], Ok(PutOutcome::Expired)), !stored);
                }
                Op::Advance(ms) => {
                    now += ms;
                    clock.set(now);
                }
                Op::Sweep => {
                    let mut rounds = 0;
                    while store.sweep_expired_blocking(2).unwrap().more {
                        rounds += 1;
                        prop_assert!(rounds < 100);
                    }
                    let gone: BTreeSet<(String, VersionId)> = versions
                        .iter()
                        .filter(|(_, e)| e.is_some_and(|e| e <= now))
                        .map(|(k, _)| k.clone())
                        .collect();
                    versions.retain(|k, _| !gone.contains(k));
                    hints.retain(|(_, k, v), _| !gone.contains(&(k.clone(), v.clone())));
                }
                Op::Remove { target, pick } => {
                    let listed = all_hints(&store, TARGETS[target], 100);
                    let chosen: Vec<Hint> = listed
                        .iter()
                        .zip(pick.iter().chain(std::iter::repeat(&true)))
                        .filter(|(_, p)| **p)
                        .map(|(h, _)| h.clone())
                        .collect();
                    for h in &chosen {
                        hints.remove(&(h.target.clone(), h.key.clone(), h.version.clone()));
                    }
                    prop_assert_eq!(store.remove_hints_blocking(&chosen).unwrap(), chosen.len());
                    prop_assert_eq!(store.remove_hints_blocking(&chosen).unwrap(), 0);
                }
            }
            for target in TARGETS {
                let got: Vec<(String, VersionId, u64)> = all_hints(&store, target, page)
                    .into_iter()
                    .map(|h| (h.key, h.version, h.created_ms))
                    .collect();
                let want: Vec<(String, VersionId, u64)> = hints
                    .iter()
                    .filter(|((t, _, _), _)| t == target)
                    .map(|((_, k, v), c)| (k.clone(), v.clone(), *c))
                    .collect();
                prop_assert_eq!(got, want);
            }
            let mut want_targets: Vec<HintTarget> = Vec::new();
            for ((t, _, _), c) in &hints {
                match want_targets.last_mut() {
                    Some(w) if &w.target == t => {
                        w.count += 1;
                        w.oldest_ms = w.oldest_ms.min(*c);
                    }
                    _ => want_targets.push(HintTarget { target: t.clone(), count: 1, oldest_ms: *c }),
                }
            }
            prop_assert_eq!(store.hint_targets().unwrap(), want_targets);
            prop_assert_eq!(store.stats().unwrap().hints, hints.len() as u64);
            let check = store.check().unwrap();
            prop_assert!(check.is_ok(), "{:?}", check.problems);
        }
    }
}
