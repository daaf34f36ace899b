//! The on-disk layout: table names and the byte layout of their keys.
//!
//! Everything that decides what a table key looks like lives here, so the
//! orderings the store relies on are stated once: versions of one address
//! sort by [`VersionId`], addresses of one slot sort together, slots sort
//! numerically, and expiry entries sort by time. `docs/storage.md` describes
//! the same layout in prose; tools and tests use these functions to find a
//! record's bytes.
//!
//! Encodings, all order-preserving under bytewise comparison:
//! - slot: `u16` big-endian, 2 bytes;
//! - storage key / path: its UTF-8 bytes, terminated by `0x00` where more
//!   follows (keys and paths never contain `0x00`, the store validates them);
//! - [`VersionId`]: `wall_ms` (`u64` BE), `logical` (`u32` BE), then the
//!   writer id bytes to the end of the key;
//! - expiry: `u64` BE milliseconds since the Unix epoch;
//! - hint target (a peer id): its UTF-8 bytes, terminated by `0x00` (the
//!   store refuses targets containing `0x00`).

use redb::TableDefinition;
use slurp_protocol::{Hlc, Slot, VersionId, WriterId};

/// Two kinds of record per address, adjacent:
/// - `slot | key | 0x00 | version` → framed
///   [`crate::record::StoredVersion`], one per version;
/// - `slot | key | 0x01` → the address's *head*, its latest-version entry
///   ([`crate::record::LatestEntry`]).
///
/// The head sorts right after the address's greatest version, so a write,
/// which adds a version (usually the greatest) and rewrites the head,
/// usually changes one page.
pub const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
/// `key` → `()`: every address that has a head, in key order (for listing
/// by prefix). Written only when an address appears or disappears.
pub const KEYS: TableDefinition<&str, ()> = TableDefinition::new("keys");
/// `expires_at | slot | key | 0x00 | version` → `()`.
pub const TTL: TableDefinition<&[u8], ()> = TableDefinition::new("ttl");
/// `slot | key | 0x00 | expires_at | version` → `()`: the TTL index by key.
pub const KEY_TTL: TableDefinition<&[u8], ()> = TableDefinition::new("key_ttl");
/// `parent_path | 0x00 | child key` → child path bytes.
pub const HIERARCHY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hierarchy");
/// `from key | 0x00 | to key` → assertion flags ([`LINK_BY_FROM`], [`LINK_BY_TO`]).
pub const LINKS_OUT: TableDefinition<&[u8], u8> = TableDefinition::new("links_out");
/// `to key | 0x00 | from key` → the same flags as [`LINKS_OUT`].
pub const LINKS_IN: TableDefinition<&[u8], u8> = TableDefinition::new("links_in");
/// `slot | key` → framed [`crate::record::TombstoneEntry`].
pub const TOMBSTONES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tombstones");
/// backup id → framed [`crate::record::BackupMeta`].
pub const BACKUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("backups");
/// name → value; holds [`SCHEMA_VERSION_KEY`].
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `target | 0x00 | key | 0x00 | version` → creation time of the hint, in
/// milliseconds since the Unix epoch: the version `key`/`version`, stored
/// here, belongs on peer `target` (hinted handoff). Targets sort in
/// bytewise order and each target's hints are one range, in key and then
/// version order.
pub const HINTS: TableDefinition<&[u8], u64> = TableDefinition::new("hints");
/// `slot | key` → framed [`crate::record::CollectedMarker`]: the address
/// was deleted and collected (every version removed, tombstone GC) at the
/// marker's version, so a version at or before it that turns up later (a
/// replica that missed the deletion) is superseded and not stored.
pub const COLLECTED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("collected");

/// The `meta` entry holding the schema version, a `u32` big-endian.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The schema this build writes and the newest it reads. Version 2 added
/// [`HINTS`], version 3 [`COLLECTED`], version 4 dropped the unused `acl`
/// table (access-control records); an older file is upgraded when opened
/// (the missing tables are created, `acl` is deleted and the record
/// rewritten in one transaction).
pub const SCHEMA_VERSION: u32 = 4;
/// Longest hint target (peer id) accepted, in bytes.
pub const MAX_HINT_TARGET_LEN: usize = 128;

/// Link flag: the `from` side's newest version lists `to` in `influences`.
pub const LINK_BY_FROM: u8 = 1;
/// Link flag: the `to` side's newest version lists `from` in `influenced_by`.
pub const LINK_BY_TO: u8 = 2;

