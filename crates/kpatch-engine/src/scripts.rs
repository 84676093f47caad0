//! A directory storage's `before` and `after` scripts, run as `script PID` with every thread of
//! the target stopped: `before` ahead of the first jump, `after` once the patch is committed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::storage::Storage;

/// The scripts of a storage, looked up while the target runs (the stop only runs them).
#[derive(Debug, Clone, Default)]
pub struct Scripts {
    pub before: Option<PathBuf>,
    pub after: Option<PathBuf>,
}

impl Scripts {
    /// The executable `before` and `after` scripts of `storage` (none for a file storage).
    pub fn of(storage: &Storage) -> Scripts {
        Scripts {
            before: storage.script("before"),
            after: storage.script("after"),
        }
    }
}

/// Runs `script PID`; a script that cannot run or exits unsuccessfully is an error.
pub fn run(script: &Path, pid: i32) -> Result<()> {
    let status = std::process::Command::new(script)
        .arg(pid.to_string())
        .status()
        .map_err(|source| Error::Io {
            path: script.to_owned(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Script {
            script: script.to_owned(),
            pid,
            status: status.to_string(),
        });
    }
    Ok(())
}
