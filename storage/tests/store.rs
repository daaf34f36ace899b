//! Behaviour of the store through its public API.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::*;
use rand::RngCore;
use redb::{ReadableDatabase, ReadableTable};
use slurp_protocol::{Hlc, Partition, PartitionScheme, Temporal};
use slurp_storage::layout;
use slurp_storage::record::{StoredVersion, decode_version};
use slurp_storage::{
    BackupKind, BackupMeta, Child, Codec, Latest, Links, OpenError, PutOutcome, ReadError,
    RecordProblem, SlotScan, Store, StoreConfig, WriteError,
};

const T0: u64 = 1_700_000_000_000;

fn live(store: &Store, k: &str) -> (Vec<u8>, u64, String) {
    match store.latest(k).unwrap() {
        Latest::Live { record, ordinal } => {
            (record.envelope, ordinal, record.meta.version.to_string())
        }
        other => panic!("expected a live version of {k}, got {other:?}"),
    }
}

#[test]
fn concurrent_versions_from_two_writers_are_both_kept_and_latest_is_the_greatest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    // Same clock reading, two writers: the writer id breaks the tie.
    let a = vid(T0, 0, "node-a");
    let b = vid(T0, 0, "node-b");
    assert_eq!(
        store
            .put_blocking(version("src/lib.rs", b.clone()))
            .unwrap(),
        PutOutcome::Inserted { latest: true }
    );
    assert_eq!(
        store
            .put_blocking(version("src/lib.rs", a.clone()))
            .unwrap(),
        PutOutcome::Inserted { latest: false }
    );
    let history: Vec<_> = store
        .history(&key("src/lib.rs"))
        .unwrap()
        .into_iter()
        .map(|m| m.version)
        .collect();
    assert_eq!(history, vec![a.clone(), b.clone()]);
    let (envelope, ordinal, v) = live(&store, &key("src/lib.rs"));
    assert_eq!(envelope, version("src/lib.rs", b.clone()).envelope);
    assert_eq!((ordinal, v), (2, b.to_string()));
    // Each version stays readable by id.
    let got = store.get(&key("src/lib.rs"), &a).unwrap().unwrap();
    assert_eq!(got.envelope, version("src/lib.rs", a).envelope);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn re_putting_a_version_is_a_reported_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let v = vid(T0, 1, "w");
    let first = version("a.rs", v.clone());
    store.put_blocking(first.clone()).unwrap();
    assert_eq!(
        store.put_blocking(first.clone()).unwrap(),
        PutOutcome::AlreadyPresent { identical: true }
    );
    // Different content under the same id: refused, the first one stays.
    let mut other = first.clone();
    other.envelope = b"something else".to_vec();
    assert_eq!(
        store.put_blocking(other).unwrap(),
        PutOutcome::AlreadyPresent { identical: false }
    );
    assert_eq!(store.history(&key("a.rs")).unwrap().len(), 1);
    assert_eq!(
        store.get(&key("a.rs"), &v).unwrap().unwrap().envelope,
        first.envelope
    );
    // Twice in one request: the second sees the first.
    let v2 = vid(T0, 2, "w");
    let r = store.put_many_blocking(vec![version("a.rs", v2.clone()), version("a.rs", v2)]);
    assert_eq!(
        r[0].as_ref().unwrap(),
        &PutOutcome::Inserted { latest: true }
    );
    assert_eq!(
        r[1].as_ref().unwrap(),
        &PutOutcome::AlreadyPresent { identical: true }
    );
    let st = store.stats().unwrap();
    assert_eq!((st.keys, st.versions), (1, 2));
}

