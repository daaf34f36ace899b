//! Envelopes: a record encrypted once to every role that may read it.
//!
//! A record is sealed into one age file whose X25519 recipient stanzas are
//! the current keys of the record's reader closure. Beside the age file, in
//! clear, the envelope header lists which role, epoch and key fingerprint
//! each X25519 stanza belongs to, in stanza order. That header is why this
//! module exists rather than calling `age::encrypt` directly:
//!
//! - **Opening costs one X25519 operation.** age recipients are anonymous,
//!   so a plain age decryptor tries every stanza with every identity. The
//!   header tells a reader which stanza is its own; [`TargetedIdentity`]
//!   unwraps exactly that one, so the reader whose stanza is last pays no
//!   more than the first.
//! - **Rotation can find records without opening them.** [`peek_header`]
//!   reads only the header; [`EnvelopeHeader::sealed_to`] says which
//!   role epochs a record depends on.
//! - **The header is authenticated.** Its digest is carried in an extra
//!   `slurp-header` stanza inside the age header, which age covers with its
//!   header MAC (keyed by the file key). Any change to the clear header or
//!   the age header is detected by every reader, and opening yields a typed
//!   error, never other plaintext.
//!
//! The age payload is a standard age v1 file: the stock `age` tool decrypts
//! it with a role's identity ([`Envelope::age_ciphertext`]) and ignores the
//! extra stanza, and [`open_age_file`] reads files the `age` tool wrote.

use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::io::{Read, Write};

use age::armor::ArmoredReader;
use age::{DecryptError, Decryptor, Encryptor};
use age_core::format::{FileKey, Stanza};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use slurp_protocol::RoleName;
use slurp_protocol::wire::{self, DecodeError, EncodeError, Framed, kinds};
use zeroize::Zeroizing;

use crate::keys::{Fingerprint, Keyring, PublicRoleKey, RoleKey};

/// The age stanza tag of X25519 recipients. Only stanzas with this tag are
/// counted when mapping header entries to stanzas: age adds a "grease"
/// stanza with a random tag to every file, and our binding stanza has its
/// own tag.
pub const X25519_TAG: &str = "X25519";

/// The age stanza tag that carries the digest of the envelope header.
pub const BINDING_TAG: &str = "slurp-header";

/// Most recipients a header may list, whatever the configuration says.
pub const MAX_STANZAS: usize = 1024;

/// Limits applied when sealing and opening envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeConfig {
    /// Largest encoded envelope accepted or produced, in bytes.
    pub max_envelope_bytes: usize,
    /// Most recipients one envelope may be sealed to (at most
    /// [`MAX_STANZAS`]).
    pub max_recipients: usize,
}

impl Default for EnvelopeConfig {
    fn default() -> Self {
        EnvelopeConfig {
            max_envelope_bytes: wire::DEFAULT_MAX_DECODE,
            max_recipients: 64,
        }
    }
}

/// Why an envelope could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is {len} bytes, over the limit of {limit}")]
    TooLarge { len: usize, limit: usize },
    #[error("envelope could not be decoded: {0}")]
    Decode(#[from] DecodeError),
    #[error("envelope could not be encoded: {0}")]
    Encode(#[from] EncodeError),
    #[error("an envelope must be sealed to at least one role key")]
    NoRecipients,
    #[error("{count} recipients, over the limit of {limit}")]
    TooManyRecipients { count: usize, limit: usize },
    #[error("key {0} is listed twice among the recipients")]
    DuplicateRecipient(Fingerprint),
    #[error("no held key opens this envelope; it opens with any of: {}", StanzaList(.sealed_to))]
    NoKey { sealed_to: Vec<StanzaRef> },
    #[error("no held key opens this age file")]
    NoMatchingIdentity,
    #[error("envelope header does not match its age payload: {0}")]
    HeaderMismatch(String),
    #[error("envelope is corrupt or was tampered with: {0}")]
    Tampered(String),
    #[error("not a readable age file: {0}")]
    MalformedAge(String),
    #[error("age file is encrypted to a passphrase, not to role keys")]
    PassphraseFile,
    #[error("age encryption failed: {0}")]
    Seal(String),
}

/// One entry of an envelope header: the key an X25519 stanza was made for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StanzaRef {
    pub role: RoleName,
    pub epoch: u32,
    #[serde(rename = "fp")]
    pub fingerprint: Fingerprint,
}

