//! Layout transitions: the layout changes and no copy is lost.
//!
//! A new layout moves partitions between members. Switching at once would
//! lose acknowledged writes (a new owner has nothing yet; an old owner
//! would drop what only it held), so a node keeps every layout still
//! *active* ([`super::layout`]) and moves through three steps, each
//! decided by itself from what the other nodes report about themselves
//! (a `Transition` request, asked of each node directly, never relayed):
//!
//! 1. **Writes reach both.** A write is acknowledged once it has a write
//!    quorum in the replica set of *every* active layout (sets that do not
//!    differ count once). Reads go to the replica set of the *oldest*
//!    active layout, which holds every write acknowledged before the
//!    change and, through step 1, every one since.
//! 2. **New owners pull.** Each node pulls every partition it gained in
//!    the newest layout from the partition's owners in the oldest (a
//!    range scan of version ids, then the versions it lacks: the
//!    anti-entropy machinery), from every one that is up and at least
//!    `set - W + 1` of them, so every acknowledged write (on at least W
//!    of the set) is among what it saw. A replica refuses writes sent under an older layout than its
//!    own, and answers a pull only after the writes it accepted under older
//!    layouts have committed, so nothing acknowledged under the old layout
//!    alone lands after a pull passed. Pulled partitions are recorded
//!    (`<data>/cluster/transition.json`), so a restart resumes.
//! 3. **Reads move, then the old layout goes.** When every member of the
//!    newest layout reports it synced, a node hands each new owner what
//!    it still lacks of the partitions the node leaves (a write
//!    acknowledged by fewer than the configured quorum may be there
//!    alone), then reads from the newest sets (and says so). When every node (members of the newest layout, and
//!    old members that are still up) reads from the newest, a node forgets
//!    the older layouts: its writes go to the new sets only, and it drops
//!    the partitions it no longer owns (a member hands off once more
//!    first).
//!
//! At no moment has a partition fewer readable copies than the old layout
//! gave it: old owners keep theirs until every new owner holds the
//! partition and no node reads from the old owners any more.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use slurp_protocol::Partition;
use slurp_protocol::messages::TransitionReport;
use slurp_protocol::placement::Layout;

use super::{ClusterError, member_peer};

/// What a node has done in the current transition; kept in
/// `cluster/transition.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransitionState {
    /// The layout version `done` counts towards.
    pub target: u64,
    /// Partitions pulled for `target`.
    pub done: BTreeSet<u16>,
    /// The newest layout version every gained partition was pulled for.
    pub synced: u64,
    /// The layout version whose replica sets this node reads from (0:
    /// the oldest active one).
    pub reading: u64,
    /// Sealed bytes and versions pulled for `target`.
    pub bytes: u64,
    pub versions: u64,
    /// When the pulling for `target` started, ms since the Unix epoch.
    pub started_ms: u64,
    /// The layout version of the last transition this node ended: older
    /// layouts a peer still holds are not taken back.
    #[serde(default)]
    pub collapsed: u64,
    /// The newest layout version for which this node handed the new
    /// owners what they lacked of the partitions it leaves.
    #[serde(default)]
    pub handed_off: u64,
}

/// The transition state of this node, persisted on every change.
pub struct Transitions {
    path: PathBuf,
    state: Mutex<TransitionState>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Transitions {
    pub fn load(dir: &Path) -> Result<Self, ClusterError> {
        let path = dir.join("cluster").join("transition.json");
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| ClusterError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TransitionState::default(),
            Err(e) => return Err(ClusterError::Io(format!("{}: {e}", path.display()))),
        };
        Ok(Transitions {
            path,
            state: Mutex::new(state),
        })
    }

    pub fn state(&self) -> TransitionState {
        self.lock().clone()
    }

    /// The layout version this node reads from (see
    /// [`TransitionState::reading`]), without copying the state: every
    /// request's route asks.
    pub fn reading(&self) -> u64 {
        self.lock().reading
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TransitionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, st: &TransitionState) -> Result<(), ClusterError> {
        let json = serde_json::to_vec(st).map_err(|e| ClusterError::Io(e.to_string()))?;
        super::layout::write_atomic(&self.path, &json)
    }

    /// Changes the state and persists it.
    fn update(&self, f: impl FnOnce(&mut TransitionState)) -> Result<(), ClusterError> {
        let mut st = self.lock();
        let mut next = st.clone();
        f(&mut next);
        if next != *st {
            self.save(&next)?;
            *st = next;
        }
        Ok(())
    }

