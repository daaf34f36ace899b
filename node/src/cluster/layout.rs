//! The layout this node holds, and the changes an admin has staged.
//!
//! Every node keeps the newest layout it has seen in
//! `<data>/cluster/layout.cbor` (a framed [`Signed`] statement: the
//! layout's bytes and the cluster key's signature, written atomically) and
//! accepts a layout only if the cluster key signed it and it is newer, so a
//! replayed older layout changes nothing. Two holders of the cluster key
//! can sign different layouts with the same version; the one whose encoding
//! has the greater blake3 digest wins everywhere, so every node converges
//! on the same layout without coordination, and the loser's changes are
//! simply staged again on top of it.
//!
//! **History.** Taking a newer layout does not forget the one before: the
//! cluster is then in a *transition* between them (see
//! [`super::transition`]), writing to both replica sets and reading from
//! the old until the new owners have pulled what they gained. The older
//! layouts still active are kept, signed as they came, in
//! `<data>/cluster/history.cbor`, so a node restarting mid-transition
//! resumes it; [`LayoutState::collapse_below`] forgets them once the
//! transition is over.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use slurp_protocol::placement::{Layout, Member};
use slurp_protocol::{Framed, PartitionScheme, Signed};

use super::ClusterError;

/// Changes waiting for `apply`: the API's body.
pub use slurp_protocol::api::StagedChanges as Staged;

/// The current layout and the staged changes.
pub struct LayoutState {
    path: PathBuf,
    current: RwLock<Option<Held>>,
    staged: Mutex<Staged>,
    /// Held while a layout is built from the stage and taken, so two
    /// applies at once (two invites redeemed together) never build the same
    /// version from different stages, losing one of them.
    applying: Mutex<()>,
    /// Members a layout change removed (and none re-added since), kept in
    /// `removed.json`, so auto-join never undoes an admin's removal.
    removed: Mutex<BTreeSet<String>>,
    removed_path: PathBuf,
    /// Older layouts still active (a transition is under way), oldest
    /// first; empty when the current layout is the only one.
    older: RwLock<Vec<Held>>,
    history_path: PathBuf,
}

/// The layout held, its digest (for ties) and the signed form peers get.
#[derive(Clone)]
struct Held {
    layout: Arc<Layout>,
    digest: [u8; 32],
    signed: Signed,
}

