//! A full consistency check of the tables (`fsck`).
//!
//! Every derived record must agree with the versions in every committed
//! state: each address's head names its greatest stored version and counts
//! them, the key list holds exactly the addresses with a head, each expiring version has both TTL index entries, the
//! hierarchy, links and tombstones follow each address's newest version,
//! and every hint (hinted handoff) names a stored version: hints are
//! written with their versions and removed with them (by the sweeper, a
//! purge or a collection), so a
//! hint without its version is a problem like any other. The slot digests
//! the store keeps in memory must equal those a scan computes (the check
//! copies them under the commit gate, so they belong to its snapshot), and
//! every collected marker must decode and have no stored version at or
//! before it (collection removed them, and puts refuse them).
//! The check walks every table once in one read snapshot and lists each
//! disagreement; the crash test runs it after every simulated crash, and an
//! operator can run it on a live store.

use std::collections::BTreeSet;

use redb::{ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use slurp_protocol::address::parent_path;
use slurp_protocol::{Framed, RecordMeta, Slot};

use crate::digest::ScannedDigests;
use crate::error::ReadError;
use crate::layout::{self, LINK_BY_FROM, LINK_BY_TO};
use crate::record::{
    CollectedMarker, Head, LatestEntry, TombstoneEntry, decode_framed, decode_version,
};
use crate::store::Store;
use crate::validate::{check_hint_target, check_key};
use crate::writer::links_of;

/// How problems with an address's head record are labelled.
const HEAD: &str = "versions/head";

/// One disagreement between tables, or a value that does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconsistency {
    pub table: &'static str,
    /// The storage key (or the table key, printed).
    pub key: String,
    pub what: String,
}

impl std::fmt::Display for Inconsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.table, self.key, self.what)
    }
}

/// The result of [`Store::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub keys: u64,
    pub versions: u64,
    pub hints: u64,
    /// Collected markers (tombstone GC).
    pub collected: u64,
    pub problems: Vec<Inconsistency>,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the versions of one address imply for the other tables.
struct KeyState {
    key: String,
    /// The head record's bytes, if the address has one.
    head: Option<Vec<u8>>,
    count: u64,
    newest: Option<RecordMeta>,
    min_expiry: Option<u64>,
}

impl KeyState {
    fn new(key: &str, head: Option<Vec<u8>>) -> Self {
        KeyState {
            key: key.to_string(),
            head,
            count: 0,
            newest: None,
            min_expiry: None,
        }
    }
}

type Bytes = ReadOnlyTable<&'static [u8], &'static [u8]>;
type Units = ReadOnlyTable<&'static [u8], ()>;
type Flags = ReadOnlyTable<&'static [u8], u8>;

struct Checker {
    versions: Bytes,
    keys: ReadOnlyTable<&'static str, ()>,
    heads: u64,
    ttl: Units,
    key_ttl: Units,
    hierarchy: Bytes,
    links_out: Flags,
    links_in: Flags,
    tombstones: Bytes,
    report: CheckReport,
    expiring: u64,
}

impl Checker {
    fn problem(&mut self, table: &'static str, key: &str, what: impl Into<String>) {
        self.report.problems.push(Inconsistency {
            table,
            key: key.to_string(),
            what: what.into(),
        });
    }

    fn decode_head(&mut self, key: &str, raw: Option<&[u8]>) -> Option<LatestEntry> {
        match LatestEntry::decode(raw?, key) {
            Ok(e) => Some(e),
            Err(c) => {
                self.problem(HEAD, key, c.reason);
                None
            }
        }
    }

    fn latest_meta(&mut self, key: &str) -> Result<Option<LatestEntry>, ReadError> {
        let raw = self
            .versions
            .get(layout::head_key(key).as_slice())?
            .map(|g| g.value().to_vec());
        Ok(self.decode_head(key, raw.as_deref()))
    }

