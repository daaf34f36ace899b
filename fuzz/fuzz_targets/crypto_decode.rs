#![no_main]
//! Decoders of the crypto crate that read untrusted bytes: envelopes (from
//! the network and the store), their headers, key shares and plain age
//! files. None may panic.
use libfuzzer_sys::fuzz_target;
use slurp_crypto::{Envelope, EnvelopeConfig, KeyShare, Keyring, open_age_file, peek_header};

fuzz_target!(|data: &[u8]| {
    let cfg = EnvelopeConfig::default();
    let _ = Envelope::from_bytes(data, &cfg);
    let _ = peek_header(data, &cfg);
    let _ = KeyShare::from_bytes(data);
    let _ = open_age_file(data, &Keyring::new(), &cfg);
});
