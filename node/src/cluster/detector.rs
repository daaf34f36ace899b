//! Failure detection whose cost per node does not grow with the cluster.
//!
//! Probing every member every second costs each node O(N) messages a
//! second and the cluster O(N²). Instead every node beats a heartbeat (its
//! start time and the time of its last beat, by its own clock) and, each
//! probe interval, exchanges a bounded digest of the heartbeats it knows
//! with a few members picked at random (push and pull in one request).
//! Heartbeats spread epidemically, so every node hears of every live member
//! within a few intervals while sending a constant number of messages.
//!
//! Whether a peer is alive is a suspicion level, not a yes or no: the
//! phi-accrual detector (Hayashibara et al.; as Cassandra and Akka use it)
//! turns the time since a peer's heartbeat last advanced, against the
//! intervals at which it used to advance, into phi = -log10 of the
//! probability that a live peer would be that late. Requests order
//! replicas by it and skip peers above the threshold.
//!
//! Gossip comes only from authenticated members, but a member may lie. A
//! heartbeat can only make a peer look alive, never dead (suspicion comes
//! from silence), and a claimed beat later than this node's clock plus
//! `max_skew` is refused, so a liar can keep a dead peer looking alive for
//! at most that skew past the last real beat it saw; a request to that
//! peer still fails and marks it down.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use slurp_protocol::messages::Heartbeat;

/// Intervals kept per peer for the phi estimate.
const WINDOW: usize = 32;

/// Settings of the detector.
#[derive(Debug, Clone, Copy)]
pub struct DetectorConfig {
    /// How often this node beats (the probe interval).
    pub interval: Duration,
    /// phi above which a peer counts as down.
    pub threshold: f64,
    /// How far ahead of this node's clock a claimed beat may be.
    pub max_skew: Duration,
    /// Silence beyond the usual interval that is still normal (a loaded
    /// machine, a slow gossip path): suspicion starts growing after it.
    pub pause: Duration,
}

/// What became of a heartbeat offered to the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// It advanced the peer's heartbeat.
    Newer,
    /// The peer restarted (a new generation).
    Restarted,
    /// Not newer than what this node knows.
    Stale,
    /// Impossible (from the future): ignored.
    Refused,
}

#[derive(Debug, Clone)]
struct Entry {
    generation_ms: u64,
    beat_ms: u64,
    /// When it last advanced, by this node's clock.
    advanced: Instant,
    /// Intervals between advances, in ms.
    intervals: VecDeque<f64>,
}

/// The heartbeats this node knows, its own included.
pub struct Detector {
    me: PeerId,
    config: DetectorConfig,
    generation_ms: u64,
    own_beat_ms: RwLock<u64>,
    table: RwLock<HashMap<PeerId, Entry>>,
}

impl Detector {
    /// A detector for this node (`me`), started at `now_ms`.
    pub fn new(me: PeerId, config: DetectorConfig, now_ms: u64) -> Self {
        Detector {
            me,
            config,
            generation_ms: now_ms,
            own_beat_ms: RwLock::new(now_ms),
            table: RwLock::new(HashMap::new()),
        }
    }

    /// This node beats: its heartbeat now says it was alive at `now_ms`.
    pub fn beat(&self, now_ms: u64) {
        let mut b = self.own_beat_ms.write().unwrap_or_else(|e| e.into_inner());
        *b = (*b).max(now_ms);
    }

