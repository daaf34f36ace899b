//! The node's persistent libp2p identity.
//!
//! A node's peer id is its name in the cluster: layouts place partitions
//! on it and peers remember its addresses under it, so it must survive
//! restarts. The ed25519 keypair is kept in the data directory as
//! `node.p2p.key` (libp2p's protobuf encoding), written atomically and
//! readable by the owner only.

use std::io::Write;
use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;

use super::error::IdentityError;

/// File name of the identity in the data directory.
pub const IDENTITY_FILE: &str = "node.p2p.key";

/// Loads the identity from `data_dir`, creating and saving a new one if
/// there is none. A file that exists but does not decode is an error, never
/// silently replaced: replacing it would change the node's peer id.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let path = data_dir.join(IDENTITY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&path, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            save(&path, &key)?;
            Ok(key)
        }
        Err(source) => Err(IdentityError::Io { path, source }),
    }
}

fn decode(path: &Path, bytes: &[u8]) -> Result<Keypair, IdentityError> {
    let corrupt = |reason: String| IdentityError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let key = Keypair::from_protobuf_encoding(bytes).map_err(|e| corrupt(e.to_string()))?;
    if key.key_type() != libp2p::identity::KeyType::Ed25519 {
        return Err(corrupt(format!(
            "expected an ed25519 key, found {:?}",
            key.key_type()
        )));
    }
    Ok(key)
}

fn save(path: &Path, key: &Keypair) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp: PathBuf = dir.join(format!(".{IDENTITY_FILE}.tmp"));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Makes the rename durable; not every platform can sync a directory.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_private_and_corruption_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let path = dir.path().join(IDENTITY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, b"not a key").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }));
        assert!(err.to_string().contains(IDENTITY_FILE), "{err}");
    }
}
