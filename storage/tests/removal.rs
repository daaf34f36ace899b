//! Removing versions on purpose: purging chosen versions (a hinted copy
//! that reached its replica) and collecting deleted addresses (tombstone
//! GC), with the collected marker that refuses late copies afterwards.
//! Every test ends with the tables consistent and the maintained slot
//! digests equal to a scan.

mod common;

use common::*;
use redb::ReadableDatabase;
use slurp_protocol::{Slot, VersionId};
use slurp_storage::layout;
use slurp_storage::{
    CollectOutcome, CollectedMarker, Hint, Latest, PurgeReport, PutOutcome, ReadError, Store,
    WriteError,
};

const T0: u64 = 1_700_000_000_000;

/// The tables are consistent and the digests (of the full range and of
/// `key`'s slot) agree with a scan.
fn assert_consistent(store: &Store, keys: &[String]) {
    let check = store.check().unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert_eq!(
        store.digest(0..=u16::MAX),
        store.digest_scan(0..=u16::MAX).unwrap()
    );
    for k in keys {
        let s = Slot::of(k).0;
        assert_eq!(
            store.digest(s..=s),
            store.digest_scan(s..=s).unwrap(),
            "{k}"
        );
    }
}

fn hints_of(store: &Store, target: &str) -> Vec<Hint> {
    store.hints(target, None, 100).unwrap().hints
}

#[test]
fn purging_the_newest_version_makes_the_previous_one_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("src/a.rs");
    let (v1, v2) = (vid(T0, 0, "w"), vid(T0, 1, "w"));
    store.put_blocking(version("src/a.rs", v1.clone())).unwrap();
    let mut newer = version("src/a.rs", v2.clone());
    newer.meta.path = "src/moved/a.rs".into();
    newer.meta.influences = vec![key("src/b.rs")];
    store.put_blocking(newer).unwrap();
    assert_eq!(store.children("src/moved").unwrap().len(), 1);
    let before = store.digest(0..=u16::MAX);
    assert_eq!(before.versions, 2);

    let report = store.purge_blocking(vec![(k.clone(), v2.clone())]).unwrap();
    assert_eq!(
        report,
        PurgeReport {
            removed: 1,
            ..PurgeReport::default()
        }
    );
    match store.latest(&k).unwrap() {
        Latest::Live { record, ordinal } => {
            assert_eq!(record.meta.version, v1);
            assert_eq!(record.envelope, version("src/a.rs", v1.clone()).envelope);
            assert_eq!(ordinal, 1);
        }
        other => panic!("expected the previous version, got {other:?}"),
    }
    assert_eq!(store.version_ids(&k).unwrap(), vec![v1.clone()]);
    assert!(store.get(&k, &v2).unwrap().is_none());
    // What derived from the purged version follows the new newest one.
    assert!(store.children("src/moved").unwrap().is_empty());
    assert_eq!(store.children("src").unwrap().len(), 1);
    assert!(store.links(&k).unwrap().influences.is_empty());
    assert_eq!(store.list_keys("", None, 10).unwrap().keys[0].latest, v1);
    let after = store.digest(0..=u16::MAX);
    assert_eq!(after.versions, 1);
    assert_ne!(after.digest, before.digest);
    assert_consistent(&store, std::slice::from_ref(&k));

    // Purging the last version removes the address.
    let report = store
        .purge_blocking(vec![(k.clone(), v1.clone()), (k.clone(), v1.clone())])
        .unwrap();
    assert_eq!((report.removed, report.absent), (1, 1));
    assert_eq!(store.latest(&k).unwrap(), Latest::Absent);
    assert!(store.list_keys("", None, 10).unwrap().keys.is_empty());
    assert!(store.children("src").unwrap().is_empty());
    let st = store.stats().unwrap();
    assert_eq!((st.keys, st.versions), (0, 0));
    assert_eq!(store.digest(0..=u16::MAX), Default::default());
    assert_consistent(&store, &[k]);
}