    /// This node's own heartbeat.
    pub fn own(&self) -> Heartbeat {
        Heartbeat {
            peer: self.me.to_base58(),
            generation_ms: self.generation_ms,
            beat_ms: *self.own_beat_ms.read().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Takes a heartbeat of `peer` heard at `now` (this node's clock
    /// `now_ms`).
    pub fn observe(&self, peer: PeerId, hb: &Heartbeat, now: Instant, now_ms: u64) -> Observed {
        if peer == self.me {
            return Observed::Stale;
        }
        let limit = now_ms.saturating_add(self.config.max_skew.as_millis() as u64);
        if hb.beat_ms > limit || hb.generation_ms > hb.beat_ms {
            return Observed::Refused;
        }
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        match table.get_mut(&peer) {
            None => {
                table.insert(
                    peer,
                    Entry {
                        generation_ms: hb.generation_ms,
                        beat_ms: hb.beat_ms,
                        advanced: now,
                        intervals: VecDeque::with_capacity(WINDOW),
                    },
                );
                Observed::Newer
            }
            Some(e) if hb.generation_ms > e.generation_ms => {
                *e = Entry {
                    generation_ms: hb.generation_ms,
                    beat_ms: hb.beat_ms,
                    advanced: now,
                    intervals: VecDeque::with_capacity(WINDOW),
                };
                Observed::Restarted
            }
            Some(e) if hb.generation_ms == e.generation_ms && hb.beat_ms > e.beat_ms => {
                let gap = now.saturating_duration_since(e.advanced).as_secs_f64() * 1000.0;
                if e.intervals.len() == WINDOW {
                    e.intervals.pop_front();
                }
                e.intervals.push_back(gap);
                e.beat_ms = hb.beat_ms;
                e.advanced = now;
                Observed::Newer
            }
            Some(_) => Observed::Stale,
        }
    }

    /// How suspect `peer` is at `now`: 0 when its heartbeat just advanced
    /// (or this node never heard of it: unknown peers are tried), growing
    /// with silence. Above [`DetectorConfig::threshold`] it counts as down.
    pub fn phi(&self, peer: &PeerId, now: Instant) -> f64 {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let Some(e) = table.get(peer) else {
            return 0.0;
        };
        let interval = self.config.interval.as_secs_f64() * 1000.0;
        let pause = self.config.pause.as_secs_f64() * 1000.0;
        let elapsed = now.saturating_duration_since(e.advanced).as_secs_f64() * 1000.0;
        phi(&e.intervals, elapsed, interval, pause)
    }

    /// Whether `peer` is suspected down.
    pub fn suspects(&self, peer: &PeerId, now: Instant) -> bool {
        self.phi(peer, now) > self.config.threshold
    }

    /// Whether this node has heard a heartbeat of `peer`.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(peer)
    }

    /// When `peer`'s heartbeat last advanced.
    pub fn advanced(&self, peer: &PeerId) -> Option<Instant> {
        self.table
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(peer)
            .map(|e| e.advanced)
    }

    /// At most `max` heartbeats to send: this node's own, then those that
    /// advanced most recently (the news worth spreading).
    pub fn digest(&self, max: usize) -> Vec<Heartbeat> {
        let mut out = vec![self.own()];
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut entries: Vec<(&PeerId, &Entry)> = table.iter().collect();
        entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.advanced));
        out.extend(
            entries
                .into_iter()
                .take(max.saturating_sub(1))
                .map(|(p, e)| Heartbeat {
                    peer: p.to_base58(),
                    generation_ms: e.generation_ms,
                    beat_ms: e.beat_ms,
                }),
        );
        out
    }

    /// Drops what is known of `peer` (it left, or expired).
    pub fn forget(&self, peer: &PeerId) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
    }
}

