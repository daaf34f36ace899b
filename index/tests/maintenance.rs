//! Commit policy, merging, rebuilding, status and observer hooks.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use slurp_index::{
    CommitEvent, CommitTrigger, ContextIndex, IndexConfig, IndexEntry, IndexObserver, MergeReport,
    RebuildError, RebuildProgress, SearchEvent,
};

#[derive(Default)]
struct Recorder {
    searches: Mutex<Vec<SearchEvent>>,
    commits: Mutex<Vec<CommitEvent>>,
    merges: Mutex<Vec<MergeReport>>,
    rebuilds: Mutex<Vec<RebuildProgress>>,
}

impl IndexObserver for Recorder {
    fn on_search(&self, e: &SearchEvent) {
        self.searches.lock().unwrap().push(e.clone());
    }
    fn on_commit(&self, e: &CommitEvent) {
        self.commits.lock().unwrap().push(e.clone());
    }
    fn on_merge(&self, r: &MergeReport) {
        self.merges.lock().unwrap().push(r.clone());
    }
    fn on_rebuild_progress(&self, p: &RebuildProgress) {
        self.rebuilds.lock().unwrap().push(p.clone());
    }
}

fn observed(config: IndexConfig) -> (ContextIndex, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let index = ContextIndex::open_in_memory_with_observer(config, rec.clone()).unwrap();
    (index, rec)
}

fn doc(i: usize, word: &str, at: u64) -> IndexEntry {
    entry(
        context(&format!("f/{i}.rs"), &format!("{word} module {i}")),
        at,
        &["developer"],
    )
}

fn total(index: &ContextIndex, text: &str) -> u64 {
    index.search(&query("developer", text)).unwrap().total_hits
}

#[test]
fn writes_are_invisible_until_committed() {
    let index = open();
    index.upsert(&doc(1, "pending", 1)).unwrap();
    assert_eq!(total(&index, "pending"), 0);
    assert_eq!(index.status().unwrap().pending_ops, 1);
    index.commit().unwrap();
    assert_eq!(total(&index, "pending"), 1);
    assert_eq!(index.status().unwrap().pending_ops, 0);
}

#[test]
fn a_full_batch_commits_by_itself() {
    let (index, rec) = observed(IndexConfig {
        commit_every_ops: 3,
        ..manual_config()
    });
    index.upsert(&doc(1, "batched", 1)).unwrap();
    index.upsert(&doc(2, "batched", 1)).unwrap();
    assert_eq!(total(&index, "batched"), 0);
    index.upsert(&doc(3, "batched", 1)).unwrap();
    assert_eq!(total(&index, "batched"), 3);
    let commits = rec.commits.lock().unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].trigger, CommitTrigger::BatchFull);
    assert_eq!(commits[0].ops, 3);
}

