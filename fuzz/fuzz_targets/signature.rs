//! Arbitrary bytes as a signed `.kpatch` file (a header, contents, a signature trailer) and
//! as a key file line: errors are fine, panics are not, and nothing verifies against a key
//! that did not sign it.

#![no_main]

use std::path::Path;

use kpatch_trust::keyring::Keyring;
use kpatch_trust::signature::read_signature;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_signature(data);
    // A header whose total_size puts most of the input in the trailer.
    let mut file = vec![0u8; 568];
    file[160..164].copy_from_slice(&568u32.to_le_bytes());
    file.extend_from_slice(data);
    let _ = read_signature(&file);
    let _ = Keyring::from_text(&String::from_utf8_lossy(data), Path::new("fuzz"));
    let keys = test_keys();
    assert!(
        keys.verify(&file).is_err(),
        "no fuzz input is signed by the test key"
    );
});

/// A keyring of one fixed Ed25519 public key.
fn test_keys() -> Keyring {
    Keyring::from_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL8G76/W0cHxNJOLkddLOKLTrmHpRjY27kJYAOthaTiK fuzz",
        Path::new("fuzz"),
    )
    .expect("a valid key")
}
