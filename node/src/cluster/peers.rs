//! What this node knows about its peers: who they say they are and
//! whether they have been answering.
//!
//! Requests go to peers that are up first. A peer is down after a failed
//! request or probe until one succeeds again, or while the failure
//! detector ([`super::detector`]) suspects it: its heartbeat stopped
//! advancing. A peer never heard of is presumed up, so a new member is
//! tried rather than skipped. Up peers are ordered by how suspect they are.
//!
//! Peers that are not layout members (a client, a probe, a removed node)
//! are forgotten once they have been silent and disconnected for
//! `cluster.peer_ttl`; only members are probed and redialled.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::detector::{Detector, DetectorConfig};
use slurp_protocol::messages::{HealthStatus, NodeInfo};

/// One peer as this node sees it.
#[derive(Debug, Clone)]
pub struct PeerState {
    /// When this node first heard of it.
    pub first_seen: Instant,
    pub info: Option<NodeInfo>,
    pub connected: bool,
    pub last_ok: Option<Instant>,
    /// Why the peer is down: the last failure since it last answered
    /// (cleared when it answers again).
    pub last_error: Option<String>,
    /// Failed requests since the last success.
    pub failures: u32,
    /// Since when the peer has answered without failing.
    pub healthy_since: Option<Instant>,
    pub layout_version: u64,
    pub status: Option<HealthStatus>,
    pub uptime_secs: u64,
    /// The peer's last complete key-rewrap pass, from its health answer.
    pub rewrap: Option<slurp_protocol::messages::RewrapReport>,
}

impl Default for PeerState {
    fn default() -> Self {
        PeerState {
            first_seen: Instant::now(),
            info: None,
            connected: false,
            last_ok: None,
            last_error: None,
            failures: 0,
            healthy_since: None,
            layout_version: 0,
            status: None,
            uptime_secs: 0,
            rewrap: None,
        }
    }
}

/// A peer's state for `slurp cluster status`: the API's body.
pub use slurp_protocol::api::PeerStatus as PeerView;

pub struct PeerBook {
    peers: RwLock<HashMap<PeerId, PeerState>>,
    detector: Detector,
}

impl Default for PeerBook {
    /// A book for a node with a random id and a 1 s probe interval (tests).
    fn default() -> Self {
        PeerBook::new(Detector::new(
            PeerId::random(),
            DetectorConfig {
                interval: Duration::from_secs(1),
                threshold: 8.0,
                max_skew: Duration::from_secs(30),
                pause: Duration::from_secs(5),
            },
            0,
        ))
    }
}

impl PeerBook {
    fn with<T>(&self, peer: &PeerId, f: impl FnOnce(&mut PeerState) -> T) -> T {
        let mut map = self.peers.write().unwrap_or_else(|e| e.into_inner());
        f(map.entry(*peer).or_insert_with(|| PeerState {
            first_seen: Instant::now(),
            ..PeerState::default()
        }))
    }

