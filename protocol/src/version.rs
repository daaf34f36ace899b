//! Version identities: a hybrid logical clock stamp plus the writer's id.
//!
//! Versions are append-only: every write to an address adds a version and
//! nothing overwrites. Two replicas merge by union, so every node must agree
//! on one total order of the versions of an address without talking to each
//! other. A [`VersionId`] gives that order: first by [`Hlc`] (wall-clock
//! milliseconds, then a logical counter that breaks ties inside one
//! millisecond and absorbs clock skew), then by writer id. The clock also
//! gives every change a position in time, which incremental backups and
//! point-in-time restore use as a watermark.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Longest writer id accepted (a libp2p peer id in base58 is about 52).
pub const MAX_WRITER_LEN: usize = 64;

/// A hybrid logical clock stamp. Ordered by `(wall_ms, logical)`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (the largest seen, not always now).
    pub wall_ms: u64,
    /// Counter within one `wall_ms`.
    pub logical: u32,
}

impl Hlc {
    pub const ZERO: Hlc = Hlc {
        wall_ms: 0,
        logical: 0,
    };

    /// The stamp as one sortable integer: `wall_ms << 20 | logical` (the
    /// logical part is clamped to 20 bits). Used where a single ordered
    /// number is handy, such as backup watermarks.
    pub fn as_u64(&self) -> u64 {
        (self.wall_ms << 20) | u64::from(self.logical.min((1 << 20) - 1))
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.wall_ms, self.logical)
    }
}

/// The id of the node (or process) that wrote a version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WriterId(String);

/// A writer id that is empty, too long or has characters other than
/// `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid writer id {0:?}: 1 to 64 characters of [A-Za-z0-9_-]")]
pub struct WriterIdError(pub String);

impl WriterId {
    pub fn new(s: impl Into<String>) -> Result<Self, WriterIdError> {
        let s = s.into();
        if s.is_empty()
            || s.len() > MAX_WRITER_LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(WriterIdError(s.chars().take(80).collect()));
        }
        Ok(WriterId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WriterId {
    type Error = WriterIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        WriterId::new(s)
    }
}

impl From<WriterId> for String {
    fn from(w: WriterId) -> String {
        w.0
    }
}

impl fmt::Display for WriterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of one version: ordered by clock, then writer.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct VersionId {
    pub hlc: Hlc,
    pub writer: WriterId,
}

impl fmt::Display for VersionId {
    /// `wall_ms.logical@writer`, parsed back by [`FromStr`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, self.writer)
    }
}

/// A version id string that does not read `wall_ms.logical@writer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid version id {0:?}: expected wall_ms.logical@writer")]
pub struct VersionIdError(pub String);

impl FromStr for VersionId {
    type Err = VersionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionIdError(s.chars().take(80).collect());
        let (clock, writer) = s.split_once('@').ok_or_else(err)?;
        let (wall, logical) = clock.split_once('.').ok_or_else(err)?;
        Ok(VersionId {
            hlc: Hlc {
                wall_ms: wall.parse().map_err(|_| err())?,
                logical: logical.parse().map_err(|_| err())?,
            },
            writer: WriterId::new(writer).map_err(|_| err())?,
        })
    }
}

/// Where a clock reads physical time from; tests substitute their own.
pub trait TimeSource: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemTimeSource;

impl TimeSource for SystemTimeSource {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A hybrid logical clock: stamps are strictly increasing on one node and
/// greater than every stamp the node has observed from others.
pub struct HlcClock<T: TimeSource = SystemTimeSource> {
    time: T,
    last: Mutex<Hlc>,
}

impl Default for HlcClock<SystemTimeSource> {
    fn default() -> Self {
        HlcClock::new(SystemTimeSource)
    }
}

impl<T: TimeSource> HlcClock<T> {
    pub fn new(time: T) -> Self {
        HlcClock {
            time,
            last: Mutex::new(Hlc::ZERO),
        }
    }

    /// A new stamp for a local event.
    pub fn now(&self) -> Hlc {
        let pt = self.time.now_ms();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let next = if pt > last.wall_ms {
            Hlc {
                wall_ms: pt,
                logical: 0,
            }
        } else {
            Self::tick(*last)
        };
        *last = next;
        next
    }

    /// Merges a stamp seen from another node, so the next local stamp is
    /// greater than it. Returns the merged stamp.
    pub fn observe(&self, remote: Hlc) -> Hlc {
        let pt = self.time.now_ms();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let max = (*last).max(remote);
        let next = if pt > max.wall_ms {
            Hlc {
                wall_ms: pt,
                logical: 0,
            }
        } else {
            Self::tick(max)
        };
        *last = next;
        next
    }

    fn tick(h: Hlc) -> Hlc {
        match h.logical.checked_add(1) {
            Some(l) => Hlc {
                wall_ms: h.wall_ms,
                logical: l,
            },
            None => Hlc {
                wall_ms: h.wall_ms + 1,
                logical: 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Fixed(AtomicU64);
    impl TimeSource for Fixed {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn stamps_increase_when_time_stands_still_or_goes_back() {
        let clock = HlcClock::new(Fixed(AtomicU64::new(1000)));
        let a = clock.now();
        let b = clock.now();
        assert!(b > a);
        clock.time.0.store(900, Ordering::SeqCst);
        let c = clock.now();
        assert!(c > b);
        assert_eq!(c.wall_ms, 1000);
    }

    #[test]
    fn observe_moves_past_remote() {
        let clock = HlcClock::new(Fixed(AtomicU64::new(1000)));
        let remote = Hlc {
            wall_ms: 5000,
            logical: 7,
        };
        clock.observe(remote);
        let next = clock.now();
        assert!(next > remote);
    }

    #[test]
    fn version_order_is_clock_then_writer() {
        let w = |s: &str| WriterId::new(s).unwrap();
        let h = |ms, l| Hlc {
            wall_ms: ms,
            logical: l,
        };
        let a = VersionId {
            hlc: h(1, 0),
            writer: w("zz"),
        };
        let b = VersionId {
            hlc: h(1, 1),
            writer: w("aa"),
        };
        let c = VersionId {
            hlc: h(1, 1),
            writer: w("bb"),
        };
        assert!(a < b && b < c);
        let s = c.to_string();
        assert_eq!(s.parse::<VersionId>().unwrap(), c);
        assert!("1.x@a".parse::<VersionId>().is_err());
        assert!("1.1@".parse::<VersionId>().is_err());
        assert!(WriterId::new("a b").is_err());
        assert!(WriterId::new("x".repeat(65)).is_err());
    }
}
