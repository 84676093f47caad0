//! Signing a `.kpatch` file: an OpenSSH `sshsig` signature (PROTOCOL.sshsig, namespace
//! [`NAMESPACE`], SHA-512, an Ed25519 key) of the file's contents, the first `total_size`
//! bytes, armored exactly as `ssh-keygen -Y sign -n libcare` writes it and appended after
//! them. So `ssh-keygen -Y verify` checks it: the contents are `head -c TOTAL_SIZE FILE` and
//! the signature `tail -c +$((TOTAL_SIZE + 1)) FILE` (docs/internals.md 1.4).

use std::path::Path;

use kpatch_file::split_trailer;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

use crate::error::{Refusal, TrustError};

/// The `sshsig` namespace of patch signatures: a signature made for another purpose (a git
/// commit, a file signed with another namespace) does not verify as a patch signature.
pub const NAMESPACE: &str = "libcare";

/// The hash `ssh-keygen -Y sign` uses.
const HASH: HashAlg = HashAlg::Sha512;

/// An Ed25519 private key in OpenSSH format (`ssh-keygen -t ed25519`).
#[derive(Debug)]
pub struct SigningKey(PrivateKey);

impl SigningKey {
    /// Reads an unencrypted OpenSSH Ed25519 private key.
    pub fn load(path: &Path) -> Result<SigningKey, TrustError> {
        let text = std::fs::read(path).map_err(TrustError::io(path))?;
        let problem = |problem: String| TrustError::Key {
            path: path.to_owned(),
            problem,
        };
        let key = PrivateKey::from_openssh(&text).map_err(|e| {
            problem(
                if text.starts_with(b"-----BEGIN OPENSSH PRIVATE KEY-----") {
                    format!(
                        "cannot be read as an Ed25519 key ({e}); patches are signed with Ed25519 \
                     keys (ssh-keygen -t ed25519)"
                    )
                } else {
                    format!("not an OpenSSH private key ({e}); make one with ssh-keygen -t ed25519")
                },
            )
        })?;
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(problem(format!(
                "is a {} key; patches are signed with Ed25519 keys (ssh-keygen -t ed25519)",
                key.algorithm()
            )));
        }
        if key.is_encrypted() {
            return Err(problem(
                "is protected by a passphrase, which kpatch_make cannot ask for; sign with a \
                 copy without one (ssh-keygen -p -N '' -f COPY)"
                    .into(),
            ));
        }
        Ok(SigningKey(key))
    }

    /// The public half, as a `*.pub` file of a key directory holds it.
    pub fn public_key(&self) -> &PublicKey {
        self.0.public_key()
    }
}

/// Signs a `.kpatch` file: returns its contents followed by the armored signature. A
/// signature the file already carries is replaced.
pub fn sign(file: &[u8], key: &SigningKey) -> Result<Vec<u8>, TrustError> {
    let (contents, _) = split_trailer(file).map_err(|e| TrustError::Sign(e.to_string()))?;
    let sig = SshSig::sign(&key.0, NAMESPACE, HASH, contents)
        .and_then(|sig| sig.to_pem(LineEnding::LF))
        .map_err(|e| TrustError::Sign(e.to_string()))?;
    let mut out = Vec::with_capacity(contents.len() + sig.len());
    out.extend_from_slice(contents);
    out.extend_from_slice(sig.as_bytes());
    Ok(out)
}

/// A file's contents and the signature after them.
#[derive(Debug)]
pub struct Signed<'a> {
    /// The first `total_size` bytes: what is signed.
    pub contents: &'a [u8],
    pub signature: SshSig,
}

/// Reads the signature of a file; `Ok(None)` when it has none.
pub fn read_signature(file: &[u8]) -> Result<Option<Signed<'_>>, Refusal> {
    let (contents, trailer) = split_trailer(file).map_err(Refusal::NotAPatch)?;
    if trailer.is_empty() {
        return Ok(None);
    }
    let signature = SshSig::from_pem(trailer).map_err(|e| Refusal::BadSignature(e.to_string()))?;
    Ok(Some(Signed {
        contents,
        signature,
    }))
}

/// `SHA256:...`, as `ssh-keygen -l` shows a key.
pub fn fingerprint(key: &ssh_key::public::KeyData) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}