#[test]
fn tombstones_delete_the_address_but_history_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("src/gone.rs");
    store
        .put_blocking(version("src/gone.rs", vid(T0, 0, "w")))
        .unwrap();
    assert!(store.exists(&k).unwrap());
    store
        .put_blocking(tombstone("src/gone.rs", vid(T0, 1, "w")))
        .unwrap();
    assert!(!store.exists(&k).unwrap());
    match store.latest(&k).unwrap() {
        Latest::Deleted { tombstone, ordinal } => {
            assert_eq!(tombstone.version, vid(T0, 1, "w"));
            assert_eq!(ordinal, 2);
        }
        other => panic!("expected deleted, got {other:?}"),
    }
    let history = store.history(&k).unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[1].tombstone);
    // Deleted addresses are not listed, not children.
    assert!(store.list_keys("", None, 100).unwrap().keys.is_empty());
    assert!(store.children("src").unwrap().is_empty());
    let t = store.tombstones(0..=u16::MAX, None, 10).unwrap();
    assert_eq!(t.items.len(), 1);
    assert_eq!(t.items[0].key, k);
    assert_eq!(t.items[0].entry.version, vid(T0, 1, "w"));
    assert_eq!(t.items[0].entry.recorded_at_ms, T0);
    // An older version arriving late does not revive it ...
    store
        .put_blocking(version("src/gone.rs", vid(T0 - 5, 0, "x")))
        .unwrap();
    assert!(!store.exists(&k).unwrap());
    // ... a newer one does, and the tombstone entry goes.
    store
        .put_blocking(version("src/gone.rs", vid(T0, 2, "w")))
        .unwrap();
    assert!(store.exists(&k).unwrap());
    assert!(
        store
            .tombstones(0..=u16::MAX, None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(store.history(&k).unwrap().len(), 4);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn expired_versions_are_never_returned_and_the_sweeper_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("src/ttl.rs");
    let old = vid(T0, 0, "w");
    let new = vid(T0, 1, "w");
    store
        .put_blocking(version("src/ttl.rs", old.clone()))
        .unwrap();
    let mut expiring = version("src/ttl.rs", new.clone());
    expiring.meta.expires_at_ms = Some(T0 + 1000);
    expiring.meta.influences = vec![key("src/other.rs")];
    expiring.meta.path = "src/moved/ttl.rs".into();
    store.put_blocking(expiring).unwrap();
    assert_eq!(live(&store, &k).2, new.to_string());
    assert_eq!(store.children("src/moved").unwrap().len(), 1);
    assert_eq!(
        store.links(&k).unwrap().influences,
        vec![key("src/other.rs")]
    );

    // At the expiry instant the version is gone from every read.
    clock.set(T0 + 1000);
    let (_, ordinal, v) = live(&store, &k);
    assert_eq!((ordinal, v), (1, old.to_string()));
    assert!(store.get(&k, &new).unwrap().is_none());
    assert_eq!(store.version_ids(&k).unwrap(), vec![old.clone()]);
    let scan = store.scan_slots(&SlotScan::metas(0..=u16::MAX)).unwrap();
    assert_eq!(scan.versions.len(), 1);
    assert_eq!(store.list_keys("", None, 10).unwrap().keys[0].latest, old);
    assert!(store.children("src/moved").unwrap().is_empty());
    assert_eq!(store.links(&k).unwrap(), Links::default());
    assert!(
        store
            .get_selected(&k, Temporal::Version(2))
            .unwrap()
            .is_none()
    );

    // Before the sweep the expired version is still on disk ...
    assert_eq!(store.stats().unwrap().versions, 2);
    let report = store.sweep_expired_blocking(100).unwrap();
    assert_eq!(report.removed, 1);
    assert!(!report.more);
    // ... after it, gone, and the derived tables follow the old version.
    let st = store.stats().unwrap();
    assert_eq!((st.versions, st.expiring), (1, 0));
    assert_eq!(store.children("src").unwrap().len(), 1);
    assert!(
        store.check().unwrap().is_ok(),
        "{:?}",
        store.check().unwrap()
    );

    // An address whose only version expires disappears entirely.
    let mut lone = version("lone.rs", vid(T0, 5, "w"));
    lone.meta.expires_at_ms = Some(T0 + 2000);
    store.put_blocking(lone).unwrap();
    clock.set(T0 + 2000);
    assert_eq!(store.latest(&key("lone.rs")).unwrap(), Latest::Absent);
    assert_eq!(store.sweep_expired_blocking(100).unwrap().removed, 1);
    assert_eq!(store.stats().unwrap().keys, 1);
    assert!(store.check().unwrap().is_ok());

    // A version that arrives already expired is not stored.
    let mut late = version("late.rs", vid(T0, 9, "w"));
    late.meta.expires_at_ms = Some(T0);
    assert_eq!(store.put_blocking(late).unwrap(), PutOutcome::Expired);
    assert_eq!(store.stats().unwrap().keys, 1);
}

#[test]
fn sweeping_is_bounded_per_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let batch: Vec<_> = (0..50)
        .map(|i| {
            let mut v = version(&format!("f{i}.rs"), vid(T0, i, "w"));
            v.meta.expires_at_ms = Some(T0 + 10 + u64::from(i % 3));
            v
        })
        .collect();
    assert!(store.put_many_blocking(batch).iter().all(|r| r.is_ok()));
    clock.set(T0 + 100);
    let first = store.sweep_expired_blocking(20).unwrap();
    assert_eq!((first.removed, first.more), (20, true));
    let second = store.sweep_expired_blocking(20).unwrap();
    assert_eq!(second.removed, 20);
    let third = store.sweep_expired_blocking(20).unwrap();
    assert_eq!((third.removed, third.more), (10, false));
    assert_eq!(store.stats().unwrap().versions, 0);
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn hierarchy_and_links_follow_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let (a, b, c) = (key("src/a.rs"), key("src/b.rs"), key("src/c.rs"));
    let mut va = version("src/a.rs", vid(T0, 0, "w"));
    va.meta.influences = vec![b.clone()];
    let mut vb = version("src/b.rs", vid(T0, 1, "w"));
    vb.meta.influenced_by = vec![a.clone()];
    vb.meta.influences = vec![c.clone()];
    store.put_many_blocking(vec![va, vb]);
    store
        .put_blocking(version("src/c.rs", vid(T0, 2, "w")))
        .unwrap();
    store.put_blocking(version("src", vid(T0, 3, "w"))).unwrap();

    let children = store.children("src").unwrap();
    let keys: Vec<_> = children.iter().map(|ch| ch.key.clone()).collect();
    assert_eq!(keys, vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(
        store.children("").unwrap(),
        vec![Child {
            key: key("src"),
            path: "src".into()
        }]
    );
    assert_eq!(store.links(&a).unwrap().influences, vec![b.clone()]);
    assert_eq!(store.links(&b).unwrap().influenced_by, vec![a.clone()]);
    assert_eq!(store.links(&c).unwrap().influenced_by, vec![b.clone()]);

    // a's new version drops its link; b still asserts it from its side.
    store
        .put_blocking(version("src/a.rs", vid(T0, 4, "w")))
        .unwrap();
    assert_eq!(store.links(&a).unwrap().influences, vec![b.clone()]);
    // b's new version moves it to another directory and drops every link.
    let mut moved = version("src/b.rs", vid(T0, 5, "w"));
    moved.meta.path = "lib/b.rs".into();
    store.put_blocking(moved).unwrap();
    assert_eq!(store.links(&a).unwrap(), Links::default());
    assert_eq!(store.links(&c).unwrap(), Links::default());
    assert_eq!(store.children("lib").unwrap().len(), 1);
    assert_eq!(store.children("src").unwrap().len(), 2);
    // A tombstone removes c from the hierarchy.
    store
        .put_blocking(tombstone("src/c.rs", vid(T0, 6, "w")))
        .unwrap();
    let keys: Vec<_> = store
        .children("src")
        .unwrap()
        .into_iter()
        .map(|ch| ch.key)
        .collect();
    assert_eq!(keys, vec![a]);
    assert!(
        store.check().unwrap().is_ok(),
        "{:?}",
        store.check().unwrap()
    );
}

#[test]
fn slot_scans_return_exactly_a_partitions_versions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let paths: Vec<String> = (0..300)
        .map(|i| format!("dir{}/file{i}.rs", i % 7))
        .collect();
    let batch = paths
        .iter()
        .enumerate()
        .map(|(i, p)| version(p, vid(T0 + i as u64, 0, "w")))
        .collect();
    assert!(store.put_many_blocking(batch).iter().all(|r| r.is_ok()));
    // A second version of every tenth key.
    let batch = paths
        .iter()
        .step_by(10)
        .map(|p| version(p, vid(T0 + 10_000, 0, "w")))
        .collect();
    store.put_many_blocking(batch);

    let scheme = PartitionScheme::new(4).unwrap();
    let mut seen = 0;
    for p in 0..scheme.count() {
        let p = Partition(p as u16);
        let expected: BTreeSet<String> = paths
            .iter()
            .map(|path| key(path))
            .filter(|k| scheme.partition_of(k) == p)
            .collect();
        let mut got = BTreeSet::new();
        let mut scan = SlotScan {
            limit: 7,
            ..SlotScan::metas(scheme.slots(p))
        };
        let mut pages = 0;
        loop {
            let page = store.scan_slots(&scan).unwrap();
            assert!(page.versions.len() <= 7);
            seen += page.versions.len();
            got.extend(page.versions.into_iter().map(|v| v.meta.key));
            pages += 1;
            match page.next {
                Some(c) => scan.after = Some(c),
                None => break,
            }
        }
        assert!(pages >= 1);
        assert_eq!(got, expected, "partition {p:?}");
    }
    assert_eq!(seen, 300 + 30);
    // Incremental: only versions after the watermark.
    let since = store
        .scan_slots(&SlotScan {
            since: Some(Hlc {
                wall_ms: T0 + 9_999,
                logical: 0,
            }),
            limit: 1000,
            envelopes: true,
            ..SlotScan::metas(0..=u16::MAX)
        })
        .unwrap();
    assert_eq!(since.versions.len(), 30);
    assert!(since.versions.iter().all(|v| v.envelope.is_some()));
    // An inverted range, or a cursor past the range, finds nothing.
    let (lo, hi) = (5u16, 4u16);
    assert!(
        store
            .scan_slots(&SlotScan::metas(lo..=hi))
            .unwrap()
            .versions
            .is_empty()
    );
    let past = SlotScan {
        after: Some(slurp_storage::ScanCursor::from_bytes(vec![
            0xff, 0xff, 0xff,
        ])),
        ..SlotScan::metas(0..=10)
    };
    assert!(store.scan_slots(&past).unwrap().versions.is_empty());
}