    /// Compares what one address's versions imply with the derived tables.
    fn finish_key(&mut self, st: KeyState) -> Result<(), ReadError> {
        let key = st.key.as_str();
        self.report.keys += 1;
        if st.head.is_some() && self.keys.get(key)?.is_none() {
            self.problem("keys", key, "address missing from the key list");
        }
        let Some(newest) = st.newest else {
            if st.count == 0 {
                self.problem(HEAD, key, "head of an address without versions");
            }
            return Ok(());
        };
        match self.decode_head(key, st.head.as_deref()) {
            None if st.head.is_none() => self.problem(HEAD, key, "no head for a key with versions"),
            None => {}
            Some(e) => {
                if e.head.version != newest.version {
                    self.problem(
                        HEAD,
                        key,
                        format!(
                            "names {}, greatest stored is {}",
                            e.head.version, newest.version
                        ),
                    );
                } else if e.head != Head::of(&newest) {
                    self.problem(HEAD, key, "metadata differs from the stored version");
                }
                if e.versions != st.count {
                    self.problem(
                        HEAD,
                        key,
                        format!("counts {} versions, {} stored", e.versions, st.count),
                    );
                }
                if e.next_expiry != st.min_expiry {
                    self.problem(
                        HEAD,
                        key,
                        format!(
                            "next expiry {:?}, earliest stored {:?}",
                            e.next_expiry, st.min_expiry
                        ),
                    );
                }
            }
        }
        let live = !newest.tombstone;
        if let Some(parent) = parent_path(&newest.path).filter(|_| live) {
            let hk = layout::hierarchy_key(parent, key);
            let found = self
                .hierarchy
                .get(hk.as_slice())?
                .map(|g| g.value().to_vec());
            if found.as_deref() != Some(newest.path.as_bytes()) {
                self.problem("hierarchy", key, format!("missing under {parent:?}"));
            }
        }
        for (from, to, flag) in links_of(key, Some(&Head::of(&newest))) {
            let out = self
                .links_out
                .get(layout::pair_key(&from, &to).as_slice())?
                .map(|g| g.value());
            let inn = self
                .links_in
                .get(layout::pair_key(&to, &from).as_slice())?
                .map(|g| g.value());
            if out.is_none_or(|f| f & flag == 0) || out != inn {
                self.problem("links_out", key, format!("link {from} -> {to} missing"));
            }
        }
        let tomb = self
            .tombstones
            .get(layout::slot_key(key).as_slice())?
            .map(|g| g.value().to_vec());
        match (newest.tombstone, tomb) {
            (true, None) => self.problem("tombstones", key, "newest version is a tombstone"),
            (false, Some(_)) => {
                self.problem("tombstones", key, "newest version is not a tombstone")
            }
            (true, Some(raw)) => match TombstoneEntry::decode(&raw) {
                Ok(t) if t.version == newest.version => {}
                Ok(t) => self.problem(
                    "tombstones",
                    key,
                    format!("names {}, newest is {}", t.version, newest.version),
                ),
                Err(e) => self.problem("tombstones", key, e.to_string()),
            },
            (false, None) => {}
        }
        Ok(())
    }

    /// Every hint must decode, have a valid target and key, and name a
    /// stored version.
    fn check_hints(&mut self, hints: &ReadOnlyTable<&'static [u8], u64>) -> Result<(), ReadError> {
        for r in hints.iter()? {
            let (k, _) = r?;
            self.report.hints += 1;
            let h = match layout::decode_hint_key(k.value()) {
                Ok(h) => h,
                Err(e) => {
                    self.problem("hints", &e.hex, e.reason);
                    continue;
                }
            };
            if let Err(e) = check_hint_target(h.target) {
                self.problem("hints", h.key, e.to_string());
            }
            if let Err(e) = check_key(h.key) {
                self.problem("hints", h.key, format!("not a storage key: {e}"));
                continue;
            }
            let stored = self
                .versions
                .get(layout::version_key(h.key, &h.version).as_slice())?
                .is_some();
            if !stored {
                self.problem(
                    "hints",
                    h.key,
                    format!(
                        "hint for {:?} names missing version {}",
                        h.target, h.version
                    ),
                );
            }
        }
        Ok(())
    }

