//! Envelope, Shamir and audit costs, each beside the raw age floor it is
//! built on.
//!
//! Floors: `age_floor/seal_1k_3_recipients` (plain age encryption to three
//! X25519 recipients) and `age_floor/open_blind_stanza_{1,3}` (plain age
//! decryption whose identity's stanza is first or third, so 1 or 3 stanzas
//! are tried). Ours: `envelope/seal_1k_3_roles` and
//! `envelope/open_1k_role_{0,1,2}` (the role's stanza position); the open
//! must cost the same whichever role reads.

use std::hint::black_box;
use std::io::{Read, Write};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use slurp_crypto::{
    AuditAction, AuditConfig, AuditLog, AuditRecord, Envelope, Keyring, RoleKey, recover, split,
};
use slurp_protocol::RoleName;

fn role_keys() -> Vec<RoleKey> {
    ["admin", "architect", "developer"]
        .iter()
        .map(|r| RoleKey::generate(RoleName::new(*r).unwrap(), 1))
        .collect()
}

fn age_seal(recipients: &[age::x25519::Recipient], plaintext: &[u8]) -> Vec<u8> {
    let enc = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .unwrap();
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    let mut w = enc.wrap_output(&mut out).unwrap();
    w.write_all(plaintext).unwrap();
    w.finish().unwrap();
    out
}

fn age_open(file: &[u8], identity: &age::x25519::Identity) -> Vec<u8> {
    let d = age::Decryptor::new_buffered(file).unwrap();
    let mut r = d
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .unwrap();
    let mut out = Vec::with_capacity(file.len());
    r.read_to_end(&mut out).unwrap();
    out
}

fn envelopes(c: &mut Criterion) {
    let keys = role_keys();
    let plaintext = vec![0x5au8; 1024];
    let recipients: Vec<age::x25519::Recipient> = keys
        .iter()
        .map(|k| k.public().recipient().clone())
        .collect();
    let publics: Vec<_> = keys.iter().map(|k| k.public().clone()).collect();

    let mut floor = c.benchmark_group("age_floor");
    floor.bench_function("seal_1k_3_recipients", |b| {
        b.iter(|| age_seal(black_box(&recipients), black_box(&plaintext)))
    });
    let plain_file = age_seal(&recipients, &plaintext);
    floor.bench_function("open_blind_stanza_1", |b| {
        b.iter(|| age_open(black_box(&plain_file), keys[0].identity()))
    });
    floor.bench_function("open_blind_stanza_3", |b| {
        b.iter(|| age_open(black_box(&plain_file), keys[2].identity()))
    });
    floor.finish();

    let mut ours = c.benchmark_group("envelope");
    ours.bench_function("seal_1k_3_roles", |b| {
        b.iter(|| Envelope::seal(black_box(&plaintext), black_box(&publics)).unwrap())
    });
    let env = Envelope::seal(&plaintext, &publics).unwrap();
    for (i, key) in keys.iter().enumerate() {
        let mut ring = Keyring::new();
        ring.insert(key.clone()).unwrap();
        ours.bench_function(format!("open_1k_role_{i}"), |b| {
            b.iter(|| env.open(black_box(&ring)).unwrap())
        });
    }
    ours.finish();
}

fn shamir(c: &mut Criterion) {
    let secret = [0x42u8; 32];
    let mut g = c.benchmark_group("shamir");
    g.bench_function("split_32b_3_of_5", |b| {
        b.iter(|| split(black_box(&secret), 3, 5).unwrap())
    });
    let shares = split(&secret, 3, 5).unwrap();
    let three = &shares[1..4];
    g.bench_function("recover_32b_3_of_5", |b| {
        b.iter(|| recover(black_box(three)).unwrap())
    });
    g.finish();
}

fn audit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path().join("audit.log"), AuditConfig::default()).unwrap();
    let record = AuditRecord::allow(
        "token-7",
        AuditAction::Read,
        "ucxl://claude:developer@slurp:crypto/src/envelope.rs",
    )
    .with_role(RoleName::new("developer").unwrap());
    let mut g = c.benchmark_group("audit");
    g.bench_function("append_durable", |b| {
        b.iter(|| log.append(black_box(&record)).unwrap())
    });
    let batch: Vec<AuditRecord> = std::iter::repeat_n(record.clone(), 16).collect();
    g.bench_function("append_batch_16_durable", |b| {
        b.iter_batched(
            || batch.clone(),
            |batch| log.append_batch(&batch).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, envelopes, shamir, audit);
criterion_main!(benches);