    pub fn get(&self, peer: &PeerId) -> Option<PeerState> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .cloned()
    }

    pub fn new(detector: Detector) -> Self {
        PeerBook {
            peers: RwLock::new(HashMap::new()),
            detector,
        }
    }

    /// The failure detector: heartbeats and suspicion.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Whether requests should go to `peer`: it has not failed since it
    /// last answered, and the detector does not suspect it.
    pub fn is_up(&self, peer: &PeerId) -> bool {
        self.get(peer).is_none_or(|p| p.failures == 0)
            && !self.detector.suspects(peer, Instant::now())
    }

    /// How suspect `peer` is (phi; 0 for a peer just heard from or never
    /// heard of).
    pub fn suspicion(&self, peer: &PeerId) -> f64 {
        self.detector.phi(peer, Instant::now())
    }

    /// Whether `peer` failed a request or probe since it last answered.
    pub fn failed(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some_and(|p| p.failures > 0)
    }

    /// Forgets peers that are not members (`member` says which are) and
    /// have been disconnected and silent for `ttl`. Returns them.
    pub fn expire(&self, ttl: Duration, member: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let now = Instant::now();
        let mut map = self.peers.write().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<PeerId> = map
            .iter()
            .filter(|(id, p)| {
                !member(id)
                    && !p.connected
                    && now.saturating_duration_since(p.last_ok.unwrap_or(p.first_seen)) >= ttl
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            map.remove(id);
            self.detector.forget(id);
        }
        gone
    }

    pub fn connected(&self, peer: &PeerId, yes: bool) {
        self.with(peer, |p| p.connected = yes);
    }

    pub fn record_ok(&self, peer: &PeerId) {
        self.with(peer, |p| {
            let now = Instant::now();
            if p.failures > 0 || p.healthy_since.is_none() {
                p.healthy_since = Some(now);
            }
            p.failures = 0;
            p.last_ok = Some(now);
            // An error from before it answered again is history, not
            // its state: status would show it "up" with an old error.
            p.last_error = None;
        });
    }

    pub fn record_err(&self, peer: &PeerId, error: String) {
        self.with(peer, |p| {
            p.failures = p.failures.saturating_add(1);
            p.healthy_since = None;
            p.last_error = Some(error);
        });
    }

    pub fn record_info(&self, peer: &PeerId, info: NodeInfo, layout_version: u64) {
        self.with(peer, |p| {
            p.info = Some(info);
            p.layout_version = layout_version;
        });
        self.record_ok(peer);
    }

    pub fn record_health(
        &self,
        peer: &PeerId,
        status: HealthStatus,
        layout_version: u64,
        uptime_secs: u64,
        rewrap: Option<slurp_protocol::messages::RewrapReport>,
    ) {
        self.with(peer, |p| {
            p.status = Some(status);
            p.layout_version = layout_version;
            p.uptime_secs = uptime_secs;
            p.rewrap = rewrap;
        });
        self.record_ok(peer);
    }

    /// Peers that have answered without a failure for at least `for_at_least`.
    pub fn healthy_for(&self, for_at_least: Duration) -> Vec<(PeerId, PeerState)> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| {
                p.failures == 0 && p.healthy_since.is_some_and(|t| t.elapsed() >= for_at_least)
            })
            .map(|(id, p)| (*id, p.clone()))
            .collect()
    }

    pub fn known(&self) -> Vec<PeerId> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    pub fn view(&self, peer: &PeerId) -> PeerView {
        let p = self.get(peer).unwrap_or_default();
        PeerView {
            peer_id: peer.to_base58(),
            name: p.info.as_ref().map(|i| i.name.clone()),
            api_addr: p.info.as_ref().and_then(|i| i.api_addr.clone()),
            zone: p.info.as_ref().and_then(|i| i.zone.clone()),
            up: p.failures == 0
                && p.last_ok.is_some()
                && !self.detector.suspects(peer, Instant::now()),
            connected: p.connected,
            layout_version: p.layout_version,
            status: p.status,
            uptime_secs: p.uptime_secs,
            last_seen_ms_ago: [p.last_ok, self.detector.advanced(peer)]
                .into_iter()
                .flatten()
                .max()
                .map(|t| t.elapsed().as_millis() as u64),
            last_error: p.last_error.clone(),
            suspicion: (self.suspicion(peer) * 10.0).round() / 10.0,
        }
    }
}

impl PeerBook {
    /// The last key-rewrap report `peer` gave in a health answer.
    pub fn rewrap_of(&self, peer: &PeerId) -> Option<slurp_protocol::messages::RewrapReport> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .and_then(|p| p.rewrap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> PeerId {
        PeerId::from_bytes(&[0, 4, 1, 2, 3, 4]).expect("an identity multihash")
    }

    #[test]
    fn a_peer_is_down_after_a_failure_until_it_answers() {
        let book = PeerBook::default();
        assert!(book.is_up(&p()), "unknown peers are tried");
        book.record_err(&p(), "refused".into());
        assert!(!book.is_up(&p()));
        assert!(book.healthy_for(Duration::ZERO).is_empty());
        book.record_ok(&p());
        assert!(book.is_up(&p()));
        assert_eq!(book.healthy_for(Duration::ZERO).len(), 1);
        assert!(book.healthy_for(Duration::from_secs(60)).is_empty());
        assert!(book.view(&p()).up);
    }

    #[test]
    fn a_peer_that_answers_again_has_no_last_error() {
        let book = PeerBook::default();
        book.record_ok(&p());
        book.record_err(&p(), "connection refused".into());
        let down = book.view(&p());
        assert!(!down.up);
        assert_eq!(down.last_error.as_deref(), Some("connection refused"));
        // A successful probe (health answer) brings it back.
        book.record_health(&p(), HealthStatus::Ok, 1, 5, None);
        let up = book.view(&p());
        assert!(up.up);
        assert_eq!(up.last_error, None);
        // Failing again shows the new error only.
        book.record_err(&p(), "timed out".into());
        assert_eq!(book.view(&p()).last_error.as_deref(), Some("timed out"));
        book.record_ok(&p());
        assert_eq!(book.view(&p()).last_error, None);
    }

    #[test]
    fn silent_disconnected_non_members_are_forgotten_and_members_never() {
        let book = PeerBook::default();
        let (member, visitor, connected) = (PeerId::random(), PeerId::random(), PeerId::random());
        for p in [&member, &visitor, &connected] {
            book.record_ok(p);
        }
        book.connected(&connected, true);
        // Not silent for long enough yet: nobody goes.
        assert!(
            book.expire(Duration::from_secs(600), |p| *p == member)
                .is_empty()
        );
        let gone = book.expire(Duration::ZERO, |p| *p == member);
        assert_eq!(gone, vec![visitor]);
        let mut known = book.known();
        known.sort();
        let mut want = vec![member, connected];
        want.sort();
        assert_eq!(known, want);
    }
}