#[test]
fn key_listing_by_prefix_pages_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let batch = (0..25)
        .map(|i| version(&format!("src/m{i:02}.rs"), vid(T0, i, "w")))
        .chain((0..5).map(|i| version(&format!("docs/d{i}.md"), vid(T0, i, "w"))))
        .collect();
    store.put_many_blocking(batch);
    let mut all = vec![];
    let mut after: Option<String> = None;
    loop {
        let page = store.list_keys(&key("src/"), after.as_deref(), 10).unwrap();
        all.extend(page.keys.iter().map(|k| k.key.clone()));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    let expected: Vec<_> = (0..25).map(|i| key(&format!("src/m{i:02}.rs"))).collect();
    assert_eq!(all, expected);
    assert_eq!(store.list_keys("", None, 1000).unwrap().keys.len(), 30);
    assert!(
        store
            .list_keys("ucxl://nobody", None, 10)
            .unwrap()
            .keys
            .is_empty()
    );
}

#[test]
fn temporal_selectors_pick_from_history() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    for i in 0..4 {
        store
            .put_blocking(version("x.rs", vid(T0, i, "w")))
            .unwrap();
    }
    let k = key("x.rs");
    let pick = |t| {
        store
            .get_selected(&k, t)
            .unwrap()
            .map(|r| r.meta.version.hlc.logical)
    };
    assert_eq!(pick(Temporal::Latest), Some(3));
    assert_eq!(pick(Temporal::Version(1)), Some(0));
    assert_eq!(pick(Temporal::Back(1)), Some(2));
    assert_eq!(pick(Temporal::Forward(1)), Some(1));
    assert_eq!(pick(Temporal::Version(5)), None);
    // The latest meta agrees with the history without reading it.
    let (meta, ordinal) = store.latest_meta(&k).unwrap().unwrap();
    assert_eq!(meta, store.history(&k).unwrap().pop().unwrap());
    assert_eq!(ordinal, 4);
    assert!(store.latest_meta(&key("absent.rs")).unwrap().is_none());
}

