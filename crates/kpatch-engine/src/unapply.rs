//! `libcare-ctl unpatch`: revert patches in any order (see `removal.rs` for how the patches
//! and their writes are chosen, and `Session::remove` for the commit).

use std::time::Duration;

use crate::discover::ImageCache;
use crate::error::{Error, Result};
use crate::options::Options;
use crate::removal;
use crate::report::Report;
use crate::session::Session;

/// One patch removed by a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedPatch {
    pub object: String,
    pub id: String,
}

/// What an unpatch run did.
#[derive(Debug, Clone, Default)]
pub struct UnpatchOutcome {
    pub removed: Vec<RemovedPatch>,
    pub frozen: Option<Duration>,
}

/// Removes the patch with `id` (or every patch, newest first, without one) from process `pid`;
/// `targets` limits it to objects named by build-id or file name.
pub fn unpatch(
    opts: &Options,
    images: &ImageCache,
    pid: i32,
    id: Option<&str>,
    targets: &[String],
    rep: &mut dyn Report,
) -> Result<UnpatchOutcome> {
    let mut session = Session::open(opts, images, pid, rep)?;
    let selected = removal::select(&session.loaded, id, targets);
    if selected.is_empty() {
        return match id {
            Some(id) => Err(Error::PatchNotFound {
                id: id.to_owned(),
                pid,
            }),
            None => Ok(UnpatchOutcome::default()),
        };
    }
    let frozen = session.remove(&selected, false, rep)?;
    let loaded = &session.loaded;
    let removed = selected
        .iter()
        .map(|&i| RemovedPatch {
            object: loaded.object_name(&loaded.patches[i]),
            id: loaded.patches[i].id.clone(),
        })
        .collect();
    Ok(UnpatchOutcome { removed, frozen })
}
