//! Histories of client operations, and the checker the fault-injection
//! suites run over them (`docs/reliability.md`).
//!
//! A suite drives a cluster through faults with puts, deletes and reads,
//! and records each operation: what it was, through which node, with
//! which quorums, when it was invoked and when it completed, and what it
//! answered. Once the faults stop and the replicas have converged, it
//! gathers what every replica holds and hands both to [`check`], which is
//! pure logic (no I/O), so the in-process suite and `slurp chaos` over
//! HTTP check exactly the same things:
//!
//! 1. **No acknowledged write is lost**: the version of every
//!    acknowledged put and delete is held, as what it was (a live version
//!    or a tombstone), by every replica of its address.
//! 2. **No deleted context returns**: once a delete was acknowledged, no
//!    replica ends with a version that the delete superseded as its
//!    newest, and no read that began afterwards with a read quorum that
//!    meets the delete's write quorum (`r + w > RF`) returns one. A live
//!    version newer than the tombstone is allowed only if a put wrote it
//!    (a put acknowledged with it, or one that failed and may have
//!    written it): a concurrent or later put may revive an address. (A
//!    read whose quorum need not meet the delete's, `r = 1` after a delete
//!    with `w = 2` of 3, may still see the old version while the tombstone
//!    travels: that is the quorum arithmetic, not a resurrection.)
//! 3. **Replicas converge**: after the faults stop, every replica of an
//!    address holds the same versions, and every node reports the same
//!    digest of its whole store.
//! 4. **Quorum reads see acknowledged writes**: an operation that reads
//!    the newest version (a read, or a delete refused because the address
//!    is gone or already deleted) with `r + w > RF` returns the version
//!    of every write acknowledged with quorum `w` before it began, or a
//!    newer one.
//!
//! Times are microseconds of a monotonic clock since the run began; an
//! operation "began after" another's acknowledgement only when its
//! invocation is strictly later, so operations that overlap are
//! concurrent and are never held to each other. Versions are ordered as
//! every node orders them (hybrid logical clock, then writer).
//!
//! Tombstones collected by the GC are not modelled: a suite sets the GC
//! to wait longer than it runs, so every tombstone is still held when the
//! final state is gathered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use slurp_protocol::VersionId;

/// What an operation asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Put,
    Delete,
    /// A read of the newest version.
    Read,
}

/// What an operation answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Outcome {
    /// A put or delete acknowledged with this version.
    Written {
        #[serde(with = "version_string")]
        version: VersionId,
    },
    /// A read answered with this live version.
    Found {
        #[serde(with = "version_string")]
        version: VersionId,
    },
    /// A read (or a delete) answered that the address is deleted, by this
    /// tombstone.
    Deleted {
        #[serde(with = "version_string")]
        version: VersionId,
    },
    /// A read (or a delete) answered that the address has no version.
    NotFound,
    /// The operation failed. A failed write may still have been stored
    /// somewhere (a write that missed its quorum, an answer that was lost):
    /// its effect is unknown.
    Failed { error: String },
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub kind: OpKind,
    /// The address (its storage key, or any one spelling of it: the
    /// checker only compares them).
    pub address: String,
    /// The node the client sent it to.
    pub node: String,
    /// The read quorum it used (a write reads its parent with it too).
    pub r: u8,
    /// The write quorum it used (0 for a read).
    pub w: u8,
    /// When it was invoked, microseconds since the run began.
    pub invoked: u64,
    /// When its answer arrived, microseconds since the run began.
    pub completed: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Op {
    /// The version of an acknowledged write.
    pub fn written(&self) -> Option<&VersionId> {
        match (&self.outcome, self.kind) {
            (Outcome::Written { version }, OpKind::Put | OpKind::Delete) => Some(version),
            _ => None,
        }
    }

    /// What the operation saw as the newest version, when it read one:
    /// `Some(None)` for "no version", `Some(Some((v, tombstone)))`.
    pub fn observed(&self) -> Option<Option<(&VersionId, bool)>> {
        match (&self.outcome, self.kind) {
            (Outcome::Found { version }, OpKind::Read) => Some(Some((version, false))),
            (Outcome::Deleted { version }, OpKind::Read | OpKind::Delete) => {
                Some(Some((version, true)))
            }
            (Outcome::NotFound, OpKind::Read | OpKind::Delete) => Some(None),
            _ => None,
        }
    }
}

