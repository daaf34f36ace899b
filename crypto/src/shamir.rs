//! Shamir custody: a key split so that any `threshold` of `total` holders
//! can rebuild it and fewer learn nothing.
//!
//! The master (admin) key must survive the loss of any one custodian and
//! must not be in any one custodian's hands. Shamir secret sharing over
//! GF(256) does that (via `blahaj`, the fixed fork of `sharks`; see
//! `docs/crypto.md` for why not `sharks` or `vsss-rs`).
//!
//! GF(256) shares are not authenticated: a single altered share makes
//! interpolation return a different secret without any error. Every share
//! therefore carries a check value of the secret (domain-separated BLAKE3
//! over the share set id and the secret), and [`recover`] only returns a
//! secret that matches it. When more than `threshold` shares are supplied
//! and the first combination does not verify, other combinations are tried,
//! so a tampered share among enough honest ones does not stop recovery; it
//! never yields a wrong key.
//!
//! The check value is safe to publish alongside shares only because the
//! secrets split here are high-entropy keys (an age identity carries 256
//! random bits): a hash cannot be inverted or guessed for such input. Do not
//! use this module for low-entropy secrets such as passphrases.

use std::collections::BTreeSet;
use std::fmt;

use age::secrecy::ExposeSecret;
use age::x25519;
use blahaj::{Share, Sharks};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use slurp_protocol::wire::{DecodeError, EncodeError, Framed, kinds};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::parse_identity;

/// Longest secret accepted for splitting, in bytes.
pub const MAX_SECRET_LEN: usize = 4096;

/// Most subsets of the supplied shares tried before recovery gives up.
pub const MAX_RECOVERY_ATTEMPTS: usize = 10_000;

/// Length of a share set id in bytes.
pub const SET_ID_LEN: usize = 16;

/// Problems splitting or recovering a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    #[error("threshold must be at least 2, got {0}")]
    ThresholdTooLow(u8),
    #[error("threshold {threshold} is more than the {total} shares")]
    ThresholdAboveTotal { threshold: u8, total: u8 },
    #[error("secret must be 1 to {MAX_SECRET_LEN} bytes, got {0}")]
    BadSecretLength(usize),
    #[error("need {need} shares to recover, got {have}")]
    NotEnoughShares { have: usize, need: u8 },
    #[error("share {index} belongs to another share set ({found}, expected {expected})")]
    MixedSets {
        index: u8,
        expected: String,
        found: String,
    },
    #[error("share {index} disagrees with the others on {field}")]
    Inconsistent { index: u8, field: &'static str },
    #[error("share index {0} appears more than once")]
    DuplicateIndex(u8),
    #[error("invalid share: {0}")]
    Invalid(String),
    #[error(
        "the shares do not rebuild the secret they were made from ({attempts} combinations tried): \
         at least one share is altered"
    )]
    VerificationFailed { attempts: usize },
    #[error("recovered secret is not an age identity: {0}")]
    NotAnIdentity(String),
    #[error("share could not be decoded: {0}")]
    Decode(#[from] DecodeError),
    #[error("share could not be encoded: {0}")]
    Encode(#[from] EncodeError),
}

/// One custodian's share (framed CBOR, kind `KEY_SHARE`; the frame's
/// version is the share format version).
///
/// Decoding checks the fields are coherent (threshold ≥ 2, threshold ≤
/// total, index in 1..=total); the share bytes are zeroed on drop and
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawShare")]
pub struct KeyShare {
    /// Random id shared by the shares of one split.
    #[serde(with = "serde_bytes")]
    set_id: [u8; SET_ID_LEN],
    threshold: u8,
    total: u8,
    /// The x coordinate, 1..=total.
    index: u8,
    /// Check value of the secret: see [`check_value`].
    #[serde(with = "serde_bytes")]
    check: [u8; 32],
    /// The y values, one per secret byte.
    #[serde(with = "serde_bytes")]
    share: Vec<u8>,
}

#[derive(Deserialize)]
struct RawShare {
    #[serde(with = "serde_bytes")]
    set_id: [u8; SET_ID_LEN],
    threshold: u8,
    total: u8,
    index: u8,
    #[serde(with = "serde_bytes")]
    check: [u8; 32],
    #[serde(with = "serde_bytes")]
    share: Vec<u8>,
}

impl TryFrom<RawShare> for KeyShare {
    type Error = ShareError;
    fn try_from(mut raw: RawShare) -> Result<Self, ShareError> {
        let share = std::mem::take(&mut raw.share);
        let ks = KeyShare {
            set_id: raw.set_id,
            threshold: raw.threshold,
            total: raw.total,
            index: raw.index,
            check: raw.check,
            share,
        };
        check_params(ks.threshold, ks.total)?;
        if ks.index == 0 || ks.index > ks.total {
            return Err(ShareError::Invalid(format!(
                "index {} outside 1..={}",
                ks.index, ks.total
            )));
        }
        if ks.share.is_empty() || ks.share.len() > MAX_SECRET_LEN {
            return Err(ShareError::Invalid(format!(
                "share of {} bytes",
                ks.share.len()
            )));
        }
        Ok(ks)
    }
}

impl Drop for RawShare {
    fn drop(&mut self) {
        self.share.zeroize();
    }
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        self.share.zeroize();
    }
}