impl StanzaRef {
    fn of(key: &PublicRoleKey) -> Self {
        StanzaRef {
            role: key.role().clone(),
            epoch: key.epoch(),
            fingerprint: key.fingerprint(),
        }
    }
}

impl fmt::Display for StanzaRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} epoch {} ({})",
            self.role, self.epoch, self.fingerprint
        )
    }
}

struct StanzaList<'a>(&'a [StanzaRef]);

impl fmt::Display for StanzaList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// The clear header of an envelope: one [`StanzaRef`] per X25519 stanza of
/// the age payload, in stanza order. Never empty, at most [`MAX_STANZAS`]
/// entries, no fingerprint twice (checked when decoding).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawHeader")]
pub struct EnvelopeHeader {
    stanzas: Vec<StanzaRef>,
}

#[derive(Deserialize)]
struct RawHeader {
    stanzas: Vec<StanzaRef>,
}

impl TryFrom<RawHeader> for EnvelopeHeader {
    type Error = String;
    fn try_from(raw: RawHeader) -> Result<Self, String> {
        EnvelopeHeader::new(raw.stanzas).map_err(|e| e.to_string())
    }
}

impl EnvelopeHeader {
    fn new(stanzas: Vec<StanzaRef>) -> Result<Self, EnvelopeError> {
        if stanzas.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        if stanzas.len() > MAX_STANZAS {
            return Err(EnvelopeError::TooManyRecipients {
                count: stanzas.len(),
                limit: MAX_STANZAS,
            });
        }
        let mut seen = BTreeSet::new();
        for s in &stanzas {
            if !seen.insert(s.fingerprint) {
                return Err(EnvelopeError::DuplicateRecipient(s.fingerprint));
            }
        }
        Ok(EnvelopeHeader { stanzas })
    }

    /// The keys the envelope is sealed to, in age stanza order. Rotation
    /// uses this to find records that depend on a retired epoch.
    pub fn sealed_to(&self) -> &[StanzaRef] {
        &self.stanzas
    }

    /// Whether any listed key has this fingerprint.
    pub fn is_sealed_to(&self, fingerprint: &Fingerprint) -> bool {
        self.position(fingerprint).is_some()
    }

    /// The X25519 stanza index of the key with this fingerprint.
    pub fn position(&self, fingerprint: &Fingerprint) -> Option<usize> {
        self.stanzas
            .iter()
            .position(|s| &s.fingerprint == fingerprint)
    }

    /// Domain-separated BLAKE3 of the canonical CBOR of the header; carried
    /// in the age header's `slurp-header` stanza.
    fn digest(&self) -> Result<[u8; 32], EncodeError> {
        Ok(Self::digest_of(&wire::to_cbor(self)?))
    }

    fn digest_of(encoded: &[u8]) -> [u8; 32] {
        *blake3::Hasher::new_derive_key("slurp envelope header v1")
            .update(encoded)
            .finalize()
            .as_bytes()
    }
}

/// A sealed record: the clear [`EnvelopeHeader`] and the binary age file.
///
/// Encoded as framed CBOR of kind `ENVELOPE` (see `docs/crypto.md`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    header: EnvelopeHeader,
    #[serde(with = "serde_bytes")]
    age: Vec<u8>,
}

impl Framed for Envelope {
    const KIND: u16 = kinds::ENVELOPE;
    const NAME: &'static str = "envelope";
    const VERSION: u16 = 1;
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("header", &self.header)
            .field("age_bytes", &self.age.len())
            .finish()
    }
}

/// An age recipient that adds the header-binding stanza.
struct HeaderBinding(String);

impl age::Recipient for HeaderBinding {
    fn wrap_file_key(
        &self,
        _file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        Ok((
            vec![Stanza {
                tag: BINDING_TAG.to_string(),
                args: vec![self.0.clone()],
                body: Vec::new(),
            }],
            HashSet::new(),
        ))
    }
}

/// What went wrong inside [`TargetedIdentity::unwrap_stanzas`], kept so
/// the caller can report it precisely (age only sees "invalid header").
#[derive(Debug, Clone, PartialEq, Eq)]
enum OpenFault {
    StanzaCount { expected: usize, found: usize },
    Binding(&'static str),
    KeyRejected,
}

/// An age identity that knows which X25519 stanza is its own.
///
/// `unwrap_stanzas` checks the header-binding stanza, then unwraps the
/// `index`-th stanza tagged `X25519` (grease and binding stanzas are not
/// counted) with the inner identity: exactly one X25519 operation, whatever
/// the position of the stanza.
pub struct TargetedIdentity<'a, I: age::Identity> {
    inner: &'a I,
    index: usize,
    expected_stanzas: usize,
    binding: String,
    fault: Cell<Option<OpenFault>>,
}