/// phi for `elapsed` ms of silence, given past `intervals` (ms), the
/// nominal `interval` and the accepted `pause` (ms): the logistic
/// approximation of the normal tail Akka uses. Until a few intervals are
/// known the nominal one stands in; the deviation is at least a quarter of
/// the mean.
pub fn phi(intervals: &VecDeque<f64>, elapsed: f64, interval: f64, pause: f64) -> f64 {
    let (mean, std) = if intervals.len() < 3 {
        (interval, interval / 4.0)
    } else {
        let n = intervals.len() as f64;
        let mean = intervals.iter().sum::<f64>() / n;
        let var = intervals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    };
    let std = std.max(mean / 4.0).max(1.0);
    let mean = mean + pause;
    let y = (elapsed - mean) / std;
    // P(later) = e / (1 + e) with e = exp(-t), t = y (1.5976 + 0.070566 y²);
    // -log10 of it is ln(1 + e^t) / ln 10, computed without overflow as
    // (max(t, 0) + ln(1 + e^-|t|)) / ln 10.
    let t = y * (1.5976 + 0.070566 * y * y);
    (t.max(0.0) + (-t.abs()).exp().ln_1p()) / std::f64::consts::LN_10
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config() -> DetectorConfig {
        DetectorConfig {
            interval: Duration::from_secs(1),
            threshold: 8.0,
            max_skew: Duration::from_secs(5),
            pause: Duration::from_secs(1),
        }
    }

    fn hb(p: &PeerId, generation_ms: u64, beat_ms: u64) -> Heartbeat {
        Heartbeat {
            peer: p.to_base58(),
            generation_ms,
            beat_ms,
        }
    }

    #[test]
    fn a_peer_beating_regularly_is_trusted_and_becomes_suspect_when_it_stops() {
        let d = Detector::new(PeerId::random(), config(), 0);
        let p = PeerId::random();
        let start = Instant::now();
        for i in 0..20u64 {
            let at = start + Duration::from_secs(i);
            assert_ne!(
                d.observe(p, &hb(&p, 1_000, 1_000 + i * 1000), at, 1_000 + i * 1000),
                Observed::Refused
            );
        }
        let last = start + Duration::from_secs(19);
        assert!(d.phi(&p, last + Duration::from_millis(500)) < 1.0);
        assert!(!d.suspects(&p, last + Duration::from_millis(1500)));
        // Silent for a few intervals: down.
        assert!(d.suspects(&p, last + Duration::from_secs(4)));
        // It beats again: trusted at once.
        let back = last + Duration::from_secs(5);
        assert_eq!(
            d.observe(p, &hb(&p, 1_000, 30_000), back, 30_000),
            Observed::Newer
        );
        assert!(!d.suspects(&p, back));
    }

    #[test]
    fn a_restart_is_a_new_generation_and_old_beats_are_stale() {
        let d = Detector::new(PeerId::random(), config(), 0);
        let p = PeerId::random();
        let now = Instant::now();
        assert_eq!(d.observe(p, &hb(&p, 10, 500), now, 1_000), Observed::Newer);
        assert_eq!(d.observe(p, &hb(&p, 10, 400), now, 1_000), Observed::Stale);
        assert_eq!(d.observe(p, &hb(&p, 10, 500), now, 1_000), Observed::Stale);
        assert_eq!(
            d.observe(p, &hb(&p, 900, 950), now, 1_000),
            Observed::Restarted
        );
        // The old generation's beats no longer count.
        assert_eq!(d.observe(p, &hb(&p, 10, 990), now, 1_000), Observed::Stale);
    }

    #[test]
    fn a_beat_from_the_future_is_refused() {
        let d = Detector::new(PeerId::random(), config(), 0);
        let p = PeerId::random();
        let now = Instant::now();
        // More than max_skew ahead of this node's clock.
        assert_eq!(
            d.observe(p, &hb(&p, 0, 10_000), now, 1_000),
            Observed::Refused
        );
        assert!(!d.knows(&p));
        // A beat before its own start is impossible too.
        assert_eq!(
            d.observe(p, &hb(&p, 900, 800), now, 1_000),
            Observed::Refused
        );
        // Within the skew: taken.
        assert_eq!(d.observe(p, &hb(&p, 0, 5_500), now, 1_000), Observed::Newer);
    }

    #[test]
    fn the_digest_is_bounded_and_leads_with_our_own_beat() {
        let me = PeerId::random();
        let d = Detector::new(me, config(), 0);
        d.beat(7_000);
        let now = Instant::now();
        for i in 0..100 {
            let p = PeerId::random();
            d.observe(p, &hb(&p, 0, i), now + Duration::from_millis(i), 7_000);
        }
        let digest = d.digest(16);
        assert_eq!(digest.len(), 16);
        assert_eq!(digest[0].peer, me.to_base58());
        assert_eq!(digest[0].beat_ms, 7_000);
        // The freshest news first.
        assert_eq!(digest[1].beat_ms, 99);
    }

    proptest! {
        /// phi never decreases as the silence grows, and is finite.
        #[test]
        fn phi_grows_with_silence(
            intervals in proptest::collection::vec(50.0f64..5_000.0, 0..32),
            a in 0.0f64..60_000.0,
            b in 0.0f64..60_000.0,
        ) {
            let w: VecDeque<f64> = intervals.into_iter().collect();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let p_lo = phi(&w, lo, 1_000.0, 1_000.0);
            let p_hi = phi(&w, hi, 1_000.0, 1_000.0);
            prop_assert!(p_lo.is_finite() && p_hi.is_finite());
            prop_assert!(p_lo >= 0.0);
            prop_assert!(p_hi + 1e-9 >= p_lo, "{p_lo} > {p_hi}");
        }
    }
}