impl Framed for KeyShare {
    const KIND: u16 = kinds::KEY_SHARE;
    const NAME: &'static str = "key-share";
    const VERSION: u16 = 1;
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("set_id", &hex::encode(self.set_id))
            .field("threshold", &self.threshold)
            .field("total", &self.total)
            .field("index", &self.index)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl KeyShare {
    pub fn set_id(&self) -> [u8; SET_ID_LEN] {
        self.set_id
    }

    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    pub fn total(&self) -> u8 {
        self.total
    }

    /// This share's index (x coordinate), 1..=total.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Encodes as framed CBOR.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ShareError> {
        Ok(self.encode()?)
    }

    /// Decodes framed CBOR; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShareError> {
        Ok(Self::decode_limited(bytes, 2 * MAX_SECRET_LEN + 256)?)
    }

    fn to_blahaj(&self) -> Share {
        let mut bytes = Zeroizing::new(Vec::with_capacity(self.share.len() + 1));
        bytes.push(self.index);
        bytes.extend_from_slice(&self.share);
        Share::try_from(&bytes[..]).expect("share bytes are never empty")
    }
}

fn check_params(threshold: u8, total: u8) -> Result<(), ShareError> {
    if threshold < 2 {
        return Err(ShareError::ThresholdTooLow(threshold));
    }
    if threshold > total {
        return Err(ShareError::ThresholdAboveTotal { threshold, total });
    }
    Ok(())
}

/// The check value of a secret within one share set: BLAKE3 in derive-key
/// mode with context `"slurp key-share check v1"`, over the set id and the
/// secret. Binding the set id makes check values of two splits of the same
/// key unlinkable.
fn check_value(set_id: &[u8; SET_ID_LEN], secret: &[u8]) -> [u8; 32] {
    *blake3::Hasher::new_derive_key("slurp key-share check v1")
        .update(set_id)
        .update(secret)
        .finalize()
        .as_bytes()
}

/// Splits `secret` into `total` shares, any `threshold` of which rebuild
/// it. `threshold` must be within 2..=total; `secret` 1 to
/// [`MAX_SECRET_LEN`] bytes.
pub fn split(secret: &[u8], threshold: u8, total: u8) -> Result<Vec<KeyShare>, ShareError> {
    check_params(threshold, total)?;
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(ShareError::BadSecretLength(secret.len()));
    }
    let mut set_id = [0u8; SET_ID_LEN];
    rand::rngs::OsRng.fill_bytes(&mut set_id);
    let check = check_value(&set_id, secret);
    Ok(Sharks(threshold)
        .dealer(secret)
        .take(total as usize)
        .map(|s| {
            let bytes = Zeroizing::new(Vec::from(&s));
            KeyShare {
                set_id,
                threshold,
                total,
                index: bytes[0],
                check,
                share: bytes[1..].to_vec(),
            }
        })
        .collect())
}

/// Rebuilds the secret from shares of one set; see [`recover_verbose`].
pub fn recover(shares: &[KeyShare]) -> Result<Zeroizing<Vec<u8>>, ShareError> {
    recover_verbose(shares).map(|r| r.secret)
}

/// A recovered secret and the share indices that rebuilt it.
pub struct Recovery {
    pub secret: Zeroizing<Vec<u8>>,
    /// Indices of the shares used, ascending.
    pub used: Vec<u8>,
}

impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recovery")
            .field("secret", &"<redacted>")
            .field("used", &self.used)
            .finish()
    }
}

