//! Who this node lets in: the cluster it belongs to, the certificates
//! peers have shown it, and the invites it has issued.
//!
//! Being connected earns a peer nothing. A node answers a peer only when
//! the peer is a member of the current layout (signed by the cluster key)
//! or has shown a certificate the cluster key signed for its very peer id,
//! within its validity, and no later layout removed it. A new node gets its
//! certificate by redeeming an invite (`slurp cluster invite`), one time,
//! before it expires, at the member that issued it; only a hash of the
//! invite's secret is kept.
//!
//! State lives under `<data>/cluster/`: `identity.json` (the cluster's
//! public key and this node's own signed certificate, both public
//! information) and `invites.json` (invite ids, secret hashes, limits,
//! who redeemed them), both mode 0600 and written atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use slurp_crypto::{ClusterKey, ClusterPublic};
use slurp_protocol::membership::{PURPOSE_CERTIFICATE, PURPOSE_KEYS, PURPOSE_LAYOUT};
use slurp_protocol::placement::Layout;
use slurp_protocol::{
    Bytes, CertificateFloor, ClusterId, DirectoryKey, Framed, JoinToken, KeyDirectory,
    NodeCertificate, RoleName, Signed,
};

use super::ClusterError;

/// Signed statements decoded at most (certificates and layouts).
pub const MAX_STATEMENT: usize = 4 << 20;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The cluster this node belongs to.
#[derive(Debug, Clone)]
pub struct Identity {
    pub public: ClusterPublic,
    /// This node's certificate, as signed.
    pub certificate: Signed,
    pub cert: NodeCertificate,
}

impl Identity {
    pub fn id(&self) -> ClusterId {
        self.public.id()
    }
}

/// `identity.json`.
#[derive(Serialize, Deserialize)]
struct IdentityFile {
    cluster_key: String,
    statement: String,
    signature: String,
}

/// An invite as its issuer keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invite {
    pub id: String,
    /// blake3 of the secret, hex.
    pub secret_hash: String,
    /// Roles the certificate of whoever redeems it may hold.
    pub roles: Vec<RoleName>,
    pub created_ms: u64,
    pub not_after_ms: u64,
    /// The peer that redeemed it, once it has.
    #[serde(default)]
    pub used_by: Option<String>,
    #[serde(default)]
    pub used_ms: Option<u64>,
}

/// Why an invite was not honoured. The joining node sees only "invalid
/// join token" for the first three (so a guesser learns nothing), the
/// issuer's audit log sees which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InviteRefusal {
    #[error("no invite with this id")]
    Unknown,
    #[error("the secret does not match")]
    WrongSecret,
    #[error("already used by {0}")]
    Used(String),
    #[error("expired")]
    Expired,
}

impl InviteRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            InviteRefusal::Unknown => "invite_unknown",
            InviteRefusal::WrongSecret => "invite_wrong_secret",
            InviteRefusal::Used(_) => "invite_used",
            InviteRefusal::Expired => "invite_expired",
        }
    }
}

/// Membership state of one node.
pub struct Membership {
    dir: PathBuf,
    identity: RwLock<Option<Arc<Identity>>>,
    /// Certificates peers have shown, checked, by peer id.
    certs: Mutex<HashMap<String, NodeCertificate>>,
    invites: Mutex<Vec<Invite>>,
    /// The cluster's key directory, as signed.
    directory: RwLock<Option<(KeyDirectory, Signed)>>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |e| ClusterError::Io(format!("{}: {e}", path.display()))
}