#[test]
fn purging_a_tombstone_revives_the_address_and_purging_below_it_keeps_it_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("gone.rs");
    let (v1, v2, t3) = (vid(T0, 0, "w"), vid(T0, 1, "w"), vid(T0, 2, "w"));
    store.put_blocking(version("gone.rs", v1.clone())).unwrap();
    store.put_blocking(version("gone.rs", v2.clone())).unwrap();
    store
        .put_blocking(tombstone("gone.rs", t3.clone()))
        .unwrap();
    // An older version goes: still deleted, the tombstone entry stays.
    store.purge_blocking(vec![(k.clone(), v1)]).unwrap();
    assert!(matches!(
        store.latest(&k).unwrap(),
        Latest::Deleted { ordinal: 2, .. }
    ));
    assert_eq!(
        store
            .tombstones(0..=u16::MAX, None, 10)
            .unwrap()
            .items
            .len(),
        1
    );
    assert_consistent(&store, std::slice::from_ref(&k));
    // The tombstone goes: the previous version reads again.
    store.purge_blocking(vec![(k.clone(), t3)]).unwrap();
    assert!(store.exists(&k).unwrap());
    assert!(
        store
            .tombstones(0..=u16::MAX, None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(store.list_keys("", None, 10).unwrap().keys[0].latest, v2);
    assert_consistent(&store, &[k]);
}

#[test]
fn purging_removes_the_hints_and_the_ttl_entries_of_the_purged_version() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("tmp.rs");
    let (a, b) = (vid(T0, 0, "w"), vid(T0, 1, "w"));
    let mut expiring = version("tmp.rs", a.clone());
    expiring.meta.expires_at_ms = Some(T0 + 1_000);
    let mut later = version("tmp.rs", b.clone());
    later.meta.expires_at_ms = Some(T0 + 5_000);
    for target in ["peer-b", "peer-c"] {
        for r in store.put_many_hinted_blocking(vec![expiring.clone(), later.clone()], target) {
            r.unwrap();
        }
    }
    assert_eq!(store.stats().unwrap().expiring, 2);

    let report = store
        .purge_blocking(vec![(k.clone(), a.clone()), (key("never.rs"), a.clone())])
        .unwrap();
    assert_eq!(
        report,
        PurgeReport {
            removed: 1,
            absent: 1,
            hints_removed: 2,
            errors: vec![],
        }
    );
    for target in ["peer-b", "peer-c"] {
        let left: Vec<VersionId> = hints_of(&store, target)
            .into_iter()
            .map(|h| h.version)
            .collect();
        assert_eq!(left, vec![b.clone()]);
    }
    let st = store.stats().unwrap();
    assert_eq!((st.versions, st.expiring, st.hints), (1, 1, 2));
    assert_consistent(&store, std::slice::from_ref(&k));
    // Nothing is left for the sweeper at the purged version's expiry.
    clock.set(T0 + 1_000);
    let sweep = store.sweep_expired_blocking(10).unwrap();
    assert_eq!((sweep.removed, sweep.stale_entries), (0, 0));
    // The remaining version still expires and is swept as usual.
    clock.set(T0 + 5_000);
    let sweep = store.sweep_expired_blocking(10).unwrap();
    assert_eq!((sweep.removed, sweep.hints_removed), (1, 2));
    assert_consistent(&store, &[k]);
}

#[test]
fn a_purge_that_finds_nothing_changes_nothing_and_a_bad_key_refuses_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("a.rs");
    let v = vid(T0, 0, "w");
    store.put_blocking(version("a.rs", v.clone())).unwrap();
    let before = store.digest(0..=u16::MAX);
    let report = store
        .purge_blocking(vec![(k.clone(), vid(T0, 9, "w"))])
        .unwrap();
    assert_eq!((report.removed, report.absent), (0, 1));
    assert_eq!(store.digest(0..=u16::MAX), before);
    assert!(matches!(
        store.purge_blocking(vec![
            (k.clone(), v.clone()),
            ("not a key".into(), v.clone())
        ]),
        Err(WriteError::Invalid { .. })
    ));
    assert!(store.get(&k, &v).unwrap().is_some());
    assert!(store.purge_blocking(vec![]).unwrap() == PurgeReport::default());
    assert_consistent(&store, &[k]);
}

