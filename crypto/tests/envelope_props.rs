//! Properties of envelopes over random plaintexts, recipient sets and
//! tampering.

use proptest::prelude::*;
use slurp_crypto::{Envelope, EnvelopeConfig, Keyring, RoleKey, open_bytes};
use slurp_protocol::{RoleName, RoleSet};

fn keys() -> Vec<RoleKey> {
    (0..6)
        .map(|i| RoleKey::generate(RoleName::new(format!("role{i}")).unwrap(), 1))
        .collect()
}

fn ring(keys: &[&RoleKey]) -> Keyring {
    let mut r = Keyring::new();
    for k in keys {
        r.insert((*k).clone()).unwrap();
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Sealed to a random subset, every member opens it and no outsider
    /// does.
    #[test]
    fn round_trip_random_subsets(
        plaintext in proptest::collection::vec(any::<u8>(), 0..4096),
        members in proptest::collection::btree_set(0usize..6, 1..6),
    ) {
        let all = keys();
        let chosen: Vec<&RoleKey> = members.iter().map(|&i| &all[i]).collect();
        let publics: Vec<_> = chosen.iter().map(|k| k.public().clone()).collect();
        let env = Envelope::seal(&plaintext, &publics).unwrap();
        let bytes = env.to_bytes().unwrap();
        let cfg = EnvelopeConfig::default();
        for (i, k) in all.iter().enumerate() {
            let result = open_bytes(&bytes, &ring(&[k]), &cfg);
            if members.contains(&i) {
                prop_assert_eq!(&result.unwrap()[..], &plaintext[..]);
            } else {
                prop_assert!(result.is_err());
            }
        }
    }

    /// Changing any byte of an encoded envelope never opens to different
    /// plaintext.
    #[test]
    fn tampering_never_yields_wrong_plaintext(
        idx in any::<prop::sample::Index>(),
        delta in 1u8..=255,
        reader in 0usize..3,
    ) {
        let all = keys();
        let publics: Vec<_> = all[..3].iter().map(|k| k.public().clone()).collect();
        let plaintext = b"decisions about src/auth/login.rs".repeat(8);
        let env = Envelope::seal(&plaintext, &publics).unwrap();
        let mut bytes = env.to_bytes().unwrap();
        let i = idx.index(bytes.len());
        bytes[i] = bytes[i].wrapping_add(delta);
        if let Ok(opened) = open_bytes(&bytes, &ring(&[&all[reader]]), &EnvelopeConfig::default()) {
            prop_assert_eq!(&opened[..], &plaintext[..]);
        }
    }
}

/// Sealing to a record's reader closure: each role that may read opens it,
/// with only its own key.
#[test]
fn reader_closure_of_the_default_roles() {
    let roles = RoleSet::default();
    let mut writer = Keyring::new();
    let mut held = Vec::new();
    for r in roles.roles() {
        let k = RoleKey::generate(r.clone(), 1);
        writer.add_public(k.public().clone()).unwrap();
        held.push(k);
    }
    let closure = roles
        .reader_closure(&[RoleName::new("developer").unwrap()])
        .unwrap();
    let env = Envelope::seal(b"ctx", &writer.recipients_for(&closure).unwrap()).unwrap();
    for k in &held {
        let opened = env.open(&ring(&[k]));
        assert_eq!(opened.is_ok(), closure.contains(k.role()), "{}", k.role());
    }
}
