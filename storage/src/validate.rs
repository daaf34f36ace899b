//! Checks on what callers ask the store to keep, done before anything is
//! queued.
//!
//! The table layouts rely on these: keys and paths never contain `0x00`
//! (it terminates them inside composite table keys), links name concrete
//! addresses, and list sizes are bounded. A refused record never reaches the
//! writer thread, so it cannot fail anyone else's batch.

use slurp_protocol::address::{MAX_ADDRESS_LEN, SCHEME};
use slurp_protocol::{RecordMeta, UcxlAddress};

use crate::error::{HintTargetError, RecordProblem};
use crate::layout::MAX_HINT_TARGET_LEN;

/// Checks that `key` is a storage key as [`UcxlAddress::key`] writes it:
/// `ucxl://agent:role@project:task/path`, with no wildcard.
pub fn check_key(key: &str) -> Result<(), RecordProblem> {
    let as_address = match key
        .strip_prefix(SCHEME)
        .and_then(|rest| rest.split_once('/'))
    {
        Some((authority, path)) => format!("{SCHEME}{authority}/*^/{path}"),
        None => key.to_string(),
    };
    let addr = UcxlAddress::parse(&as_address).map_err(RecordProblem::BadKey)?;
    if addr.is_pattern() {
        return Err(RecordProblem::PatternKey);
    }
    let canonical = addr.key();
    if canonical != key {
        return Err(RecordProblem::NonCanonicalKey {
            expected: canonical,
        });
    }
    Ok(())
}

/// Checks a hint target (the id of the peer a hinted version belongs on):
/// 1 to [`MAX_HINT_TARGET_LEN`] bytes, no `0x00`. Any other character is
/// allowed; the store does not interpret peer ids.
pub fn check_hint_target(target: &str) -> Result<(), HintTargetError> {
    let reason = if target.is_empty() {
        "must not be empty"
    } else if target.len() > MAX_HINT_TARGET_LEN {
        "longer than 128 bytes"
    } else if target.as_bytes().contains(&0) {
        "must not contain a 0x00 byte"
    } else {
        return Ok(());
    };
    Err(HintTargetError {
        target: target.chars().take(80).collect(),
        reason,
    })
}

/// Checks a path: `[A-Za-z0-9_-/.]*`, at most [`MAX_ADDRESS_LEN`] bytes.
pub fn check_path(path: &str) -> Result<(), RecordProblem> {
    if path.len() > MAX_ADDRESS_LEN
        || !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/' | b'.'))
    {
        return Err(RecordProblem::BadPath(path.chars().take(80).collect()));
    }
    Ok(())
}

/// Checks everything about a version's metadata and envelope that does not
/// depend on what is already stored.
pub fn check_version(
    meta: &RecordMeta,
    envelope_len: usize,
    max_links: usize,
) -> Result<(), RecordProblem> {
    check_key(&meta.key)?;
    check_path(&meta.path)?;
    for (field, list) in [
        ("influences", &meta.influences),
        ("influenced_by", &meta.influenced_by),
    ] {
        if list.len() > max_links {
            return Err(RecordProblem::TooMany {
                field,
                len: list.len(),
                max: max_links,
            });
        }
        for link in list {
            check_key(link).map_err(|e| RecordProblem::BadLink {
                link: link.chars().take(120).collect(),
                reason: e.to_string(),
            })?;
        }
    }
    if meta.readers.len() > max_links {
        return Err(RecordProblem::TooMany {
            field: "readers",
            len: meta.readers.len(),
            max: max_links,
        });
    }
    if envelope_len == 0 && !meta.tombstone {
        return Err(RecordProblem::EmptyEnvelope);
    }
    Ok(())
}

/// Checks a backup id: `[A-Za-z0-9_.-]{1,128}`.
pub fn check_backup_id(id: &str) -> Result<(), RecordProblem> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(RecordProblem::BadBackupId(id.chars().take(80).collect()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn storage_keys() {
        assert_eq!(check_key("ucxl://a:developer@p:t/src/lib.rs"), Ok(()));
        assert_eq!(check_key("ucxl://a:developer@p:t/"), Ok(()));
        assert!(matches!(
            check_key("ucxl://a:developer@p:t/*^/src/lib.rs"),
            Err(RecordProblem::BadPath(_)) | Err(RecordProblem::BadKey(_))
        ));
        assert_eq!(
            check_key("ucxl://any:developer@p:t/src"),
            Err(RecordProblem::PatternKey)
        );
        assert!(matches!(
            check_key("ucxl://a:developer@p:t"),
            Err(RecordProblem::BadKey(_))
        ));
        assert!(matches!(
            check_key("ucxl://a:developer@p:t/x\0y"),
            Err(RecordProblem::BadKey(_))
        ));
        assert!(check_key("http://a:b@c:d/x").is_err());
    }

    #[test]
    fn paths_and_ids() {
        assert_eq!(check_path("src/a_b-c.rs"), Ok(()));
        assert_eq!(check_path(""), Ok(()));
        assert!(check_path("src/\0").is_err());
        assert!(check_path(&"x".repeat(MAX_ADDRESS_LEN + 1)).is_err());
        assert_eq!(check_backup_id("2026-11-25.full"), Ok(()));
        assert!(check_backup_id("").is_err());
        assert!(check_backup_id("a/b").is_err());
    }

    #[test]
    fn hint_targets() {
        assert_eq!(
            check_hint_target("12D3KooWGzBMh1PCYbJ2ffrYPMNqwMxxxcAE9E5nBzXhJBLZ4M8f"),
            Ok(())
        );
        assert_eq!(check_hint_target(&"p".repeat(MAX_HINT_TARGET_LEN)), Ok(()));
        let cases = [
            (String::new(), "must not be empty"),
            ("p".repeat(MAX_HINT_TARGET_LEN + 1), "longer than 128 bytes"),
            // 43 three-byte characters: 129 bytes in 43 characters.
            ("€".repeat(43), "longer than 128 bytes"),
            ("peer\0other".to_string(), "must not contain a 0x00 byte"),
        ];
        for (target, reason) in cases {
            let e = check_hint_target(&target).unwrap_err();
            assert_eq!(e.reason, reason, "{target:?}");
            assert!(e.target.chars().count() <= 80);
        }
    }

    proptest! {
        /// Every key an address produces is accepted, and nothing accepted
        /// contains the terminator byte.
        #[test]
        fn address_keys_are_accepted(
            seg in "[A-Za-z0-9_-]{1,10}",
            path in "[A-Za-z0-9_./-]{0,40}",
        ) {
            prop_assume!(seg != "any");
            let addr = UcxlAddress::new(&seg, &seg, &seg, &seg, &path).unwrap();
            prop_assert_eq!(check_key(&addr.key()), Ok(()));
        }

        #[test]
        fn accepted_keys_have_no_nul(s in "\\PC{0,60}") {
            if check_key(&s).is_ok() {
                prop_assert!(!s.contains('\0'));
            }
        }
    }
}
