//! The keys a patch must be signed with: every OpenSSH Ed25519 public key in the `*.pub`
//! files of a directory (one key per line, as `ssh-keygen` writes them; `#` comments and
//! blank lines skipped).

use std::path::{Path, PathBuf};

use ssh_key::{Algorithm, PublicKey};

use crate::error::{Refusal, TrustError};
use crate::signature::{fingerprint, read_signature, NAMESPACE};

/// Where the keys are when neither `--keys` nor `LIBCARE_KEYS` names a directory.
pub const DEFAULT_KEYS_DIR: &str = "/etc/libcare/keys";

/// A trusted key and the file it came from.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub file: PathBuf,
    pub key: PublicKey,
}

/// The trusted keys. Empty: no signature is required (the behaviour without keys).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    dir: PathBuf,
    keys: Vec<TrustedKey>,
}

impl Keyring {
    /// Loads the keys of `dir`. A directory that does not exist holds no keys when it is the
    /// default one, and is an error when it was named (`required`): a mistyped name must not
    /// switch verification off.
    pub fn load(dir: &Path, required: bool) -> Result<Keyring, TrustError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Keyring {
                    dir: dir.to_owned(),
                    keys: Vec::new(),
                })
            }
            Err(e) => return Err(TrustError::io(dir)(e)),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub") && p.is_file())
            .collect();
        files.sort();
        let mut keys = Vec::new();
        for file in files {
            keys.extend(read_keys(&file)?);
        }
        Ok(Keyring {
            dir: dir.to_owned(),
            keys,
        })
    }

    /// The directory the keys were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key files read (each once), for the ownership check.
    pub fn files(&self) -> Vec<&Path> {
        let mut files: Vec<&Path> = self.keys.iter().map(|k| k.file.as_path()).collect();
        files.dedup();
        files
    }

    /// Whether a signature is required (the directory holds at least one key).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a patch file's signature; returns the key that made it. With no keys, every
    /// file passes (and `None` is returned).
    pub fn verify(&self, file: &[u8]) -> Result<Option<&TrustedKey>, Refusal> {
        if self.keys.is_empty() {
            return Ok(None);
        }
        let Some(signed) = read_signature(file)? else {
            return Err(Refusal::Unsigned {
                keys: self.dir.clone(),
            });
        };
        let sig = &signed.signature;
        if sig.namespace() != NAMESPACE {
            return Err(Refusal::Namespace(sig.namespace().to_owned()));
        }
        let fingerprint = fingerprint(sig.public_key());
        let Some(trusted) = self
            .keys
            .iter()
            .find(|k| k.key.key_data() == sig.public_key())
        else {
            return Err(Refusal::UnknownKey {
                fingerprint,
                keys: self.dir.clone(),
            });
        };
        trusted
            .key
            .verify(NAMESPACE, signed.contents, sig)
            .map_err(|_| Refusal::Mismatch { fingerprint })?;
        Ok(Some(trusted))
    }

    /// The keys of `text`, lines as in a `*.pub` file; `source` names it in messages.
    pub fn from_text(text: &str, source: &Path) -> Result<Keyring, TrustError> {
        Ok(Keyring {
            dir: source.to_owned(),
            keys: parse_keys(text, source)?,
        })
    }
}

fn read_keys(file: &Path) -> Result<Vec<TrustedKey>, TrustError> {
    let text = std::fs::read_to_string(file).map_err(TrustError::io(file))?;
    parse_keys(&text, file)
}

fn parse_keys(text: &str, file: &Path) -> Result<Vec<TrustedKey>, TrustError> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let problem = |problem: String| TrustError::Key {
            path: file.to_owned(),
            problem: format!("line {}: {problem}", n + 1),
        };
        let kind = line.split_whitespace().next().unwrap_or_default();
        if kind != Algorithm::Ed25519.as_str() {
            return Err(problem(format!(
                "a key of type {kind}; only Ed25519 keys sign patches (ssh-keygen -t ed25519)"
            )));
        }
        let key = PublicKey::from_openssh(line)
            .map_err(|e| problem(format!("not an OpenSSH public key ({e})")))?;
        keys.push(TrustedKey {
            file: file.to_owned(),
            key,
        });
    }
    Ok(keys)
}