/// Rebuilds the secret and says which shares were used.
///
/// All shares must be of one set (same set id, threshold, total, check
/// value and length), with distinct indices, and at least `threshold` of
/// them. The result is returned only if it matches the set's check value;
/// with extra shares, other `threshold`-subsets are tried (up to
/// [`MAX_RECOVERY_ATTEMPTS`]) so altered shares are worked around when
/// enough honest ones are present.
pub fn recover_verbose(shares: &[KeyShare]) -> Result<Recovery, ShareError> {
    let first = shares
        .first()
        .ok_or(ShareError::NotEnoughShares { have: 0, need: 2 })?;
    let mut indices = BTreeSet::new();
    for s in shares {
        if s.set_id != first.set_id {
            return Err(ShareError::MixedSets {
                index: s.index,
                expected: hex::encode(first.set_id),
                found: hex::encode(s.set_id),
            });
        }
        for (field, differs) in [
            ("threshold", s.threshold != first.threshold),
            ("total", s.total != first.total),
            ("check value", s.check != first.check),
            ("secret length", s.share.len() != first.share.len()),
        ] {
            if differs {
                return Err(ShareError::Inconsistent {
                    index: s.index,
                    field,
                });
            }
        }
        if !indices.insert(s.index) {
            return Err(ShareError::DuplicateIndex(s.index));
        }
    }
    let t = first.threshold as usize;
    if shares.len() < t {
        return Err(ShareError::NotEnoughShares {
            have: shares.len(),
            need: first.threshold,
        });
    }
    let mut sorted: Vec<&KeyShare> = shares.iter().collect();
    sorted.sort_by_key(|s| s.index);
    let points: Vec<Share> = sorted.iter().map(|s| s.to_blahaj()).collect();
    let sharks = Sharks(first.threshold);

    let mut attempts = 0;
    let mut combo: Vec<usize> = (0..t).collect();
    loop {
        attempts += 1;
        let subset: Vec<&Share> = combo.iter().map(|&i| &points[i]).collect();
        let secret = Zeroizing::new(
            sharks
                .recover(subset)
                .map_err(|e| ShareError::Invalid(e.to_string()))?,
        );
        if check_value(&first.set_id, &secret) == first.check {
            return Ok(Recovery {
                secret,
                used: combo.iter().map(|&i| sorted[i].index).collect(),
            });
        }
        if attempts >= MAX_RECOVERY_ATTEMPTS || !next_combination(&mut combo, points.len()) {
            return Err(ShareError::VerificationFailed { attempts });
        }
    }
}

