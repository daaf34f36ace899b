//! The background workers: one pass on demand, a schedule, status,
//! shutdown.

mod common;

use std::time::Duration;

use common::*;
use rand::RngCore;
use slurp_storage::{Compactor, StoreConfig, SweepConfig, Sweeper, WorkerState};

const T0: u64 = 1_700_000_000_000;

fn expiring(n: u32, expires: u64, size: usize) -> Vec<slurp_storage::NewVersion> {
    (0..n)
        .map(|i| {
            let mut v = version(&format!("tmp/f{i}.rs"), vid(T0, i, "w"));
            v.meta.expires_at_ms = Some(expires);
            // Random, like ciphertext: compression cannot shrink it.
            v.envelope = vec![0u8; size];
            rand::thread_rng().fill_bytes(&mut v.envelope);
            v
        })
        .collect()
}

#[tokio::test]
async fn a_sweeper_pass_runs_bounded_batches_and_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let config = StoreConfig {
        sweep: SweepConfig {
            batch: 10,
            max_batches_per_pass: 3,
            pause_ms: 0,
            ..SweepConfig::default()
        },
        ..StoreConfig::default()
    };
    let store = open_with(&dir, &clock, config);
    for r in store.put_many(expiring(45, T0 + 5, 64)).await {
        r.unwrap();
    }
    let sweeper = Sweeper::new(store.clone());
    let status = sweeper.status();
    assert_eq!(status.get().state, WorkerState::Idle);
    // Nothing has expired yet.
    let pass = sweeper.run_once().await.unwrap();
    assert_eq!((pass.removed, pass.transactions, pass.more), (0, 1, false));

    clock.set(T0 + 5);
    let pass = sweeper.run_once().await.unwrap();
    assert_eq!((pass.removed, pass.transactions, pass.more), (30, 3, true));
    let pass = sweeper.run_once().await.unwrap();
    assert_eq!((pass.removed, pass.more), (15, false));
    let s = status.get();
    assert_eq!(s.state, WorkerState::Idle);
    assert_eq!((s.runs, s.items_total, s.last_items), (3, 45, 15));
    assert_eq!(s.errors_total, 0);
    assert_eq!(s.last_started_ms, Some(T0 + 5));
    assert_eq!(store.stats().unwrap().versions, 0);
    assert!(store.check().unwrap().is_ok());
}

#[tokio::test]
async fn a_scheduled_sweeper_runs_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let config = StoreConfig {
        sweep: SweepConfig {
            interval_ms: 10,
            ..SweepConfig::default()
        },
        ..StoreConfig::default()
    };
    let store = open_with(&dir, &clock, config);
    for r in store.put_many(expiring(5, T0 + 1, 16)).await {
        r.unwrap();
    }
    clock.set(T0 + 1);
    let sweeper = Sweeper::new(store.clone());
    let status = sweeper.status();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(sweeper.run(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while store.stats().unwrap().versions > 0 || status.get().items_total < 5 {
        assert!(tokio::time::Instant::now() < deadline, "sweeper never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(status.get().next_run_ms.is_some());
    stop.send(()).unwrap();
    task.await.unwrap();
    let s = status.get();
    assert_eq!(s.state, WorkerState::Stopped);
    assert!(s.runs >= 1 && s.items_total == 5, "{s:?}");
    assert_eq!(s.next_run_ms, None);
}

#[tokio::test]
async fn compaction_reclaims_space_only_when_worth_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at(T0);
    let store = open(&dir, &clock);
    for r in store.put_many(expiring(200, T0 + 1, 16 * 1024)).await {
        r.unwrap();
    }
    store
        .put(version("keep.rs", vid(T0, 0, "w")))
        .await
        .unwrap();
    clock.set(T0 + 1);
    while store.sweep_expired(1000).await.unwrap().more {}
    let compactor = Compactor::new(store.clone());
    // The default thresholds want at least 64 MiB free: not worth it.
    let r = compactor.run_once(false).await.unwrap();
    assert!(!r.compacted);
    assert!(r.free_bytes_before > 2 * 1024 * 1024, "{r:?}");
    let r = compactor.run_once(true).await.unwrap();
    assert!(r.compacted, "{r:?}");
    assert!(
        r.file_bytes_after < r.file_bytes_before / 2,
        "{} -> {}",
        r.file_bytes_before,
        r.file_bytes_after
    );
    let s = compactor.status().get();
    assert_eq!((s.runs, s.items_total, s.errors_total), (2, 1, 0));
    // Everything still reads, and writes go on.
    assert!(store.exists(&key("keep.rs")).unwrap());
    store
        .put(version("after.rs", vid(T0, 1, "w")))
        .await
        .unwrap();
    assert!(store.check().unwrap().is_ok());
}