fn stored_codec(path: &std::path::Path, k: &str, v: &slurp_protocol::VersionId) -> StoredVersion {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let t = txn.open_table(layout::VERSIONS).unwrap();
    let raw = t
        .get(layout::version_key(k, v).as_slice())
        .unwrap()
        .unwrap();
    decode_version(raw.value(), k, v).unwrap()
}

#[test]
fn compression_is_used_only_when_it_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let text = "base64-ish header line YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOQ\n".repeat(200);
    let mut random = vec![0u8; 16 * 1024];
    rand::thread_rng().fill_bytes(&mut random);
    let (vt, vr) = (vid(T0, 0, "w"), vid(T0, 0, "w"));
    let mut a = version("text.rs", vt.clone());
    a.envelope = text.clone().into_bytes();
    let mut b = version("random.rs", vr.clone());
    b.envelope = random.clone();
    store.put_many_blocking(vec![a, b]);
    assert_eq!(
        store.get(&key("text.rs"), &vt).unwrap().unwrap().envelope,
        text.as_bytes()
    );
    assert_eq!(
        store.get(&key("random.rs"), &vr).unwrap().unwrap().envelope,
        random
    );
    let path = store.path().to_path_buf();
    drop(store);
    let t = stored_codec(&path, &key("text.rs"), &vt);
    assert_eq!(t.codec, Codec::Zstd);
    assert!(t.data.0.len() < text.len() / 4);
    let r = stored_codec(&path, &key("random.rs"), &vr);
    assert_eq!(r.codec, Codec::Raw);
    assert_eq!(r.data.0, random);
}

