//! Tunables of patch and unpatch runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A check each patch file must pass when the storage is searched (its signature, who could
/// have written it): the path and the bytes read, which are the bytes then used. `Err` holds
/// why the file is refused.
#[derive(Clone)]
pub struct PatchCheck(pub Arc<CheckFn>);

/// The function of a [`PatchCheck`].
pub type CheckFn = dyn Fn(&Path, &[u8]) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for PatchCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatchCheck")
    }
}

/// How long to wait, and where to keep lock files.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a function being replaced may stay on some thread's stack before the run
    /// gives up (`LIBCARE_SAFETY_TIMEOUT`, seconds; `--timeout`).
    pub safety_timeout: Duration,
    /// How long one round of waiting may keep the process stopped while the busy threads run
    /// out of the replaced code; between rounds every thread runs for a moment.
    pub round_wait: Duration,
    /// How long stopping every thread may take.
    pub stop_timeout: Duration,
    /// How long to wait for another tool working on the same process.
    pub lock_wait: Duration,
    pub lock_dir: PathBuf,
    /// Run on every patch file found, before it is parsed.
    pub check: Option<PatchCheck>,
}

impl Default for Options {
    fn default() -> Self {
        let secs = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::from_secs(default))
        };
        Options {
            safety_timeout: secs("LIBCARE_SAFETY_TIMEOUT", 5),
            round_wait: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(5),
            lock_wait: secs("LIBCARE_LOCK_WAIT", 30),
            lock_dir: crate::lock::lock_dir(),
            check: None,
        }
    }
}
