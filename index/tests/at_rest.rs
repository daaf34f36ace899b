//! No plaintext of a context reaches disk or logs.
//!
//! The index lives in memory only. This test points the process's working
//! directory and temporary directory at a fresh data directory, captures
//! every log record (the engine's included), runs the whole life of an
//! index over contexts carrying a unique marker (writes, commits, searches,
//! merges, a rebuild with a rejected entry, close), and then reads every
//! file under the data directory and every captured log line: the marker
//! must be in none of them. It is its own test binary so that changing the
//! process environment cannot race other tests.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::*;
use slurp_index::{ContextIndex, IndexEntry, RebuildProgress};

const MARKER: &str = "zqxmarker7731plaintext";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every file under `dir`, recursively, with its bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn secret_entry(i: usize, at: u64) -> IndexEntry {
    let mut c = context(
        &format!("src/secret/{i}.rs"),
        &format!("summary {MARKER} number {i}"),
    );
    c.purpose = format!("purpose {MARKER}");
    c.insights = vec![format!("insight {MARKER}"), "plain insight".into()];
    c.tags = vec![MARKER.into(), "security".into()];
    c.technologies = vec![format!("{MARKER}-tech")];
    entry(c, at, &["developer"])
}

#[test]
fn marker_reaches_no_file_and_no_log() {
    // The scan below can fail: a file holding the marker is found.
    let canary_dir = tempfile::tempdir().unwrap();
    std::fs::write(canary_dir.path().join("c"), format!("x{MARKER}x")).unwrap();
    assert!(
        files_under(canary_dir.path())
            .iter()
            .any(|(_, b)| contains(b, MARKER.as_bytes()))
    );

    let data = tempfile::tempdir().unwrap();
    let tmp = data.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    // SAFETY: this binary has this single test and sets the variable before
    // starting anything that reads the environment.
    unsafe { std::env::set_var("TMPDIR", &tmp) };
    std::env::set_current_dir(data.path()).unwrap();

    let logs = Captured::default();
    let sink = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .init();

    let index = ContextIndex::open_in_memory(slurp_index::IndexConfig {
        commit_every_ops: 25,
        commit_interval_ms: 20,
        ..manual_config()
    })
    .unwrap();
    for i in 0..200 {
        index.upsert(&secret_entry(i, 1)).unwrap();
    }
    for i in 0..100 {
        index.upsert(&secret_entry(i, 2)).unwrap();
    }
    index.commit().unwrap();
    let r = index.search(&query("developer", MARKER)).unwrap();
    assert_eq!(r.total_hits, 200);
    assert!(r.hits[0].snippet.contains(MARKER));
    let mut q = query("developer", "");
    q.tags = vec![MARKER.into()];
    assert_eq!(index.search(&q).unwrap().total_hits, 200);
    index.term_statistics(&query("developer", MARKER)).unwrap();
    index.optimize().unwrap();

    let mut entries: Vec<Result<IndexEntry, std::io::Error>> =
        (0..150).map(|i| Ok(secret_entry(i, 3))).collect();
    let mut rejected = secret_entry(999, 3);
    rejected.readers.clear();
    entries.push(Ok(rejected));
    let p = index
        .rebuild(entries, &mut |_: &RebuildProgress| {})
        .unwrap();
    assert_eq!(p.rejected, 1);
    index
        .delete(&key_of("src/secret/0.rs"), &version(9))
        .unwrap();
    // The interval commit (every 20 ms) makes the delete visible; wait for
    // it rather than for a time a loaded machine may not honour.
    let start = std::time::Instant::now();
    while index
        .search(&query("developer", MARKER))
        .unwrap()
        .total_hits
        != 149
    {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(90),
            "the delete was never committed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    index.close().unwrap();

    for (path, bytes) in files_under(data.path()) {
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "plaintext reached {}",
            path.display()
        );
    }
    let logged = logs.0.lock().unwrap().clone();
    assert!(!logged.is_empty(), "the rejected entry was logged");
    assert!(
        !contains(&logged, MARKER.as_bytes()),
        "plaintext reached the logs:\n{}",
        String::from_utf8_lossy(&logged)
    );
}