/// Whether going from `old` to `new` changes who holds some partition:
/// a change of addresses only (a node restarted elsewhere) moves no data
/// and needs no transition.
fn moves_data(old: &Layout, new: &Layout) -> bool {
    if old.partitions() != new.partitions() {
        return true;
    }
    (0..new.partitions().count()).any(|p| {
        let p = slurp_protocol::Partition(p as u16);
        let ids = |l: &Layout| -> Vec<String> {
            let mut v: Vec<String> = l
                .replicas(p)
                .iter()
                .map(|&m| l.member(m).id.clone())
                .collect();
            v.sort();
            v
        };
        ids(old) != ids(new)
    })
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

impl LayoutState {
    /// Loads the layout kept under `dir` (none on a new node), checking
    /// its signature with `verify`.
    pub fn load(
        dir: &Path,
        verify: impl Fn(&Signed) -> Result<Layout, ClusterError>,
    ) -> Result<Self, ClusterError> {
        let dir = dir.join("cluster");
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::Io(e.to_string()))?;
        let path = dir.join("layout.cbor");
        let current = match std::fs::read(&path) {
            Ok(bytes) => {
                let bad = |e: String| ClusterError::Io(format!("{}: {e}", path.display()));
                let signed = Signed::decode_limited(&bytes, super::membership::MAX_STATEMENT)
                    .map_err(|e| {
                        bad(format!(
                            "{e} (a layout from before signed layouts: remove the file and `slurp cluster init` again)"
                        ))
                    })?;
                let layout = verify(&signed).map_err(|e| bad(e.to_string()))?;
                Some(Held {
                    layout: Arc::new(layout),
                    digest: digest(&signed.statement.0),
                    signed,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ClusterError::Io(format!("{}: {e}", path.display()))),
        };
        let removed_path = dir.join("removed.json");
        let removed = match std::fs::read(&removed_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| ClusterError::Io(format!("{}: {e}", removed_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(ClusterError::Io(format!("{}: {e}", removed_path.display()))),
        };
        let history_path = dir.join("history.cbor");
        let older = match std::fs::read(&history_path) {
            Ok(bytes) => {
                let bad = |e: String| ClusterError::Io(format!("{}: {e}", history_path.display()));
                let list: Vec<slurp_protocol::wire::Bytes> =
                    slurp_protocol::wire::from_cbor(&bytes, super::membership::MAX_STATEMENT * 16)
                        .map_err(|e| bad(e.to_string()))?;
                let mut older = Vec::with_capacity(list.len());
                for b in list {
                    let signed = Signed::decode_limited(&b.0, super::membership::MAX_STATEMENT)
                        .map_err(|e| bad(e.to_string()))?;
                    let layout = verify(&signed).map_err(|e| bad(e.to_string()))?;
                    older.push(Held {
                        layout: Arc::new(layout),
                        digest: digest(&signed.statement.0),
                        signed,
                    });
                }
                older
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ClusterError::Io(format!("{}: {e}", history_path.display()))),
        };
        let mut older = older;
        if let Some(c) = &current {
            older.retain(|h: &Held| {
                h.digest != c.digest && h.layout.version() <= c.layout.version()
            });
        }
        Ok(LayoutState {
            path,
            current: RwLock::new(current),
            staged: Mutex::new(Staged::default()),
            applying: Mutex::new(()),
            removed: Mutex::new(removed),
            removed_path,
            older: RwLock::new(older),
            history_path,
        })
    }

    /// Every active layout, oldest first; the last is the current one.
    /// Empty before the first layout.
    pub fn active(&self) -> Vec<Arc<Layout>> {
        let mut out: Vec<Arc<Layout>> = self
            .older
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|h| h.layout.clone())
            .collect();
        out.extend(self.current());
        out
    }

    /// Takes `layout` (signed by the cluster key, as the caller checked) as
    /// an older active layout: a peer is still in the transition away
    /// from it and this node has not seen it (it joined, or was away).
    /// Only a layout older than the current one and not older than
    /// `floor` (below which this node already ended a transition) is
    /// taken; returns whether it was.
    pub fn adopt_older(
        &self,
        layout: Layout,
        signed: Signed,
        floor: u64,
    ) -> Result<bool, ClusterError> {
        let d = digest(&signed.statement.0);
        let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
        let Some(current) = cur.as_ref() else {
            return Ok(false);
        };
        if layout.version() >= current.layout.version() || layout.version() < floor {
            return Ok(false);
        }
        let mut older = self.older.write().unwrap_or_else(|e| e.into_inner());
        if older.iter().any(|h| h.digest == d) {
            return Ok(false);
        }
        let mut next = older.clone();
        next.push(Held {
            layout: Arc::new(layout),
            digest: d,
            signed,
        });
        next.sort_by_key(|h| h.layout.version());
        self.save_history(&next)?;
        *older = next;
        Ok(true)
    }

    /// The older active layouts as signed, oldest first, for peers.
    pub fn older_signed(&self) -> Vec<Signed> {
        self.older
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|h| h.signed.clone())
            .collect()
    }

    /// Forgets the older layouts whose version is below `version` (the
    /// transition to a layout at least that new is over); returns how
    /// many it forgot.
    pub fn collapse_below(&self, version: u64) -> Result<usize, ClusterError> {
        let mut older = self.older.write().unwrap_or_else(|e| e.into_inner());
        let before = older.len();
        older.retain(|h| h.layout.version() >= version);
        let forgotten = before - older.len();
        if forgotten > 0 {
            self.save_history(&older)?;
        }
        Ok(forgotten)
    }

    fn save_history(&self, older: &[Held]) -> Result<(), ClusterError> {
        if older.is_empty() {
            return match std::fs::remove_file(&self.history_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ClusterError::Io(
                    format!("{}: {e}", self.history_path.display()),
                )),
                _ => Ok(()),
            };
        }
        let list = older
            .iter()
            .map(|h| h.signed.encode().map(slurp_protocol::wire::Bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        let bytes =
            slurp_protocol::wire::to_cbor(&list).map_err(|e| ClusterError::Io(e.to_string()))?;
        write_atomic(&self.history_path, &bytes)
    }

    pub fn current(&self) -> Option<Arc<Layout>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.layout.clone())
    }

    /// The current layout as signed, for peers.
    pub fn signed(&self) -> Option<Signed> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.signed.clone())
    }

    pub fn version(&self) -> u64 {
        self.current().map(|l| l.version()).unwrap_or(0)
    }

    /// Takes `layout`, whose signature the caller checked (`signed` is
    /// its signed form), if it is newer than the current one (see the
    /// module docs for ties); returns whether it was taken.
    pub fn offer(&self, layout: Layout, signed: Signed) -> Result<bool, ClusterError> {
        let d = digest(&signed.statement.0);
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = cur.as_ref()
            && (layout.version(), d) <= (h.layout.version(), h.digest)
        {
            return Ok(false);
        }
        let bytes = signed
            .encode()
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        // The layout replaced stays active until the transition to the new
        // one is over (a tie's loser too: some nodes may have written under
        // it). The history is written first: a crash between the two files
        // leaves the old layout both current and older, which `load` folds.
        if let Some(h) = cur.as_ref()
            && moves_data(&h.layout, &layout)
        {
            let mut older = self.older.write().unwrap_or_else(|e| e.into_inner());
            let mut next = older.clone();
            next.push(h.clone());
            self.save_history(&next)?;
            *older = next;
        }
        write_atomic(&self.path, &bytes)?;
        {
            let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
            let before = removed.clone();
            if let Some(h) = cur.as_ref() {
                for m in h.layout.members() {
                    if layout.member_index(&m.id).is_none() {
                        removed.insert(m.id.clone());
                    }
                }
            }
            for m in layout.members() {
                removed.remove(&m.id);
            }
            if *removed != before {
                let json =
                    serde_json::to_vec(&*removed).map_err(|e| ClusterError::Io(e.to_string()))?;
                write_atomic(&self.removed_path, &json)?;
            }
        }
        tracing::info!(
            version = layout.version(),
            members = layout.members().len(),
            "cluster layout updated"
        );
        *cur = Some(Held {
            layout: Arc::new(layout),
            digest: d,
            signed,
        });
        Ok(true)
    }

    /// Whether a layout change removed `id` (and none re-added it).
    pub fn was_removed(&self, id: &str) -> bool {
        self.removed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    pub fn staged(&self) -> Staged {
        self.staged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stage_join(&self, member: Member) {
        let mut s = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        s.remove.remove(&member.id);
        s.join.insert(member.id.clone(), member);
    }

    pub fn stage_remove(&self, id: &str) {
        let mut s = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        s.join.remove(id);
        s.remove.insert(id.to_string());
    }

    /// Builds the next layout from the current one and the staged changes,
    /// takes it and clears the stage. `replication_factor` and
    /// `partition_bits` apply only to the first layout: later ones keep
    /// the current values (the partition count is fixed for the cluster's
    /// life, so data never moves between partitions).
    pub fn apply(
        &self,
        replication_factor: u8,
        partition_bits: u8,
        sign: impl FnOnce(&Layout) -> Result<Signed, ClusterError>,
    ) -> Result<Arc<Layout>, ClusterError> {
        let _applying = self.applying.lock().unwrap_or_else(|e| e.into_inner());
        let staged = self.staged();
        if staged.is_empty() {
            return Err(ClusterError::NothingStaged);
        }
        let next = self.next_layout(&staged, replication_factor, partition_bits)?;
        let signed = sign(&next)?;
        self.offer(next, signed)?;
        // What was applied leaves the stage; what was staged meanwhile
        // stays for the next apply.
        let mut s = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        s.join.retain(|id, m| staged.join.get(id) != Some(m));
        s.remove.retain(|id| !staged.remove.contains(id));
        drop(s);
        self.current().ok_or(ClusterError::NoLayout)
    }

    /// The layout `staged` would make, without taking it.
    pub fn next_layout(
        &self,
        staged: &Staged,
        replication_factor: u8,
        partition_bits: u8,
    ) -> Result<Layout, ClusterError> {
        let current = self.current();
        let mut members: BTreeMap<String, Member> = current
            .as_ref()
            .map(|l| {
                l.members()
                    .iter()
                    .map(|m| (m.id.clone(), m.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for id in &staged.remove {
            members.remove(id);
        }
        for (id, m) in &staged.join {
            members.insert(id.clone(), m.clone());
        }
        let (version, rf, scheme) = match &current {
            Some(l) => (l.version() + 1, l.replication_factor(), l.partitions()),
            None => (
                1,
                replication_factor,
                PartitionScheme::new(partition_bits)
                    .map_err(|e| ClusterError::Layout(e.to_string()))?,
            ),
        };
        // Later layouts are computed against the current one, so a change
        // moves the least it can (`docs/placement.md`).
        let members = members.into_values().collect();
        match &current {
            Some(c) => Layout::next(c, version, members),
            None => Layout::new(version, rf, scheme, members),
        }
        .map_err(|e| ClusterError::Layout(e.to_string()))
    }
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ClusterError> {
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| ClusterError::Io(format!("{}: {e}", path.display()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurp_crypto::ClusterKey;
    use slurp_protocol::membership::PURPOSE_LAYOUT;

    fn key() -> ClusterKey {
        ClusterKey::from_seed(&[9; 32])
    }

    fn sign(l: &Layout) -> Result<Signed, ClusterError> {
        Ok(key().sign(PURPOSE_LAYOUT, l).unwrap())
    }

    fn verify(s: &Signed) -> Result<Layout, ClusterError> {
        key()
            .public()
            .verify(PURPOSE_LAYOUT, s, 1 << 20)
            .map_err(|e| ClusterError::Refused(e.to_string()))
    }

    fn load(dir: &Path) -> LayoutState {
        LayoutState::load(dir, verify).unwrap()
    }

    fn offer(s: &LayoutState, l: Layout) -> bool {
        let signed = sign(&l).unwrap();
        s.offer(l, signed).unwrap()
    }

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            zone: "z".into(),
            capacity: 100,
            address: format!("/ip4/127.0.0.1/tcp/1/p2p/{id}"),
        }
    }

    #[test]
    fn staged_changes_make_the_next_version_and_survive_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = load(dir.path());
        assert!(state.current().is_none());
        assert!(matches!(
            state.apply(3, 8, sign),
            Err(ClusterError::NothingStaged)
        ));
        state.stage_join(member("a"));
        state.stage_join(member("b"));
        let l1 = state.apply(3, 8, sign).unwrap();
        assert_eq!(l1.version(), 1);
        assert_eq!(l1.members().len(), 2);
        assert!(state.staged().is_empty());
        state.stage_remove("a");
        state.stage_join(member("c"));
        let l2 = state.apply(5, 4, sign).unwrap();
        assert_eq!(l2.version(), 2);
        // The first layout fixed the replication factor and partitions.
        assert_eq!(l2.replication_factor(), 3);
        assert_eq!(l2.partitions().bits(), 8);
        let ids: Vec<_> = l2.members().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        let again = load(dir.path());
        assert_eq!(again.current().unwrap().as_ref(), l2.as_ref());
        // The removal is remembered (auto-join must not undo it) until a
        // layout has the member again.
        assert!(again.was_removed("a"));
        assert!(!again.was_removed("b"));
        again.stage_join(member("a"));
        again.apply(3, 8, sign).unwrap();
        assert!(!again.was_removed("a"));
    }

    #[test]
    fn a_newer_layout_keeps_the_one_before_active_until_the_transition_ends() {
        let dir = tempfile::tempdir().unwrap();
        let state = load(dir.path());
        let scheme = PartitionScheme::new(6).unwrap();
        let l1 = Layout::new(1, 2, scheme, vec![member("a"), member("b")]).unwrap();
        let l2 = Layout::new(2, 2, scheme, vec![member("a"), member("b"), member("c")]).unwrap();
        assert!(offer(&state, l1.clone()));
        assert_eq!(state.active().len(), 1);
        assert!(offer(&state, l2.clone()));
        let versions = |s: &LayoutState| s.active().iter().map(|l| l.version()).collect::<Vec<_>>();
        assert_eq!(versions(&state), [1, 2]);
        // A restart resumes the transition.
        let again = load(dir.path());
        assert_eq!(versions(&again), [1, 2]);
        // A change of addresses only moves nothing: no transition.
        let mut moved = member("c");
        moved.address = "/ip4/127.0.0.1/tcp/2/p2p/c".into();
        let l3 = Layout::new(3, 2, scheme, vec![member("a"), member("b"), moved]).unwrap();
        assert!(offer(&again, l3));
        assert_eq!(versions(&again), [1, 3]);
        assert_eq!(again.collapse_below(3).unwrap(), 1);
        assert_eq!(versions(&load(dir.path())), [3]);
        // An older layout a peer still holds is taken by a node that never
        // ended a transition past it, and refused (a replay) by one that
        // did, or when it is not older than the current one.
        let s1 = sign(&l1).unwrap();
        assert!(!again.adopt_older(l1.clone(), s1.clone(), 3).unwrap());
        assert!(again.adopt_older(l1.clone(), s1.clone(), 0).unwrap());
        assert!(!again.adopt_older(l1.clone(), s1, 0).unwrap(), "taken once");
        assert_eq!(versions(&again), [1, 3]);
        let l4 = Layout::new(4, 2, scheme, vec![member("a")]).unwrap();
        assert!(
            !again
                .adopt_older(l4.clone(), sign(&l4).unwrap(), 0)
                .unwrap()
        );
    }

    #[test]
    fn joins_applied_at_the_same_time_all_reach_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let state = std::sync::Arc::new(load(dir.path()));
        state.stage_join(member("first"));
        state.apply(3, 6, sign).unwrap();
        // Eight joins, each staged and applied on its own thread; signing
        // is slow enough that the others stage while one builds.
        let joins: Vec<_> = (0..8)
            .map(|i| {
                let state = state.clone();
                std::thread::spawn(move || {
                    state.stage_join(member(&format!("n{i}")));
                    let r = state.apply(3, 6, |l| {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        sign(l)
                    });
                    // Nothing left to apply: another join took this one's
                    // change with its own.
                    assert!(
                        matches!(r, Ok(_) | Err(ClusterError::NothingStaged)),
                        "{r:?}"
                    );
                })
            })
            .collect();
        for j in joins {
            j.join().unwrap();
        }
        let l = state.current().unwrap();
        assert_eq!(l.members().len(), 9, "{:?}", l.members());
        assert!(state.staged().is_empty());
    }

    #[test]
    fn only_newer_layouts_are_taken_and_ties_break_the_same_everywhere() {
        let scheme = PartitionScheme::new(6).unwrap();
        let la = Layout::new(3, 3, scheme, vec![member("a"), member("b")]).unwrap();
        let lb = Layout::new(3, 3, scheme, vec![member("a"), member("c")]).unwrap();
        let old = Layout::new(2, 3, scheme, vec![member("a")]).unwrap();
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let s1 = load(d1.path());
        let s2 = load(d2.path());
        assert!(offer(&s1, la.clone()));
        assert!(offer(&s2, lb.clone()));
        offer(&s1, lb.clone());
        offer(&s2, la.clone());
        assert_eq!(
            s1.current(),
            s2.current(),
            "both converge on one of the two"
        );
        assert!(!offer(&s1, old));
        assert!(!offer(&s1, s1.current().unwrap().as_ref().clone()));
    }
}