    /// Starts counting towards `target` when it is new: a newer layout
    /// makes every gained partition pulled again, from the oldest owners.
    pub fn aim(&self, target: u64) -> Result<(), ClusterError> {
        self.update(|st| {
            if st.target != target {
                st.target = target;
                st.done.clear();
                st.bytes = 0;
                st.versions = 0;
                st.started_ms = now_ms();
            }
        })
    }

    /// Records `partition` pulled for `target` (ignored when the target
    /// moved on meanwhile).
    pub fn pulled(
        &self,
        target: u64,
        partition: Partition,
        bytes: u64,
        versions: u64,
    ) -> Result<(), ClusterError> {
        self.update(|st| {
            if st.target == target {
                st.done.insert(partition.0);
                st.bytes += bytes;
                st.versions += versions;
            }
        })
    }

    /// Records every gained partition of `target` pulled.
    pub fn synced(&self, target: u64) -> Result<(), ClusterError> {
        self.update(|st| st.synced = st.synced.max(target))
    }

    /// Records the hand-off of the partitions this node leaves in
    /// `version`.
    pub fn handed_off(&self, version: u64) -> Result<(), ClusterError> {
        self.update(|st| st.handed_off = st.handed_off.max(version))
    }

    /// Records the end of the transition to `version`.
    pub fn ended(&self, version: u64) -> Result<(), ClusterError> {
        self.update(|st| {
            st.collapsed = st.collapsed.max(version);
            st.reading = st.reading.max(version);
        })
    }

    /// Records that this node reads from layout `version`'s sets.
    pub fn read_from(&self, version: u64) -> Result<(), ClusterError> {
        self.update(|st| st.reading = st.reading.max(version))
    }

    /// What this node reports about itself, given its active layouts.
    pub fn report(&self, active: &[Arc<Layout>], me: &str) -> TransitionReport {
        let st = self.state();
        let current = active.last().map(|l| l.version()).unwrap_or(0);
        let gained = gained(active, me);
        let done = if st.target == current {
            gained.iter().filter(|p| st.done.contains(&p.0)).count()
        } else {
            0
        };
        let synced = if gained.is_empty() {
            current
        } else {
            st.synced.min(current)
        };
        TransitionReport {
            active: active.iter().map(|l| l.version()).collect(),
            synced,
            reading: read_layout(active, st.reading).map_or(0, |l| l.version()),
            partitions_total: gained.len() as u32,
            partitions_done: done as u32,
        }
    }
}

/// The replica set of `partition` under `layout`, as peer ids, primary
/// first.
pub fn set_of(layout: &Layout, partition: Partition) -> Vec<PeerId> {
    layout
        .replicas(partition)
        .iter()
        .filter_map(|&m| member_peer(layout, m))
        .collect()
}

fn same_members(a: &[PeerId], b: &[PeerId]) -> bool {
    a.len() == b.len() && a.iter().all(|p| b.contains(p))
}

/// The partitions member `me` must pull for the newest of `active`
/// (oldest first): those it holds in the newest layout but not in every
/// older one, and, where the newest set is smaller than an older one (a
/// layout with fewer members than the replication factor), every one it
/// holds there, since fewer copies must then each be complete.
pub fn gained(active: &[Arc<Layout>], me: &str) -> Vec<Partition> {
    let Some((newest, older)) = active.split_last() else {
        return Vec::new();
    };
    if older.is_empty() {
        return Vec::new();
    }
    let Some(mi) = newest.member_index(me) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in 0..newest.partitions().count() {
        let partition = Partition(p as u16);
        let set = newest.replicas(partition);
        if !set.contains(&mi) {
            continue;
        }
        let needs = older.iter().any(|o| {
            let theirs = o.replicas(partition);
            let held = o.member_index(me).is_some_and(|oi| theirs.contains(&oi));
            !held || set.len() < theirs.len()
        });
        if needs {
            out.push(partition);
        }
    }
    out
}

/// Which partitions (by number) a transition moves: those whose replica
/// set differs between two active layouts. Empty outside a transition.
pub fn moving(active: &[Arc<Layout>]) -> Vec<bool> {
    let Some((newest, older)) = active.split_last() else {
        return Vec::new();
    };
    if older.is_empty() {
        return Vec::new();
    }
    fn ids(l: &Layout, p: Partition) -> Vec<&str> {
        let mut v: Vec<&str> = l
            .replicas(p)
            .iter()
            .map(|&m| l.member(m).id.as_str())
            .collect();
        v.sort_unstable();
        v
    }
    (0..newest.partitions().count())
        .map(|p| {
            let p = Partition(p as u16);
            let now = ids(newest, p);
            older.iter().any(|o| ids(o, p) != now)
        })
        .collect()
}

