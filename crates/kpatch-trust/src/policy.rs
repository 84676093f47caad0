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
        let files = self.storage_files(path)?;
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

    /// Checks what of a storage is not a patch file: the storage itself and its scripts
    /// (which run as the tool's user). For a caller whose engine checks each patch file as it
    /// reads it ([`Policy::check_patch`]), and need not verify every other one.
    pub fn check_layout(&self, path: &Path) -> Result<(), TrustError> {
        if !self.strict() {
            return Ok(());
        }
        self.storage_files(path).map(drop)
    }

    /// The files of the storage at `path`, once it and its scripts passed the ownership check.
    fn storage_files(&self, path: &Path) -> Result<storage::StorageFiles, TrustError> {
        // A storage that is not there is that, not an unsafe one.
        std::fs::metadata(path).map_err(TrustError::io(path))?;
        self.check_path(path)?;
        let files = storage::files(path)?;
        for script in &files.scripts {
            self.check_path(script)?;
        }
        Ok(files)
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

    #[test]
    fn the_layout_check_judges_the_storage_and_its_scripts() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let patch = d.join("aa.kpatch");
        std::fs::write(&patch, b"").unwrap();
        let strict = Policy {
            keys: Keyring::default(),
            strict: Some(nix::unistd::geteuid().as_raw()),
        };
        strict.check_layout(d).unwrap();
        // A patch file is the engine's to check, as it reads it.
        std::fs::set_permissions(&patch, std::fs::Permissions::from_mode(0o666)).unwrap();
        strict.check_layout(d).unwrap();
        let script = d.join("before");
        std::fs::write(&script, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o775)).unwrap();
        let err = strict.check_layout(d).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: refused: ", script.display()))
                && err.contains("writable by its group"),
            "{err}"
        );
        Policy::default().check_layout(d).unwrap();
    }
}