#[test]
fn the_interval_commits_a_partial_batch() {
    let (index, rec) = observed(IndexConfig {
        commit_interval_ms: 50,
        ..manual_config()
    });
    let written = Instant::now();
    index.upsert(&doc(1, "timed", 1)).unwrap();
    // The commit thread makes the write visible, then tells the observer:
    // wait for both (a loaded machine may run the test between the two).
    while total(&index, "timed") == 0 || rec.commits.lock().unwrap().is_empty() {
        assert!(
            written.elapsed() < Duration::from_secs(90),
            "never committed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Visible no earlier than the interval.
    assert!(written.elapsed() >= Duration::from_millis(50));
    let commits = rec.commits.lock().unwrap();
    assert_eq!(commits[0].trigger, CommitTrigger::Interval);
}

#[test]
fn optimize_merges_to_one_segment_and_reclaims_deletes() {
    // Keep the background policy out of the way so the test sees the
    // segments its commits made.
    let (index, rec) = observed(IndexConfig {
        merge: slurp_index::MergeConfig {
            min_num_segments: 100,
            del_docs_ratio_before_merge: 1.0,
            ..Default::default()
        },
        ..manual_config()
    });
    for i in 0..20 {
        index.upsert(&doc(i, "base", 1)).unwrap();
    }
    index.commit().unwrap();
    for round in 1..=4u64 {
        let replaced = (round as usize - 1) * 4..round as usize * 4;
        for i in replaced {
            index
                .upsert(&doc(i, &format!("round{round}"), round + 1))
                .unwrap();
        }
        for i in 0..4 {
            index
                .upsert(&doc(100 + round as usize * 10 + i, "extra", 1))
                .unwrap();
        }
        index.commit().unwrap();
    }
    let before = index.status().unwrap();
    assert_eq!(
        (before.docs, before.segments, before.deleted_docs),
        (36, 5, 16)
    );

    let report = index.optimize().unwrap();
    assert_eq!(report.segments_before, 5);
    assert_eq!(report.segments_after, 1);
    assert_eq!(report.docs, 36);
    assert_eq!(report.deleted_docs_reclaimed, 16);
    let after = index.status().unwrap();
    assert_eq!((after.segments, after.deleted_docs, after.docs), (1, 0, 36));
    assert!(after.index_bytes > 0 && after.index_bytes < before.index_bytes);
    assert_eq!(after.last_merge.as_ref(), Some(&report));
    assert_eq!(rec.merges.lock().unwrap().len(), 1);
    assert_eq!(total(&index, "base"), 4);
    assert_eq!(total(&index, "round4"), 4);
    assert_eq!(total(&index, "extra"), 16);

    // Nothing to do on a clean single segment.
    assert_eq!(index.optimize().unwrap().segments_after, 1);
    // Pending writes are committed first.
    index.upsert(&doc(99, "late", 9)).unwrap();
    index.optimize().unwrap();
    assert_eq!(total(&index, "late"), 1);
}

#[test]
fn rebuild_replaces_the_index_and_keeps_the_newest_version() {
    let (index, rec) = observed(IndexConfig {
        rebuild_progress_every: 10,
        ..manual_config()
    });
    for i in 0..5 {
        index.upsert(&doc(i, "old", 1)).unwrap();
    }
    index.commit().unwrap();

    let mut entries: Vec<Result<IndexEntry, std::io::Error>> =
        (0..30).map(|i| Ok(doc(i, "fresh", 5))).collect();
    // A newer version of key 0 comes first, its older version later.
    entries.insert(0, Ok(doc(0, "newest", 9)));
    // Invalid: the key does not match the address.
    let mut bad = doc(500, "broken", 1);
    bad.key = "ucxl://x:y@z:w/elsewhere".into();
    entries.push(Ok(bad));

    let mut seen = vec![];
    let done = index
        .rebuild(entries, &mut |p: &RebuildProgress| seen.push(p.clone()))
        .unwrap();
    assert!(done.finished);
    assert_eq!(
        (done.read, done.indexed, done.superseded, done.rejected),
        (32, 30, 1, 1)
    );
    assert_eq!(seen.len(), 4, "every 10 entries and at the end: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].read < w[1].read));
    assert_eq!(rec.rebuilds.lock().unwrap().len(), 4);

    assert_eq!(total(&index, "old"), 0);
    assert_eq!(total(&index, "fresh"), 29);
    assert_eq!(total(&index, "newest"), 1);
    assert_eq!(total(&index, "broken"), 0);
    let status = index.status().unwrap();
    assert_eq!((status.docs, status.live_keys), (30, 30));
    assert!(status.rebuild.is_none());

    // Writes after a rebuild are checked against the rebuilt versions.
    assert!(matches!(
        index.upsert(&doc(0, "stale", 8)).unwrap(),
        slurp_index::WriteOutcome::Superseded { .. }
    ));
    index.upsert(&doc(1, "updated", 6)).unwrap();
    index.commit().unwrap();
    assert_eq!(total(&index, "updated"), 1);
    assert_eq!(total(&index, "fresh"), 28);
}

#[test]
fn a_failed_rebuild_leaves_the_old_index_live() {
    let index = open();
    for i in 0..5 {
        index.upsert(&doc(i, "kept", 1)).unwrap();
    }
    index.commit().unwrap();
    let entries = (0..10).map(|i| {
        if i == 7 {
            Err(std::io::Error::other("store read failed"))
        } else {
            Ok(doc(i, "partial", 2))
        }
    });
    match index.rebuild(entries, &mut |_: &RebuildProgress| {}) {
        Err(RebuildError::Source { indexed, .. }) => assert_eq!(indexed, 7),
        other => panic!("expected a source error, got {other:?}"),
    }
    assert_eq!(total(&index, "kept"), 5);
    assert_eq!(total(&index, "partial"), 0);
    // The write path still works on the old index.
    index.upsert(&doc(9, "after", 3)).unwrap();
    index.commit().unwrap();
    assert_eq!(total(&index, "after"), 1);
}

#[test]
fn searches_report_latency_to_the_observer() {
    let (index, rec) = observed(manual_config());
    for i in 0..3 {
        index.upsert(&doc(i, "observed", 1)).unwrap();
    }
    index.commit().unwrap();
    let r = index.search(&query("developer", "observed")).unwrap();
    assert!(r.took > Duration::ZERO);
    let events = rec.searches.lock().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].took, r.took);
    assert_eq!((events[0].total_hits, events[0].returned), (3, 3));
    assert_eq!(events[0].role, role("developer"));
    assert!(!events[0].global_statistics);
}

#[test]
fn searches_run_while_writes_and_commits_happen() {
    let index = Arc::new(
        ContextIndex::open_in_memory(IndexConfig {
            commit_every_ops: 7,
            commit_interval_ms: 20,
            ..IndexConfig::default()
        })
        .unwrap(),
    );
    let writer = {
        let index = index.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                index
                    .upsert(&doc((i % 50) as usize, "busy", i + 1))
                    .unwrap();
            }
            index.commit().unwrap();
        })
    };
    let mut last = 0;
    while !writer.is_finished() {
        let n = total(&index, "busy");
        assert!(n <= 50, "a key is never indexed twice: {n}");
        assert!(n >= last, "committed documents do not disappear");
        last = n;
    }
    writer.join().unwrap();
    assert_eq!(total(&index, "busy"), 50);
}