/// Every operation of a run, and the replication factor it ran under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub replication_factor: u8,
    pub ops: Vec<Op>,
}

/// What one node holds once the run is over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub node: String,
    /// The digest of everything the node stores, when it is known.
    pub digest: Option<String>,
    /// For every address of the history this node is a replica of (an
    /// address it replicates but holds nothing of is present and empty;
    /// one it does not replicate is absent): the versions it holds, each
    /// with whether it is a tombstone.
    pub holdings: BTreeMap<String, BTreeMap<String, bool>>,
}

impl NodeState {
    fn versions(&self, address: &str) -> Option<BTreeMap<VersionId, bool>> {
        self.holdings.get(address).map(|h| {
            h.iter()
                .filter_map(|(v, t)| Some((v.parse().ok()?, *t)))
                .collect()
        })
    }
}

/// What every node holds once the run is over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalState {
    pub nodes: Vec<NodeState>,
}

/// An acknowledged write a replica does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostWrite {
    /// Index of the write in the history.
    pub op: usize,
    pub address: String,
    pub version: String,
    pub node: String,
    /// Set when the replica holds the version as the other kind (a live
    /// version where a tombstone was written, or the reverse).
    pub wrong_kind: bool,
}

/// Where a deleted context came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeenBy {
    /// An operation (its index) that began after the delete was
    /// acknowledged returned it.
    Op(usize),
    /// A replica ended with it as its newest version.
    Replica(String),
}

/// A deleted context that came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resurrection {
    pub address: String,
    /// Index of the acknowledged delete.
    pub delete: usize,
    pub tombstone: String,
    /// The live version seen.
    pub version: String,
    pub seen_by: SeenBy,
}

/// A quorum read that missed a write acknowledged before it began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleRead {
    pub op: usize,
    pub address: String,
    /// What it returned (`None`: no version).
    pub returned: Option<String>,
    /// The newest acknowledged write it should have seen.
    pub write: usize,
    pub missed: String,
}

/// Replicas that did not converge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// The nodes' whole-store digests differ: node name and digest.
    Digests(Vec<(String, String)>),
    /// The replicas of one address hold different versions: node name and
    /// the versions it holds.
    Address {
        address: String,
        holdings: Vec<(String, Vec<String>)>,
    },
}

/// The checker's verdict, with the figures of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub operations: usize,
    pub puts: usize,
    pub deletes: usize,
    pub reads: usize,
    /// Puts and deletes acknowledged.
    pub acknowledged_writes: usize,
    /// Operations that failed (their effect unknown for writes).
    pub failed: usize,
    pub lost: Vec<LostWrite>,
    pub resurrected: Vec<Resurrection>,
    pub stale_reads: Vec<StaleRead>,
    pub diverged: Vec<Divergence>,
}