impl<'a, I: age::Identity> TargetedIdentity<'a, I> {
    /// Targets the `index`-th X25519 stanza of a file whose header is
    /// `header`.
    pub fn new(inner: &'a I, header: &EnvelopeHeader, index: usize) -> Result<Self, EncodeError> {
        Ok(TargetedIdentity {
            inner,
            index,
            expected_stanzas: header.stanzas.len(),
            binding: hex::encode(header.digest()?),
            fault: Cell::new(None),
        })
    }

    fn fail(&self, fault: OpenFault) -> Option<Result<FileKey, DecryptError>> {
        self.fault.set(Some(fault));
        Some(Err(DecryptError::InvalidHeader))
    }
}

impl<I: age::Identity> age::Identity for TargetedIdentity<'_, I> {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, DecryptError>> {
        self.inner.unwrap_stanza(stanza)
    }

    fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, DecryptError>> {
        let mut bindings = stanzas.iter().filter(|s| s.tag == BINDING_TAG);
        match (bindings.next(), bindings.next()) {
            (Some(b), None) => {
                if b.args.len() != 1 || !b.body.is_empty() {
                    return self.fail(OpenFault::Binding("binding stanza is malformed"));
                }
                if b.args[0] != self.binding {
                    return self.fail(OpenFault::Binding(
                        "clear header differs from the header bound into the age file",
                    ));
                }
            }
            (None, _) => return self.fail(OpenFault::Binding("age file has no binding stanza")),
            (Some(_), Some(_)) => {
                return self.fail(OpenFault::Binding("age file has several binding stanzas"));
            }
        }
        let found = stanzas.iter().filter(|s| s.tag == X25519_TAG).count();
        if found != self.expected_stanzas {
            return self.fail(OpenFault::StanzaCount {
                expected: self.expected_stanzas,
                found,
            });
        }
        let Some(own) = stanzas
            .iter()
            .filter(|s| s.tag == X25519_TAG)
            .nth(self.index)
        else {
            return self.fail(OpenFault::StanzaCount {
                expected: self.index + 1,
                found,
            });
        };
        match self.inner.unwrap_stanza(own) {
            Some(result) => Some(result),
            None => self.fail(OpenFault::KeyRejected),
        }
    }
}

impl Envelope {
    /// Seals `plaintext` to `recipients` (in that stanza order) with the
    /// default limits.
    pub fn seal(plaintext: &[u8], recipients: &[PublicRoleKey]) -> Result<Self, EnvelopeError> {
        Self::seal_with(plaintext, recipients, &EnvelopeConfig::default())
    }

    /// Seals `plaintext` to `recipients`, one age file with one X25519
    /// stanza per recipient in the order given. Fails on an empty or
    /// oversized recipient list, a key listed twice, or a result over
    /// `config.max_envelope_bytes`.
    pub fn seal_with(
        plaintext: &[u8],
        recipients: &[PublicRoleKey],
        config: &EnvelopeConfig,
    ) -> Result<Self, EnvelopeError> {
        let limit = config.max_recipients.min(MAX_STANZAS);
        if recipients.len() > limit {
            return Err(EnvelopeError::TooManyRecipients {
                count: recipients.len(),
                limit,
            });
        }
        if plaintext.len() > config.max_envelope_bytes {
            return Err(EnvelopeError::TooLarge {
                len: plaintext.len(),
                limit: config.max_envelope_bytes,
            });
        }
        let header = EnvelopeHeader::new(recipients.iter().map(StanzaRef::of).collect())?;
        let encoded_header = wire::to_cbor(&header)?;
        let binding = HeaderBinding(hex::encode(EnvelopeHeader::digest_of(&encoded_header)));
        let stanzas = recipients
            .iter()
            .map(|r| r.recipient() as &dyn age::Recipient)
            .chain(std::iter::once(&binding as &dyn age::Recipient));
        let encryptor =
            Encryptor::with_recipients(stanzas).map_err(|e| EnvelopeError::Seal(e.to_string()))?;
        // Header: ~100 bytes per stanza; payload: 16 bytes of tag per 64 KiB.
        let mut age = Vec::with_capacity(plaintext.len() + 200 + 120 * recipients.len());
        let mut writer = encryptor
            .wrap_output(&mut age)
            .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
        writer
            .write_all(plaintext)
            .and_then(|_| writer.finish().map(|_| ()))
            .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
        // Encoded size: the header, the age bytes, and at most 24 bytes of
        // framing (frame array, kind, version, body map, two keys, byte
        // string length).
        let encoded_len = age.len() + encoded_header.len() + 24;
        if encoded_len > config.max_envelope_bytes {
            return Err(EnvelopeError::TooLarge {
                len: encoded_len,
                limit: config.max_envelope_bytes,
            });
        }
        Ok(Envelope { header, age })
    }

