//! Crash safety: a writer process is killed (SIGKILL) at random moments,
//! many times; after each kill the database must open cleanly, hold every
//! write that was acknowledged, and its tables must agree with each other.
//!
//! The writer is this test binary itself, re-executed with an environment
//! variable naming the database (the `crash_child_writer` test, ignored in
//! normal runs), so the test needs no extra binary and works the same under
//! `cargo test` and `cargo nextest`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use rand::Rng;
use slurp_storage::{PutOutcome, Store, StoreConfig};

const DIR_VAR: &str = "SLURP_STORAGE_CRASH_DIR";
const ITER_VAR: &str = "SLURP_STORAGE_CRASH_ITER";
const QUICK_VAR: &str = "SLURP_STORAGE_CRASH_QUICK_REPAIR";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One acknowledged write, as the child printed it.
#[derive(Debug, Clone)]
struct Ack {
    key: String,
    version: slurp_protocol::VersionId,
    /// 0: never expires.
    expires: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.trim_end().split(' ');
    let key = parts.next()?.to_string();
    let version = parts.next()?.parse().ok()?;
    let expires = parts.next()?.parse().ok()?;
    Some(Ack {
        key,
        version,
        expires,
    })
}

/// The child: writes from four threads until killed, printing each version
/// only after its put returned. Also sweeps, so crashes hit sweeps too.
#[test]
#[ignore = "run by crash_recovery_keeps_every_acknowledged_write in a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let iter: u32 = std::env::var(ITER_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let config = StoreConfig {
        quick_repair: std::env::var(QUICK_VAR).is_ok(),
        ..StoreConfig::default()
    };
    let store = Store::open(std::path::Path::new(&dir).join("store.redb"), config).unwrap();
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut threads = vec![];
    for t in 0..4u32 {
        let (store, out) = (store.clone(), out.clone());
        threads.push(std::thread::spawn(move || {
            let writer = format!("i{iter}t{t}");
            let mut n = 0u32;
            while Instant::now() < give_up {
                n += 1;
                let path = format!("dir{}/file{}.rs", n % 3, n % 16);
                let id = vid(now_ms(), n, &writer);
                let mut v = if n.is_multiple_of(9) {
                    tombstone(&path, id)
                } else {
                    version(&path, id)
                };
                if n.is_multiple_of(4) {
                    v.meta.expires_at_ms = Some(now_ms() + 40);
                }
                if n.is_multiple_of(5) {
                    v.meta.influences = vec![key(&format!("dir0/file{}.rs", n % 7))];
                }
                let expires = v.meta.expires_at_ms.unwrap_or(0);
                let (k, id) = (v.meta.key.clone(), v.meta.version.clone());
                match store.put_blocking(v) {
                    Ok(PutOutcome::Inserted { .. }) => {
                        let mut o = out.lock().unwrap();
                        writeln!(o, "ACK {k} {id} {expires}").unwrap();
                        o.flush().unwrap();
                    }
                    // A slow commit can outlive a 40 ms expiry.
                    Ok(PutOutcome::Expired) => {}
                    other => panic!("unexpected put result {other:?}"),
                }
            }
        }));
    }
    let sweeper = store.clone();
    threads.push(std::thread::spawn(move || {
        while Instant::now() < give_up {
            sweeper.sweep_expired_blocking(8).unwrap();
            std::thread::sleep(Duration::from_millis(15));
        }
    }));
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn crash_recovery_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut acks: Vec<Ack> = vec![];
    let started = Instant::now();
    let mut iterations = 0u32;
    while iterations < 25 && (iterations < 6 || started.elapsed() < Duration::from_secs(20)) {
        iterations += 1;
        let mut cmd = Command::new(&exe);
        cmd.args(["crash_child_writer", "--exact", "--ignored", "--nocapture"])
            .env(DIR_VAR, dir.path())
            .env(ITER_VAR, iterations.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("child.stderr")).unwrap(),
            ));
        if iterations.is_multiple_of(2) {
            cmd.env(QUICK_VAR, "1");
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(stdout);
                let mut line = String::new();
                loop {
                    line.clear();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        // A line cut by the kill has no newline: not acked.
                        Ok(_) if line.ends_with('\n') => lines.lock().unwrap().push(line.clone()),
                        Ok(_) => break,
                    }
                }
            })
        };
        // Wait for the child to be writing, then kill it at a random moment.
        let wait_until = Instant::now() + Duration::from_secs(10);
        let acked = || lines.lock().unwrap().iter().any(|l| l.starts_with("ACK "));
        while !acked() && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..120)));
        child.kill().unwrap();
        child.wait().unwrap();
        // The child can have swept only what expired before it died.
        let killed_at = now_ms();
        reader.join().unwrap();
        let new: Vec<Ack> = lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| parse_ack(l))
            .collect();
        assert!(
            !new.is_empty(),
            "iteration {iterations}: the child acknowledged nothing; its stderr: {}",
            std::fs::read_to_string(dir.path().join("child.stderr")).unwrap_or_default()
        );
        acks.extend(new);

        // Reads judge expiry at the moment of the kill, so every version
        // that was live then must be found.
        let store = Store::builder(dir.path().join("store.redb"))
            .time_source(Arc::new(ManualClock::at(killed_at)))
            .open()
            .unwrap_or_else(|e| panic!("iteration {iterations}: reopen failed: {e}"));
        let report = store.check().unwrap();
        assert!(
            report.is_ok(),
            "iteration {iterations}: inconsistent tables: {:?}",
            report.problems
        );
        for ack in &acks {
            if ack.expires != 0 && ack.expires <= killed_at {
                continue;
            }
            let got = store.get(&ack.key, &ack.version).unwrap();
            assert!(
                got.is_some(),
                "iteration {iterations}: acknowledged {} of {} (expiry {}, killed at {killed_at}) is missing; history {:?}",
                ack.version,
                ack.key,
                ack.expires,
                store
                    .version_ids(&ack.key)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
            );
            let expected = version(
                &ack.key["ucxl://agent:developer@proj:task/".len()..],
                ack.version.clone(),
            );
            let rec = got.unwrap();
            if !rec.meta.tombstone {
                assert_eq!(rec.envelope, expected.envelope);
            }
        }
        drop(store);
    }
    assert!(iterations >= 6);
}