#[test]
fn collecting_removes_every_version_and_the_marker_refuses_older_copies() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("src/gone.rs");
    let other = key("src/kept.rs");
    let (v1, v2, t3) = (vid(T0, 0, "w"), vid(T0, 1, "x"), vid(T0, 2, "w"));
    store
        .put_blocking(version("src/kept.rs", v1.clone()))
        .unwrap();
    let mut first = version("src/gone.rs", v1.clone());
    first.meta.influences = vec![other.clone()];
    store.put_blocking(first.clone()).unwrap();
    let mut second = version("src/gone.rs", v2.clone());
    second.meta.expires_at_ms = Some(T0 + 60_000);
    store
        .put_many_hinted_blocking(vec![second.clone()], "peer-b")
        .pop()
        .unwrap()
        .unwrap();
    store
        .put_blocking(tombstone("src/gone.rs", t3.clone()))
        .unwrap();
    let kept_digest = store.digest_scan(0..=u16::MAX).unwrap();
    assert_eq!(kept_digest.versions, 4);

    clock.set(T0 + 10);
    assert_eq!(
        store.collect_blocking(&k, &t3).unwrap(),
        CollectOutcome::Collected { removed: 3 }
    );
    assert_eq!(store.latest(&k).unwrap(), Latest::Absent);
    assert!(store.history(&k).unwrap().is_empty());
    assert!(
        store
            .tombstones(0..=u16::MAX, None, 10)
            .unwrap()
            .items
            .is_empty()
    );
    assert!(hints_of(&store, "peer-b").is_empty());
    assert_eq!(
        store.collected(&k).unwrap(),
        Some(CollectedMarker {
            version: t3.clone(),
            collected_at_ms: T0 + 10,
        })
    );
    assert_eq!(store.collected(&other).unwrap(), None);
    let st = store.stats().unwrap();
    assert_eq!(
        (
            st.keys,
            st.versions,
            st.expiring,
            st.tombstones,
            st.hints,
            st.collected
        ),
        (1, 1, 0, 0, 0, 1)
    );
    assert_eq!(store.digest(0..=u16::MAX).versions, 1);
    assert_consistent(&store, &[k.clone(), other.clone()]);

    // Late copies of what the deletion removed, the tombstone included,
    // are superseded; a hinted one records no hint.
    for v in [first, second, tombstone("src/gone.rs", t3.clone())] {
        assert_eq!(store.put_blocking(v).unwrap(), PutOutcome::Collected);
    }
    let older = version("src/gone.rs", vid(T0 - 100, 0, "z"));
    assert_eq!(
        store
            .put_many_hinted_blocking(vec![older], "peer-b")
            .pop()
            .unwrap()
            .unwrap(),
        PutOutcome::Collected
    );
    assert!(hints_of(&store, "peer-b").is_empty());
    assert!(store.history(&k).unwrap().is_empty());
    assert_eq!(store.digest(0..=u16::MAX).versions, 1);
    assert_consistent(&store, &[k.clone(), other.clone()]);

    // A newer version is stored as usual and the marker stays.
    let v4 = vid(T0, 3, "w");
    assert_eq!(
        store
            .put_blocking(version("src/gone.rs", v4.clone()))
            .unwrap(),
        PutOutcome::Inserted { latest: true }
    );
    assert_eq!(store.version_ids(&k).unwrap(), vec![v4]);
    assert_eq!(store.collected(&k).unwrap().unwrap().version, t3);
    assert_consistent(&store, &[k.clone(), other.clone()]);

    // Everything survives a reopen, the digests included.
    let digest = store.digest(0..=u16::MAX);
    drop(store);
    let store = open(&dir, &clock);
    assert_eq!(store.digest(0..=u16::MAX), digest);
    assert_eq!(
        store.put_blocking(version("src/gone.rs", v2)).unwrap(),
        PutOutcome::Collected
    );
    assert_consistent(&store, &[k, other]);
}

