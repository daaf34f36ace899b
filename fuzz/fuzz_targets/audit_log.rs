#![no_main]
//! The audit log verifier over arbitrary file contents: it must report a
//! typed error (or success), never panic.
use libfuzzer_sys::fuzz_target;
use slurp_crypto::{AuditConfig, verify_file};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("slurp-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("audit.log");
    if std::fs::write(&path, data).is_ok() {
        let _ = verify_file(&path, None, &AuditConfig::default());
    }
});
