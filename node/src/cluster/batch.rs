//! Coalescing of replica requests: concurrent writes (and head reads) bound
//! for the same peer travel in one request.
//!
//! Under load a coordinator sends many small `PutVersions` and `Heads` to
//! each replica; each costs a stream, Noise frames, two CBOR messages, task
//! hand-offs on both sides and, on the replica, its own group-commit
//! waiter. A per-peer queue keeps up to `cluster.replica_in_flight`
//! requests in flight and folds whatever queued behind them into the next
//! one (up to `cluster.replica_batch` items or `BATCH_BYTES`), so an idle
//! cluster sends every request at once and a busy one sends fewer, larger
//! ones. Outcomes go back to each caller; a failed request fails every item
//! in it.

use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use slurp_protocol::messages::{
    Head, PutOutcome, ReplicateRequest, ReplicateResponse, SealedVersion,
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::Cluster;

/// Bytes of envelopes folded into one request at most.
const BATCH_BYTES: usize = 4 * 1024 * 1024;

type HeadReply = oneshot::Sender<Result<Head, Failure>>;
/// Why a folded request failed, shared by every item it carried.
pub type Failure = Arc<super::ClusterError>;

pub(crate) enum Item {
    Put {
        version: Box<SealedVersion>,
        reply: oneshot::Sender<Result<PutOutcome, Failure>>,
    },
    Head {
        key: String,
        with_envelope: bool,
        reply: HeadReply,
    },
}

impl Item {
    fn bytes(&self) -> usize {
        match self {
            Item::Put { version, .. } => version.envelope.0.len() + 256,
            Item::Head { key, .. } => key.len() + 64,
        }
    }
}

#[derive(Default)]
pub(crate) struct Batcher {
    queues: Mutex<HashMap<PeerId, mpsc::UnboundedSender<Item>>>,
}

impl Batcher {
    /// Queues `item` for `peer`, starting that peer's sender on first use.
    pub(crate) fn submit(&self, cluster: &Cluster, peer: &PeerId, item: Item) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let tx = queues.entry(*peer).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(cluster.downgrade(), *peer, rx));
            tx
        });
        if let Err(mpsc::error::SendError(item)) = tx.send(item) {
            // The sender stopped (the node is shutting down).
            fail(item, Arc::new(super::ClusterError::ShuttingDown));
        }
    }
}

fn fail(item: Item, e: Failure) {
    match item {
        Item::Put { reply, .. } => {
            let _ = reply.send(Err(e));
        }
        Item::Head { reply, .. } => {
            let _ = reply.send(Err(e));
        }
    }
}

async fn run(cluster: super::WeakCluster, peer: PeerId, mut rx: mpsc::UnboundedReceiver<Item>) {
    let Some(c) = cluster.upgrade() else { return };
    let (max_items, in_flight) = (
        c.config().replica_batch.max(1),
        c.config().replica_in_flight.max(1),
    );
    drop(c);
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes();
        let mut items = vec![first];
        while items.len() < max_items && bytes < BATCH_BYTES {
            match rx.try_recv() {
                Ok(i) => {
                    bytes += i.bytes();
                    items.push(i);
                }
                Err(_) => break,
            }
        }
        let Some(c) = cluster.upgrade() else {
            for i in items {
                fail(i, Arc::new(super::ClusterError::ShuttingDown));
            }
            return;
        };
        tokio::spawn(async move {
            send(&c, &peer, items).await;
            drop(permit);
        });
    }
}

/// Why a folded request failed, for every item in it.
fn failure(r: Result<ReplicateResponse, super::ClusterError>) -> Failure {
    Arc::new(match r {
        Err(e) => e,
        Ok(_) => super::ClusterError::Unexpected,
    })
}

/// Gives each caller its item's result, or the request's failure.
fn answer<T>(replies: Vec<oneshot::Sender<Result<T, Failure>>>, r: Result<Vec<T>, Failure>) {
    match r {
        Ok(values) => {
            for (reply, v) in replies.into_iter().zip(values) {
                let _ = reply.send(Ok(v));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn send(c: &Cluster, peer: &PeerId, items: Vec<Item>) {
    let mut puts = Vec::new();
    let mut heads: [Vec<(String, HeadReply)>; 2] = Default::default();
    for i in items {
        match i {
            Item::Put { version, reply } => puts.push((*version, reply)),
            Item::Head {
                key,
                with_envelope,
                reply,
            } => heads[usize::from(with_envelope)].push((key, reply)),
        }
    }
    let put_round = async {
        if puts.is_empty() {
            return;
        }
        let (versions, replies): (Vec<_>, Vec<_>) = puts.into_iter().unzip();
        let n = versions.len();
        let req = ReplicateRequest::PutVersions {
            versions,
            layout_version: Some(c.layout_version()),
            write_quorum_id: None,
            hint_for: None,
        };
        let r = match c.replicate(peer, req).await {
            Ok(ReplicateResponse::Stored { outcomes }) if outcomes.len() == n => {
                Ok(outcomes.into_iter().map(|o| o.outcome).collect())
            }
            other => Err(failure(other)),
        };
        answer(replies, r);
    };
    let head_rounds = heads
        .into_iter()
        .enumerate()
        .map(|(env, group)| async move {
            if group.is_empty() {
                return;
            }
            let (keys, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            let n = keys.len();
            let req = ReplicateRequest::Heads {
                keys,
                with_envelope: env == 1,
            };
            let r = match c.replicate(peer, req).await {
                Ok(ReplicateResponse::Heads { entries }) if entries.len() == n => Ok(entries),
                other => Err(failure(other)),
            };
            answer(replies, r);
        });
    futures::join!(put_round, futures::future::join_all(head_rounds));
}
