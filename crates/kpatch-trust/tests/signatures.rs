//! Patch signatures against OpenSSH's own tool: what `kpatch_make --sign` appends is byte for
//! byte what `ssh-keygen -Y sign -n libcare` writes, `ssh-keygen -Y verify` accepts it, and
//! the keyring refuses unsigned, changed, foreign and other-purpose signatures.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kpatch_trust::keyring::Keyring;
use kpatch_trust::{sign, Refusal, SigningKey};

/// A file with a valid header's `total_size` (all `split_trailer` looks at).
fn patch_bytes() -> Vec<u8> {
    let total = 504 + 64;
    let mut b: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
    b[160..164].copy_from_slice(&(total as u32).to_le_bytes());
    b
}

fn ssh_keygen(dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new("ssh-keygen")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(
        out.status.success(),
        "ssh-keygen {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ssh-keygen -t TYPE`: returns the private key's path (the public one is beside it).
fn keygen(dir: &Path, name: &str, kind: &str) -> PathBuf {
    ssh_keygen(dir, &["-q", "-t", kind, "-N", "", "-C", name, "-f", name]);
    dir.join(name)
}

fn keyring_of(dir: &Path, pubs: &[&Path]) -> Keyring {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    for p in pubs {
        let name = p.file_name().unwrap();
        std::fs::copy(p, keys.join(name)).unwrap();
    }
    Keyring::load(&keys, true).unwrap()
}

#[test]
fn our_signature_is_ssh_keygens_and_it_verifies_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = keygen(dir, "release", "ed25519");
    let file = patch_bytes();
    let signed = sign(&file, &SigningKey::load(&key).unwrap()).unwrap();
    let (contents, trailer) = signed.split_at(file.len());
    assert_eq!(contents, file);

    // ssh-keygen signs the same contents to the same bytes (Ed25519 is deterministic).
    std::fs::write(dir.join("contents"), contents).unwrap();
    ssh_keygen(
        dir,
        &["-Y", "sign", "-f", "release", "-n", "libcare", "contents"],
    );
    assert_eq!(
        std::fs::read(dir.join("contents.sig")).unwrap(),
        trailer,
        "the trailer is what ssh-keygen -Y sign writes"
    );

    // And verifies ours.
    std::fs::write(dir.join("ours.sig"), trailer).unwrap();
    let public = std::fs::read_to_string(dir.join("release.pub")).unwrap();
    std::fs::write(dir.join("allowed"), format!("release@libcare {public}")).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f", "allowed", "-I", "release@libcare"])
        .args(["-n", "libcare", "-s", "ours.sig"])
        .current_dir(dir)
        .stdin(std::fs::File::open(dir.join("contents")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen -Y verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Signing a signed file replaces its signature.
    let again = sign(&signed, &SigningKey::load(&key).unwrap()).unwrap();
    assert_eq!(again, signed);
}

#[test]
fn the_keyring_refuses_what_it_should() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = keygen(dir, "good", "ed25519");
    let other = keygen(dir, "other", "ed25519");
    let ring = keyring_of(dir, &[&dir.join("good.pub")]);
    let file = patch_bytes();
    let signed = sign(&file, &SigningKey::load(&good).unwrap()).unwrap();
    let by = ring.verify(&signed).unwrap().expect("a key");
    assert_eq!(by.file, dir.join("keys/good.pub"));

    assert!(matches!(ring.verify(&file), Err(Refusal::Unsigned { .. })));

    // Every byte of the contents is covered.
    for at in [0, 200, file.len() - 1] {
        let mut bad = signed.clone();
        bad[at] ^= 1;
        assert!(
            matches!(ring.verify(&bad), Err(Refusal::Mismatch { .. })),
            "flip at {at}"
        );
    }
    // A changed signature does not verify either.
    let mut bad = signed.clone();
    let mid = file.len() + (signed.len() - file.len()) / 2;
    bad[mid] = if bad[mid] == b'A' { b'B' } else { b'A' };
    assert!(ring.verify(&bad).is_err());

    let foreign = sign(&file, &SigningKey::load(&other).unwrap()).unwrap();
    let err = ring.verify(&foreign).unwrap_err();
    assert!(matches!(err, Refusal::UnknownKey { .. }), "{err}");
    assert!(err.to_string().contains("SHA256:"), "{err}");

    // A signature made for another purpose (here git's namespace) is not a patch signature.
    std::fs::write(dir.join("contents"), &file).unwrap();
    ssh_keygen(dir, &["-Y", "sign", "-f", "good", "-n", "git", "contents"]);
    let mut git = file.clone();
    git.extend(std::fs::read(dir.join("contents.sig")).unwrap());
    assert_eq!(
        ring.verify(&git).unwrap_err(),
        Refusal::Namespace("git".into())
    );

    let mut junk = file.clone();
    junk.extend_from_slice(b"not a signature\n");
    assert!(matches!(ring.verify(&junk), Err(Refusal::BadSignature(_))));

    // With no keys, anything goes.
    let empty = Keyring::load(&dir.join("none"), false).unwrap();
    assert!(empty.is_empty());
    assert!(empty.verify(&file).unwrap().is_none());
    assert!(Keyring::load(&dir.join("none"), true).is_err());
}

#[test]
fn keys_that_cannot_sign_patches_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ecdsa = keygen(dir, "ec", "ecdsa");
    let err = SigningKey::load(&ecdsa).unwrap_err().to_string();
    assert!(err.contains("Ed25519"), "{err}");
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(dir.join("ec.pub"), keys.join("ec.pub")).unwrap();
    let err = Keyring::load(&keys, true).unwrap_err().to_string();
    assert!(
        err.contains("ec.pub: line 1") && err.contains("Ed25519"),
        "{err}"
    );

    ssh_keygen(
        dir,
        &["-q", "-t", "ed25519", "-N", "secret", "-f", "locked"],
    );
    let err = SigningKey::load(&dir.join("locked"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("passphrase"), "{err}");
    let err = SigningKey::load(&dir.join("ec.pub"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an OpenSSH private key"), "{err}");
}