    /// The clear header.
    pub fn header(&self) -> &EnvelopeHeader {
        &self.header
    }

    /// The keys the envelope is sealed to, in stanza order.
    pub fn sealed_to(&self) -> &[StanzaRef] {
        self.header.sealed_to()
    }

    /// The binary age file: decryptable by `age -d -i <identity file>`.
    pub fn age_ciphertext(&self) -> &[u8] {
        &self.age
    }

    /// Encodes as framed CBOR.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EnvelopeError> {
        Ok(self.encode()?)
    }

    /// Decodes framed CBOR, refusing input over the configured size and
    /// headers with more recipients than configured. Never panics.
    pub fn from_bytes(bytes: &[u8], config: &EnvelopeConfig) -> Result<Self, EnvelopeError> {
        check_size(bytes.len(), config)?;
        let env = Envelope::decode_limited(bytes, config.max_envelope_bytes)?;
        check_recipients(&env.header, config)?;
        Ok(env)
    }

    /// Opens with whichever listed key the keyring holds (the first in
    /// header order), performing exactly one X25519 unwrap. The plaintext is
    /// zeroed when dropped.
    ///
    /// Errors: [`EnvelopeError::NoKey`] listing the keys that would open it;
    /// [`EnvelopeError::HeaderMismatch`] or [`EnvelopeError::Tampered`] if
    /// the header or ciphertext was altered.
    pub fn open(&self, keyring: &Keyring) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let (index, key) = self
            .header
            .stanzas
            .iter()
            .enumerate()
            .find_map(|(i, s)| keyring.get(&s.fingerprint).map(|k| (i, k)))
            .ok_or_else(|| EnvelopeError::NoKey {
                sealed_to: self.header.stanzas.clone(),
            })?;
        self.open_at(index, key.identity())
    }

    /// Opens with one given key, which must be listed in the header.
    pub fn open_with_key(&self, key: &RoleKey) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let index =
            self.header
                .position(&key.fingerprint())
                .ok_or_else(|| EnvelopeError::NoKey {
                    sealed_to: self.header.stanzas.clone(),
                })?;
        self.open_at(index, key.identity())
    }

    /// Opens with `identity`, unwrapping only the `index`-th X25519 stanza.
    fn open_at<I: age::Identity>(
        &self,
        index: usize,
        identity: &I,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let targeted = TargetedIdentity::new(identity, &self.header, index)?;
        let decryptor = Decryptor::new_buffered(&self.age[..]).map_err(|e| match e {
            DecryptError::UnknownFormat => EnvelopeError::MalformedAge(e.to_string()),
            other => EnvelopeError::Tampered(format!("age header: {other}")),
        })?;
        let reader = decryptor
            .decrypt(std::iter::once(&targeted as &dyn age::Identity))
            .map_err(|e| match targeted.fault.take() {
                Some(OpenFault::Binding(why)) => EnvelopeError::HeaderMismatch(why.to_string()),
                Some(OpenFault::StanzaCount { expected, found }) => EnvelopeError::HeaderMismatch(
                    format!("header lists {expected} keys, age file has {found} X25519 stanzas"),
                ),
                Some(OpenFault::KeyRejected) => EnvelopeError::Tampered(format!(
                    "stanza {index} does not open with the key the header names for it"
                )),
                None => EnvelopeError::Tampered(e.to_string()),
            })?;
        read_plaintext(reader, self.age.len())
    }

    /// Opens with any held key and seals the plaintext again to
    /// `new_recipients`. Needs one held key of the old set, nothing more;
    /// the plaintext never leaves zeroizing memory.
    /// Uses the default limits; see [`Envelope::rewrap_with`].
    pub fn rewrap(
        &self,
        keyring: &Keyring,
        new_recipients: &[PublicRoleKey],
    ) -> Result<Envelope, EnvelopeError> {
        self.rewrap_with(keyring, new_recipients, &EnvelopeConfig::default())
    }

    /// [`Envelope::rewrap`] with explicit limits for the new envelope.
    pub fn rewrap_with(
        &self,
        keyring: &Keyring,
        new_recipients: &[PublicRoleKey],
        config: &EnvelopeConfig,
    ) -> Result<Envelope, EnvelopeError> {
        let plaintext = self.open(keyring)?;
        Envelope::seal_with(&plaintext, new_recipients, config)
    }
}

