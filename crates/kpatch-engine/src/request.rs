//! What a patch run is asked to do beyond `libcare-ctl patch -p PID STORAGE`.

use std::collections::HashSet;

use kpatch_process::HeldThread;

/// Options of one patch run; the default is a plain `patch`.
#[derive(Debug, Default, Clone, Copy)]
pub struct PatchRequest<'a> {
    /// A thread of the process that the caller holds stopped (start-up patching): the run's
    /// stops adopt it instead of seizing it, and leave it stopped for its holder.
    pub held: Option<&'a HeldThread>,
    /// Only objects with these build-ids are patched (every object with a patch when `None`):
    /// objects the dynamic loader has just mapped and not yet relocated, whose IFUNCs a patch
    /// may therefore not import.
    pub only: Option<&'a HashSet<String>>,
    /// The patches are recorded as applied at start-up (`info` shows it).
    pub at_startup: bool,
}