const VERSION_FIXED: usize = 8 + 4;

fn push_version(out: &mut Vec<u8>, v: &VersionId) {
    out.extend_from_slice(&v.hlc.wall_ms.to_be_bytes());
    out.extend_from_slice(&v.hlc.logical.to_be_bytes());
    out.extend_from_slice(v.writer.as_str().as_bytes());
}

/// `slot | key`: the key of the per-address tables ([`TOMBSTONES`],
/// [`COLLECTED`]).
pub fn slot_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + key.len());
    out.extend_from_slice(&Slot::of(key).0.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// `slot | key | 0x00`: every version of `key` starts with this.
pub fn version_prefix(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + key.len() + VERSION_FIXED + 16);
    out.extend_from_slice(&Slot::of(key).0.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    out
}

/// `slot | key | 0x01`: the [`VERSIONS`] key of an address's head. It is
/// also the exclusive end of the address's versions
/// (`version_prefix(key)..head_key(key)`).
pub fn head_key(key: &str) -> Vec<u8> {
    let mut out = version_prefix(key);
    if let Some(last) = out.last_mut() {
        *last = 1;
    }
    out
}

/// Whether a [`VERSIONS`] key is a head (`slot | key | 0x01`) rather than a
/// version (which has a `0x00` after the key).
pub fn is_head_key(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes.last() == Some(&1) && !bytes[2..].contains(&0)
}

/// The storage key of a head key, if it is one.
pub fn head_key_name(bytes: &[u8]) -> Option<&str> {
    if !is_head_key(bytes) {
        return None;
    }
    std::str::from_utf8(&bytes[2..bytes.len() - 1]).ok()
}

/// The [`VERSIONS`] key of one version.
pub fn version_key(key: &str, version: &VersionId) -> Vec<u8> {
    let mut out = version_prefix(key);
    push_version(&mut out, version);
    out
}

/// The [`TTL`] key of a version expiring at `expires_at`.
pub fn ttl_key(expires_at: u64, key: &str, version: &VersionId) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 3 + key.len() + VERSION_FIXED + 16);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out.extend_from_slice(&version_key(key, version));
    out
}

/// The [`KEY_TTL`] key of a version expiring at `expires_at`.
pub fn key_ttl_key(expires_at: u64, key: &str, version: &VersionId) -> Vec<u8> {
    let mut out = version_prefix(key);
    out.extend_from_slice(&expires_at.to_be_bytes());
    push_version(&mut out, version);
    out
}

/// The [`HIERARCHY`] key of `child` under `parent_path`.
pub fn hierarchy_key(parent_path: &str, child: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(parent_path.len() + 1 + child.len());
    out.extend_from_slice(parent_path.as_bytes());
    out.push(0);
    out.extend_from_slice(child.as_bytes());
    out
}

/// `a | 0x00 | b`: the key of [`LINKS_OUT`] (`a` = from) and [`LINKS_IN`]
/// (`a` = to).
pub fn pair_key(a: &str, b: &str) -> Vec<u8> {
    hierarchy_key(a, b)
}

/// `a | 0x00`: the prefix of every [`HIERARCHY`] / link key under `a`.
pub fn pair_prefix(a: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + 1);
    out.extend_from_slice(a.as_bytes());
    out.push(0);
    out
}

/// `target | 0x00`: every hint for `target` starts with this.
pub fn hint_prefix(target: &str) -> Vec<u8> {
    pair_prefix(target)
}

