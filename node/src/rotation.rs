//! Key rotation: a new epoch of a role's key, and the worker that moves
//! stored records onto it.
//!
//! `slurp keys rotate --role R` (on a node granted R) makes epoch n+1 of
//! R's key and publishes it in a new key directory signed by the cluster
//! key. From then on every node seals new records to the new epoch as soon
//! as it holds that directory (the rotating node at once, the others at
//! their next probe, which carries the directory version), and nodes
//! granted R fetch the new private key. Nothing stops: readers keep the old
//! epochs, so every record stays readable throughout.
//!
//! The `key-rewrap` worker then moves what is stored: it scans the local
//! store in pages, reads each envelope's clear header (which names the
//! role epochs it is sealed to, so nothing is opened to find the work),
//! and re-seals every record that names an epoch older than its role's
//! current one to the current epochs of the same roles. age gives every
//! sealing a fresh file key, so a rewrapped record is re-encrypted, not
//! only re-addressed: a rotation after a key compromise needs no other
//! mode. The version and its metadata do not change; only the stored
//! bytes do (`Store::replace_envelopes`). A pass is resumable by
//! construction (the headers say what is left), throttled by a pause
//! between pages, and counted in metrics and the worker's status. A
//! replica that holds no key of a record's roles cannot rewrap its copy
//! and counts it as `unopenable`.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use slurp_crypto::{Envelope, EnvelopeConfig, Keyring, PublicRoleKey, peek_header};
use slurp_storage::{NewVersion, SlotScan, Store};

use crate::metrics::Metrics;

/// Rotation settings (`[rotation]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RotationConfig {
    /// How often the key-rewrap worker looks for records sealed to old
    /// epochs, a duration such as `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub rewrap_interval: Duration,
    /// Versions read per page of a rewrap pass, a count.
    pub rewrap_batch: usize,
    /// Pause between pages, so foreground requests keep the disk and the
    /// CPU, a duration such as `10ms`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub rewrap_pause: Duration,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            rewrap_interval: Duration::from_secs(30),
            rewrap_batch: 256,
            rewrap_pause: Duration::from_millis(10),
        }
    }
}

impl RotationConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.rewrap_batch == 0 || self.rewrap_interval.is_zero() {
            return Err(
                "rotation.rewrap_batch and rotation.rewrap_interval must be positive".into(),
            );
        }
        Ok(())
    }
}

/// What one rewrap pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RewrapReport {
    /// Versions read.
    pub scanned: u64,
    /// Versions re-sealed to the current epochs.
    pub rewrapped: u64,
    /// Versions sealed to an old epoch that this node cannot open.
    pub unopenable: u64,
    /// Versions that could not be rewrapped for another reason.
    pub failed: u64,
}

impl RewrapReport {
    /// Versions still sealed to an old epoch after the pass.
    pub fn pending(&self) -> u64 {
        self.unopenable + self.failed
    }
}

/// The new envelope for a stored one, if it names an epoch older than its
/// role's current one: sealed to the current epochs of the same roles.
/// `Ok(None)`: already current (or a tombstone).
pub fn rewrap_one(
    envelope: &[u8],
    keyring: &Keyring,
    config: &EnvelopeConfig,
) -> Result<Option<Vec<u8>>, RewrapError> {
    if envelope.is_empty() {
        return Ok(None);
    }
    let header = peek_header(envelope, config).map_err(|e| RewrapError::Failed(e.to_string()))?;
    let mut recipients: Vec<PublicRoleKey> = Vec::new();
    let mut stale = false;
    for s in header.sealed_to() {
        let current = keyring
            .current_public(&s.role)
            .ok_or_else(|| RewrapError::Failed(format!("no key is known for role {}", s.role)))?;
        if current.epoch() > s.epoch {
            stale = true;
        }
        if !recipients
            .iter()
            .any(|r| r.fingerprint() == current.fingerprint())
        {
            recipients.push(current.clone());
        }
    }
    if !stale {
        return Ok(None);
    }
    if !header
        .sealed_to()
        .iter()
        .any(|s| keyring.get(&s.fingerprint).is_some())
    {
        return Err(RewrapError::Unopenable);
    }
    let old =
        Envelope::from_bytes(envelope, config).map_err(|e| RewrapError::Failed(e.to_string()))?;
    let new = old
        .rewrap_with(keyring, &recipients, config)
        .map_err(|e| RewrapError::Failed(e.to_string()))?;
    new.to_bytes()
        .map(Some)
        .map_err(|e| RewrapError::Failed(e.to_string()))
}

/// Why one envelope was not rewrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewrapError {
    /// This node holds no key the envelope is sealed to.
    Unopenable,
    Failed(String),
}