impl Membership {
    /// Loads what is kept under `data_dir/cluster` (nothing on a new node).
    pub fn load(data_dir: &Path) -> Result<Self, ClusterError> {
        let dir = data_dir.join("cluster");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join("identity.json");
        let identity = match std::fs::read(&path) {
            Ok(bytes) => {
                Some(Arc::new(parse_identity(&bytes).map_err(|e| {
                    ClusterError::Io(format!("{}: {e}", path.display()))
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&path)(e)),
        };
        let invites_path = dir.join("invites.json");
        let invites = match std::fs::read(&invites_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ClusterError::Io(format!("{}: {e}", invites_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(&invites_path)(e)),
        };
        let m = Membership {
            dir,
            identity: RwLock::new(identity),
            certs: Mutex::new(HashMap::new()),
            invites: Mutex::new(invites),
            directory: RwLock::new(None),
        };
        let keys_path = m.dir.join("keys.cbor");
        match std::fs::read(&keys_path) {
            Ok(bytes) => {
                let bad = |e: String| ClusterError::Io(format!("{}: {e}", keys_path.display()));
                let signed = Signed::decode_limited(&bytes, MAX_STATEMENT)
                    .map_err(|e| bad(e.to_string()))?;
                let d = m
                    .verify_directory(&signed)
                    .map_err(|e| bad(e.to_string()))?;
                *m.directory.write().unwrap_or_else(|e| e.into_inner()) = Some((d, signed));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&keys_path)(e)),
        }
        Ok(m)
    }

    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn public(&self) -> Option<ClusterPublic> {
        self.identity().map(|i| i.public.clone())
    }

    /// Takes `certificate` as this node's own, for the cluster of
    /// `public`, after checking that the key signed it, that it names
    /// `me`, and that it is valid now. A node already in a cluster only
    /// takes a certificate of the same cluster (a renewal).
    pub fn adopt(
        &self,
        public: ClusterPublic,
        certificate: Signed,
        me: &str,
    ) -> Result<Arc<Identity>, ClusterError> {
        if let Some(have) = self.identity()
            && have.public != public
        {
            return Err(ClusterError::Refused(format!(
                "this node belongs to cluster {}, not {}",
                have.id(),
                public.id()
            )));
        }
        let cert = check_certificate(&public, &certificate, me, now_ms())
            .map_err(ClusterError::Refused)?;
        if let Some(have) = self.identity()
            && have.cert.issued_ms > cert.issued_ms
        {
            return Err(ClusterError::Refused(format!(
                "certificate issued at {} ms is older than the one held (issued at {} ms): a replay",
                cert.issued_ms, have.cert.issued_ms
            )));
        }
        self.check_floor(me, &cert).map_err(ClusterError::Refused)?;
        let identity = Arc::new(Identity {
            public,
            certificate,
            cert,
        });
        let file = IdentityFile {
            cluster_key: hex::encode(identity.public.to_bytes()),
            statement: hex::encode(&identity.certificate.statement.0),
            signature: hex::encode(&identity.certificate.signature.0),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| ClusterError::Io(e.to_string()))?;
        let path = self.dir.join("identity.json");
        crate::tokens::write_private_file(&path, &json).map_err(io(&path))?;
        *self.identity.write().unwrap_or_else(|e| e.into_inner()) = Some(identity.clone());
        Ok(identity)
    }

    /// Checks a certificate `peer` showed and remembers it; the reason
    /// when it does not hold.
    pub fn admit_certificate(&self, peer: &str, certificate: &Signed) -> Result<(), String> {
        let public = self.public().ok_or("this node belongs to no cluster yet")?;
        let cert = check_certificate(&public, certificate, peer, now_ms())?;
        self.check_floor(peer, &cert)?;
        self.certs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.to_string(), cert);
        Ok(())
    }

    /// Refuses a certificate an admin replaced (the key directory names a
    /// later floor for its peer): a replay of an older grant.
    fn check_floor(&self, peer: &str, cert: &NodeCertificate) -> Result<(), String> {
        match self.directory().and_then(|(d, _)| d.floor_of(peer)) {
            Some(floor) if cert.issued_ms < floor => Err(format!(
                "certificate issued at {} ms was replaced by one issued at {floor} ms (a replay of a superseded grant)",
                cert.issued_ms
            )),
            _ => Ok(()),
        }
    }

    /// Whether `peer` has shown a certificate that is valid now.
    pub fn certified(&self, peer: &str) -> bool {
        let now = now_ms();
        self.certs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .is_some_and(|c| c.valid_at(now))
    }

    /// The cluster's key directory, if this node has one.
    pub fn directory(&self) -> Option<(KeyDirectory, Signed)> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The public keys the directory lists (entries that do not parse are
    /// left out with a warning; the cluster key signed them, so that is a
    /// bug of the signer).
    pub fn directory_keys(&self) -> Vec<slurp_crypto::PublicRoleKey> {
        let Some((d, _)) = self.directory() else {
            return Vec::new();
        };
        d.keys
            .iter()
            .filter_map(|k| {
                slurp_crypto::PublicRoleKey::parse(k.role.clone(), k.epoch, &k.recipient)
                    .map_err(|e| tracing::warn!(role = %k.role, epoch = k.epoch, error = %e, "unusable key in the directory"))
                    .ok()
            })
            .collect()
    }

    fn verify_directory(&self, signed: &Signed) -> Result<KeyDirectory, ClusterError> {
        let public = self.public().ok_or(ClusterError::NotInitialized)?;
        let d: KeyDirectory = public
            .verify(PURPOSE_KEYS, signed, MAX_STATEMENT)
            .map_err(|e| ClusterError::Refused(format!("key directory: {e}")))?;
        if d.cluster != public.id() {
            return Err(ClusterError::Refused(format!(
                "the key directory is of cluster {}",
                d.cluster
            )));
        }
        Ok(d)
    }

    /// Takes a signed key directory if the cluster key signed it and it is
    /// newer than the one held; returns whether it was taken. An older
    /// one is refused as a replay.
    pub fn offer_directory(&self, signed: Signed) -> Result<bool, ClusterError> {
        let d = self.verify_directory(&signed)?;
        let mut cur = self.directory.write().unwrap_or_else(|e| e.into_inner());
        if let Some((have, _)) = cur.as_ref() {
            if d.version < have.version {
                return Err(ClusterError::Refused(format!(
                    "key directory version {} is older than the held {}: a replay",
                    d.version, have.version
                )));
            }
            if d.version == have.version {
                return Ok(false);
            }
        }
        let bytes = signed
            .encode()
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        let path = self.dir.join("keys.cbor");
        crate::tokens::write_private_file(&path, &bytes).map_err(io(&path))?;
        self.certs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|peer, c| d.floor_of(peer).is_none_or(|floor| c.issued_ms >= floor));
        *cur = Some((d, signed));
        Ok(true)
    }

    /// Signs a directory of `keys` one version past the held one.
    /// Signs a directory of `keys` one version past the held one. The
    /// held one's certificate floors and retired epochs are kept;
    /// `supersede` adds a floor and `retire` more retired epochs (whose
    /// keys are left out).
    pub fn sign_directory(
        &self,
        key: &ClusterKey,
        keys: Vec<DirectoryKey>,
        supersede: Option<CertificateFloor>,
        retire: Vec<slurp_protocol::RetiredEpoch>,
    ) -> Result<Signed, ClusterError> {
        let held = self.directory().map(|(d, _)| d);
        let version = held.as_ref().map(|d| d.version).unwrap_or(0) + 1;
        let (mut superseded, mut retired) =
            held.map(|d| (d.superseded, d.retired)).unwrap_or_default();
        if let Some(f) = supersede {
            superseded.retain(|o| o.peer_id != f.peer_id);
            superseded.push(f);
        }
        for r in retire {
            if !retired.contains(&r) {
                retired.push(r);
            }
        }
        key.sign(
            PURPOSE_KEYS,
            &KeyDirectory {
                cluster: key.public().id(),
                version,
                issued_ms: now_ms(),
                keys: keys
                    .into_iter()
                    .filter(|k| {
                        !retired
                            .iter()
                            .any(|r| r.role == k.role && r.epoch == k.epoch)
                    })
                    .collect(),
                superseded,
                retired,
            },
        )
        .map_err(|e| ClusterError::Io(e.to_string()))
    }

    /// The certificate `peer` showed, if valid now.
    pub fn certificate_of(&self, peer: &str) -> Option<NodeCertificate> {
        let now = now_ms();
        self.certs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .filter(|c| c.valid_at(now))
            .cloned()
    }

    /// Checks a signed layout against the cluster key.
    pub fn verify_layout(&self, signed: &Signed) -> Result<Layout, ClusterError> {
        let public = self.public().ok_or(ClusterError::NotInitialized)?;
        let layout: Layout = public
            .verify(PURPOSE_LAYOUT, signed, MAX_STATEMENT)
            .map_err(|e| ClusterError::Refused(format!("layout: {e}")))?;
        // Members are reached by peer id: a layout naming anything else
        // would route to nobody.
        if let Some(m) = layout
            .members()
            .iter()
            .find(|m| m.id.parse::<libp2p::PeerId>().is_err())
        {
            return Err(ClusterError::BadPeerId(m.id.clone()));
        }
        Ok(layout)
    }

    /// Creates an invite for roles `roles`, valid for `ttl`; returns it and
    /// the join token to hand to the new node (the only copy of the
    /// secret).
    pub fn create_invite(
        &self,
        issuer: &str,
        roles: Vec<RoleName>,
        ttl: std::time::Duration,
    ) -> Result<(Invite, JoinToken), ClusterError> {
        let cluster = self.identity().ok_or(ClusterError::NotInitialized)?.id();
        let mut raw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
        let secret = hex::encode(raw);
        let mut id_raw = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id_raw);
        let now = now_ms();
        let invite = Invite {
            id: format!("inv{}", hex::encode(id_raw)),
            secret_hash: blake3::hash(secret.as_bytes()).to_hex().to_string(),
            roles,
            created_ms: now,
            not_after_ms: now.saturating_add(ttl.as_millis() as u64),
            used_by: None,
            used_ms: None,
        };
        let mut invites = self.invites.lock().unwrap_or_else(|e| e.into_inner());
        // Expired and used invites are kept a day for the record, then go.
        invites.retain(|i| i.not_after_ms.saturating_add(86_400_000) > now);
        invites.push(invite.clone());
        self.save_invites(&invites)?;
        let token = JoinToken {
            cluster,
            issuer: issuer.to_string(),
            id: invite.id.clone(),
            secret,
        };
        Ok((invite, token))
    }

    pub fn invites(&self) -> Vec<Invite> {
        self.invites
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether invite `id` would be honoured with `secret` now, without
    /// spending it.
    pub fn check_invite(&self, id: &str, secret: &str) -> Result<(), InviteRefusal> {
        let invites = self.invites.lock().unwrap_or_else(|e| e.into_inner());
        let invite = invites
            .iter()
            .find(|i| i.id == id)
            .ok_or(InviteRefusal::Unknown)?;
        check(invite, secret)
    }

    /// Spends invite `id` for `peer` if `secret` matches, it is unused and
    /// not expired; the invite is marked used on disk before this returns.
    pub fn redeem(&self, id: &str, secret: &str, peer: &str) -> Result<Invite, InviteRefusal> {
        let mut invites = self.invites.lock().unwrap_or_else(|e| e.into_inner());
        let invite = invites
            .iter_mut()
            .find(|i| i.id == id)
            .ok_or(InviteRefusal::Unknown)?;
        check(invite, secret)?;
        let now = now_ms();
        invite.used_by = Some(peer.to_string());
        invite.used_ms = Some(now);
        let spent = invite.clone();
        self.save_invites(&invites)
            .map_err(|_| InviteRefusal::Unknown)?;
        Ok(spent)
    }

    fn save_invites(&self, invites: &[Invite]) -> Result<(), ClusterError> {
        let json =
            serde_json::to_vec_pretty(invites).map_err(|e| ClusterError::Io(e.to_string()))?;
        let path = self.dir.join("invites.json");
        crate::tokens::write_private_file(&path, &json).map_err(io(&path))
    }
}

/// Whether `invite` is honoured with `secret` now.
fn check(invite: &Invite, secret: &str) -> Result<(), InviteRefusal> {
    let stored = blake3::Hash::from_hex(&invite.secret_hash).map_err(|_| InviteRefusal::Unknown)?;
    // blake3::Hash equality is constant time.
    if blake3::hash(secret.as_bytes()) != stored {
        return Err(InviteRefusal::WrongSecret);
    }
    if let Some(by) = &invite.used_by {
        return Err(InviteRefusal::Used(by.clone()));
    }
    if now_ms() > invite.not_after_ms {
        return Err(InviteRefusal::Expired);
    }
    Ok(())
}

/// Signs a certificate for `peer` with `key`.
pub fn certify(
    key: &ClusterKey,
    peer: &str,
    roles: Vec<RoleName>,
    validity: std::time::Duration,
) -> Result<Signed, ClusterError> {
    let now = now_ms();
    let cert = NodeCertificate {
        cluster: key.public().id(),
        peer_id: peer.to_string(),
        roles,
        issued_ms: now,
        not_after_ms: now.saturating_add(validity.as_millis() as u64),
    };
    key.sign(PURPOSE_CERTIFICATE, &cert)
        .map_err(|e| ClusterError::Io(e.to_string()))
}

/// Checks that `public` signed `certificate` for `peer` and that it is
/// valid at `now`.
pub fn check_certificate(
    public: &ClusterPublic,
    certificate: &Signed,
    peer: &str,
    now: u64,
) -> Result<NodeCertificate, String> {
    let cert: NodeCertificate = public
        .verify(PURPOSE_CERTIFICATE, certificate, MAX_STATEMENT)
        .map_err(|e| format!("certificate: {e}"))?;
    if cert.cluster != public.id() {
        return Err(format!(
            "the certificate is for cluster {}, not {}",
            cert.cluster,
            public.id()
        ));
    }
    if cert.peer_id != peer {
        return Err(format!(
            "the certificate is for peer {}, not {peer}",
            cert.peer_id
        ));
    }
    if !cert.valid_at(now) {
        return Err(format!(
            "the certificate is valid from {} to {} (ms since the epoch), not at {now}",
            cert.issued_ms, cert.not_after_ms
        ));
    }
    Ok(cert)
}

fn parse_identity(bytes: &[u8]) -> Result<Identity, String> {
    let file: IdentityFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let unhex = |s: &str| hex::decode(s).map_err(|e| e.to_string());
    let public =
        ClusterPublic::from_bytes(&unhex(&file.cluster_key)?).map_err(|e| e.to_string())?;
    let certificate = Signed {
        statement: Bytes(unhex(&file.statement)?),
        signature: Bytes(unhex(&file.signature)?),
    };
    let cert: NodeCertificate = public
        .verify(PURPOSE_CERTIFICATE, &certificate, MAX_STATEMENT)
        .map_err(|e| format!("own certificate: {e}"))?;
    Ok(Identity {
        public,
        certificate,
        cert,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn role(r: &str) -> RoleName {
        RoleName::new(r).unwrap()
    }

    /// A layout the cluster key signed is still refused when a member id
    /// is not a peer id: the node could route that member's partitions to
    /// nobody.
    #[test]
    fn a_signed_layout_naming_a_member_that_is_no_peer_id_is_refused() {
        use slurp_protocol::placement::{Layout, Member};
        let dir = tempfile::tempdir().unwrap();
        let key = ClusterKey::generate();
        let m = Membership::load(dir.path()).unwrap();
        let me = libp2p::PeerId::random().to_base58();
        let cert = certify(&key, &me, vec![role("admin")], Duration::from_secs(60)).unwrap();
        m.adopt(key.public(), cert, &me).unwrap();
        let member = |id: &str| Member {
            id: id.to_string(),
            zone: "a".into(),
            capacity: 100,
            address: format!("/p2p/{id}"),
        };
        let scheme = slurp_protocol::PartitionScheme::new(4).unwrap();
        let good = Layout::new(1, 1, scheme, vec![member(&me)]).unwrap();
        let signed = key.sign(PURPOSE_LAYOUT, &good).unwrap();
        assert_eq!(m.verify_layout(&signed).unwrap().members().len(), 1);
        let bad = Layout::new(2, 1, scheme, vec![member(&me), member("node-2")]).unwrap();
        let signed = key.sign(PURPOSE_LAYOUT, &bad).unwrap();
        let e = m.verify_layout(&signed).unwrap_err();
        assert!(
            matches!(&e, ClusterError::BadPeerId(id) if id == "node-2"),
            "{e}"
        );
    }

    #[test]
    fn an_identity_survives_a_restart_and_refuses_another_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let key = ClusterKey::generate();
        let m = Membership::load(dir.path()).unwrap();
        assert!(m.identity().is_none());
        let cert = certify(&key, "me", vec![role("admin")], Duration::from_secs(60)).unwrap();
        // A certificate for another peer is not ours.
        let other = certify(&key, "you", vec![], Duration::from_secs(60)).unwrap();
        assert!(m.adopt(key.public(), other, "me").is_err());
        m.adopt(key.public(), cert.clone(), "me").unwrap();
        let again = Membership::load(dir.path()).unwrap();
        let id = again.identity().unwrap();
        assert_eq!(id.id(), key.public().id());
        assert_eq!(id.cert.roles, vec![role("admin")]);
        let foreign = ClusterKey::generate();
        let fcert = certify(&foreign, "me", vec![], Duration::from_secs(60)).unwrap();
        let e = again.adopt(foreign.public(), fcert, "me").unwrap_err();
        assert!(e.to_string().contains("belongs to cluster"), "{e}");
    }

    #[test]
    fn certificates_admit_only_their_peer_of_this_cluster_in_their_window() {
        let dir = tempfile::tempdir().unwrap();
        let key = ClusterKey::generate();
        let m = Membership::load(dir.path()).unwrap();
        let mine = certify(&key, "me", vec![], Duration::from_secs(60)).unwrap();
        m.adopt(key.public(), mine, "me").unwrap();
        let theirs = certify(&key, "peer", vec![], Duration::from_secs(60)).unwrap();
        assert!(m.admit_certificate("impostor", &theirs).is_err());
        assert!(!m.certified("impostor"));
        m.admit_certificate("peer", &theirs).unwrap();
        assert!(m.certified("peer"));
        let foreign = ClusterKey::generate();
        let forged = certify(&foreign, "stranger", vec![], Duration::from_secs(60)).unwrap();
        let e = m.admit_certificate("stranger", &forged).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let expired = certify(&key, "late", vec![], Duration::ZERO).unwrap();
        let e = check_certificate(&key.public(), &expired, "late", now_ms() + 1).unwrap_err();
        assert!(e.contains("valid from"), "{e}");
    }

    #[test]
    fn invites_are_spent_once_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let key = ClusterKey::generate();
        let m = Membership::load(dir.path()).unwrap();
        assert!(matches!(
            m.create_invite("me", vec![], Duration::from_secs(60)),
            Err(ClusterError::NotInitialized)
        ));
        let mine = certify(&key, "me", vec![], Duration::from_secs(60)).unwrap();
        m.adopt(key.public(), mine, "me").unwrap();
        let (inv, token) = m
            .create_invite("me", vec![role("developer")], Duration::from_secs(60))
            .unwrap();
        let parsed: JoinToken = token.to_string().parse().unwrap();
        assert_eq!(parsed.cluster, key.public().id());
        // The secret is not kept.
        let file = std::fs::read_to_string(dir.path().join("cluster/invites.json")).unwrap();
        assert!(!file.contains(&token.secret));
        assert_eq!(
            m.redeem(&inv.id, &"00".repeat(32), "a"),
            Err(InviteRefusal::WrongSecret)
        );
        assert_eq!(
            m.redeem("nope", &token.secret, "a"),
            Err(InviteRefusal::Unknown)
        );
        let spent = m.redeem(&inv.id, &token.secret, "a").unwrap();
        assert_eq!(spent.roles, vec![role("developer")]);
        // Spent, also after a restart.
        let again = Membership::load(dir.path()).unwrap();
        assert_eq!(
            again.redeem(&inv.id, &token.secret, "b"),
            Err(InviteRefusal::Used("a".into()))
        );
        let (old, old_token) = m.create_invite("me", vec![], Duration::ZERO).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            m.redeem(&old.id, &old_token.secret, "c"),
            Err(InviteRefusal::Expired)
        );
    }
}
