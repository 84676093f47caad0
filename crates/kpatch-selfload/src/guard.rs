//! The caller's trust rules and record of what was done. Start-up patching crosses the same
//! privilege boundary as `libcare-ctl patch`: the same rules apply. The patch files are checked
//! by the engine (`kpatch_engine::Options::check`) as it reads them, the bytes checked being
//! the bytes used; the guard judges the rest of the storage (where it lies, its scripts), and
//! hears of every patch applied, refused or failed.

use std::path::Path;

/// What became of one process, or one object it loaded.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub pid: i32,
    /// The program or library it executed or loaded (or, for `startup PID`, its program).
    pub file: &'a Path,
    pub result: Recorded<'a>,
}

/// How it ended.
#[derive(Debug, Clone, Copy)]
pub enum Recorded<'a> {
    /// Patch `id` applied to `object`.
    Patched { object: &'a str, id: &'a str },
    /// Not patched: a patch file or the storage is not trusted (why).
    Refused(&'a str),
    /// Not patched: patching failed (why).
    Failed(&'a str),
}

/// The caller's rules; `Err` holds why something is refused.
pub trait Guard: Send + Sync {
    /// Before a process is patched from `storage`: the storage itself and its scripts.
    fn check_storage(&self, storage: &Path) -> Result<(), String>;
    /// The whole storage, patch files included, when it changes: a refusal is logged then,
    /// before any process needs the patch (each such process is refused again, and runs
    /// unpatched).
    fn check_all(&self, storage: &Path) -> Result<(), String>;
    /// Records what became of a process.
    fn record(&self, record: &Record<'_>);
}
