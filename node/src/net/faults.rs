//! Network faults injected on purpose, for the fault-injection suite
//! (`node/tests/faults.rs`, `docs/reliability.md`).
//!
//! Like the transport filters of TiKV's test cluster, a [`Faults`] handle
//! sits on the one path every request to a peer takes
//! ([`NetClient::request`](super::NetClient::request)) and decides, per
//! request, whether the network loses it, loses its answer, holds it back,
//! delivers it twice, or cannot carry it at all (a partition). Every node
//! of an in-process cluster gets a clone of the same handle
//! ([`NetClient::install_faults`](super::NetClient::install_faults)), so
//! one set of [`FaultRules`] describes the whole network; rules name nodes
//! by peer id.
//!
//! A node without a handle pays one branch per request: nothing here is
//! reachable from the configuration file, and nothing changes on the wire.
//!
//! What each fault looks like to the sender is what the network would do:
//!
//! * **cut** (a partition, a blocked direction, an isolated node): the
//!   request fails at once with [`NetError::PeerUnreachable`], as a dial
//!   that cannot get through (failing at once rather than after the
//!   request timeout keeps schedules short; either way it is a failure
//!   the caller must survive);
//! * **dropped request**: the peer never sees it; the sender gets
//!   [`NetError::ConnectionClosed`];
//! * **dropped response**: the peer serves the request, its answer is
//!   lost, and the sender gets [`NetError::ConnectionClosed`], so it cannot
//!   tell whether the request took effect;
//! * **delay**: the request leaves after a random pause within the range;
//!   with several in flight this reorders them;
//! * **duplicate**: the request is delivered twice (the copy after a
//!   random pause within the delay range, in the background) and answered
//!   with the first delivery's answer.
//!
//! A one-way partition ([`FaultRules::blocked`]) cuts the requests *from*
//! one node *to* another; the other direction, answers included, goes
//! through. The decisions come from one seeded RNG ([`Faults::new`]); with
//! several tasks asking at once, which request gets which decision depends
//! on their order, so a seed fixes the rules and the odds, not each
//! message's fate.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libp2p::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::error::NetError;
use super::protocols::{Request, Response};

/// The faults of the network, as rules and odds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRules {
    /// Chance (0 to 1) that a request is lost before the peer sees it.
    pub drop_requests: f64,
    /// Chance that the peer serves a request and its answer is lost.
    pub drop_responses: f64,
    /// Chance that a request is delivered twice.
    pub duplicate: f64,
    /// Chance that a request waits a random time within `delay_range`
    /// before it leaves.
    pub delay: f64,
    /// The pauses of delayed and duplicated requests.
    pub delay_range: (Duration, Duration),
    /// Requests from the first peer to the second fail (one-way).
    pub blocked: BTreeSet<(PeerId, PeerId)>,
    /// When not empty, peers reach only the peers of their own group; a
    /// peer in no group reaches no one.
    pub partition: Vec<BTreeSet<PeerId>>,
    /// Peers that reach no one and that no one reaches.
    pub isolated: BTreeSet<PeerId>,
}

impl FaultRules {
    /// Whether requests from `from` to `to` get through at all.
    pub fn connects(&self, from: &PeerId, to: &PeerId) -> bool {
        if self.isolated.contains(from) || self.isolated.contains(to) {
            return false;
        }
        if self.blocked.contains(&(*from, *to)) {
            return false;
        }
        if self.partition.is_empty() {
            return true;
        }
        self.partition
            .iter()
            .any(|g| g.contains(from) && g.contains(to))
    }

    /// Whether these rules do nothing to any request.
    pub fn is_clear(&self) -> bool {
        self.drop_requests <= 0.0
            && self.drop_responses <= 0.0
            && self.duplicate <= 0.0
            && self.delay <= 0.0
            && self.blocked.is_empty()
            && self.partition.is_empty()
            && self.isolated.is_empty()
    }
}

/// What the network does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// It cannot get through (partition, blocked direction, isolation).
    Cut,
    /// It is lost before the peer sees it.
    DropRequest,
    /// It leaves after `delay` (zero: at once); the peer serves it. Its
    /// answer is lost when `drop_response`; a second copy follows after
    /// `duplicate` when that is set.
    Deliver {
        delay: Duration,
        drop_response: bool,
        duplicate: Option<Duration>,
    },
}

impl Fate {
    /// Delivered at once, untouched.
    pub const CLEAN: Fate = Fate::Deliver {
        delay: Duration::ZERO,
        drop_response: false,
        duplicate: None,
    };
}

/// How many requests met each fault since the handle was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Requests that asked for a fate.
    pub requests: u64,
    pub cut: u64,
    pub dropped_requests: u64,
    pub dropped_responses: u64,
    pub delayed: u64,
    pub duplicated: u64,
}

