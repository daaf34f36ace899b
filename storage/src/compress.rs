//! Envelope compression: zstd, kept only when it pays.
//!
//! Sealed envelopes are ciphertext and mostly do not compress; an age
//! envelope's text header (one base64 stanza per recipient) does a little.
//! Trying costs CPU on every write, so the rule is configurable
//! ([`CompressionConfig`]): envelopes under `min_bytes` are stored as they
//! are without trying, and a compressed form is kept only when it is at
//! least `min_saving_bytes` shorter. `docs/storage.md` records the
//! measurements behind the defaults. Compression runs on the caller's
//! thread, before the request is queued, so it never delays the writer
//! thread's commits.

use std::cell::RefCell;

use crate::config::CompressionConfig;
use crate::record::Codec;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Encodes `envelope` for storage under `config`: the codec used and the
/// bytes to store. Falls back to [`Codec::Raw`] whenever compression does
/// not save enough or fails.
pub fn encode(envelope: Vec<u8>, config: &CompressionConfig) -> (Codec, Vec<u8>) {
    if !config.enabled || envelope.len() < config.min_bytes.max(1) {
        return (Codec::Raw, envelope);
    }
    // A destination one saving short of the input: zstd fails when the
    // frame does not fit, which is exactly "does not shrink enough".
    let budget = envelope
        .len()
        .saturating_sub(config.min_saving_bytes.max(1));
    if budget == 0 {
        return (Codec::Raw, envelope);
    }
    let mut out = Vec::with_capacity(budget);
    let done = COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fresh = !matches!(&*slot, Some((level, _)) if *level == config.level);
        if fresh {
            match zstd::bulk::Compressor::new(config.level) {
                Ok(c) => *slot = Some((config.level, c)),
                Err(_) => return false,
            }
        }
        match slot.as_mut() {
            Some((_, c)) => c.compress_to_buffer(&envelope, &mut out).is_ok(),
            None => false,
        }
    });
    if done && out.len() <= budget {
        (Codec::Zstd, out)
    } else {
        (Codec::Raw, envelope)
    }
}

/// Why stored envelope bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("declared length {declared} is over the limit of {limit}")]
    TooLong { declared: u64, limit: usize },
    #[error("raw envelope is {actual} bytes but {declared} are declared")]
    LengthMismatch { declared: u64, actual: usize },
    #[error("zstd: {0}")]
    Zstd(String),
}

/// Decodes stored envelope bytes. `raw_len` is the declared decoded length;
/// nothing larger than `limit` is ever allocated.
pub fn decode(
    codec: Codec,
    data: Vec<u8>,
    raw_len: u64,
    limit: usize,
) -> Result<Vec<u8>, DecompressError> {
    match codec {
        Codec::Raw => {
            if data.len() as u64 != raw_len {
                return Err(DecompressError::LengthMismatch {
                    declared: raw_len,
                    actual: data.len(),
                });
            }
            Ok(data)
        }
        Codec::Zstd => {
            let capacity = usize::try_from(raw_len)
                .ok()
                .filter(|n| *n <= limit)
                .ok_or(DecompressError::TooLong {
                    declared: raw_len,
                    limit,
                })?;
            let out = DECOMPRESSOR.with(|cell| {
                let mut slot = cell.borrow_mut();
                if slot.is_none() {
                    *slot = Some(
                        zstd::bulk::Decompressor::new()
                            .map_err(|e| DecompressError::Zstd(e.to_string()))?,
                    );
                }
                let d = slot
                    .as_mut()
                    .ok_or_else(|| DecompressError::Zstd("no decompressor".into()))?;
                let mut out = Vec::with_capacity(capacity);
                d.decompress_to_buffer(&data, &mut out)
                    .map_err(|e| DecompressError::Zstd(e.to_string()))?;
                Ok::<_, DecompressError>(out)
            })?;
            if out.len() as u64 != raw_len {
                return Err(DecompressError::LengthMismatch {
                    declared: raw_len,
                    actual: out.len(),
                });
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::RngCore;

    fn cfg() -> CompressionConfig {
        CompressionConfig {
            enabled: true,
            min_bytes: 256,
            level: 3,
            min_saving_bytes: 16,
        }
    }

    #[test]
    fn compressible_data_is_compressed_and_round_trips() {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(100);
        let (codec, stored) = encode(text.clone().into_bytes(), &cfg());
        assert_eq!(codec, Codec::Zstd);
        assert!(stored.len() + 16 <= text.len());
        let back = decode(codec, stored, text.len() as u64, 1 << 20).unwrap();
        assert_eq!(back, text.as_bytes());
    }

    #[test]
    fn random_bytes_and_small_values_stay_raw() {
        let mut random = vec![0u8; 4096];
        rand::thread_rng().fill_bytes(&mut random);
        let (codec, stored) = encode(random.clone(), &cfg());
        assert_eq!(codec, Codec::Raw);
        assert_eq!(stored, random);

        let small = b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec();
        assert_eq!(encode(small.clone(), &cfg()), (Codec::Raw, small.clone()));
        let off = CompressionConfig {
            enabled: false,
            ..cfg()
        };
        let text = "abc".repeat(1000).into_bytes();
        assert_eq!(encode(text.clone(), &off), (Codec::Raw, text));
    }

    #[test]
    fn saving_below_the_minimum_is_not_kept() {
        // Half random, half zeros: saves about half; demand more than that.
        let mut v = vec![0u8; 2048];
        rand::thread_rng().fill_bytes(&mut v[..1024]);
        let greedy = CompressionConfig {
            min_saving_bytes: 1500,
            ..cfg()
        };
        assert_eq!(encode(v.clone(), &greedy).0, Codec::Raw);
        assert_eq!(encode(v, &cfg()).0, Codec::Zstd);
    }

    #[test]
    fn bombs_and_lies_are_refused() {
        let zeros = vec![0u8; 1 << 20];
        let (codec, stored) = encode(zeros, &cfg());
        assert_eq!(codec, Codec::Zstd);
        assert!(matches!(
            decode(codec, stored.clone(), 1 << 20, 1024),
            Err(DecompressError::TooLong { .. })
        ));
        // Declaring less than the frame holds fails instead of overflowing.
        assert!(decode(codec, stored, 1000, 1 << 21).is_err());
        assert!(matches!(
            decode(Codec::Raw, vec![1, 2], 3, 10),
            Err(DecompressError::LengthMismatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(0u8..4, 0..3000), level in 1i32..6) {
            let c = CompressionConfig { level, ..cfg() };
            let (codec, stored) = encode(data.clone(), &c);
            if codec == Codec::Zstd {
                prop_assert!(stored.len() + c.min_saving_bytes <= data.len());
            }
            prop_assert_eq!(decode(codec, stored, data.len() as u64, 1 << 20).unwrap(), data);
        }

        #[test]
        fn garbage_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), len in 0u64..4096) {
            let _ = decode(Codec::Zstd, data, len, 1 << 16);
        }
    }
}