    /// Every collected marker must decode, sit in its key's slot, and have
    /// no stored version at or before its version.
    fn check_collected(&mut self, table: &Bytes) -> Result<(), ReadError> {
        for r in table.iter()? {
            let (k, v) = r?;
            self.report.collected += 1;
            let (slot, key) = match layout::decode_slot_key(k.value()) {
                Ok(d) => d,
                Err(e) => {
                    self.problem("collected", &e.hex, e.reason);
                    continue;
                }
            };
            if Slot::of(key) != slot {
                self.problem("collected", key, format!("stored under slot {}", slot.0));
            }
            let marker = match decode_framed::<CollectedMarker>(v.value(), "collected", key) {
                Ok(m) => m,
                Err(c) => {
                    self.problem("collected", key, c.reason);
                    continue;
                }
            };
            let prefix = layout::version_prefix(key);
            let last = layout::version_key(key, &marker.version);
            let first = self
                .versions
                .range::<&[u8]>(prefix.as_slice()..=last.as_slice())?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().to_vec());
            if let Some(found) = first {
                let what = match layout::decode_version_key(&found) {
                    Ok(vk) => format!(
                        "version {} stored, at or before the collected marker {}",
                        vk.version, marker.version
                    ),
                    Err(e) => format!("undecodable version key {} before the marker", e.hex),
                };
                self.problem("collected", key, what);
            }
        }
        Ok(())
    }

    /// Every entry of the derived tables must be implied by some address.
    fn reverse_checks(&mut self) -> Result<(), ReadError> {
        let listed = self.keys.len()?;
        if listed != self.heads {
            self.problem(
                "keys",
                "*",
                format!("{listed} addresses listed, {} heads stored", self.heads),
            );
        }
        for (name, len) in [("ttl", self.ttl.len()?), ("key_ttl", self.key_ttl.len()?)] {
            if len != self.expiring {
                self.problem(
                    name,
                    "*",
                    format!("{len} entries for {} expiring versions", self.expiring),
                );
            }
        }
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .hierarchy
            .iter()?
            .map(|r| r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (k, v) in entries {
            let Ok((parent, child)) = layout::decode_pair_key(&k) else {
                self.problem("hierarchy", &String::from_utf8_lossy(&k), "malformed key");
                continue;
            };
            let ok = self.latest_meta(child)?.is_some_and(|e| {
                !e.head.tombstone
                    && e.head.path.as_bytes() == v.as_slice()
                    && parent_path(&e.head.path) == Some(parent)
            });
            if !ok {
                self.problem("hierarchy", child, format!("stale entry under {parent:?}"));
            }
        }
        let out: Vec<(Vec<u8>, u8)> = self
            .links_out
            .iter()?
            .map(|r| r.map(|(k, v)| (k.value().to_vec(), v.value())))
            .collect::<Result<_, _>>()?;
        if out.len() as u64 != self.links_in.len()? {
            self.problem("links_in", "*", "does not mirror links_out");
        }
        for (k, flags) in out {
            let Ok((from, to)) = layout::decode_pair_key(&k) else {
                self.problem("links_out", &String::from_utf8_lossy(&k), "malformed key");
                continue;
            };
            let (from, to) = (from.to_string(), to.to_string());
            let mut implied = 0u8;
            if let Some(e) = self.latest_meta(&from)?
                && !e.head.tombstone
                && e.head.influences.contains(&to)
            {
                implied |= LINK_BY_FROM;
            }
            if let Some(e) = self.latest_meta(&to)?
                && !e.head.tombstone
                && e.head.influenced_by.contains(&from)
            {
                implied |= LINK_BY_TO;
            }
            if implied != flags {
                self.problem(
                    "links_out",
                    &from,
                    format!("link to {to} has flags {flags}, newest versions imply {implied}"),
                );
            }
        }
        let tombs: Vec<Vec<u8>> = self
            .tombstones
            .iter()?
            .map(|r| r.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        for k in tombs {
            match layout::decode_slot_key(&k) {
                Ok((_, key)) => {
                    if !self.latest_meta(key)?.is_some_and(|e| e.head.tombstone) {
                        self.problem(
                            "tombstones",
                            key,
                            "entry for an address that is not deleted",
                        );
                    }
                }
                Err(e) => self.problem("tombstones", &e.hex, "malformed key"),
            }
        }
        Ok(())
    }
}

impl Store {
    /// Walks every table and reports each disagreement between them and
    /// each value that does not decode. Holds one read transaction for the
    /// whole walk (compaction waits for it).
    pub fn check(&self) -> Result<CheckReport, ReadError> {
        let shared = self.shared();
        let db = shared.db();
        let (txn, maintained) = shared.digests.snapshot(|| db.begin_read());
        let txn = txn?;
        let mut scanned = ScannedDigests::new();
        let versions: Bytes = txn.open_table(layout::VERSIONS)?;
        let mut c = Checker {
            versions: txn.open_table(layout::VERSIONS)?,
            keys: txn.open_table(layout::KEYS)?,
            heads: 0,
            ttl: txn.open_table(layout::TTL)?,
            key_ttl: txn.open_table(layout::KEY_TTL)?,
            hierarchy: txn.open_table(layout::HIERARCHY)?,
            links_out: txn.open_table(layout::LINKS_OUT)?,
            links_in: txn.open_table(layout::LINKS_IN)?,
            tombstones: txn.open_table(layout::TOMBSTONES)?,
            report: CheckReport::default(),
            expiring: 0,
        };
        let mut current: Option<KeyState> = None;
        let mut seen_keys = BTreeSet::new();
        for r in versions.iter()? {
            let (k, v) = r?;
            scanned.add(k.value());
            // A head closes its address's range (it sorts after the
            // versions).
            if let Some(key) = layout::head_key_name(k.value()) {
                c.heads += 1;
                let mut st = match current.take() {
                    Some(st) if st.key == key => st,
                    other => {
                        if let Some(done) = other {
                            c.finish_key(done)?;
                        }
                        if !seen_keys.insert(key.to_string()) {
                            c.problem(HEAD, key, "versions are not contiguous");
                        }
                        KeyState::new(key, None)
                    }
                };
                st.head = Some(v.value().to_vec());
                c.finish_key(st)?;
                continue;
            }
            c.report.versions += 1;
            let vk = match layout::decode_version_key(k.value()) {
                Ok(vk) => vk,
                Err(e) => {
                    c.problem("versions", &e.hex, e.reason);
                    continue;
                }
            };
            if Slot::of(vk.key) != vk.slot {
                c.problem(
                    "versions",
                    vk.key,
                    format!("stored under slot {}", vk.slot.0),
                );
            }
            if current.as_ref().is_none_or(|s| s.key != vk.key) {
                if let Some(done) = current.take() {
                    c.finish_key(done)?;
                }
                if !seen_keys.insert(vk.key.to_string()) {
                    c.problem("versions", vk.key, "versions are not contiguous");
                }
                current = Some(KeyState::new(vk.key, None));
            }
            let Some(st) = current.as_mut() else { continue };
            st.count += 1;
            let meta = match decode_version(v.value(), vk.key, &vk.version) {
                Ok(sv) => sv.meta,
                Err(e) => {
                    c.report.problems.push(Inconsistency {
                        table: "versions",
                        key: vk.key.to_string(),
                        what: e.reason,
                    });
                    continue;
                }
            };
            if let Some(exp) = meta.expires_at_ms {
                c.expiring += 1;
                st.min_expiry = Some(st.min_expiry.map_or(exp, |m| m.min(exp)));
                let ttl_ok = c
                    .ttl
                    .get(layout::ttl_key(exp, vk.key, &vk.version).as_slice())?
                    .is_some();
                let key_ttl_ok = c
                    .key_ttl
                    .get(layout::key_ttl_key(exp, vk.key, &vk.version).as_slice())?
                    .is_some();
                if !ttl_ok || !key_ttl_ok {
                    let key = vk.key.to_string();
                    c.problem("ttl", &key, format!("version {} not indexed", vk.version));
                }
            }
            // Versions of one key come in VersionId order: the last is the
            // newest.
            st.newest = Some(meta);
        }
        if let Some(done) = current.take() {
            c.finish_key(done)?;
        }
        c.reverse_checks()?;
        let hints: ReadOnlyTable<&[u8], u64> = txn.open_table(layout::HINTS)?;
        c.check_hints(&hints)?;
        drop(hints);
        let collected: Bytes = txn.open_table(layout::COLLECTED)?;
        c.check_collected(&collected)?;
        drop(collected);
        for (slot, kept, found) in scanned.differences(&maintained) {
            c.problem(
                "digests",
                &format!("slot {slot}"),
                format!(
                    "maintained digest covers {} versions, a scan finds {}{}",
                    kept.versions,
                    found.versions,
                    if kept.versions == found.versions {
                        " with other keys"
                    } else {
                        ""
                    }
                ),
            );
        }
        let report = c.report;
        drop(versions);
        drop(txn);
        drop(db);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use crate::digest::DigestDelta;
    use crate::store::Store;
    use crate::{StoreConfig, layout};

    /// A maintained digest that drifted from the versions (here: a delta
    /// applied with a commit that stored nothing) is reported for its slot
    /// and only for it.
    #[test]
    fn check_reports_a_slot_whose_maintained_digest_drifted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), StoreConfig::default()).unwrap();
        assert!(store.check().unwrap().is_ok());
        let shared = store.shared();
        {
            let db = shared.db();
            let txn = db.begin_write().unwrap();
            let mut delta = DigestDelta::default();
            let version = slurp_protocol::VersionId {
                hlc: slurp_protocol::Hlc::ZERO,
                writer: slurp_protocol::WriterId::new("w").unwrap(),
            };
            delta.inserted(&layout::version_key("ucxl://a:b@c:d/x", &version));
            shared.digests.commit(txn, delta).unwrap();
        }
        let slot = slurp_protocol::Slot::of("ucxl://a:b@c:d/x").0;
        assert_eq!(store.digest(slot..=slot).versions, 1);
        let check = store.check().unwrap();
        let problems: Vec<(&str, &str)> = check
            .problems
            .iter()
            .map(|p| (p.table, p.key.as_str()))
            .collect();
        assert_eq!(problems, vec![("digests", format!("slot {slot}").as_str())]);
        assert!(
            check.problems[0]
                .what
                .contains("covers 1 versions, a scan finds 0")
        );
    }
}
