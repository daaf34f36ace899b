//! The node's audit trail: every access decision, written off the hot path.
//!
//! A read must not wait for an fsync, so decisions go into a bounded queue
//! and one task appends whatever has queued in one durable batch (group
//! commit, like the store). After the first entry of a batch the task
//! lingers a few milliseconds (`audit.linger`) to gather more, so the audit
//! log adds a handful of fsyncs per second instead of one per request and
//! does not compete with the store's commits for the disk. On a crash the
//! last `linger` of decisions can be lost; the chain stays verifiable
//! because the log repairs a torn tail on open. When the queue is full a
//! request waits for room rather than dropping its entry: audit is never
//! silently skipped.
//!
//! The same module reads the log back for operators (`GET /v1/audit`,
//! `POST /v1/audit/verify`): the tail and the verdict come from the crypto
//! crate's reader and verifier, never a second copy of the chain rules.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use slurp_crypto::{AuditAction, AuditError, AuditLog, AuditRecord, EntryHash};
use slurp_protocol::RoleName;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::{CauseLabels, Metrics};

/// Audit settings (`[audit]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Audit entries queued at most before requests wait, a count.
    pub queue: usize,
    /// How long the audit writer gathers entries before one durable append
    /// (what a crash can lose), a duration such as `5ms`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub linger: Duration,
    /// How often this node signs its audit head and hands it to the other
    /// members (so a log cut short is noticed elsewhere), a duration such
    /// as `30s`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub anchor_interval: Duration,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            queue: 8192,
            linger: Duration::from_millis(5),
            anchor_interval: Duration::from_secs(30),
        }
    }
}

enum Msg {
    Record(AuditRecord),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// Where requests hand their audit records.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
    metrics: Metrics,
}

impl AuditSink {
    /// Starts the writer task over `log`. It stops when every sink is
    /// dropped, after writing what was queued.
    pub fn start(log: Arc<AuditLog>, metrics: Metrics, settings: &AuditSettings) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(settings.queue.max(1));
        let linger = settings.linger;
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            loop {
                if rx.recv_many(&mut batch, 4096).await == 0 {
                    break;
                }
                let flush_asked = batch.iter().any(|m| matches!(m, Msg::Flush(_)));
                if !linger.is_zero() && !flush_asked {
                    tokio::time::sleep(linger).await;
                    while batch.len() < 4096 {
                        match rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                }
                let mut records = Vec::with_capacity(batch.len());
                let mut waiters = Vec::new();
                for m in batch.drain(..) {
                    match m {
                        Msg::Record(r) => records.push(r),
                        Msg::Flush(w) => waiters.push(w),
                    }
                }
                if !records.is_empty() {
                    let log = log.clone();
                    let res = tokio::task::spawn_blocking(move || log.append_batch(&records)).await;
                    match res {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!(error = %e, "audit append failed"),
                        Err(e) => tracing::error!(error = %e, "audit writer panicked"),
                    }
                }
                for w in waiters {
                    let _ = w.send(());
                }
            }
        });
        AuditSink { tx, metrics }
    }

    /// Records one decision.
    pub async fn record(&self, record: AuditRecord) {
        let cause = record.decision.as_str();
        self.metrics
            .audit_entries
            .get_or_create(&CauseLabels { cause })
            .inc();
        if self.tx.send(Msg::Record(record)).await.is_err() {
            tracing::error!("audit writer stopped; decision not recorded");
        }
    }

    /// Records an allowed action.
    pub async fn allow(&self, actor: &str, role: &RoleName, action: AuditAction, target: &str) {
        self.record(AuditRecord::allow(actor, action, target).with_role(role.clone()))
            .await
    }

    /// Records a denied action and why.
    pub async fn deny(
        &self,
        actor: &str,
        role: &RoleName,
        action: AuditAction,
        target: &str,
        reason: &str,
    ) {
        self.record(AuditRecord::deny(actor, action, target, reason).with_role(role.clone()))
            .await
    }

    /// Waits until everything queued so far is written (tests, shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

// An entry as the API shows it (the stored fields, with the action as its
// name, hashes as hex and the entry's own hash: its chain position) and the
// last entries of the log, oldest first, are the API's bodies.
pub use slurp_protocol::api::{AuditEntry as EntryView, AuditTailResponse as AuditTail};

/// The last `limit` entries of `log`. Reading walks (and so checks) the
/// chain from the start; a break ends the tail at the last good entry and
/// is reported in [`AuditTail::error`] rather than hiding the entries
/// before it.
pub fn tail(log: &AuditLog, limit: usize) -> Result<AuditTail, AuditError> {
    let mut it = log.iter()?;
    let mut entries = VecDeque::with_capacity(limit.min(1024));
    let mut total = 0;
    let mut error = None;
    loop {
        match it.next_entry() {
            Ok(Some((_, e, hash))) => {
                total += 1;
                if limit == 0 {
                    continue;
                }
                if entries.len() == limit {
                    entries.pop_front();
                }
                entries.push_back(view(e, hash));
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Ok(AuditTail {
        entries: entries.into(),
        total,
        error,
    })
}

fn view(e: slurp_crypto::AuditEntry, hash: EntryHash) -> EntryView {
    EntryView {
        seq: e.seq,
        time_ms: e.time_ms,
        actor: e.actor,
        role: e.role,
        action: e.action.to_string(),
        target: e.target,
        decision: e.decision,
        reason: e.reason,
        prev: e.prev.to_string(),
        hash: hash.to_string(),
    }
}

/// The verdict on the whole log, chain and head file: the API's body.
pub use slurp_protocol::api::AuditVerifyResponse as AuditVerdict;

/// Verifies `log` on disk against its head file with
/// [`AuditLog::verify`].
pub fn verify(log: &AuditLog) -> AuditVerdict {
    let head_file = slurp_crypto::audit::read_head_file(log.head_path())
        .ok()
        .flatten()
        .map(|h| h.to_string());
    match log.verify() {
        Ok(r) => AuditVerdict {
            ok: true,
            entries: r.entries,
            head: Some(r.last.to_string()),
            head_file,
            broken_seq: None,
            error: None,
            anchors: Vec::new(),
        },
        Err(e) => AuditVerdict {
            ok: false,
            entries: 0,
            head: None,
            head_file,
            broken_seq: broken_seq(&e),
            error: Some(e.to_string()),
            anchors: Vec::new(),
        },
    }
}

/// The seq of the first entry a verification error names as broken or
/// missing.
fn broken_seq(e: &AuditError) -> Option<u64> {
    match e {
        AuditError::Malformed { seq, .. }
        | AuditError::ChainBroken { seq, .. }
        | AuditError::HeadMismatch { seq, .. } => Some(*seq),
        AuditError::SeqMismatch { expected, .. } => Some(*expected),
        AuditError::HeadAhead { last_seq, .. } | AuditError::TruncatedTail { last_seq, .. } => {
            Some(last_seq + 1)
        }
        _ => None,
    }
}