#[test]
fn collecting_when_the_tombstone_is_not_the_newest_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("a.rs");
    let (v1, t2, v3) = (vid(T0, 0, "w"), vid(T0, 1, "w"), vid(T0, 2, "w"));
    store.put_blocking(version("a.rs", v1.clone())).unwrap();
    store.put_blocking(tombstone("a.rs", t2.clone())).unwrap();
    store.put_blocking(version("a.rs", v3.clone())).unwrap();
    let digest = store.digest(0..=u16::MAX);
    // A newer version came after the tombstone.
    assert_eq!(
        store.collect_blocking(&k, &t2).unwrap(),
        CollectOutcome::NotNewest
    );
    // The newest version is not a tombstone.
    assert_eq!(
        store.collect_blocking(&k, &v3).unwrap(),
        CollectOutcome::NotNewest
    );
    assert_eq!(store.version_ids(&k).unwrap(), vec![v1, t2.clone(), v3]);
    assert_eq!(store.digest(0..=u16::MAX), digest);
    assert_eq!(store.collected(&k).unwrap(), None);
    assert_eq!(store.stats().unwrap().collected, 0);

    // A tombstone that has expired no longer deletes the address.
    let t4 = vid(T0, 4, "w");
    let mut expiring = tombstone("a.rs", t4.clone());
    expiring.meta.expires_at_ms = Some(T0 + 50);
    store.put_blocking(expiring).unwrap();
    clock.set(T0 + 50);
    assert_eq!(
        store.collect_blocking(&k, &t4).unwrap(),
        CollectOutcome::NotNewest
    );
    assert!(store.exists(&k).unwrap());

    // An address without versions.
    assert_eq!(
        store.collect_blocking(&key("never.rs"), &t2).unwrap(),
        CollectOutcome::Absent
    );
    assert_eq!(store.collected(&key("never.rs")).unwrap(), None);
    assert!(matches!(
        store.collect_blocking("not a key", &t2),
        Err(WriteError::Invalid { .. })
    ));
    assert_consistent(&store, &[k]);
}

#[test]
fn collecting_an_address_with_a_corrupt_version_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let k = key("bad.rs");
    let (v1, v2, t3) = (vid(T0, 0, "w"), vid(T0, 1, "w"), vid(T0, 2, "w"));
    {
        let store = open(&dir, &clock);
        store.put_blocking(version("bad.rs", v1.clone())).unwrap();
        store.put_blocking(version("bad.rs", v2.clone())).unwrap();
        store.put_blocking(tombstone("bad.rs", t3.clone())).unwrap();
    }
    {
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(layout::VERSIONS)
            .unwrap()
            .insert(
                layout::version_key(&k, &v2).as_slice(),
                b"\x83\x03\x01garbage".as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let store = open(&dir, &clock);
    let digest = store.digest(0..=u16::MAX);
    assert_eq!(digest, store.digest_scan(0..=u16::MAX).unwrap());
    match store.collect_blocking(&k, &t3) {
        Err(WriteError::Corrupt(c)) => {
            assert_eq!((c.table, c.key.as_str()), ("versions", k.as_str()))
        }
        other => panic!("expected a corrupt-value error, got {other:?}"),
    }
    // Not even the versions before the corrupt one went.
    assert!(store.get(&k, &v1).unwrap().is_some());
    assert!(matches!(
        store.latest(&k).unwrap(),
        Latest::Deleted { ordinal: 3, .. }
    ));
    assert_eq!(store.collected(&k).unwrap(), None);
    assert_eq!(store.digest(0..=u16::MAX), digest);
    // A purge reports the corrupt version and removes the others.
    let report = store
        .purge_blocking(vec![(k.clone(), v2.clone()), (k.clone(), v1.clone())])
        .unwrap();
    assert_eq!(report.removed, 1);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].key, k);
    assert!(store.get(&k, &v1).unwrap().is_none());
    assert_eq!(
        store.digest(0..=u16::MAX),
        store.digest_scan(0..=u16::MAX).unwrap()
    );
}

#[test]
fn old_markers_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    for (i, path) in ["a.rs", "b.rs", "c.rs"].into_iter().enumerate() {
        clock.set(T0 + 1_000 * i as u64);
        let t = vid(T0, 1, "w");
        store.put_blocking(tombstone(path, t.clone())).unwrap();
        assert_eq!(
            store.collect_blocking(&key(path), &t).unwrap(),
            CollectOutcome::Collected { removed: 1 }
        );
    }
    assert_eq!(store.stats().unwrap().collected, 3);
    // Strictly older than: the marker collected at T0 + 1000 stays.
    assert_eq!(store.prune_collected_blocking(T0 + 1_000, 10).unwrap(), 1);
    assert_eq!(store.collected(&key("a.rs")).unwrap(), None);
    assert!(store.collected(&key("b.rs")).unwrap().is_some());
    assert_eq!(store.prune_collected_blocking(T0 + 5_000, 0).unwrap(), 0);
    assert_eq!(store.prune_collected_blocking(T0 + 5_000, 1).unwrap(), 1);
    assert_eq!(store.prune_collected_blocking(T0 + 5_000, 10).unwrap(), 1);
    assert_eq!(store.stats().unwrap().collected, 0);
    // Without its marker an address takes old versions again.
    assert_eq!(
        store
            .put_blocking(version("a.rs", vid(T0, 0, "w")))
            .unwrap(),
        PutOutcome::Inserted { latest: true }
    );
    assert_consistent(&store, &[key("a.rs")]);
}