/// The layout whose sets reads use: the newest active layout at or below
/// `reading`, or the oldest active one.
pub fn read_layout(active: &[Arc<Layout>], reading: u64) -> Option<&Arc<Layout>> {
    active
        .iter()
        .rev()
        .find(|l| l.version() <= reading)
        .or_else(|| active.first())
}

/// Where one partition lives while layouts are active: the replica set
/// of the newest layout, the differing sets of older ones (writes reach a
/// quorum in each), and the set reads use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sets {
    pub newest: Vec<PeerId>,
    pub older: Vec<Vec<PeerId>>,
    pub read: Vec<PeerId>,
}

/// The [`Sets`] of `partition` under `active` (oldest first, not empty).
pub fn sets(active: &[Arc<Layout>], reading: u64, partition: Partition) -> Option<Sets> {
    let newest_layout = active.last()?;
    let newest = set_of(newest_layout, partition);
    let mut older: Vec<Vec<PeerId>> = Vec::new();
    for l in &active[..active.len() - 1] {
        let s = set_of(l, partition);
        if !same_members(&s, &newest) && !older.iter().any(|o| same_members(o, &s)) {
            older.push(s);
        }
    }
    let read = match read_layout(active, reading) {
        Some(l) if !Arc::ptr_eq(l, newest_layout) => set_of(l, partition),
        _ => newest.clone(),
    };
    Some(Sets {
        newest,
        older,
        read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurp_protocol::PartitionScheme;
    use slurp_protocol::placement::Member;

    fn member(id: &PeerId) -> Member {
        Member {
            id: id.to_base58(),
            zone: "z".into(),
            capacity: 100,
            address: format!("/ip4/127.0.0.1/tcp/1/p2p/{id}"),
        }
    }

    fn layout(version: u64, peers: &[PeerId]) -> Arc<Layout> {
        let scheme = PartitionScheme::new(6).unwrap();
        Arc::new(Layout::new(version, 3, scheme, peers.iter().map(member).collect()).unwrap())
    }

    #[test]
    fn a_newcomer_pulls_what_it_gained_and_reads_stay_old_until_told() {
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let old = layout(1, &peers[..3]);
        let new = layout(2, &peers);
        let active = vec![old.clone(), new.clone()];
        let newcomer = peers[3].to_base58();
        let gained = gained(&active, &newcomer);
        assert_eq!(gained, new.partitions_of(&newcomer));
        assert!(!gained.is_empty());
        // The old members gain nothing: three members held every partition.
        for p in &peers[..3] {
            assert!(super::gained(&active, &p.to_base58()).is_empty());
        }
        // One layout alone is no transition.
        assert!(super::gained(std::slice::from_ref(&new), &newcomer).is_empty());
        let p = gained[0];
        let s = sets(&active, 0, p).unwrap();
        assert!(s.newest.contains(&peers[3]));
        assert_eq!(s.older.len(), 1);
        assert!(!s.older[0].contains(&peers[3]));
        assert_eq!(s.read, s.older[0], "reads stay on the old owners");
        let s = sets(&active, 2, p).unwrap();
        assert_eq!(s.read, s.newest, "until this node reads from the newest");
        // A partition whose owners did not change has no older set.
        let same = (0..new.partitions().count())
            .map(|p| Partition(p as u16))
            .find(|p| {
                !new.replicas(*p)
                    .contains(&new.member_index(&newcomer).unwrap())
            })
            .unwrap();
        let s = sets(&active, 0, same).unwrap();
        assert!(s.older.is_empty());
        assert_eq!(s.read.len(), 3);
    }

    #[test]
    fn shrinking_below_the_replication_factor_makes_every_owner_pull() {
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        let old = layout(1, &peers);
        let new = layout(2, &peers[..2]);
        let active = vec![old, new];
        for p in &peers[..2] {
            assert_eq!(
                super::gained(&active, &p.to_base58()).len(),
                active[1].partitions().count() as usize
            );
        }
        assert!(super::gained(&active, &peers[2].to_base58()).is_empty());
    }

    #[test]
    fn the_state_survives_a_restart_and_a_newer_target_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("cluster")).unwrap();
        let t = Transitions::load(dir.path()).unwrap();
        t.aim(2).unwrap();
        t.pulled(2, Partition(5), 100, 3).unwrap();
        t.pulled(1, Partition(6), 100, 3).unwrap();
        t.read_from(1).unwrap();
        let again = Transitions::load(dir.path()).unwrap().state();
        assert_eq!(again.target, 2);
        assert_eq!(again.done, BTreeSet::from([5]));
        assert_eq!((again.bytes, again.versions, again.reading), (100, 3, 1));
        t.aim(3).unwrap();
        assert!(t.state().done.is_empty());
        t.read_from(0).unwrap();
        assert_eq!(t.state().reading, 1, "reading never goes back");
    }
}