impl CheckReport {
    /// No property is violated.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.resurrected.is_empty()
            && self.stale_reads.is_empty()
            && self.diverged.is_empty()
    }

    /// Acknowledged writes missing on at least one replica.
    pub fn lost_writes(&self) -> usize {
        self.lost
            .iter()
            .map(|l| l.op)
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Deletes whose context came back.
    pub fn resurrected_deletes(&self) -> usize {
        self.resurrected
            .iter()
            .map(|r| r.delete)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} operations ({} puts, {} deletes, {} reads), {} writes acknowledged, {} failed; \
             lost {}, resurrected deletes {}, stale reads {}, divergences {}",
            self.operations,
            self.puts,
            self.deletes,
            self.reads,
            self.acknowledged_writes,
            self.failed,
            self.lost_writes(),
            self.resurrected_deletes(),
            self.stale_reads.len(),
            self.diverged.len()
        )?;
        const SHOWN: usize = 5;
        for l in self.lost.iter().take(SHOWN) {
            writeln!(
                f,
                "  lost: op {} {} version {} missing on {}{}",
                l.op,
                l.address,
                l.version,
                l.node,
                if l.wrong_kind {
                    " (held as the other kind)"
                } else {
                    ""
                }
            )?;
        }
        for r in self.resurrected.iter().take(SHOWN) {
            writeln!(
                f,
                "  resurrected: {} deleted by op {} ({}), then {} seen by {:?}",
                r.address, r.delete, r.tombstone, r.version, r.seen_by
            )?;
        }
        for s in self.stale_reads.iter().take(SHOWN) {
            writeln!(
                f,
                "  stale read: op {} of {} returned {} but op {} was acknowledged with {} before it began",
                s.op,
                s.address,
                s.returned.as_deref().unwrap_or("nothing"),
                s.write,
                s.missed
            )?;
        }
        for d in self.diverged.iter().take(SHOWN) {
            writeln!(f, "  diverged: {d:?}")?;
        }
        Ok(())
    }
}

/// Checks `history` against what the replicas hold at the end.
pub fn check(history: &History, state: &FinalState) -> CheckReport {
    let ops = &history.ops;
    let mut report = CheckReport {
        operations: ops.len(),
        ..CheckReport::default()
    };
    for op in ops {
        match op.kind {
            OpKind::Put => report.puts += 1,
            OpKind::Delete => report.deletes += 1,
            OpKind::Read => report.reads += 1,
        }
        if op.written().is_some() {
            report.acknowledged_writes += 1;
        }
        if matches!(op.outcome, Outcome::Failed { .. }) {
            report.failed += 1;
        }
    }
    let mut by_address: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_address.entry(&op.address).or_default().push(i);
    }
    for (address, idx) in &by_address {
        check_durable(ops, state, address, idx, &mut report);
        check_deletes(
            ops,
            history.replication_factor,
            state,
            address,
            idx,
            &mut report,
        );
        check_reads(history, address, idx, &mut report);
        check_replicas_agree(state, address, &mut report);
    }
    let digests: Vec<(String, String)> = state
        .nodes
        .iter()
        .filter_map(|n| Some((n.node.clone(), n.digest.clone()?)))
        .collect();
    if digests.windows(2).any(|w| w[0].1 != w[1].1) {
        report.diverged.push(Divergence::Digests(digests));
    }
    report
}

fn check_durable(
    ops: &[Op],
    state: &FinalState,
    address: &str,
    idx: &[usize],
    report: &mut CheckReport,
) {
    let replicas: Vec<(&NodeState, BTreeMap<VersionId, bool>)> = state
        .nodes
        .iter()
        .filter_map(|n| Some((n, n.versions(address)?)))
        .collect();
    for &i in idx {
        let op = &ops[i];
        let Some(v) = op.written() else { continue };
        let tombstone = op.kind == OpKind::Delete;
        for (node, held) in &replicas {
            match held.get(v) {
                Some(t) if *t == tombstone => {}
                other => report.lost.push(LostWrite {
                    op: i,
                    address: address.to_string(),
                    version: v.to_string(),
                    node: node.node.clone(),
                    wrong_kind: other.is_some(),
                }),
            }
        }
    }
}

/// Whether a live version `v` of the address can have been written by a
/// put of the history: one acknowledged with it, or one that failed.
fn explained(ops: &[Op], idx: &[usize], v: &VersionId) -> bool {
    idx.iter().any(|&i| {
        let op = &ops[i];
        op.kind == OpKind::Put
            && match &op.outcome {
                Outcome::Written { version } => version == v,
                Outcome::Failed { .. } => true,
                _ => false,
            }
    })
}

