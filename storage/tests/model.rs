//! The store against a model: a map of versions per address, with expiry
//! judged at read time. Random sequences of puts (live, tombstone,
//! expiring, duplicate, out of order), clock moves and sweeps must leave
//! every read agreeing with the model and the tables consistent.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use slurp_protocol::VersionId;
use slurp_storage::{Latest, PutOutcome, SlotScan};

const T0: u64 = 1_000_000;
const PATHS: [&str; 4] = ["src/a.rs", "src/b.rs", "lib/c.rs", "d.rs"];
const WRITERS: [&str; 3] = ["wa", "wb", "wc"];

#[derive(Debug, Clone)]
enum Op {
    Put {
        path: usize,
        wall: u64,
        logical: u32,
        writer: usize,
        tombstone: bool,
        ttl: Option<u64>,
    },
    Advance(u64),
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PATHS.len(), 0u64..12, 0u32..2, 0..WRITERS.len(), prop::bool::weighted(0.2),
              prop::option::weighted(0.4, 1u64..25))
            .prop_map(|(path, wall, logical, writer, tombstone, ttl)| Op::Put {
                path, wall, logical, writer, tombstone, ttl
            }),
        2 => (1u64..10).prop_map(Op::Advance),
        1 => Just(Op::Sweep),
    ]
}

#[derive(Clone)]
struct ModelVersion {
    expires: Option<u64>,
    tombstone: bool,
    envelope: Vec<u8>,
}

type Model = BTreeMap<String, BTreeMap<VersionId, ModelVersion>>;

fn live_versions(model: &Model, k: &str, now: u64) -> Vec<(VersionId, ModelVersion)> {
    model
        .get(k)
        .map(|vs| {
            vs.iter()
                .filter(|(_, v)| v.expires.is_none_or(|e| e > now))
                .map(|(id, v)| (id.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn reads_agree_with_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at(T0);
        let store = open(&dir, &clock);
        let mut now = T0;
        let mut model: Model = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put { path, wall, logical, writer, tombstone: tomb, ttl } => {
                    let id = vid(T0 + wall, logical, WRITERS[writer]);
                    let mut v = if tomb { tombstone(PATHS[path], id.clone()) } else { version(PATHS[path], id.clone()) };
                    v.meta.expires_at_ms = ttl.map(|t| T0 + t);
                    let expected = if v.meta.expires_at_ms.is_some_and(|e| e <= now) {
                        PutOutcome::Expired
                    } else if model.get(&key(PATHS[path])).is_some_and(|m| m.contains_key(&id)) {
                        let old = &model[&key(PATHS[path])][&id];
                        let same = old.envelope == v.envelope && old.expires == v.meta.expires_at_ms && old.tombstone == tomb;
                        PutOutcome::AlreadyPresent { identical: same }
                    } else {
                        let newest = model.get(&key(PATHS[path])).and_then(|m| m.keys().next_back().cloned());
                        model.entry(key(PATHS[path])).or_default().insert(id.clone(), ModelVersion {
                            expires: v.meta.expires_at_ms, tombstone: tomb, envelope: v.envelope.clone(),
                        });
                        PutOutcome::Inserted { latest: newest.is_none_or(|n| id > n) }
                    };
                    prop_assert_eq!(store.put_blocking(v).unwrap(), expected);
                }
                Op::Advance(ms) => {
                    now += ms;
                    clock.set(now);
                }
                Op::Sweep => {
                    // Small transactions, repeated until nothing expired is
                    // left; then the model forgets expired versions too.
                    let mut rounds = 0;
                    while store.sweep_expired_blocking(3).unwrap().more {
                        rounds += 1;
                        prop_assert!(rounds < 100);
                    }
                    for vs in model.values_mut() {
                        vs.retain(|_, v| v.expires.is_none_or(|e| e > now));
                    }
                    model.retain(|_, vs| !vs.is_empty());
                }
            }
            for path in PATHS {
                let k = key(path);
                let live = live_versions(&model, &k, now);
                let history: Vec<VersionId> = store.history(&k).unwrap().into_iter().map(|m| m.version).collect();
                let expected: Vec<VersionId> = live.iter().map(|(id, _)| id.clone()).collect();
                prop_assert_eq!(&history, &expected);
                match (store.latest(&k).unwrap(), live.last()) {
                    (Latest::Absent, None) => {}
                    (Latest::Live { record, ordinal }, Some((id, v))) => {
                        prop_assert!(!v.tombstone);
                        prop_assert_eq!(&record.meta.version, id);
                        prop_assert_eq!(&record.envelope, &v.envelope);
                        prop_assert_eq!(ordinal, live.len() as u64);
                    }
                    (Latest::Deleted { tombstone, ordinal }, Some((id, v))) => {
                        prop_assert!(v.tombstone);
                        prop_assert_eq!(&tombstone.version, id);
                        prop_assert_eq!(ordinal, live.len() as u64);
                    }
                    (got, want) => prop_assert!(false, "latest {:?}, model {:?}", got, want.map(|w| &w.0)),
                }
                prop_assert_eq!(store.exists(&k).unwrap(), live.last().is_some_and(|(_, v)| !v.tombstone));
            }
            let listed: Vec<String> = store.list_keys("", None, 100).unwrap().keys.into_iter().map(|e| e.key).collect();
            let expected: Vec<String> = model.keys()
                .filter(|k| live_versions(&model, k, now).last().is_some_and(|(_, v)| !v.tombstone))
                .cloned()
                .collect();
            prop_assert_eq!(listed, expected);
            let scanned = store.scan_slots(&SlotScan::metas(0..=u16::MAX)).unwrap().versions.len();
            let total: usize = model.keys().map(|k| live_versions(&model, k, now).len()).sum();
            prop_assert_eq!(scanned, total);
            let check = store.check().unwrap();
            prop_assert!(check.is_ok(), "{:?}", check.problems);
        }
    }
}