/// Advances `combo` (ascending indices into 0..n) to the next combination
/// in lexicographic order; false when it was the last.
fn next_combination(combo: &mut [usize], n: usize) -> bool {
    let k = combo.len();
    for i in (0..k).rev() {
        if combo[i] < n - k + i {
            combo[i] += 1;
            for j in i + 1..k {
                combo[j] = combo[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// Splits an age identity: the shares are of its `AGE-SECRET-KEY-1...`
/// string's bytes.
pub fn split_identity(
    identity: &x25519::Identity,
    threshold: u8,
    total: u8,
) -> Result<Vec<KeyShare>, ShareError> {
    let secret = identity.to_string();
    split(secret.expose_secret().as_bytes(), threshold, total)
}

/// Recovers an age identity split by [`split_identity`].
pub fn recover_identity(shares: &[KeyShare]) -> Result<x25519::Identity, ShareError> {
    let secret = recover(shares)?;
    let text =
        std::str::from_utf8(&secret).map_err(|_| ShareError::NotAnIdentity("not UTF-8".into()))?;
    parse_identity(text).map_err(|e| ShareError::NotAnIdentity(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
        let mut out = vec![];
        let mut combo: Vec<usize> = (0..k).collect();
        loop {
            out.push(combo.clone());
            if !next_combination(&mut combo, n) {
                return out;
            }
        }
    }

    #[test]
    fn combinations_are_enumerated() {
        assert_eq!(subsets(4, 2).len(), 6);
        assert_eq!(subsets(5, 3).len(), 10);
        assert_eq!(subsets(3, 3), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn every_t_subset_recovers_and_every_smaller_one_is_refused() {
        let secret = [0x42u8; 32];
        let shares = split(&secret, 3, 5).unwrap();
        assert_eq!(
            shares.iter().map(|s| s.index()).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        for subset in subsets(5, 3) {
            let chosen: Vec<KeyShare> = subset.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(&recover(&chosen).unwrap()[..], &secret);
        }
        for subset in subsets(5, 2) {
            let chosen: Vec<KeyShare> = subset.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(
                recover(&chosen).unwrap_err(),
                ShareError::NotEnoughShares { have: 2, need: 3 }
            );
        }
    }

    #[test]
    fn tampered_share_never_yields_a_wrong_secret() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let shares = split(secret, 3, 5).unwrap();
        for victim in 0..3 {
            for byte in 0..secret.len() {
                let mut chosen: Vec<KeyShare> = shares[..3].to_vec();
                chosen[victim].share[byte] ^= 0x01;
                assert_eq!(
                    recover(&chosen).unwrap_err(),
                    ShareError::VerificationFailed { attempts: 1 }
                );
            }
        }
        // With a spare honest share the altered one is worked around.
        let mut chosen: Vec<KeyShare> = shares[..4].to_vec();
        chosen[1].share[0] ^= 0xff;
        let r = recover_verbose(&chosen).unwrap();
        assert_eq!(&r.secret[..], secret);
        assert!(!r.used.contains(&2));
    }

    #[test]
    fn mixed_sets_duplicates_and_bad_parameters() {
        let a = split(&[1u8; 32], 2, 3).unwrap();
        let b = split(&[1u8; 32], 2, 3).unwrap();
        assert!(matches!(
            recover(&[a[0].clone(), b[1].clone()]),
            Err(ShareError::MixedSets { .. })
        ));
        assert_eq!(
            recover(&[a[0].clone(), a[0].clone()]).unwrap_err(),
            ShareError::DuplicateIndex(1)
        );
        assert_eq!(
            split(&[1], 0, 3).unwrap_err(),
            ShareError::ThresholdTooLow(0)
        );
        assert_eq!(
            split(&[1], 1, 3).unwrap_err(),
            ShareError::ThresholdTooLow(1)
        );
        assert_eq!(
            split(&[1], 4, 3).unwrap_err(),
            ShareError::ThresholdAboveTotal {
                threshold: 4,
                total: 3
            }
        );
        assert_eq!(
            split(&[], 2, 3).unwrap_err(),
            ShareError::BadSecretLength(0)
        );
        assert!(matches!(
            recover(&[]),
            Err(ShareError::NotEnoughShares { have: 0, .. })
        ));
        // The same secret split twice gives unrelated check values.
        assert_ne!(a[0].check, b[0].check);
    }

    #[test]
    fn framed_round_trip_and_invalid_fields() {
        let shares = split(b"secret key material", 2, 3).unwrap();
        let bytes = shares[2].to_bytes().unwrap();
        let back = KeyShare::from_bytes(&bytes).unwrap();
        assert_eq!(back, shares[2]);
        assert!(!format!("{back:?}").contains(&hex::encode(&back.share)));

        let forge = |t: u8, n: u8, i: u8| {
            slurp_protocol::wire::to_cbor(&(
                kinds::KEY_SHARE,
                1u16,
                RawShareOut {
                    set_id: &[0u8; 16],
                    threshold: t,
                    total: n,
                    index: i,
                    check: &[0u8; 32],
                    share: &[1, 2, 3],
                },
            ))
            .unwrap()
        };
        assert!(KeyShare::from_bytes(&forge(2, 3, 1)).is_ok());
        for (t, n, i) in [(1, 3, 1), (4, 3, 1), (2, 3, 0), (2, 3, 4)] {
            assert!(
                matches!(
                    KeyShare::from_bytes(&forge(t, n, i)),
                    Err(ShareError::Decode(_))
                ),
                "t={t} n={n} i={i}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(KeyShare::from_bytes(&bytes[..cut]).is_err());
        }
    }

    #[derive(Serialize)]
    struct RawShareOut<'a> {
        #[serde(with = "serde_bytes")]
        set_id: &'a [u8],
        threshold: u8,
        total: u8,
        index: u8,
        #[serde(with = "serde_bytes")]
        check: &'a [u8],
        #[serde(with = "serde_bytes")]
        share: &'a [u8],
    }

    #[test]
    fn identity_round_trip() {
        let id = x25519::Identity::generate();
        let shares = split_identity(&id, 3, 5).unwrap();
        let back =
            recover_identity(&[shares[4].clone(), shares[0].clone(), shares[2].clone()]).unwrap();
        assert_eq!(back.to_public().to_string(), id.to_public().to_string());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_t_of_n_recovers_fewer_fail(
            secret in proptest::collection::vec(any::<u8>(), 1..64),
            n in 2u8..8,
            t_seed in any::<u8>(),
            pick in any::<u64>(),
        ) {
            let t = 2 + t_seed % (n - 1);
            let shares = split(&secret, t, n).unwrap();
            // A pseudo-random subset of size t and one of size t-1.
            let mut order: Vec<usize> = (0..n as usize).collect();
            let mut state = pick;
            for i in (1..order.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (state >> 33) as usize % (i + 1));
            }
            let chosen: Vec<KeyShare> = order[..t as usize].iter().map(|&i| shares[i].clone()).collect();
            prop_assert_eq!(&recover(&chosen).unwrap()[..], &secret[..]);
            let fewer = &chosen[..t as usize - 1];
            prop_assert_eq!(
                recover(fewer).unwrap_err(),
                ShareError::NotEnoughShares { have: t as usize - 1, need: t }
            );
        }
    }
}
