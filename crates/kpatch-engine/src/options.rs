//! Tunables of patch and unpatch runs. The engine reads no environment: the binaries fill these
//! in (`libcare-ctl` from its `LIBCARE_*` variables).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kpatch_process::GuardianForker;

/// Where lock files go unless the caller says otherwise.
const DEFAULT_LOCK_DIR: &str = "/run/libcare";

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

/// How long to wait, where to keep lock files, which patch files to trust, and (for tests)
/// where to die.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a function being replaced may stay on some thread's stack before the run
    /// gives up (`LIBCARE_SAFETY_TIMEOUT`, seconds).
    pub safety_timeout: Duration,
    /// How long one round of waiting may keep the process stopped while the busy threads run
    /// out of the replaced code; between rounds every thread runs for a moment.
    pub round_wait: Duration,
    /// How long stopping every thread may take.
    pub stop_timeout: Duration,
    /// How long to wait for another tool working on the same process (`LIBCARE_LOCK_WAIT`,
    /// seconds).
    pub lock_wait: Duration,
    /// Directory of the per-pid lock files (`LIBCARE_LOCK_DIR`).
    pub lock_dir: PathBuf,
    /// How long a callback of `<libcare/livepatch.h>` may run, and how long to look for a
    /// thread that may run it (`LIBCARE_CALLBACK_TIMEOUT`, seconds).
    pub callback_timeout: Duration,
    /// Test-only: the step at which the tool kills itself (`LIBCARE_FAULT_STEP`; see
    /// `fault.rs`). `None` in production.
    pub fault_step: Option<String>,
    /// Forks the guardians, when set (a run over many processes: see [`GuardianForker`]);
    /// otherwise this process forks them.
    pub guardian_forker: Option<Arc<GuardianForker>>,
    /// Test-only: the step at which the tool stops itself (`SIGSTOP`) until continued
    /// (`LIBCARE_PAUSE_STEP`; see `fault.rs`). `None` in production.
    pub pause_step: Option<String>,
    /// Run on every patch file found, before it is parsed.
    pub check: Option<PatchCheck>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            safety_timeout: Duration::from_secs(5),
            round_wait: Duration::from_secs(1),
            stop_timeout: Duration::from_secs(5),
            lock_wait: Duration::from_secs(30),
            lock_dir: PathBuf::from(DEFAULT_LOCK_DIR),
            callback_timeout: Duration::from_secs(10),
            fault_step: None,
            guardian_forker: None,
            pause_step: None,
            check: None,
        }
    }
}