/// The [`HINTS`] key of the hint that `key`/`version` belongs on `target`.
pub fn hint_key(target: &str, key: &str, version: &VersionId) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() + 2 + key.len() + VERSION_FIXED + 16);
    out.extend_from_slice(target.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out.push(0);
    push_version(&mut out, version);
    out
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` when there is none (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The first [`VERSIONS`] key of slot `slot`.
pub fn slot_start(slot: u16) -> [u8; 2] {
    slot.to_be_bytes()
}

/// A table key that does not have the layout of its table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed table key {hex}: {reason}")]
pub struct KeyLayoutError {
    /// The key bytes, hex (bounded to 160 characters).
    pub hex: String,
    pub reason: &'static str,
}

fn layout_error(bytes: &[u8], reason: &'static str) -> KeyLayoutError {
    let mut hex: String = bytes.iter().take(80).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > 80 {
        hex.push('…');
    }
    KeyLayoutError { hex, reason }
}

/// A decoded [`VERSIONS`] key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionKey<'a> {
    pub slot: Slot,
    pub key: &'a str,
    pub version: VersionId,
}

fn decode_version_suffix(all: &[u8], rest: &[u8]) -> Result<VersionId, KeyLayoutError> {
    if rest.len() <= VERSION_FIXED {
        return Err(layout_error(all, "version part too short"));
    }
    let mut wall = [0u8; 8];
    wall.copy_from_slice(&rest[..8]);
    let mut logical = [0u8; 4];
    logical.copy_from_slice(&rest[8..12]);
    let writer = std::str::from_utf8(&rest[12..])
        .ok()
        .and_then(|w| WriterId::new(w).ok())
        .ok_or_else(|| layout_error(all, "invalid writer id"))?;
    Ok(VersionId {
        hlc: Hlc {
            wall_ms: u64::from_be_bytes(wall),
            logical: u32::from_be_bytes(logical),
        },
        writer,
    })
}

fn split_key(all: &[u8], bytes: &[u8]) -> Result<(usize, usize), KeyLayoutError> {
    let nul = bytes
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| layout_error(all, "no key terminator"))?;
    std::str::from_utf8(&bytes[..nul]).map_err(|_| layout_error(all, "key is not UTF-8"))?;
    Ok((nul, nul + 1))
}

/// Decodes a [`VERSIONS`] key.
pub fn decode_version_key(bytes: &[u8]) -> Result<VersionKey<'_>, KeyLayoutError> {
    if bytes.len() < 3 {
        return Err(layout_error(bytes, "too short"));
    }
    let slot = Slot(u16::from_be_bytes([bytes[0], bytes[1]]));
    let body = &bytes[2..];
    let (end, next) = split_key(bytes, body)?;
    let key =
        std::str::from_utf8(&body[..end]).map_err(|_| layout_error(bytes, "key is not UTF-8"))?;
    let version = decode_version_suffix(bytes, &body[next..])?;
    Ok(VersionKey { slot, key, version })
}

/// Reads only the clock of a [`VERSIONS`] key, without validating the rest;
/// scans use it to skip versions older than a watermark cheaply.
pub fn version_key_hlc(bytes: &[u8]) -> Option<Hlc> {
    let body = bytes.get(2..)?;
    let nul = body.iter().position(|b| *b == 0)?;
    let rest = body.get(nul + 1..nul + 1 + VERSION_FIXED)?;
    let mut wall = [0u8; 8];
    wall.copy_from_slice(&rest[..8]);
    let mut logical = [0u8; 4];
    logical.copy_from_slice(&rest[8..12]);
    Some(Hlc {
        wall_ms: u64::from_be_bytes(wall),
        logical: u32::from_be_bytes(logical),
    })
}

/// A decoded [`TTL`] key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlKey<'a> {
    pub expires_at: u64,
    /// The [`VERSIONS`] key of the expiring version.
    pub version_key: &'a [u8],
    pub key: &'a str,
    pub version: VersionId,
}

/// Decodes a [`TTL`] key.
pub fn decode_ttl_key(bytes: &[u8]) -> Result<TtlKey<'_>, KeyLayoutError> {
    if bytes.len() < 8 {
        return Err(layout_error(bytes, "too short"));
    }
    let mut exp = [0u8; 8];
    exp.copy_from_slice(&bytes[..8]);
    let vk = decode_version_key(&bytes[8..]).map_err(|e| KeyLayoutError {
        hex: layout_error(bytes, "").hex,
        reason: e.reason,
    })?;
    Ok(TtlKey {
        expires_at: u64::from_be_bytes(exp),
        version_key: &bytes[8..],
        key: vk.key,
        version: vk.version,
    })
}

/// Reads the expiry of a [`KEY_TTL`] key whose version prefix is
/// `prefix_len` bytes long.
pub fn key_ttl_expiry(bytes: &[u8], prefix_len: usize) -> Option<u64> {
    let raw = bytes.get(prefix_len..prefix_len + 8)?;
    let mut exp = [0u8; 8];
    exp.copy_from_slice(raw);
    Some(u64::from_be_bytes(exp))
}

/// Splits an `a | 0x00 | b` key ([`HIERARCHY`], [`LINKS_OUT`], [`LINKS_IN`]).
pub fn decode_pair_key(bytes: &[u8]) -> Result<(&str, &str), KeyLayoutError> {
    let (end, next) = split_key(bytes, bytes)?;
    let a = std::str::from_utf8(&bytes[..end]).map_err(|_| layout_error(bytes, "not UTF-8"))?;
    let b = std::str::from_utf8(&bytes[next..]).map_err(|_| layout_error(bytes, "not UTF-8"))?;
    Ok((a, b))
}

/// A decoded [`HINTS`] key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintKey<'a> {
    pub target: &'a str,
    pub key: &'a str,
    pub version: VersionId,
}

/// The target part of a [`HINTS`] key (the bytes before its first `0x00`),
/// without checking the rest; `None` if there is no terminator.
pub fn hint_key_target(bytes: &[u8]) -> Option<&[u8]> {
    let nul = bytes.iter().position(|b| *b == 0)?;
    Some(&bytes[..nul])
}

/// Decodes a [`HINTS`] key.
pub fn decode_hint_key(bytes: &[u8]) -> Result<HintKey<'_>, KeyLayoutError> {
    let (end, next) = split_key(bytes, bytes)?;
    if end == 0 {
        return Err(layout_error(bytes, "empty hint target"));
    }
    let target =
        std::str::from_utf8(&bytes[..end]).map_err(|_| layout_error(bytes, "not UTF-8"))?;
    let rest = &bytes[next..];
    let (kend, vnext) = split_key(bytes, rest)?;
    let key = std::str::from_utf8(&rest[..kend]).map_err(|_| layout_error(bytes, "not UTF-8"))?;
    let version = decode_version_suffix(bytes, &rest[vnext..])?;
    Ok(HintKey {
        target,
        key,
        version,
    })
}

/// Splits a `slot | key` key ([`TOMBSTONES`], [`COLLECTED`]).
pub fn decode_slot_key(bytes: &[u8]) -> Result<(Slot, &str), KeyLayoutError> {
    if bytes.len() < 3 {
        return Err(layout_error(bytes, "too short"));
    }
    let key = std::str::from_utf8(&bytes[2..]).map_err(|_| layout_error(bytes, "not UTF-8"))?;
    Ok((Slot(u16::from_be_bytes([bytes[0], bytes[1]])), key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vid(wall: u64, logical: u32, w: &str) -> VersionId {
        VersionId {
            hlc: Hlc {
                wall_ms: wall,
                logical,
            },
            writer: WriterId::new(w).unwrap(),
        }
    }

    #[test]
    fn prefix_end_is_the_tight_upper_bound() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn garbage_keys_are_errors() {
        assert!(decode_version_key(b"").is_err());
        assert!(decode_version_key(b"\x00\x01abc").is_err());
        assert!(decode_version_key(b"\x00\x01abc\x00short").is_err());
        let mut k = version_key("k", &vid(1, 2, "w"));
        *k.last_mut().unwrap() = b' ';
        assert!(decode_version_key(&k).is_err());
        assert!(decode_ttl_key(b"1234567").is_err());
        assert!(decode_pair_key(b"no-separator").is_err());
        assert!(decode_slot_key(b"\x00").is_err());
        assert!(decode_hint_key(b"").is_err());
        assert!(decode_hint_key(b"\x00k\x00123456789012w").is_err());
        assert!(decode_hint_key(b"peer\x00no-second-terminator").is_err());
        assert!(decode_hint_key(b"peer\x00k\x00short").is_err());
        assert_eq!(hint_key_target(b"peer\x00rest"), Some(&b"peer"[..]));
        assert_eq!(hint_key_target(b"no-terminator"), None);
    }

    #[test]
    fn heads_and_versions_are_told_apart() {
        let k = "ucxl://a:b@c:d/x";
        let head = head_key(k);
        assert!(is_head_key(&head));
        assert_eq!(head_key_name(&head), Some(k));
        // Zero bytes inside the version must not look like a head.
        let v = version_key(k, &vid(0, 0, "w"));
        assert!(!is_head_key(&v));
        assert_eq!(head_key_name(&v), None);
        assert!(decode_version_key(&head).is_err());
        // The head sorts after every version of its key and before any
        // other key.
        let last = version_key(k, &vid(u64::MAX, u32::MAX, "zzzz"));
        assert!(v < head && last < head);
        assert_eq!(prefix_end(&version_prefix(k)), Some(head.clone()));
    }

    fn writer() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_-]{1,8}"
    }

    proptest! {
        /// Bytewise order of version keys of one address is VersionId order.
        #[test]
        fn version_keys_sort_like_version_ids(
            a in (any::<u64>(), any::<u32>(), writer()),
            b in (any::<u64>(), any::<u32>(), writer()),
        ) {
            let va = vid(a.0, a.1, &a.2);
            let vb = vid(b.0, b.1, &b.2);
            let ka = version_key("ucxl://a:b@c:d/x", &va);
            let kb = version_key("ucxl://a:b@c:d/x", &vb);
            prop_assert_eq!(va.cmp(&vb), ka.cmp(&kb));
            let d = decode_version_key(&ka).unwrap();
            prop_assert_eq!(d.key, "ucxl://a:b@c:d/x");
            prop_assert_eq!(&d.version, &va);
            prop_assert_eq!(version_key_hlc(&ka), Some(va.hlc));
            let t = ttl_key(a.0, "ucxl://a:b@c:d/x", &va);
            let dt = decode_ttl_key(&t).unwrap();
            prop_assert_eq!(dt.expires_at, a.0);
            prop_assert_eq!(dt.version_key, &ka[..]);
        }

        /// Keys of one slot sort by key, and every version of a shorter key
        /// sorts before the next key: a key's versions are one range.
        #[test]
        fn keys_do_not_interleave(
            k1 in "[a-z/]{1,6}", k2 in "[a-z/]{1,6}",
            v1 in (any::<u64>(), any::<u32>(), writer()),
            v2 in (any::<u64>(), any::<u32>(), writer()),
        ) {
            prop_assume!(k1 != k2);
            let a = version_key(&k1, &vid(v1.0, v1.1, &v1.2));
            let b = version_key(&k2, &vid(v2.0, v2.1, &v2.2));
            let (pa, pb) = (version_prefix(&k1), version_prefix(&k2));
            prop_assert!(!b.starts_with(&pa) && !a.starts_with(&pb));
            // Each key's records (versions, then head) form one range that
            // holds nothing of the other key.
            let (ha, hb) = (head_key(&k1), head_key(&k2));
            let within = |x: &Vec<u8>, lo: &Vec<u8>, hi: &Vec<u8>| lo <= x && x <= hi;
            prop_assert!(!within(&b, &pa, &ha) && !within(&hb, &pa, &ha));
            prop_assert!(!within(&a, &pb, &hb) && !within(&ha, &pb, &hb));
            if Slot::of(&k1) == Slot::of(&k2) {
                prop_assert_eq!(k1.cmp(&k2), a.cmp(&b));
            } else {
                prop_assert_eq!(Slot::of(&k1).cmp(&Slot::of(&k2)), a.cmp(&b));
            }
        }

        /// Hint keys round-trip; one target's hints form one range that
        /// holds no other target's, sorted by key and then version; and
        /// targets sort like their strings.
        #[test]
        fn hint_keys_group_by_target_then_key_then_version(
            t1 in "[!-~]{1,6}", t2 in "[!-~]{1,6}",
            k1 in "[a-z/]{1,6}", k2 in "[a-z/]{1,6}",
            v1 in (any::<u64>(), any::<u32>(), writer()),
            v2 in (any::<u64>(), any::<u32>(), writer()),
        ) {
            let (va, vb) = (vid(v1.0, v1.1, &v1.2), vid(v2.0, v2.1, &v2.2));
            let a = hint_key(&t1, &k1, &va);
            let b = hint_key(&t2, &k2, &vb);
            let d = decode_hint_key(&a).unwrap();
            prop_assert_eq!((d.target, d.key, &d.version), (t1.as_str(), k1.as_str(), &va));
            prop_assert_eq!(hint_key_target(&a), Some(t1.as_bytes()));
            let (pa, ea) = (hint_prefix(&t1), prefix_end(&hint_prefix(&t1)).unwrap());
            prop_assert!(a.starts_with(&pa) && a < ea);
            if t1 == t2 {
                prop_assert_eq!((k1.as_str(), &va).cmp(&(k2.as_str(), &vb)), a.cmp(&b));
            } else {
                prop_assert!(!(pa <= b && b < ea));
                prop_assert_eq!(t1.cmp(&t2), a.cmp(&b));
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_version_key(&bytes);
            let _ = decode_ttl_key(&bytes);
            let _ = decode_pair_key(&bytes);
            let _ = decode_slot_key(&bytes);
            let _ = decode_hint_key(&bytes);
            let _ = version_key_hlc(&bytes);
            let _ = key_ttl_expiry(&bytes, 3);
            let _ = is_head_key(&bytes);
            let _ = head_key_name(&bytes);
        }
    }
}