#[test]
fn oversized_and_invalid_values_are_refused_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let config = StoreConfig {
        max_value_bytes: 4096,
        ..StoreConfig::default()
    };
    let store = open_with(&dir, &clock, config);
    store
        .put_blocking(version("keep.rs", vid(T0, 0, "w")))
        .unwrap();
    let mut big = version("big.rs", vid(T0, 1, "w"));
    big.envelope = vec![7u8; 5000];
    match store.put_blocking(big) {
        Err(WriteError::TooLarge {
            key: k,
            size,
            limit,
        }) => {
            assert_eq!(k, key("big.rs"));
            assert_eq!((size, limit), (5000, 4096));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut bad_key = version("x.rs", vid(T0, 2, "w"));
    bad_key.meta.key = "ucxl://any:developer@proj:task/x.rs".into();
    assert!(matches!(
        store.put_blocking(bad_key),
        Err(WriteError::Invalid {
            problem: RecordProblem::PatternKey,
            ..
        })
    ));
    let mut bad_link = version("y.rs", vid(T0, 3, "w"));
    bad_link.meta.influences = vec!["not a key".into()];
    assert!(matches!(
        store.put_blocking(bad_link),
        Err(WriteError::Invalid {
            problem: RecordProblem::BadLink { .. },
            ..
        })
    ));
    let mut empty = version("z.rs", vid(T0, 4, "w"));
    empty.envelope.clear();
    assert!(matches!(
        store.put_blocking(empty),
        Err(WriteError::Invalid {
            problem: RecordProblem::EmptyEnvelope,
            ..
        })
    ));
    // In a request of several, the refused one does not stop the others.
    let mut big = version("big.rs", vid(T0, 5, "w"));
    big.envelope = vec![7u8; 5000];
    let r = store.put_many_blocking(vec![
        version("ok1.rs", vid(T0, 6, "w")),
        big,
        version("ok2.rs", vid(T0, 7, "w")),
    ]);
    assert!(r[0].is_ok() && r[2].is_ok());
    assert!(matches!(r[1], Err(WriteError::TooLarge { .. })));
    let st = store.stats().unwrap();
    assert_eq!((st.keys, st.versions), (3, 3));
    assert!(store.exists(&key("keep.rs")).unwrap());
    assert!(!store.exists(&key("big.rs")).unwrap());
    assert!(store.check().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let observer = Arc::new(CountingObserver::default());
    let store = Store::builder(dir.path().join("s.redb"))
        .time_source(Arc::new(clock))
        .observer(observer.clone())
        .open()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..32u32 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..8u32 {
                let v = version(&format!("w{w}/f{i}.rs"), vid(T0, i, &format!("writer{w}")));
                assert_eq!(
                    store.put(v).await.unwrap(),
                    PutOutcome::Inserted { latest: true }
                );
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let commits = observer.commits.load(Ordering::SeqCst);
    assert_eq!(observer.inserted.load(Ordering::SeqCst), 256);
    assert!(commits < 256, "{commits} commits for 256 writes");
    assert!(observer.largest_batch.load(Ordering::SeqCst) > 1);
    assert_eq!(store.stats().unwrap().versions, 256);
}

#[test]
fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let backup = BackupMeta {
        id: "b1".into(),
        kind: BackupKind::Full,
        created_at_ms: T0,
        since: None,
        watermark: Hlc {
            wall_ms: T0,
            logical: 9,
        },
        slots: (0, u16::MAX),
        versions: 2,
        bytes: 100,
        location: "backups/b1".into(),
        digest: None,
        complete: true,
    };
    {
        let store = open(&dir, &clock);
        let mut a = version("src/a.rs", vid(T0, 0, "w"));
        a.meta.influences = vec![key("src/b.rs")];
        store.put_blocking(a).unwrap();
        store
            .put_blocking(version("src/b.rs", vid(T0, 1, "w")))
            .unwrap();
        assert!(!store.put_backup_blocking(&backup).unwrap());
    }
    let store = open(&dir, &clock);
    assert_eq!(live(&store, &key("src/a.rs")).1, 1);
    assert_eq!(store.children("src").unwrap().len(), 2);
    assert_eq!(
        store.links(&key("src/b.rs")).unwrap().influenced_by,
        vec![key("src/a.rs")]
    );
    assert_eq!(store.backup("b1").unwrap(), Some(backup.clone()));
    assert_eq!(store.backups().unwrap().items, vec![backup]);
    assert!(store.delete_backup_blocking("b1").unwrap());
    assert!(!store.delete_backup_blocking("b1").unwrap());
    assert!(store.check().unwrap().is_ok());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let path = dir.path().join("store.redb");
    drop(open(&dir, &clock));
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(layout::META)
            .unwrap()
            .insert(layout::SCHEMA_VERSION_KEY, 99u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    match Store::open(&path, StoreConfig::default()) {
        Err(OpenError::SchemaTooNew {
            found, supported, ..
        }) => assert_eq!((found, supported), (99, layout::SCHEMA_VERSION)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

/// The `acl` table of schemas 1 to 3 (access-control records, written by
/// nothing), which opening deletes since schema 4.
const RETIRED_ACL: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("acl");

/// The entries of a table, as raw key and value bytes.
type RawRows = Vec<(Vec<u8>, Vec<u8>)>;

/// Every entry of one table.
fn raw_rows<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: redb::TableDefinition<K, V>,
) -> RawRows {
    txn.open_table(def)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (
                K::as_bytes(&k.value()).as_ref().to_vec(),
                V::as_bytes(&v.value()).as_ref().to_vec(),
            )
        })
        .collect()
}

/// Every record of every table of the current schema but `meta`, raw, by
/// table name.
fn raw_tables(path: &std::path::Path) -> Vec<(&'static str, RawRows)> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    vec![
        ("versions", raw_rows(&txn, layout::VERSIONS)),
        ("keys", raw_rows(&txn, layout::KEYS)),
        ("ttl", raw_rows(&txn, layout::TTL)),
        ("key_ttl", raw_rows(&txn, layout::KEY_TTL)),
        ("hierarchy", raw_rows(&txn, layout::HIERARCHY)),
        ("links_out", raw_rows(&txn, layout::LINKS_OUT)),
        ("links_in", raw_rows(&txn, layout::LINKS_IN)),
        ("tombstones", raw_rows(&txn, layout::TOMBSTONES)),
        ("backups", raw_rows(&txn, layout::BACKUPS)),
        ("hints", raw_rows(&txn, layout::HINTS)),
        ("collected", raw_rows(&txn, layout::COLLECTED)),
    ]
}

#[test]
fn a_schema_3_store_loses_the_acl_table_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let path = dir.path().join("store.redb");
    let backup = BackupMeta {
        id: "b1".into(),
        kind: BackupKind::Full,
        created_at_ms: T0,
        since: None,
        watermark: Hlc {
            wall_ms: T0,
            logical: 9,
        },
        slots: (0, u16::MAX),
        versions: 2,
        bytes: 100,
        location: "backups/b1".into(),
        digest: None,
        complete: true,
    };
    let (a, b, gone) = (key("src/a.rs"), key("src/b.rs"), key("gone.rs"));
    let (v0, v1, v2) = (vid(T0, 0, "w"), vid(T0, 1, "w"), vid(T0, 2, "w"));
    // Something in every table: versions (one expiring), heads, keys,
    // hierarchy, links, a tombstone, a hint, a backup, a collected marker.
    {
        let store = open(&dir, &clock);
        let mut first = version("src/a.rs", v0.clone());
        first.meta.influences = vec![b.clone()];
        store.put_blocking(first).unwrap();
        let mut expiring = version("src/b.rs", v1.clone());
        expiring.meta.expires_at_ms = Some(T0 + 1_000_000);
        store.put_many_hinted_blocking(vec![expiring], "peer-b")[0]
            .as_ref()
            .unwrap();
        store.put_blocking(version("src/b.rs", v2.clone())).unwrap();
        store.put_blocking(version("gone.rs", v0.clone())).unwrap();
        store
            .put_blocking(tombstone("gone.rs", v1.clone()))
            .unwrap();
        store
            .put_blocking(tombstone("src/b.rs", vid(T0, 3, "w")))
            .unwrap();
        store.put_blocking(version("src/c.rs", v0.clone())).unwrap();
        store
            .put_blocking(tombstone("src/c.rs", v1.clone()))
            .unwrap();
        assert!(!store.put_backup_blocking(&backup).unwrap());
        store.collect_blocking(&gone, &v1).unwrap();
        assert!(store.check().unwrap().is_ok());
    }
    let before = raw_tables(&path);
    for (table, rows) in &before {
        assert!(!rows.is_empty(), "nothing in {table}");
    }
    // Make it what the previous schema wrote: an `acl` table (here with
    // records in it), version 3.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut acl = txn.open_table(RETIRED_ACL).unwrap();
            for k in [&a, &b] {
                acl.insert(layout::slot_key(k).as_slice(), b"an acl record".as_slice())
                    .unwrap();
            }
        }
        txn.open_table(layout::META)
            .unwrap()
            .insert(layout::SCHEMA_VERSION_KEY, 3u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    let stats = {
        let store = open(&dir, &clock);
        assert_eq!(live(&store, &a).2, v0.to_string());
        assert!(matches!(store.latest(&b).unwrap(), Latest::Deleted { .. }));
        assert_eq!(store.history(&b).unwrap().len(), 3);
        assert_eq!(store.hint_targets().unwrap().len(), 1);
        assert_eq!(store.backup("b1").unwrap(), Some(backup));
        assert!(store.collected(&gone).unwrap().is_some());
        assert_eq!(
            store.digest(0..=u16::MAX),
            store.digest_scan(0..=u16::MAX).unwrap()
        );
        assert!(store.check().unwrap().is_ok());
        store.stats().unwrap()
    };
    assert_eq!(
        (stats.keys, stats.versions, stats.expiring, stats.tombstones),
        (3, 6, 1, 2)
    );
    assert_eq!((stats.backups, stats.hints, stats.collected), (1, 1, 1));
    // Every other record is intact, byte for byte.
    assert_eq!(raw_tables(&path), before);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let tables: BTreeSet<String> = txn
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert!(!tables.contains("acl"), "{tables:?}");
    let mut expected: BTreeSet<String> = before.iter().map(|(t, _)| t.to_string()).collect();
    expected.insert("meta".into());
    assert_eq!(tables, expected);
    assert!(matches!(
        txn.open_table(RETIRED_ACL),
        Err(redb::TableError::TableDoesNotExist(_))
    ));
    let meta = txn.open_table(layout::META).unwrap();
    let raw = meta.get(layout::SCHEMA_VERSION_KEY).unwrap().unwrap();
    assert_eq!(raw.value(), layout::SCHEMA_VERSION.to_be_bytes().as_slice());
    assert_eq!(layout::SCHEMA_VERSION, 4);
}

#[test]
fn a_corrupt_value_fails_only_its_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let (bad, good) = (key("bad.rs"), key("good.rs"));
    let v = vid(T0, 0, "w");
    {
        let store = open(&dir, &clock);
        store.put_blocking(version("bad.rs", v.clone())).unwrap();
        store.put_blocking(version("good.rs", v.clone())).unwrap();
    }
    {
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(layout::VERSIONS)
            .unwrap()
            .insert(
                layout::version_key(&bad, &v).as_slice(),
                b"\x83\x03\x01garbage".as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open(&dir, &clock);
    for r in [
        store.get(&bad, &v).map(|_| ()),
        store.latest(&bad).map(|_| ()),
        store.history(&bad).map(|_| ()),
    ] {
        match r {
            Err(ReadError::Corrupt(c)) => {
                assert_eq!((c.table, c.key.as_str()), ("versions", bad.as_str()));
            }
            other => panic!("expected a corrupt-value error, got {other:?}"),
        }
    }
    assert!(store.get(&good, &v).unwrap().is_some());
    assert!(matches!(store.latest(&good).unwrap(), Latest::Live { .. }));
    let scan = store.scan_slots(&SlotScan::metas(0..=u16::MAX)).unwrap();
    assert_eq!(scan.versions.len(), 1);
    assert_eq!(scan.corrupt.len(), 1);
    assert_eq!(scan.corrupt[0].key, bad);
    let check = store.check().unwrap();
    assert!(check.problems.iter().any(|p| p.key == bad), "{check:?}");
    // Writes to other addresses, and new versions of the damaged one, go on.
    store
        .put_blocking(version("good.rs", vid(T0, 1, "w")))
        .unwrap();
    store
        .put_blocking(version("bad.rs", vid(T0, 1, "w")))
        .unwrap();
    assert!(matches!(store.latest(&bad).unwrap(), Latest::Live { .. }));
}

#[test]
fn a_corrupt_head_fails_its_item_and_not_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let bad = key("bad.rs");
    {
        let store = open(&dir, &clock);
        store
            .put_blocking(version("bad.rs", vid(T0, 0, "w")))
            .unwrap();
    }
    {
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(layout::VERSIONS)
            .unwrap()
            .insert(
                layout::head_key(&bad).as_slice(),
                b"\x01\x00short".as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open(&dir, &clock);
    let r = store.put_many_blocking(vec![
        version("a.rs", vid(T0, 1, "w")),
        version("bad.rs", vid(T0, 1, "w")),
        version("b.rs", vid(T0, 1, "w")),
    ]);
    assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
    match &r[1] {
        Err(WriteError::Corrupt(c)) => {
            assert_eq!((c.table, c.key.as_str()), ("versions/head", bad.as_str()))
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    assert!(store.exists(&key("a.rs")).unwrap());
    assert!(store.exists(&key("b.rs")).unwrap());
    // Nothing of the refused item was written.
    assert!(store.get(&bad, &vid(T0, 1, "w")).unwrap().is_none());
    let page = store.list_keys("", None, 10).unwrap();
    assert_eq!(page.keys.len(), 2);
    assert_eq!(page.corrupt.len(), 1);
    // Scans skip heads, damaged or not.
    let scan = store.scan_slots(&SlotScan::metas(0..=u16::MAX)).unwrap();
    assert_eq!((scan.versions.len(), scan.corrupt.len()), (3, 0));
    let check = store.check().unwrap();
    assert!(check.problems.iter().any(|p| p.key == bad), "{check:?}");
}

#[test]
fn stats_count_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let empty = store.stats().unwrap();
    assert_eq!((empty.keys, empty.versions), (0, 0));
    for i in 0..10 {
        let mut v = version(&format!("f{}.rs", i % 4), vid(T0, i, "w"));
        if i.is_multiple_of(5) {
            v.meta.expires_at_ms = Some(T0 + 1_000_000);
        }
        store.put_blocking(v).unwrap();
    }
    store
        .put_blocking(tombstone("f0.rs", vid(T0, 99, "w")))
        .unwrap();
    let st = store.stats().unwrap();
    assert_eq!(st.keys, 4);
    assert_eq!(st.versions, 11);
    assert_eq!(st.expiring, 2);
    assert_eq!(st.tombstones, 1);
    assert!(st.stored_bytes > 0);
    assert!(st.file_bytes >= st.stored_bytes);
}

#[test]
fn a_large_put_many_is_committed_in_bounded_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let observer = Arc::new(CountingObserver::default());
    let store = Store::builder(dir.path().join("s.redb"))
        .config(StoreConfig {
            max_batch: 16,
            ..StoreConfig::default()
        })
        .time_source(Arc::new(clock))
        .observer(observer.clone())
        .open()
        .unwrap();
    let mut batch: Vec<_> = (0..100)
        .map(|i| version(&format!("f{i}.rs"), vid(T0, i, "w")))
        .collect();
    batch[50].envelope.clear();
    let r = store.put_many_blocking(batch);
    assert_eq!(r.len(), 100);
    assert!(matches!(r[50], Err(WriteError::Invalid { .. })));
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 99);
    assert_eq!(store.stats().unwrap().versions, 99);
    assert!(observer.commits.load(Ordering::SeqCst) >= 7);
    assert_eq!(observer.largest_insert.load(Ordering::SeqCst), 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_sealed_bytes_keeps_the_metadata_and_only_touches_stored_versions() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let v = vid(T0, 1, "w");
    let first = version("a.rs", v.clone());
    store.put(first.clone()).await.unwrap();
    let mut rewrapped = first.clone();
    rewrapped.envelope = b"rewrapped bytes".to_vec();
    let missing = version("b.rs", vid(T0, 2, "w"));
    let mut changed = first.clone();
    changed
        .meta
        .readers
        .push(slurp_protocol::RoleName::new("admin").unwrap());
    changed.envelope = b"other bytes".to_vec();
    let r = store
        .replace_envelopes(vec![rewrapped.clone(), missing, changed])
        .await;
    assert!(matches!(r[0], Ok(true)), "{:?}", r[0]);
    assert!(matches!(r[1], Ok(false)), "{:?}", r[1]);
    assert!(
        matches!(
            &r[2],
            Err(slurp_storage::WriteError::Invalid {
                problem: slurp_storage::RecordProblem::MetadataChanged,
                ..
            })
        ),
        "{:?}",
        r[2]
    );
    let got = store.get(&key("a.rs"), &v).unwrap().unwrap();
    assert_eq!(got.envelope, rewrapped.envelope);
    assert_eq!(got.meta, first.meta);
    assert!(store.get(&key("b.rs"), &vid(T0, 2, "w")).unwrap().is_none());
    assert_eq!(store.history(&key("a.rs")).unwrap().len(), 1);
}
