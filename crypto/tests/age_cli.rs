//! Interoperability with the stock `age` command-line tool (Debian package
//! `age`): envelopes must open with `age -d`, and files written by `age -r`
//! (binary and armored) must open with slurp-crypto. These tests fail, not
//! skip, when the tool is missing.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use slurp_crypto::{
    Envelope, EnvelopeConfig, EnvelopeError, ExposeSecret, Keyring, RoleKey, open_age_file,
};
use slurp_protocol::RoleName;

fn age_bin() -> &'static str {
    match Command::new("age").arg("--version").output() {
        Ok(out) if out.status.success() => "age",
        _ => panic!(
            "the `age` command is missing: install the Debian package `age` \
             (apt-get install -y age) to run the interoperability tests"
        ),
    }
}

fn role(s: &str) -> RoleName {
    RoleName::new(s).unwrap()
}

fn write_identity(dir: &Path, key: &RoleKey) -> std::path::PathBuf {
    let path = dir.join(format!("{}.identity", key.role()));
    let mut f = fs::File::create(&path).unwrap();
    writeln!(f, "# public key: {}", key.public().recipient()).unwrap();
    writeln!(f, "{}", key.to_secret_string().expose_secret()).unwrap();
    path
}

fn age_decrypt(identity: &Path, input: &Path) -> Vec<u8> {
    let out = Command::new(age_bin())
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn age_encrypt(recipient: &str, armor: bool, plaintext: &[u8]) -> Vec<u8> {
    let mut cmd = Command::new(age_bin());
    cmd.arg("-r").arg(recipient);
    if armor {
        cmd.arg("-a");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Feed stdin from another thread: age writes output while reading, and
    // a full stdout pipe would otherwise block both sides.
    let mut stdin = child.stdin.take().unwrap();
    let input = plaintext.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "age -r failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn age_cli_opens_every_stanza_of_an_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<RoleKey> = ["admin", "architect", "developer"]
        .iter()
        .map(|r| RoleKey::generate(role(r), 1))
        .collect();
    let publics: Vec<_> = keys.iter().map(|k| k.public().clone()).collect();
    let plaintext: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let env = Envelope::seal(&plaintext, &publics).unwrap();
    let payload = dir.path().join("record.age");
    fs::write(&payload, env.age_ciphertext()).unwrap();
    for key in &keys {
        let identity = write_identity(dir.path(), key);
        assert_eq!(
            age_decrypt(&identity, &payload),
            plaintext,
            "role {}",
            key.role()
        );
    }
}

#[test]
fn files_from_the_age_cli_open_binary_and_armored() {
    let key = RoleKey::generate(role("developer"), 4);
    let mut ring = Keyring::new();
    ring.insert(RoleKey::generate(role("observer"), 1)).unwrap();
    ring.insert(key.clone()).unwrap();
    let recipient = key.public().recipient().to_string();
    let config = EnvelopeConfig::default();
    for (armor, plaintext) in [
        (false, b"binary from age -r".to_vec()),
        (true, b"armored from age -a -r".to_vec()),
        (false, vec![9u8; 200_000]),
    ] {
        let file = age_encrypt(&recipient, armor, &plaintext);
        if armor {
            assert!(file.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----"));
        }
        let opened = open_age_file(&file, &ring, &config).unwrap();
        assert_eq!(&opened[..], &plaintext[..]);
    }
    let stranger = RoleKey::generate(role("developer"), 5);
    let file = age_encrypt(&stranger.public().recipient().to_string(), false, b"x");
    assert!(matches!(
        open_age_file(&file, &ring, &config),
        Err(EnvelopeError::NoMatchingIdentity)
    ));
}