#[test]
fn check_reports_a_marker_with_a_version_at_or_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let k = key("a.rs");
    let v = vid(T0, 0, "w");
    {
        let store = open(&dir, &clock);
        store.put_blocking(version("a.rs", v.clone())).unwrap();
    }
    {
        let db = redb::Database::open(dir.path().join("store.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(layout::COLLECTED).unwrap();
            let marker = slurp_protocol::Framed::encode(&CollectedMarker {
                version: v.clone(),
                collected_at_ms: T0,
            })
            .unwrap();
            table
                .insert(layout::slot_key(&k).as_slice(), marker.as_slice())
                .unwrap();
            table
                .insert(
                    layout::slot_key(&key("b.rs")).as_slice(),
                    b"garbage".as_slice(),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(&dir, &clock);
    let check = store.check().unwrap();
    assert_eq!(check.collected, 2);
    let mut problems: Vec<(&str, String)> = check
        .problems
        .iter()
        .map(|p| (p.table, p.key.clone()))
        .collect();
    problems.sort();
    let mut want = vec![("collected", k.clone()), ("collected", key("b.rs"))];
    want.sort();
    assert_eq!(problems, want, "{:?}", check.problems);
    // A corrupt marker fails the read of its address and puts to it.
    assert!(matches!(
        store.collected(&key("b.rs")),
        Err(ReadError::Corrupt(_))
    ));
    assert!(matches!(
        store.put_blocking(version("b.rs", v.clone())),
        Err(WriteError::Corrupt(_))
    ));
    // The valid one refuses a version at its id (the marker wins over
    // what is stored).
    assert_eq!(
        store.put_blocking(version("a.rs", v)).unwrap(),
        PutOutcome::Collected
    );
}

#[test]
fn a_schema_2_store_gets_the_collected_table_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let path = dir.path().join("store.redb");
    let (v, t) = (vid(T0, 0, "w"), vid(T0, 1, "w"));
    {
        let store = open(&dir, &clock);
        store.put_blocking(version("a.rs", v.clone())).unwrap();
        store.put_blocking(tombstone("a.rs", t.clone())).unwrap();
    }
    // Make it what the previous schema wrote: no collected table, version 2.
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(layout::COLLECTED).unwrap());
        txn.open_table(layout::META)
            .unwrap()
            .insert(layout::SCHEMA_VERSION_KEY, 2u32.to_be_bytes().as_slice())
            .unwrap();
        txn.commit().unwrap();
    }
    {
        let store = open(&dir, &clock);
        assert!(store.get(&key("a.rs"), &v).unwrap().is_some());
        assert_eq!(store.stats().unwrap().collected, 0);
        assert_eq!(store.collected(&key("a.rs")).unwrap(), None);
        assert_eq!(store.digest(0..=u16::MAX).versions, 2);
        assert_eq!(
            store.collect_blocking(&key("a.rs"), &t).unwrap(),
            CollectOutcome::Collected { removed: 2 }
        );
        assert_consistent(&store, &[key("a.rs")]);
    }
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = txn.open_table(layout::META).unwrap();
    let raw = meta.get(layout::SCHEMA_VERSION_KEY).unwrap().unwrap();
    assert_eq!(raw.value(), layout::SCHEMA_VERSION.to_be_bytes().as_slice());
    assert_eq!(layout::SCHEMA_VERSION, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_collect_and_prune_are_async_too() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    let k = key("a.rs");
    let (v, t) = (vid(T0, 0, "w"), vid(T0, 1, "w"));
    store.put(version("a.rs", v.clone())).await.unwrap();
    store.put(version("a.rs", t.clone())).await.unwrap();
    let report = store.purge(vec![(k.clone(), t.clone())]).await.unwrap();
    assert_eq!(report.removed, 1);
    store.put(tombstone("a.rs", t.clone())).await.unwrap();
    assert_eq!(
        store.collect(&k, &t).await.unwrap(),
        CollectOutcome::Collected { removed: 2 }
    );
    assert_eq!(store.prune_collected(T0 + 1, 10).await.unwrap(), 1);
    assert_consistent(&store, &[k]);
}
