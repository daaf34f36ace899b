//! Records the source holds but cannot open, and coverage: counted, never
//! an error, reported to searches in their role and scope.

mod common;

use common::*;
use slurp_index::{
    Coverage, RebuildItem, RebuildProgress, SlotScope, UnopenableCounts, UnopenableEntry,
    UnopenableReason, WriteOutcome,
};

fn unopenable(
    path: &str,
    wall_ms: u64,
    readers: &[&str],
    reason: UnopenableReason,
) -> UnopenableEntry {
    UnopenableEntry {
        key: key_of(path),
        version: version(wall_ms),
        readers: readers.iter().map(|r| role(r)).collect(),
        reason,
    }
}

#[test]
fn a_newer_unopenable_version_hides_the_older_document_and_is_counted() {
    let index = open();
    index
        .upsert(&entry(context("a.rs", "marmalade"), 1, &["developer"]))
        .unwrap();
    index.commit().unwrap();
    assert_eq!(keys(&index, &query("developer", "marmalade")).len(), 1);

    let u = unopenable("a.rs", 2, &["developer", "admin"], UnopenableReason::NoKey);
    assert_eq!(index.mark_unopenable(&u).unwrap(), WriteOutcome::Applied);
    assert_eq!(
        index.mark_unopenable(&u).unwrap(),
        WriteOutcome::AlreadyApplied
    );
    index.commit().unwrap();
    // The plaintext of version 1 is not what the store's newest says.
    assert!(keys(&index, &query("developer", "marmalade")).is_empty());
    let r = index.search(&query("developer", "")).unwrap();
    assert_eq!(r.unopenable, 1);
    assert_eq!(r.coverage, Coverage::Complete);
    assert_eq!(index.search(&query("architect", "")).unwrap().unopenable, 0);
    let elsewhere = SlotScope::none();
    assert_eq!(
        index
            .search_scoped(&query("developer", ""), &elsewhere, None)
            .unwrap()
            .unopenable,
        0
    );
    let s = index.status().unwrap();
    assert_eq!(
        s.unopenable,
        UnopenableCounts {
            no_key: 1,
            corrupt: 0
        }
    );
    assert_eq!((s.live_keys, s.tombstones), (0, 0));

    // An older version arriving late changes nothing; a newer one is
    // indexed and the key is no longer counted.
    assert!(matches!(
        index
            .upsert(&entry(context("a.rs", "stale"), 1, &["developer"]))
            .unwrap(),
        WriteOutcome::Superseded { .. }
    ));
    index
        .upsert(&entry(context("a.rs", "fresh"), 3, &["developer"]))
        .unwrap();
    index.commit().unwrap();
    assert_eq!(keys(&index, &query("developer", "fresh")).len(), 1);
    assert_eq!(index.unopenable(), UnopenableCounts::default());
    assert_eq!(index.search(&query("developer", "")).unwrap().unopenable, 0);

    // A tombstone also ends it.
    index
        .mark_unopenable(&unopenable(
            "b.rs",
            5,
            &["developer"],
            UnopenableReason::Corrupt,
        ))
        .unwrap();
    assert_eq!(index.unopenable().corrupt, 1);
    index.delete(&key_of("b.rs"), &version(6)).unwrap();
    assert_eq!(index.unopenable().total(), 0);
    assert_eq!(index.status().unwrap().tombstones, 1);
}

#[test]
fn a_rebuild_counts_what_it_cannot_open_and_finishes() {
    let index = open();
    assert_eq!(index.coverage(), Coverage::Complete);
    index.expect_rebuild(Some(5));
    assert_eq!(
        index.coverage(),
        Coverage::Rebuilding {
            read: 0,
            expected: Some(5)
        }
    );
    assert_eq!(
        index.search(&query("developer", "")).unwrap().coverage,
        index.coverage()
    );
    let items: Vec<Result<RebuildItem, std::io::Error>> = vec![
        Ok(entry(context("a.rs", "alpha"), 1, &["developer"]).into()),
        Ok(unopenable("b.rs", 1, &["developer"], UnopenableReason::NoKey).into()),
        Ok(unopenable("c.rs", 1, &["admin"], UnopenableReason::Corrupt).into()),
        Ok(entry(context("d.rs", "delta"), 1, &["developer"]).into()),
        // A newer, openable version of c.rs later in the feed wins.
        Ok(entry(context("c.rs", "gamma"), 2, &["developer"]).into()),
    ];
    let p = index.rebuild(items, &mut |_: &RebuildProgress| {}).unwrap();
    assert_eq!((p.read, p.indexed), (5, 3));
    assert_eq!(
        p.unopenable,
        UnopenableCounts {
            no_key: 1,
            corrupt: 0
        }
    );
    assert_eq!(index.coverage(), Coverage::Complete);
    let r = index.search(&query("developer", "")).unwrap();
    assert_eq!((r.total_hits, r.unopenable), (3, 1));
    let s = index.status().unwrap();
    assert_eq!(s.unopenable.total(), 1);
    assert_eq!((s.live_keys, s.tombstones), (3, 0));

    // A source error fails the rebuild: the old index stays and coverage
    // says why.
    let failing = vec![
        Ok(entry(context("e.rs", "epsilon"), 1, &["developer"])),
        Err(std::io::Error::other("disk gone")),
    ];
    assert!(index.rebuild(failing, &mut |_| {}).is_err());
    match index.coverage() {
        Coverage::Failed { error } => assert!(error.contains("disk gone"), "{error}"),
        c => panic!("expected a failed rebuild, got {c:?}"),
    }
    assert_eq!(index.search(&query("developer", "")).unwrap().total_hits, 3);
    assert_eq!(index.unopenable().total(), 1);
}