fn check_size(len: usize, config: &EnvelopeConfig) -> Result<(), EnvelopeError> {
    if len > config.max_envelope_bytes {
        return Err(EnvelopeError::TooLarge {
            len,
            limit: config.max_envelope_bytes,
        });
    }
    Ok(())
}

fn check_recipients(header: &EnvelopeHeader, config: &EnvelopeConfig) -> Result<(), EnvelopeError> {
    if header.stanzas.len() > config.max_recipients {
        return Err(EnvelopeError::TooManyRecipients {
            count: header.stanzas.len(),
            limit: config.max_recipients,
        });
    }
    Ok(())
}

/// Reads a decrypting stream into zeroizing memory sized up front (the
/// plaintext is shorter than the ciphertext), so no reallocation leaves a
/// copy of the plaintext behind.
fn read_plaintext<R: Read>(
    mut reader: R,
    ciphertext_len: usize,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let mut out = Zeroizing::new(Vec::with_capacity(ciphertext_len + 64));
    reader
        .read_to_end(&mut out)
        .map_err(|e| EnvelopeError::Tampered(format!("age payload: {e}")))?;
    Ok(out)
}

/// Seals `plaintext` to `recipients`; see [`Envelope::seal_with`].
pub fn seal(
    plaintext: &[u8],
    recipients: &[PublicRoleKey],
    config: &EnvelopeConfig,
) -> Result<Envelope, EnvelopeError> {
    Envelope::seal_with(plaintext, recipients, config)
}

/// Opens an envelope with a keyring; see [`Envelope::open`].
pub fn open(envelope: &Envelope, keyring: &Keyring) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    envelope.open(keyring)
}

/// Decodes and opens encoded envelope bytes.
pub fn open_bytes(
    bytes: &[u8],
    keyring: &Keyring,
    config: &EnvelopeConfig,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    Envelope::from_bytes(bytes, config)?.open(keyring)
}

/// Re-seals an envelope to a new recipient set; see [`Envelope::rewrap`].
pub fn rewrap(
    envelope: &Envelope,
    keyring: &Keyring,
    new_recipients: &[PublicRoleKey],
) -> Result<Envelope, EnvelopeError> {
    envelope.rewrap(keyring, new_recipients)
}

#[derive(Deserialize)]
struct PeekBody {
    header: EnvelopeHeader,
    /// Required to be present, never kept.
    #[serde(rename = "age")]
    _age: IgnoredAny,
}

/// Reads only the header of encoded envelope bytes, without decrypting or
/// keeping the ciphertext. Checks kind, version and limits like
/// [`Envelope::from_bytes`].
pub fn peek_header(bytes: &[u8], config: &EnvelopeConfig) -> Result<EnvelopeHeader, EnvelopeError> {
    check_size(bytes.len(), config)?;
    let (kind, version, body): (u16, u16, PeekBody) =
        wire::from_cbor(bytes, config.max_envelope_bytes)?;
    if kind != Envelope::KIND {
        return Err(DecodeError::WrongKind {
            expected: Envelope::NAME,
            found: kind,
        }
        .into());
    }
    if !(Envelope::MIN_VERSION..=Envelope::VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            kind: Envelope::NAME,
            found: version,
            min: Envelope::MIN_VERSION,
            max: Envelope::VERSION,
        }
        .into());
    }
    check_recipients(&body.header, config)?;
    Ok(body.header)
}