fn check_deletes(
    ops: &[Op],
    history_rf: u8,
    state: &FinalState,
    address: &str,
    idx: &[usize],
    report: &mut CheckReport,
) {
    let newest: Vec<(&str, Option<(VersionId, bool)>)> = state
        .nodes
        .iter()
        .filter_map(|n| {
            let held = n.versions(address)?;
            Some((n.node.as_str(), held.into_iter().next_back()))
        })
        .collect();
    for &d in idx {
        let del = &ops[d];
        if del.kind != OpKind::Delete {
            continue;
        }
        let Some(tombstone) = del.written() else {
            continue;
        };
        let revived = |v: &VersionId| v < tombstone || !explained(ops, idx, v);
        let rf = u16::from(history_rf);
        for &o in idx {
            let op = &ops[o];
            if op.invoked <= del.completed {
                continue;
            }
            let meets = u16::from(op.r) + u16::from(del.w) > rf;
            if let Some(Some((v, false))) = op.observed()
                && (if meets {
                    revived(v)
                } else {
                    !explained(ops, idx, v)
                })
            {
                report.resurrected.push(Resurrection {
                    address: address.to_string(),
                    delete: d,
                    tombstone: tombstone.to_string(),
                    version: v.to_string(),
                    seen_by: SeenBy::Op(o),
                });
            }
        }
        for (node, head) in &newest {
            if let Some((v, false)) = head
                && revived(v)
            {
                report.resurrected.push(Resurrection {
                    address: address.to_string(),
                    delete: d,
                    tombstone: tombstone.to_string(),
                    version: v.to_string(),
                    seen_by: SeenBy::Replica(node.to_string()),
                });
            }
        }
    }
}

fn check_reads(history: &History, address: &str, idx: &[usize], report: &mut CheckReport) {
    let ops = &history.ops;
    let rf = u16::from(history.replication_factor);
    for &o in idx {
        let op = &ops[o];
        let Some(seen) = op.observed() else { continue };
        let seen = seen.map(|(v, _)| v);
        // The newest write acknowledged before this began, under quorums
        // that must intersect this one's.
        let must_see = idx
            .iter()
            .filter_map(|&w| {
                let write = &ops[w];
                let v = write.written()?;
                let overlapping = u16::from(op.r) + u16::from(write.w) > rf;
                (overlapping && write.completed < op.invoked).then_some((w, v))
            })
            .max_by(|a, b| a.1.cmp(b.1));
        if let Some((w, missed)) = must_see
            && seen.is_none_or(|s| s < missed)
        {
            report.stale_reads.push(StaleRead {
                op: o,
                address: address.to_string(),
                returned: seen.map(|v| v.to_string()),
                write: w,
                missed: missed.to_string(),
            });
        }
    }
}

fn check_replicas_agree(state: &FinalState, address: &str, report: &mut CheckReport) {
    let holdings: Vec<(String, Vec<String>)> = state
        .nodes
        .iter()
        .filter_map(|n| {
            let held = n.holdings.get(address)?;
            Some((
                n.node.clone(),
                held.iter()
                    .map(|(v, t)| {
                        if *t {
                            format!("{v} (tombstone)")
                        } else {
                            v.clone()
                        }
                    })
                    .collect(),
            ))
        })
        .collect();
    if holdings.windows(2).any(|w| w[0].1 != w[1].1) {
        report.diverged.push(Divergence::Address {
            address: address.to_string(),
            holdings,
        });
    }
}