/// One pass over the local store: every version sealed to an old epoch
/// that this node can open is re-sealed to the current epochs. `keyring`
/// is read once per page, so a key that arrives mid-pass is used for the
/// pages after it.
pub async fn rewrap_pass(
    local: &Store,
    keyring: impl Fn() -> Arc<Keyring>,
    config: &RotationConfig,
    metrics: &Metrics,
) -> Result<RewrapReport, String> {
    let mut report = RewrapReport::default();
    let mut scan = SlotScan {
        slots: 0..=u16::MAX,
        since: None,
        after: None,
        limit: config.rewrap_batch,
        envelopes: true,
    };
    loop {
        let (store, s) = (local.clone(), scan.clone());
        let page = tokio::task::spawn_blocking(move || store.scan_slots(&s))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let ring = keyring();
        let versions = page.versions;
        report.scanned += versions.len() as u64;
        let (todo, unopenable, failed) = tokio::task::spawn_blocking(move || {
            let envelope_config = EnvelopeConfig::default();
            let mut todo = Vec::new();
            let (mut unopenable, mut failed) = (0u64, 0u64);
            for v in versions {
                let Some(envelope) = v.envelope.as_deref() else {
                    continue;
                };
                match rewrap_one(envelope, &ring, &envelope_config) {
                    Ok(Some(bytes)) => todo.push(NewVersion {
                        meta: v.meta,
                        envelope: bytes,
                    }),
                    Ok(None) => {}
                    Err(RewrapError::Unopenable) => unopenable += 1,
                    Err(RewrapError::Failed(e)) => {
                        tracing::warn!(key = %v.meta.key, version = %v.meta.version, error = %e, "cannot rewrap a version");
                        failed += 1;
                    }
                }
            }
            (todo, unopenable, failed)
        })
        .await
        .map_err(|e| e.to_string())?;
        report.unopenable += unopenable;
        report.failed += failed;
        if !todo.is_empty() {
            for r in local.replace_envelopes(todo).await {
                match r {
                    Ok(true) => report.rewrapped += 1,
                    // Swept meanwhile: nothing left to rewrap.
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot store a rewrapped version");
                        report.failed += 1;
                    }
                }
            }
        }
        match page.next {
            Some(next) => {
                scan.after = Some(next);
                tokio::time::sleep(config.rewrap_pause).await;
            }
            None => break,
        }
    }
    let count = |cause: &'static str, n: u64| {
        metrics
            .key_rewraps
            .get_or_create(&crate::metrics::CauseLabels { cause })
            .inc_by(n);
    };
    count("rewrapped", report.rewrapped);
    count("unopenable", report.unopenable);
    count("failed", report.failed);
    metrics.key_rewrap_pending.set(report.pending() as i64);
    Ok(report)
}

/// The `key-rewrap` worker: re-seals stored records sealed to a replaced
/// role key epoch, then (on the admin-certified node) retires old epochs
/// once every member reported a clean pass.
pub struct RewrapWorker {
    pub local: slurp_storage::Store,
    pub custody: std::sync::Arc<crate::keys::Custody>,
    pub metrics: Metrics,
    pub config: RotationConfig,
    pub cluster: crate::cluster::Cluster,
}

impl crate::workers::Worker for RewrapWorker {
    fn name(&self) -> &'static str {
        "key-rewrap"
    }

    fn description(&self) -> &'static str {
        "re-seals stored records sealed to a role key epoch that a rotation replaced; retires old epochs once every member is done"
    }

    fn interval(&self) -> Duration {
        self.config.rewrap_interval
    }

    fn pass(
        &self,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<crate::workers::PassReport, String>>
                + Send
                + '_,
        >,
    > {
        Box::pin(async move {
            let keys_version = self.cluster.keys_version();
            let r = rewrap_pass(
                &self.local,
                || self.custody.keyring(),
                &self.config,
                &self.metrics,
            )
            .await?;
            self.cluster.note_rewrap(keys_version, r.pending());
            let retired = match self.cluster.retire_epochs().await {
                Ok(r) if !r.is_empty() => format!("; retired {}", r.join(", ")),
                Ok(_) => String::new(),
                Err(e) => format!("; old epochs not retired: {e}"),
            };
            Ok(crate::workers::PassReport {
                items: r.rewrapped,
                note: format!(
                    "read {} versions, rewrapped {}, {} left on old epochs ({} not openable here, {} failed){retired}",
                    r.scanned,
                    r.rewrapped,
                    r.pending(),
                    r.unopenable,
                    r.failed
                ),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurp_crypto::RoleKey;
    use slurp_protocol::RoleName;

    fn role(r: &str) -> RoleName {
        RoleName::new(r).unwrap()
    }

    #[test]
    fn only_envelopes_naming_an_old_epoch_are_rewrapped_to_the_current_ones() {
        let config = EnvelopeConfig::default();
        let dev1 = RoleKey::generate(role("developer"), 1);
        let admin1 = RoleKey::generate(role("admin"), 1);
        let mut ring = Keyring::new();
        ring.insert(dev1.clone()).unwrap();
        ring.insert(admin1.clone()).unwrap();
        let old = Envelope::seal(
            b"secret plans",
            &[dev1.public().clone(), admin1.public().clone()],
        )
        .unwrap()
        .to_bytes()
        .unwrap();
        // Nothing rotated yet: nothing to do.
        assert_eq!(rewrap_one(&old, &ring, &config), Ok(None));
        let dev2 = RoleKey::generate(role("developer"), 2);
        ring.insert(dev2.clone()).unwrap();
        let new = rewrap_one(&old, &ring, &config).unwrap().unwrap();
        let header = peek_header(&new, &config).unwrap();
        let epochs: Vec<(String, u32)> = header
            .sealed_to()
            .iter()
            .map(|s| (s.role.to_string(), s.epoch))
            .collect();
        assert_eq!(epochs, [("developer".into(), 2), ("admin".into(), 1)]);
        // The new envelope opens with the new key alone, to the same text.
        let only_new = Envelope::from_bytes(&new, &config)
            .unwrap()
            .open_with_key(&dev2)
            .unwrap();
        assert_eq!(&only_new[..], b"secret plans");
        assert_eq!(rewrap_one(&new, &ring, &config), Ok(None));
        // A node that holds none of the keys cannot rewrap it.
        let mut public_only = Keyring::new();
        for k in ring.public_keys() {
            public_only.add_public(k.clone()).unwrap();
        }
        assert_eq!(
            rewrap_one(&old, &public_only, &config),
            Err(RewrapError::Unopenable)
        );
        // Tombstones carry no envelope.
        assert_eq!(rewrap_one(&[], &ring, &config), Ok(None));
    }
}
