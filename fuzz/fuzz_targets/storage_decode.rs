#![no_main]
//! Decoders of what the local store reads back from disk: stored versions,
//! head records, tombstone, backup and collected records, and every key
//! layout.
//! A corrupt value must be a typed error naming it, never a panic.
use libfuzzer_sys::fuzz_target;
use slurp_protocol::Framed;
use slurp_storage::layout;
use slurp_storage::record::{
    BackupMeta, CollectedMarker, LatestEntry, StoredVersion, TombstoneEntry, decode_framed,
};

fuzz_target!(|data: &[u8]| {
    let _ = StoredVersion::decode(data);
    let _ = decode_framed::<TombstoneEntry>(data, "tombstones", "k");
    let _ = decode_framed::<BackupMeta>(data, "backups", "k");
    let _ = decode_framed::<CollectedMarker>(data, "collected", "k");
    let _ = LatestEntry::decode(data, "ucxl://a:b@c:d/x");
    let _ = layout::decode_version_key(data);
    let _ = layout::decode_ttl_key(data);
    let _ = layout::decode_pair_key(data);
    let _ = layout::decode_slot_key(data);
});
