//! Atomic replace (`kpatch_make --replace`): a cumulative patch takes the place of every
//! earlier patch of its object in the stop that commits it. Its functions jump to its code and
//! save the original bytes (not an older patch's jump) in its undo area; the functions only the
//! older patches changed get their original bytes back; the older regions are marked pending
//! in the same stop and unmapped once unused, without their unpatch callbacks.

use std::collections::HashMap;
use std::ops::Range;

use crate::discover::Loaded;
use crate::error::Result;
use crate::process_view::ProcessView;
use crate::removal;
use crate::report::Report;

/// What a cumulative patch for one object takes over.
#[derive(Debug, Clone, Default)]
pub struct Replaced {
    /// The patches it replaces (indices into `Loaded::patches`), newest first.
    pub patches: Vec<usize>,
    /// The original bytes of every function they changed, by address.
    pub originals: HashMap<u64, Vec<u8>>,
    /// Their regions, named for messages (no thread may be running their code at the switch).
    pub names: Vec<(Range<u64>, String)>,
}

/// What a cumulative patch for the object with `build_id` replaces in `loaded`.
pub fn plan(
    proc: &dyn ProcessView,
    loaded: &Loaded,
    build_id: &str,
    rep: &mut dyn Report,
) -> Result<Replaced> {
    let patches = removal::select(loaded, None, &[build_id.to_owned()]);
    if patches.is_empty() {
        return Ok(Replaced::default());
    }
    // Removing them all, newest first, writes each function's original bytes last.
    let removal = removal::plan(proc, loaded, &patches, false, rep)?;
    for &i in &patches {
        rep.detail(&format!(
            "patch {} ({}) is replaced",
            loaded.patches[i].id,
            loaded.object_name(&loaded.patches[i])
        ));
    }
    Ok(Replaced {
        patches,
        originals: removal.writes.into_iter().collect(),
        names: removal.names,
    })
}