/// Decrypts a plain age file (binary or ASCII-armored), as written by
/// `age -r <recipient>`, with the keyring's private keys.
///
/// A plain age file does not say which key it is for, so each held key is
/// tried in turn; use envelopes for anything on the hot path.
pub fn open_age_file(
    bytes: &[u8],
    keyring: &Keyring,
    config: &EnvelopeConfig,
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    check_size(bytes.len(), config)?;
    let decryptor = Decryptor::new_buffered(ArmoredReader::new(bytes))
        .map_err(|e| EnvelopeError::MalformedAge(e.to_string()))?;
    if decryptor.is_scrypt() {
        return Err(EnvelopeError::PassphraseFile);
    }
    let reader = decryptor
        .decrypt(keyring.keys().map(|k| k.identity() as &dyn age::Identity))
        .map_err(|e| match e {
            DecryptError::NoMatchingKeys => EnvelopeError::NoMatchingIdentity,
            other => EnvelopeError::Tampered(other.to_string()),
        })?;
    read_plaintext(reader, bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn role(s: &str) -> RoleName {
        RoleName::new(s).unwrap()
    }

    fn keys(n: usize) -> Vec<RoleKey> {
        (0..n)
            .map(|i| RoleKey::generate(role(&format!("role{i}")), 1))
            .collect()
    }

    fn publics(keys: &[RoleKey]) -> Vec<PublicRoleKey> {
        keys.iter().map(|k| k.public().clone()).collect()
    }

    fn ring_of(keys: &[&RoleKey]) -> Keyring {
        let mut ring = Keyring::new();
        for k in keys {
            ring.insert((*k).clone()).unwrap();
        }
        ring
    }

    /// Counts X25519 unwrap attempts of an inner identity.
    struct Counting<'a> {
        inner: &'a age::x25519::Identity,
        calls: AtomicUsize,
    }

    impl age::Identity for Counting<'_> {
        fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, DecryptError>> {
            if stanza.tag == X25519_TAG {
                self.calls.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.unwrap_stanza(stanza)
        }
    }

    /// Records the stanzas of an age header and opens nothing.
    #[derive(Default)]
    struct Recorder(std::cell::RefCell<Vec<Stanza>>);

    impl age::Identity for Recorder {
        fn unwrap_stanza(&self, _: &Stanza) -> Option<Result<FileKey, DecryptError>> {
            None
        }
        fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, DecryptError>> {
            *self.0.borrow_mut() = stanzas
                .iter()
                .map(|s| Stanza {
                    tag: s.tag.clone(),
                    args: s.args.clone(),
                    body: s.body.clone(),
                })
                .collect();
            None
        }
    }

    fn stanzas_of(age_file: &[u8]) -> Vec<Stanza> {
        let rec = Recorder::default();
        let d = Decryptor::new_buffered(age_file).unwrap();
        assert!(
            d.decrypt(std::iter::once(&rec as &dyn age::Identity))
                .is_err()
        );
        rec.0.into_inner()
    }

    #[test]
    fn round_trip_each_role() {
        let ks = keys(3);
        let env = Envelope::seal(b"the plan", &publics(&ks)).unwrap();
        for k in &ks {
            let ring = ring_of(&[k]);
            assert_eq!(&env.open(&ring).unwrap()[..], b"the plan");
            assert_eq!(&env.open_with_key(k).unwrap()[..], b"the plan");
        }
        let bytes = env.to_bytes().unwrap();
        let back = Envelope::from_bytes(&bytes, &EnvelopeConfig::default()).unwrap();
        assert_eq!(back, env);
        let header = peek_header(&bytes, &EnvelopeConfig::default()).unwrap();
        assert_eq!(header.sealed_to(), env.sealed_to());
        assert_eq!(header.sealed_to()[2].role, role("role2"));
    }

    #[test]
    fn opening_unwraps_exactly_one_stanza_even_when_last() {
        let ks = keys(5);
        let env = Envelope::seal(b"x", &publics(&ks)).unwrap();
        for (i, k) in ks.iter().enumerate() {
            let counting = Counting {
                inner: k.identity(),
                calls: AtomicUsize::new(0),
            };
            let pt = env.open_at(i, &counting).unwrap();
            assert_eq!(&pt[..], b"x");
            assert_eq!(counting.calls.load(Ordering::SeqCst), 1, "stanza {i}");
        }
    }

    #[test]
    fn stanza_order_matches_header_over_many_seals() {
        let ks = keys(4);
        let pubs = publics(&ks);
        let mut saw_grease = false;
        for round in 0..40 {
            // Rotate the order so every key takes every position.
            let mut order = pubs.clone();
            order.rotate_left(round % 4);
            let env = Envelope::seal(b"y", &order).unwrap();
            let stanzas = stanzas_of(env.age_ciphertext());
            saw_grease |= stanzas.iter().any(|s| s.tag.ends_with("-grease"));
            let x: Vec<&Stanza> = stanzas.iter().filter(|s| s.tag == X25519_TAG).collect();
            assert_eq!(x.len(), 4);
            assert_eq!(stanzas.iter().filter(|s| s.tag == BINDING_TAG).count(), 1);
            for (i, entry) in env.sealed_to().iter().enumerate() {
                assert_eq!(entry.fingerprint, order[i].fingerprint());
                let key = ks
                    .iter()
                    .find(|k| k.fingerprint() == entry.fingerprint)
                    .unwrap();
                assert!(
                    matches!(
                        age::Identity::unwrap_stanza(key.identity(), x[i]),
                        Some(Ok(_))
                    ),
                    "stanza {i} belongs to {entry}"
                );
                assert_eq!(&env.open(&ring_of(&[key])).unwrap()[..], b"y");
            }
        }
        assert!(
            saw_grease,
            "age greases headers; the mapping must ignore it"
        );
    }

    #[test]
    fn no_key_lists_what_would_open() {
        let ks = keys(2);
        let env = Envelope::seal(b"z", &publics(&ks)).unwrap();
        let outsider = RoleKey::generate(role("outsider"), 9);
        let err = env.open(&ring_of(&[&outsider])).unwrap_err();
        match &err {
            EnvelopeError::NoKey { sealed_to } => assert_eq!(sealed_to, env.sealed_to()),
            other => panic!("expected NoKey, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("role0 epoch 1") && msg.contains("role1 epoch 1"),
            "{msg}"
        );
        assert!(matches!(
            env.open_with_key(&outsider),
            Err(EnvelopeError::NoKey { .. })
        ));
    }

    #[test]
    fn clear_header_edits_are_detected() {
        let ks = keys(3);
        let env = Envelope::seal(b"secret", &publics(&ks)).unwrap();
        let ring = ring_of(&[&ks[0]]);

        // Relabel a stanza the reader does not use: still detected.
        let mut relabeled = env.clone();
        relabeled.header.stanzas[2].role = role("admin");
        assert!(matches!(
            relabeled.open(&ring),
            Err(EnvelopeError::HeaderMismatch(_))
        ));

        // Swap attributions: the reader is sent to someone else's stanza.
        let mut swapped = env.clone();
        swapped.header.stanzas.swap(0, 1);
        assert!(matches!(
            swapped.open(&ring),
            Err(EnvelopeError::HeaderMismatch(_))
        ));

        // Drop an entry.
        let mut dropped = env.clone();
        dropped.header.stanzas.pop();
        assert!(matches!(
            dropped.open(&ring),
            Err(EnvelopeError::HeaderMismatch(_))
        ));
    }

    #[test]
    fn foreign_age_file_under_a_header_is_refused() {
        // A valid age file without a binding stanza, wrapped in a header.
        let ks = keys(1);
        let mut plain = vec![];
        let enc = Encryptor::with_recipients(std::iter::once(
            ks[0].public().recipient() as &dyn age::Recipient
        ))
        .unwrap();
        let mut w = enc.wrap_output(&mut plain).unwrap();
        w.write_all(b"p").unwrap();
        w.finish().unwrap();
        let env = Envelope {
            header: EnvelopeHeader::new(vec![StanzaRef::of(ks[0].public())]).unwrap(),
            age: plain,
        };
        assert!(matches!(
            env.open(&ring_of(&[&ks[0]])),
            Err(EnvelopeError::HeaderMismatch(_))
        ));
    }

    #[test]
    fn rewrap_moves_to_new_recipients() {
        let old = keys(2);
        let env = Envelope::seal(b"rotate me", &publics(&old)).unwrap();
        let new1 = RoleKey::generate(role("role0"), 2);
        let new2 = RoleKey::generate(role("role1"), 2);
        let ring = ring_of(&[&old[1]]);
        let re = env
            .rewrap(&ring, &[new1.public().clone(), new2.public().clone()])
            .unwrap();
        assert_eq!(re.sealed_to()[0].epoch, 2);
        assert_eq!(&re.open(&ring_of(&[&new2])).unwrap()[..], b"rotate me");
        assert!(matches!(re.open(&ring), Err(EnvelopeError::NoKey { .. })));
    }

    #[test]
    fn seal_refuses_bad_recipient_sets() {
        let ks = keys(2);
        assert!(matches!(
            Envelope::seal(b"a", &[]),
            Err(EnvelopeError::NoRecipients)
        ));
        let dup = vec![ks[0].public().clone(), ks[0].public().clone()];
        assert!(matches!(
            Envelope::seal(b"a", &dup),
            Err(EnvelopeError::DuplicateRecipient(_))
        ));
        let tight = EnvelopeConfig {
            max_envelope_bytes: 1024,
            max_recipients: 1,
        };
        assert!(matches!(
            Envelope::seal_with(b"a", &publics(&ks), &tight),
            Err(EnvelopeError::TooManyRecipients { count: 2, limit: 1 })
        ));
        assert!(matches!(
            Envelope::seal_with(&[0u8; 2000], &publics(&ks[..1]), &tight),
            Err(EnvelopeError::TooLarge { .. })
        ));
        let env = Envelope::seal(&[7u8; 900], &publics(&ks)).unwrap();
        let bytes = env.to_bytes().unwrap();
        // What seal accepts, decoding accepts: the bound is never short.
        let exact = EnvelopeConfig {
            max_envelope_bytes: bytes.len(),
            max_recipients: 2,
        };
        assert!(Envelope::from_bytes(&bytes, &exact).is_ok());
        assert!(matches!(
            Envelope::from_bytes(&bytes, &tight),
            Err(EnvelopeError::TooLarge { .. })
        ));
        assert!(matches!(
            peek_header(&bytes, &tight),
            Err(EnvelopeError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_and_truncation_are_typed_errors() {
        let ks = keys(2);
        let env = Envelope::seal(&[1u8; 300], &publics(&ks)).unwrap();
        let bytes = env.to_bytes().unwrap();
        let ring = ring_of(&[&ks[1]]);
        let cfg = EnvelopeConfig::default();
        for cut in 0..bytes.len() {
            match open_bytes(&bytes[..cut], &ring, &cfg) {
                Err(_) => {}
                Ok(_) => panic!("truncated at {cut} opened"),
            }
            let _ = peek_header(&bytes[..cut], &cfg);
        }
        assert!(matches!(
            peek_header(b"\x00", &cfg),
            Err(EnvelopeError::Decode(_))
        ));
        // Right shape, wrong kind.
        let wrong = wire::to_cbor(&(kinds::KEY_SHARE, 1u16, &env)).unwrap();
        assert!(matches!(
            peek_header(&wrong, &cfg),
            Err(EnvelopeError::Decode(DecodeError::WrongKind { .. }))
        ));
        assert!(matches!(
            Envelope::from_bytes(&wrong, &cfg),
            Err(EnvelopeError::Decode(DecodeError::WrongKind { .. }))
        ));
        // A header that decodes but breaks the rules.
        let empty = wire::to_cbor(&(
            kinds::ENVELOPE,
            1u16,
            Envelope {
                header: EnvelopeHeader { stanzas: vec![] },
                age: env.age.clone(),
            },
        ))
        .unwrap();
        assert!(matches!(
            Envelope::from_bytes(&empty, &cfg),
            Err(EnvelopeError::Decode(_))
        ));
        // A truncated age payload inside a well-formed envelope.
        let mut short = env.clone();
        short.age.truncate(short.age.len() - 1);
        assert!(matches!(short.open(&ring), Err(EnvelopeError::Tampered(_))));
    }

    #[test]
    fn open_age_file_reads_plain_age() {
        let k = RoleKey::generate(role("developer"), 1);
        let plain = age::encrypt(k.public().recipient(), b"from the cli").unwrap();
        let ring = ring_of(&[&k]);
        let cfg = EnvelopeConfig::default();
        assert_eq!(
            &open_age_file(&plain, &ring, &cfg).unwrap()[..],
            b"from the cli"
        );
        let armored = age::encrypt_and_armor(k.public().recipient(), b"armored").unwrap();
        assert_eq!(
            &open_age_file(armored.as_bytes(), &ring, &cfg).unwrap()[..],
            b"armored"
        );
        let other = ring_of(&[&RoleKey::generate(role("developer"), 2)]);
        assert!(matches!(
            open_age_file(&plain, &other, &cfg),
            Err(EnvelopeError::NoMatchingIdentity)
        ));
        assert!(matches!(
            open_age_file(b"not age", &ring, &cfg),
            Err(EnvelopeError::MalformedAge(_))
        ));
    }
}