/// Version ids as their `wall_ms.logical@writer` string.
mod version_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use slurp_protocol::VersionId;

    pub fn serialize<S: Serializer>(v: &VersionId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VersionId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use slurp_protocol::{Hlc, WriterId};

    fn vid(n: u64) -> VersionId {
        VersionId {
            hlc: Hlc {
                wall_ms: 1_000 + n,
                logical: 0,
            },
            writer: WriterId::new("w").unwrap(),
        }
    }

    /// One step of a generated run: which address and what to do there.
    #[derive(Debug, Clone)]
    enum Step {
        Put(usize),
        Delete(usize),
        Read(usize),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        prop::collection::vec(
            (0usize..3, 0u8..3).prop_map(|(a, k)| match k {
                0 => Step::Put(a),
                1 => Step::Delete(a),
                _ => Step::Read(a),
            }),
            1..40,
        )
    }

    /// A clean run: operations one after the other on a correct store,
    /// some writes failing without effect; and what three replicas hold.
    fn run(steps: &[Step], failing: &[bool]) -> (History, FinalState) {
        let mut ops = Vec::new();
        let mut held: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        let mut clock = 0u64;
        for (i, step) in steps.iter().enumerate() {
            let (kind, a) = match step {
                Step::Put(a) => (OpKind::Put, *a),
                Step::Delete(a) => (OpKind::Delete, *a),
                Step::Read(a) => (OpKind::Read, *a),
            };
            let address = format!("a{a}");
            let h = held.entry(address.clone()).or_default();
            let newest = h
                .iter()
                .map(|(v, t)| (v.parse::<VersionId>().unwrap(), *t))
                .max();
            let fails = failing.get(i).copied().unwrap_or(false);
            let outcome = match kind {
                _ if fails && kind != OpKind::Read => Outcome::Failed {
                    error: "quorum".into(),
                },
                OpKind::Put => {
                    let v = vid(i as u64);
                    h.insert(v.to_string(), false);
                    Outcome::Written { version: v }
                }
                OpKind::Delete | OpKind::Read => match newest {
                    None => Outcome::NotFound,
                    Some((v, true)) => Outcome::Deleted { version: v },
                    Some((v, false)) if kind == OpKind::Read => Outcome::Found { version: v },
                    Some(_) => {
                        let v = vid(i as u64);
                        h.insert(v.to_string(), true);
                        Outcome::Written { version: v }
                    }
                },
            };
            ops.push(Op {
                kind,
                address,
                node: format!("n{}", i % 3),
                r: 2,
                w: if kind == OpKind::Read { 0 } else { 2 },
                invoked: clock,
                completed: clock + 5,
                outcome,
            });
            clock += 10;
        }
        let nodes = (0..3)
            .map(|n| NodeState {
                node: format!("n{n}"),
                digest: Some("d".into()),
                holdings: held.clone(),
            })
            .collect();
        (
            History {
                replication_factor: 3,
                ops,
            },
            FinalState { nodes },
        )
    }

    proptest! {
        #[test]
        fn clean_runs_pass(steps in steps(), failing in prop::collection::vec(any::<bool>(), 40)) {
            let (h, s) = run(&steps, &failing);
            let r = check(&h, &s);
            prop_assert!(r.is_clean(), "{r}");
            prop_assert_eq!(r.operations, steps.len());
        }

        #[test]
        fn a_lost_write_is_flagged(steps in steps(), pick in any::<prop::sample::Index>(), node in 0usize..3) {
            let (h, mut s) = run(&steps, &[]);
            let written: Vec<usize> = (0..h.ops.len()).filter(|&i| h.ops[i].written().is_some()).collect();
            prop_assume!(!written.is_empty());
            let i = written[pick.index(written.len())];
            let op = &h.ops[i];
            let v = op.written().unwrap().to_string();
            s.nodes[node].holdings.get_mut(&op.address).unwrap().remove(&v);
            let r = check(&h, &s);
            prop_assert!(r.lost.iter().any(|l| l.op == i && l.node == format!("n{node}")), "{r}");
            prop_assert_eq!(r.lost_writes(), 1);
            prop_assert!(!r.is_clean());
        }

        #[test]
        fn a_stale_read_is_flagged(steps in steps(), pick in any::<prop::sample::Index>()) {
            let (mut h, s) = run(&steps, &[]);
            // A read after the last acknowledged write of its address that
            // returns something older.
            let written: Vec<usize> = (0..h.ops.len()).filter(|&i| h.ops[i].written().is_some()).collect();
            prop_assume!(!written.is_empty());
            let w = written[pick.index(written.len())];
            let (address, end) = (h.ops[w].address.clone(), h.ops.last().unwrap().completed);
            h.ops.push(Op {
                kind: OpKind::Read,
                address,
                node: "n0".into(),
                r: 2,
                w: 0,
                invoked: end + 10,
                completed: end + 20,
                outcome: Outcome::NotFound,
            });
            let r = check(&h, &s);
            prop_assert!(r.stale_reads.iter().any(|x| x.op == h.ops.len() - 1), "{r}");
        }

        #[test]
        fn a_resurrected_delete_is_flagged(steps in steps(), pick in any::<prop::sample::Index>()) {
            let (mut h, s) = run(&steps, &[]);
            // After an acknowledged delete, a read returns the version it
            // deleted.
            let deletes: Vec<usize> = (0..h.ops.len())
                .filter(|&i| h.ops[i].kind == OpKind::Delete && h.ops[i].written().is_some())
                .collect();
            prop_assume!(!deletes.is_empty());
            let d = deletes[pick.index(deletes.len())];
            let (address, tombstone) = (h.ops[d].address.clone(), h.ops[d].written().unwrap().clone());
            let deleted = h.ops[..d]
                .iter()
                .filter(|o| o.address == address && o.kind == OpKind::Put)
                .filter_map(|o| o.written().cloned())
                .filter(|v| *v < tombstone)
                .max()
                .unwrap();
            let end = h.ops.last().unwrap().completed;
            h.ops.push(Op {
                kind: OpKind::Read,
                address,
                node: "n1".into(),
                r: 2,
                w: 0,
                invoked: end + 10,
                completed: end + 20,
                outcome: Outcome::Found { version: deleted },
            });
            let r = check(&h, &s);
            prop_assert!(r.resurrected.iter().any(|x| x.delete == d), "{r}");
            prop_assert!(r.resurrected_deletes() >= 1);
        }

        #[test]
        fn differing_digests_are_flagged(steps in steps(), node in 0usize..3) {
            let (h, mut s) = run(&steps, &[]);
            s.nodes[node].digest = Some("other".into());
            let r = check(&h, &s);
            prop_assert!(matches!(r.diverged.as_slice(), [Divergence::Digests(_)]), "{r}");
        }
    }

    fn op(kind: OpKind, invoked: u64, completed: u64, outcome: Outcome) -> Op {
        Op {
            kind,
            address: "a".into(),
            node: "n0".into(),
            r: 2,
            w: if kind == OpKind::Read { 0 } else { 2 },
            invoked,
            completed,
            outcome,
        }
    }

    fn everywhere(versions: &[(u64, bool)]) -> FinalState {
        let held: BTreeMap<String, bool> = versions
            .iter()
            .map(|(v, t)| (vid(*v).to_string(), *t))
            .collect();
        FinalState {
            nodes: (0..3)
                .map(|n| NodeState {
                    node: format!("n{n}"),
                    digest: None,
                    holdings: [("a".to_string(), held.clone())].into(),
                })
                .collect(),
        }
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            replication_factor: 3,
            ops,
        }
    }

    #[test]
    fn a_deleted_context_that_returns_is_flagged_by_reads_and_replicas() {
        let ops = vec![
            op(OpKind::Put, 0, 10, Outcome::Written { version: vid(1) }),
            op(OpKind::Delete, 20, 30, Outcome::Written { version: vid(2) }),
            // Began after the delete's acknowledgement, saw the old version.
            op(OpKind::Read, 40, 50, Outcome::Found { version: vid(1) }),
        ];
        let r = check(&history(ops.clone()), &everywhere(&[(1, false), (2, true)]));
        assert_eq!(r.resurrected_deletes(), 1, "{r}");
        assert_eq!(r.resurrected[0].seen_by, SeenBy::Op(2));
        assert_eq!(r.stale_reads.len(), 1, "it is stale too");
        // A replica whose newest is a live version nobody wrote after the
        // tombstone: the delete was undone on it.
        let mut state = everywhere(&[(1, false), (2, true)]);
        state.nodes[1]
            .holdings
            .get_mut("a")
            .unwrap()
            .insert(vid(3).to_string(), false);
        let r = check(&history(ops[..2].to_vec()), &state);
        assert!(
            r.resurrected
                .iter()
                .any(|x| x.seen_by == SeenBy::Replica("n1".into())),
            "{r}"
        );
    }

    #[test]
    fn a_read_whose_quorum_need_not_meet_the_delete_may_see_the_old_version() {
        let ops = vec![
            op(OpKind::Put, 0, 10, Outcome::Written { version: vid(1) }),
            op(OpKind::Delete, 20, 30, Outcome::Written { version: vid(2) }),
            // r = 1 after w = 2 of 3: this replica had not the tombstone yet.
            Op {
                r: 1,
                ..op(OpKind::Read, 40, 50, Outcome::Found { version: vid(1) })
            },
        ];
        let r = check(&history(ops.clone()), &everywhere(&[(1, false), (2, true)]));
        assert!(r.is_clean(), "{r}");
        // But even such a read may not return what nobody wrote.
        let mut ops = ops;
        ops[2].outcome = Outcome::Found { version: vid(3) };
        let r = check(&history(ops), &everywhere(&[(1, false), (2, true)]));
        assert_eq!(r.resurrected_deletes(), 1, "{r}");
    }

    #[test]
    fn a_put_concurrent_with_a_delete_may_revive_the_address() {
        let ops = vec![
            op(OpKind::Put, 0, 10, Outcome::Written { version: vid(1) }),
            op(OpKind::Delete, 20, 40, Outcome::Written { version: vid(2) }),
            // Invoked while the delete ran; got a newer version.
            op(OpKind::Put, 30, 50, Outcome::Written { version: vid(3) }),
            op(OpKind::Read, 60, 70, Outcome::Found { version: vid(3) }),
            // A failed put may have written what a later read sees.
            op(
                OpKind::Put,
                80,
                90,
                Outcome::Failed {
                    error: "lost answer".into(),
                },
            ),
            op(OpKind::Read, 100, 110, Outcome::Found { version: vid(4) }),
        ];
        let r = check(
            &history(ops),
            &everywhere(&[(1, false), (2, true), (3, false), (4, false)]),
        );
        assert!(r.is_clean(), "{r}");
        assert_eq!((r.acknowledged_writes, r.failed), (3, 1));
    }

    #[test]
    fn overlapping_operations_are_not_held_to_each_other_nor_small_quorums() {
        let ops = vec![
            op(OpKind::Put, 0, 50, Outcome::Written { version: vid(1) }),
            // Began before the put was acknowledged.
            op(OpKind::Read, 40, 60, Outcome::NotFound),
            // r = 1 with w = 2 of 3: quorums need not intersect.
            Op {
                r: 1,
                ..op(OpKind::Read, 70, 80, Outcome::NotFound)
            },
        ];
        let r = check(&history(ops), &everywhere(&[(1, false)]));
        assert!(r.is_clean(), "{r}");
    }

    #[test]
    fn replicas_that_hold_different_versions_diverge_and_a_wrong_kind_is_lost() {
        let ops = vec![
            op(OpKind::Put, 0, 10, Outcome::Written { version: vid(1) }),
            op(OpKind::Delete, 20, 30, Outcome::Written { version: vid(2) }),
        ];
        let mut state = everywhere(&[(1, false), (2, true)]);
        state.nodes[2]
            .holdings
            .get_mut("a")
            .unwrap()
            .insert(vid(2).to_string(), false);
        let r = check(&history(ops), &state);
        assert!(r.lost.iter().any(|l| l.wrong_kind && l.node == "n2"), "{r}");
        assert!(matches!(
            r.diverged.as_slice(),
            [Divergence::Address { .. }]
        ));
    }

    #[test]
    fn a_history_round_trips_through_json() {
        let h = history(vec![
            op(OpKind::Put, 0, 10, Outcome::Written { version: vid(1) }),
            op(
                OpKind::Read,
                20,
                30,
                Outcome::Failed {
                    error: "timeout".into(),
                },
            ),
        ]);
        let json = serde_json::to_string(&h).unwrap();
        assert!(json.contains("\"version\":\"1001.0@w\""), "{json}");
        assert_eq!(serde_json::from_str::<History>(&json).unwrap(), h);
    }
}