struct State {
    rules: FaultRules,
    rng: StdRng,
    counts: FaultCounts,
}

/// The faults of one network; clone it to every node of the cluster.
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Faults")
            .field("rules", &s.rules)
            .field("counts", &s.counts)
            .finish()
    }
}

impl Faults {
    /// A network without faults yet, whose random decisions follow `seed`.
    pub fn new(seed: u64) -> Faults {
        Faults {
            state: Arc::new(Mutex::new(State {
                rules: FaultRules::default(),
                rng: StdRng::seed_from_u64(seed),
                counts: FaultCounts::default(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the rules; requests asking from now on follow them.
    pub fn set(&self, rules: FaultRules) {
        self.lock().rules = rules;
    }

    /// Changes the rules in place.
    pub fn update(&self, f: impl FnOnce(&mut FaultRules)) {
        f(&mut self.lock().rules);
    }

    /// Restarts the random decisions from `seed` (a new schedule on the
    /// same network), and the counts from zero.
    pub fn reseed(&self, seed: u64) {
        let mut s = self.lock();
        s.rng = StdRng::seed_from_u64(seed);
        s.counts = FaultCounts::default();
    }

    /// No faults from now on (requests already held back still arrive).
    pub fn clear(&self) {
        self.set(FaultRules::default());
    }

    /// The rules in force.
    pub fn rules(&self) -> FaultRules {
        self.lock().rules.clone()
    }

    /// What happened so far.
    pub fn counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Decides the fate of one request from `from` to `to`.
    pub fn decide(&self, from: &PeerId, to: &PeerId) -> Fate {
        let mut guard = self.lock();
        let State { rules, rng, counts } = &mut *guard;
        counts.requests += 1;
        if rules.is_clear() {
            return Fate::CLEAN;
        }
        if !rules.connects(from, to) {
            counts.cut += 1;
            return Fate::Cut;
        }
        if chance(rng, rules.drop_requests) {
            counts.dropped_requests += 1;
            return Fate::DropRequest;
        }
        let (lo, hi) = rules.delay_range;
        let pause = |rng: &mut StdRng| {
            if hi > lo { rng.gen_range(lo..=hi) } else { lo }
        };
        let delay = if chance(rng, rules.delay) {
            counts.delayed += 1;
            pause(rng)
        } else {
            Duration::ZERO
        };
        let drop_response = chance(rng, rules.drop_responses);
        if drop_response {
            counts.dropped_responses += 1;
        }
        let duplicate = chance(rng, rules.duplicate).then(|| {
            counts.duplicated += 1;
            pause(rng)
        });
        Fate::Deliver {
            delay,
            drop_response,
            duplicate,
        }
    }

    /// Sends `request` from `from` to `to` through `send` as the rules
    /// say. `send` delivers one copy and returns its answer; it is called
    /// once, twice for a duplicate (the copy in a task of its own), or not
    /// at all.
    pub(crate) async fn carry<S, Fut>(
        &self,
        from: PeerId,
        to: PeerId,
        request: Request,
        send: S,
    ) -> Result<Response, NetError>
    where
        S: Fn(Request) -> Fut,
        Fut: std::future::Future<Output = Result<Response, NetError>> + Send + 'static,
    {
        match self.decide(&from, &to) {
            Fate::Cut => Err(NetError::PeerUnreachable {
                peer: to,
                reason: "cut off by an injected partition".into(),
            }),
            Fate::DropRequest => Err(NetError::ConnectionClosed { peer: to }),
            Fate::Deliver {
                delay,
                drop_response,
                duplicate,
            } => {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let Some(after) = duplicate {
                    let copy = send(request.clone());
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = copy.await;
                    });
                }
                let answer = send(request).await;
                if drop_response && answer.is_ok() {
                    return Err(NetError::ConnectionClosed { peer: to });
                }
                answer
            }
        }
    }
}

fn chance(rng: &mut StdRng, p: f64) -> bool {
    p > 0.0 && rng.gen_bool(p.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use slurp_protocol::messages::{ClusterRequest, ClusterResponse};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn peers() -> (PeerId, PeerId, PeerId) {
        (PeerId::random(), PeerId::random(), PeerId::random())
    }

    #[test]
    fn without_rules_every_request_is_delivered_untouched() {
        let (a, b, _) = peers();
        let f = Faults::new(1);
        for _ in 0..100 {
            assert_eq!(f.decide(&a, &b), Fate::CLEAN);
        }
        assert_eq!(
            f.counts(),
            FaultCounts {
                requests: 100,
                ..FaultCounts::default()
            }
        );
    }

    #[test]
    fn partitions_cut_between_groups_only() {
        let (a, b, c) = peers();
        let rules = FaultRules {
            partition: vec![[a, b].into(), [c].into()],
            ..FaultRules::default()
        };
        assert!(rules.connects(&a, &b) && rules.connects(&b, &a));
        assert!(!rules.connects(&a, &c) && !rules.connects(&c, &b));
        // A peer in no group reaches no one.
        let d = PeerId::random();
        assert!(!rules.connects(&d, &a) && !rules.connects(&a, &d));
        let f = Faults::new(2);
        f.set(rules);
        assert_eq!(f.decide(&a, &c), Fate::Cut);
        assert_eq!(f.decide(&a, &b), Fate::CLEAN);
        f.clear();
        assert_eq!(f.decide(&a, &c), Fate::CLEAN);
    }

    #[test]
    fn a_blocked_direction_cuts_one_way_and_isolation_both() {
        let (a, b, c) = peers();
        let rules = FaultRules {
            blocked: [(a, b)].into(),
            isolated: [c].into(),
            ..FaultRules::default()
        };
        assert!(!rules.connects(&a, &b));
        assert!(rules.connects(&b, &a));
        assert!(!rules.connects(&a, &c) && !rules.connects(&c, &b));
    }

    #[test]
    fn odds_follow_the_seed_and_roughly_their_rate() {
        let (a, b, _) = peers();
        let rules = FaultRules {
            drop_requests: 0.2,
            drop_responses: 0.1,
            duplicate: 0.1,
            delay: 0.5,
            delay_range: (Duration::from_millis(1), Duration::from_millis(9)),
            ..FaultRules::default()
        };
        let run = |seed| {
            let f = Faults::new(seed);
            f.set(rules.clone());
            let fates: Vec<Fate> = (0..2000).map(|_| f.decide(&a, &b)).collect();
            (fates, f.counts())
        };
        let (x, cx) = run(7);
        let (y, _) = run(7);
        let (z, _) = run(8);
        assert_eq!(x, y, "the same seed decides the same fates");
        assert_ne!(x, z);
        assert!((300..500).contains(&cx.dropped_requests), "{cx:?}");
        // Of the 80 % not dropped: half delayed, a tenth duplicated.
        assert!((650..950).contains(&cx.delayed), "{cx:?}");
        assert!((100..230).contains(&cx.duplicated), "{cx:?}");
        for fate in &x {
            if let Fate::Deliver {
                delay, duplicate, ..
            } = fate
            {
                assert!(*delay <= Duration::from_millis(9));
                assert!(duplicate.is_none_or(|d| d >= Duration::from_millis(1)));
            }
        }
    }

    fn probe() -> Request {
        Request::Cluster(ClusterRequest::Health)
    }

    /// A peer that counts deliveries and answers each.
    fn counting(
        n: Arc<AtomicUsize>,
    ) -> impl Fn(Request) -> std::future::Ready<Result<Response, NetError>> {
        move |_| {
            n.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::Cluster(ClusterResponse::ShareStored)))
        }
    }

    #[tokio::test]
    async fn each_fate_looks_to_the_sender_like_the_network_failing() {
        let (a, b, _) = peers();
        let f = Faults::new(3);
        let n = Arc::new(AtomicUsize::new(0));
        f.set(FaultRules {
            isolated: [b].into(),
            ..FaultRules::default()
        });
        let r = f.carry(a, b, probe(), counting(n.clone())).await;
        assert!(matches!(r, Err(NetError::PeerUnreachable { .. })), "{r:?}");
        assert_eq!(n.load(Ordering::SeqCst), 0);

        f.set(FaultRules {
            drop_requests: 1.0,
            ..FaultRules::default()
        });
        let r = f.carry(a, b, probe(), counting(n.clone())).await;
        assert!(matches!(r, Err(NetError::ConnectionClosed { .. })));
        assert_eq!(n.load(Ordering::SeqCst), 0, "the peer never saw it");

        f.set(FaultRules {
            drop_responses: 1.0,
            ..FaultRules::default()
        });
        let r = f.carry(a, b, probe(), counting(n.clone())).await;
        assert!(matches!(r, Err(NetError::ConnectionClosed { .. })));
        assert_eq!(n.load(Ordering::SeqCst), 1, "the peer served it");

        f.set(FaultRules {
            duplicate: 1.0,
            delay_range: (Duration::ZERO, Duration::ZERO),
            ..FaultRules::default()
        });
        let r = f.carry(a, b, probe(), counting(n.clone())).await;
        assert!(r.is_ok());
        // The copy runs in a task of its own.
        for _ in 0..1000 {
            if n.load(Ordering::SeqCst) == 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(n.load(Ordering::SeqCst), 3, "delivered twice");
        assert_eq!(
            f.counts(),
            FaultCounts {
                requests: 4,
                cut: 1,
                dropped_requests: 1,
                dropped_responses: 1,
                duplicated: 1,
                delayed: 0,
            }
        );
    }
}
