//! How a request to several replicas runs: one place decides it.
//!
//! A quorum read, a history read, a version fetch and anti-entropy all ask
//! some replicas of a partition for something and need a number of them
//! to answer. [`RequestStrategy`] says how many must succeed, in which
//! order replicas are tried (this node first, then peers that are up, then
//! the rest), how many more are tried when some fail, and how long each
//! call may take; [`try_call_many`] runs it. A failure names its peer and
//! keeps its cause ([`ReplicationError`]), so the caller can tell a
//! refusal from a peer that is down and say which.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use libp2p::PeerId;

use super::ReplicationError;
use crate::cluster::Cluster;

/// How a request to several replicas runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestStrategy {
    /// Successful answers needed.
    pub quorum: usize,
    /// Candidates tried at most beyond the first `quorum` when some fail
    /// (`usize::MAX`: every candidate).
    pub spare: usize,
    /// How long one call may take before it counts as failed; `None`
    /// leaves it to the network's own timeouts.
    pub timeout: Option<Duration>,
    /// Order candidates this node first, then peers that are up, each
    /// group in its given (preference list) order.
    pub local_first: bool,
}

impl RequestStrategy {
    /// `quorum` answers, trying every candidate, this node first.
    pub fn quorum(quorum: usize) -> Self {
        RequestStrategy {
            quorum,
            spare: usize::MAX,
            timeout: None,
            local_first: true,
        }
    }

    /// A read of `replicas` replicas with `r` requested (the configured
    /// read quorum when `None`), clamped to what they can give.
    pub fn read(cluster: &Cluster, r: Option<usize>, replicas: usize) -> Self {
        RequestStrategy::quorum(cluster.read_quorum(r, replicas))
    }

    pub fn with_timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    pub fn with_spare(mut self, spare: usize) -> Self {
        self.spare = spare;
        self
    }

    /// `candidates` in the order they are tried.
    pub fn order(&self, cluster: &Cluster, candidates: &[PeerId]) -> Vec<PeerId> {
        let mut c = candidates.to_vec();
        if self.local_first {
            cluster.order(&mut c);
        }
        c
    }
}

/// What [`try_call_many`] gathered: the answers, in the order they came,
/// and the failures, each naming its peer.
pub struct Gathered<T> {
    pub ok: Vec<(PeerId, T)>,
    pub failed: Vec<ReplicationError>,
}

impl<T> Gathered<T> {
    /// Whether the strategy's quorum answered.
    pub fn reached(&self, strategy: &RequestStrategy) -> bool {
        self.ok.len() >= strategy.quorum
    }
}

/// Calls `candidates` (already in the order to try them) keeping
/// `strategy.quorum` calls in flight, launching another candidate for each
/// failure (at most `strategy.spare` more), until the quorum answered or
/// the candidates ran out.
pub async fn try_call_many<T, F, Fut>(
    candidates: &[PeerId],
    strategy: &RequestStrategy,
    call: F,
) -> Gathered<T>
where
    F: Fn(PeerId) -> Fut,
    Fut: Future<Output = Result<T, ReplicationError>>,
{
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    let first = strategy.quorum.min(candidates.len());
    let mut next = candidates
        .iter()
        .take(first.saturating_add(strategy.spare))
        .cloned();
    let call = &call;
    let limit = strategy.timeout;
    let launch = |p: PeerId| async move {
        let r = match limit {
            Some(limit) => match tokio::time::timeout(limit, call(p)).await {
                Ok(r) => r,
                Err(_) => Err(ReplicationError::Timeout {
                    peer: p,
                    after: limit,
                }),
            },
            None => call(p).await,
        };
        (p, r)
    };
    let mut pending = FuturesUnordered::new();
    for p in next.by_ref().take(first) {
        pending.push(launch(p));
    }
    while let Some((peer, r)) = pending.next().await {
        match r {
            Ok(v) => ok.push((peer, v)),
            Err(e) => {
                failed.push(e);
                if let Some(p) = next.next() {
                    pending.push(launch(p));
                }
            }
        }
        if ok.len() >= strategy.quorum {
            break;
        }
    }
    Gathered { ok, failed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Peer `i` of a test: an identity peer id holding `i`.
    fn peer(i: u8) -> PeerId {
        PeerId::from_bytes(&[0, 1, i]).expect("an identity multihash")
    }

    fn peers(n: u8) -> Vec<PeerId> {
        (0..n).map(peer).collect()
    }

    fn down(peer: &PeerId) -> ReplicationError {
        ReplicationError::Malformed {
            peer: *peer,
            why: "down".into(),
        }
    }

    #[tokio::test]
    async fn failures_are_replaced_by_the_next_candidates_until_the_quorum_answers() {
        let asked = Mutex::new(Vec::new());
        let g = try_call_many(&peers(5), &RequestStrategy::quorum(2), |p| {
            asked.lock().unwrap().push(p);
            async move { if p == peer(0) { Err(down(&p)) } else { Ok(p) } }
        })
        .await;
        assert!(g.reached(&RequestStrategy::quorum(2)));
        assert_eq!(g.ok.len(), 2);
        assert_eq!(g.failed.len(), 1);
        assert_eq!(g.failed[0].peer_id(), Some(&peer(0)));
        // p0 and p1 first, then p2 for p0's failure; p3 and p4 never.
        let mut asked = asked.into_inner().unwrap();
        asked.sort();
        let mut want = vec![peer(0), peer(1), peer(2)];
        want.sort();
        assert_eq!(asked, want);
    }

    #[tokio::test]
    async fn no_spare_means_only_the_first_quorum_is_asked() {
        let s = RequestStrategy::quorum(2).with_spare(0);
        let g = try_call_many(&peers(4), &s, |p| async move {
            if p == peer(1) { Err(down(&p)) } else { Ok(()) }
        })
        .await;
        assert!(!g.reached(&s));
        assert_eq!((g.ok.len(), g.failed.len()), (1, 1));
    }

    #[tokio::test]
    async fn a_call_past_its_timeout_fails_with_the_peer_named() {
        let s = RequestStrategy::quorum(1)
            .with_timeout(Duration::from_millis(20))
            .with_spare(0);
        let g = try_call_many(&peers(1), &s, |_| async {
            std::future::pending::<Result<(), ReplicationError>>().await
        })
        .await;
        assert!(matches!(
            &g.failed[..],
            [ReplicationError::Timeout { peer: p, .. }] if *p == peer(0)
        ));
    }
}
