//! The checks a patch must pass before anything is attached: its signature (when keys are
//! configured) and, when running as root, that no other user could have written it.

use std::path::Path;

use crate::error::{Refusal, TrustError};
use crate::keyring::Keyring;
use crate::ownership;
use crate::storage;

/// What is trusted.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    keys: Keyring,
    /// The user (besides root) whose files are trusted, when the ownership check applies.
    strict: Option<u32>,
}

impl Policy {
    /// A policy requiring signatures by `keys` (none when it is empty); with `strict_modes`
    /// and when running as root, files (the key files included) must be safe from other
    /// users.
    pub fn new(keys: Keyring, strict_modes: bool) -> Result<Policy, TrustError> {
        let euid = nix::unistd::geteuid();
        let policy = Policy {
            keys,
            strict: (strict_modes && euid.is_root()).then_some(euid.as_raw()),
        };
        if !policy.keys.is_empty() {
            policy.check_path(policy.keys.dir())?;
            for file in policy.keys.files() {
                policy.check_path(file)?;
            }
        }
        Ok(policy)
    }

    /// The keys.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Whether the ownership check applies.
    pub fn strict(&self) -> bool {
        self.strict.is_some()
    }

    /// Checks that no other user could have written `path` (when the check applies).
    pub fn check_path(&self, path: &Path) -> Result<(), TrustError> {
        let Some(uid) = self.strict else {
            return Ok(());
        };
        ownership::check(path, uid).map_err(|(at, reason)| {
            let reason = if at == path {
                format!("it {reason}")
            } else {
                format!("{} {reason}", at.display())
            };
            TrustError::refused(path, Refusal::Unsafe { reason })
        })
    }

    /// Checks one patch file: where it lies, then the bytes read from it.
    pub fn check_patch(&self, path: &Path, bytes: &[u8]) -> Result<(), TrustError> {
        self.check_path(path)?;
        self.keys
            .verify(bytes)
            .map(|_| ())
            .map_err(|why| TrustError::refused(path, why))
    }

    /// Checks a whole storage before any process is touched: the storage, each of its
    /// patch files and scripts.
    pub fn check_storage(&self, path: &Path) -> Result<(), TrustError> {
        if !self.strict() && self.keys.is_empty() {
            return Ok(());
        }
        // A storage that is not there is that, not an unsafe one.
        std::fs::metadata(path).map_err(TrustError::io(path))?;
        self.check_path(path)?;
        let files = storage::files(path)?;
        for script in &files.scripts {
            self.check_path(script)?;
        }
        for patch in &files.patches {
            self.check_path(patch)?;
            if !self.keys.is_empty() {
                let bytes = std::fs::read(patch).map_err(TrustError::io(patch))?;
                self.keys
                    .verify(&bytes)
                    .map_err(|why| TrustError::refused(patch, why))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_storage_is_reported_as_missing() {
        let strict = Policy {
            keys: Keyring::default(),
            strict: Some(0),
        };
        let err = strict
            .check_storage(Path::new("/nonexistent/storage"))
            .unwrap_err();
        assert!(matches!(err, TrustError::Io { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("/nonexistent/storage: No such file"));
    }
}
