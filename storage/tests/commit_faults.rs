//! A commit that fails on purpose (the `CommitFaults` hook the
//! fault-injection suite arms): nothing acknowledged before is lost,
//! nothing of the failed batch is stored, the slot digests stay exact, and
//! the store takes writes again as soon as the disk does.

mod common;

use std::sync::Arc;

use common::*;
use slurp_storage::{CommitFailpoint, PutOutcome, Store, StoreConfig, WriteError};

fn failpoint_store(dir: &tempfile::TempDir) -> (Store, Arc<CommitFailpoint>) {
    let fp = Arc::new(CommitFailpoint::default());
    let store = Store::builder(dir.path().join("store.redb"))
        .config(StoreConfig::default())
        .commit_faults(fp.clone())
        .open()
        .unwrap();
    (store, fp)
}

#[test]
fn a_failed_commit_stores_nothing_of_its_batch_and_loses_nothing_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, fp) = failpoint_store(&dir);
    let before: Vec<_> = (0..5)
        .map(|i| version(&format!("a{i}.rs"), vid(1_000 + i, 0, "w1")))
        .collect();
    for r in store.put_many_blocking(before.clone()) {
        assert!(matches!(r, Ok(PutOutcome::Inserted { .. })), "{r:?}");
    }
    let digest_before = store.digest(0..=u16::MAX);

    // One failed commit: a batch of new versions, a tombstone over an
    // acknowledged one, and a hinted put all fail, and none is stored.
    fp.fail_next(1);
    let failed = vec![
        version("b.rs", vid(2_000, 0, "w1")),
        tombstone("a0.rs", vid(2_001, 0, "w1")),
    ];
    let results = store.put_many_blocking(failed.clone());
    assert_eq!(results.len(), 2);
    for r in &results {
        assert!(matches!(r, Err(WriteError::CommitFailed(_))), "{r:?}");
    }
    assert_eq!(fp.failed(), 1);
    assert_eq!(store.digest(0..=u16::MAX), digest_before);
    assert!(store.latest_meta(&key("b.rs")).unwrap().is_none());
    let (a0, _) = store.latest_meta(&key("a0.rs")).unwrap().unwrap();
    assert!(!a0.tombstone, "the failed tombstone is not stored");
    for v in &before {
        assert!(store.get(&v.meta.key, &v.meta.version).unwrap().is_some());
    }

    // Failing until disarmed: hinted puts fail too, and leave no hint.
    fp.fail_until_disarmed();
    let hinted = store.put_many_hinted_blocking(vec![version("h.rs", vid(2_100, 0, "w1"))], "peer");
    assert!(matches!(hinted[0], Err(WriteError::CommitFailed(_))));
    assert!(store.hint_targets().unwrap().is_empty());
    assert!(matches!(
        store.put_blocking(version("c.rs", vid(2_200, 0, "w1"))),
        Err(WriteError::CommitFailed(_))
    ));
    assert_eq!(fp.failed(), 3);

    // The disk is back: the same writes go through, and the store is
    // consistent with its digests.
    fp.disarm();
    for r in store.put_many_blocking(failed) {
        assert!(matches!(r, Ok(PutOutcome::Inserted { .. })), "{r:?}");
    }
    let (a0, _) = store.latest_meta(&key("a0.rs")).unwrap().unwrap();
    assert!(a0.tombstone);
    assert_eq!(store.digest(0..=u16::MAX).versions, 7);
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(fp.failed(), 3);

    // What was acknowledged survives a reopen; the failed batch does not
    // reappear from some half-written state.
    drop(store);
    let store = Store::open(dir.path().join("store.redb"), StoreConfig::default()).unwrap();
    assert_eq!(store.digest(0..=u16::MAX).versions, 7);
    assert!(store.latest_meta(&key("c.rs")).unwrap().is_none());
    assert!(store.latest_meta(&key("h.rs")).unwrap().is_none());
    assert!(store.check().unwrap().problems.is_empty());
}

#[tokio::test]
async fn a_hook_installed_on_an_open_store_fails_concurrent_writers_of_one_batch_alike() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store.redb"), StoreConfig::default()).unwrap();
    store
        .put(version("first.rs", vid(1_000, 0, "w1")))
        .await
        .unwrap();
    let fp = Arc::new(CommitFailpoint::default());
    store.set_commit_faults(Some(fp.clone()));
    fp.fail_until_disarmed();
    let writers: Vec<_> = (0..8)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                s.put(version(&format!("w{i}.rs"), vid(2_000, i, "w1")))
                    .await
            })
        })
        .collect();
    for w in writers {
        assert!(matches!(w.await.unwrap(), Err(WriteError::CommitFailed(_))));
    }
    assert_eq!(store.digest(0..=u16::MAX).versions, 1);
    // Removing the hook is as good as disarming it.
    store.set_commit_faults(None);
    store
        .put(version("after.rs", vid(3_000, 0, "w1")))
        .await
        .unwrap();
    assert_eq!(store.digest(0..=u16::MAX).versions, 2);
    assert!(fp.failed() >= 1);
}
