//! `libcare-ctl unpatch`: revert patches in any order (see `removal.rs` for how the patches
//! and their writes are chosen, and `Session::remove` for the commit).

use std::time::Duration;

use crate::callbacks::{self, Callback};
use crate::discover::{ImageCache, Loaded};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::options::Options;
use crate::registry;
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
    let frozen = remove_with_callbacks(&mut session, &selected, &[], rep)?;
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

/// The callbacks due when the patches `selected` (newest first) are removed: those of their
/// records whose object is patched or pre-patched, and the records of other patches naming
/// one of `objects` (an object going away), in the order they run.
pub(crate) fn due(session: &Session<'_>, selected: &[usize], objects: &[usize]) -> Vec<Callback> {
    let loaded: &Loaded = &session.loaded;
    let mut cbs = Vec::new();
    for (rank, &i) in selected.iter().enumerate() {
        cbs.extend(callbacks::of_applied(
            &session.proc,
            &loaded.patches[i],
            rank,
        ));
    }
    if !objects.is_empty() {
        let rank = selected.len();
        for (i, p) in loaded.patches.iter().enumerate() {
            if !p.committed || selected.contains(&i) {
                continue;
            }
            cbs.extend(
                callbacks::of_applied(&session.proc, p, rank)
                    .into_iter()
                    .filter(|c| objects.iter().any(|&o| c.is_for(&loaded.objects[o]))),
            );
        }
    }
    cbs.retain(|c| c.state != 0 && c.loaded_in(loaded));
    callbacks::sort(&mut cbs);
    cbs
}

/// Removes the patches `selected` (see [`Session::remove`]) with their callbacks: pre-unpatch
/// before the revert, post-unpatch after it (before the regions are unmapped), and, for an
/// object going away (`objects`, indices into the loaded objects), those of the other patches'
/// records for it. A revert that fails runs post-patch again for what pre-unpatch ran on.
pub(crate) fn remove_with_callbacks(
    session: &mut Session<'_>,
    selected: &[usize],
    objects: &[usize],
    rep: &mut dyn Report,
) -> Result<Option<Duration>> {
    let mut cbs = due(session, selected, objects);
    let regions: Vec<std::ops::Range<u64>> = selected
        .iter()
        .map(|&i| session.loaded.patches[i].range())
        .collect();
    let registry = registry::find(&session.proc, &session.loaded.maps);
    let unregister = |proc: &kpatch_process::Process, rep: &mut dyn Report| {
        if let Some(at) = registry {
            if let Err(e) = registry::remove_states(proc, at, &regions) {
                rep.detail(&format!("the states stay in the registry: {e}"));
            }
        }
    };
    if cbs.is_empty() {
        if selected.is_empty() {
            return Ok(None);
        }
        let frozen = session.remove(selected, false, rep)?;
        unregister(&session.proc, rep);
        return Ok(frozen);
    }
    callbacks::pre_unpatch(&mut host_of(session), &cbs, rep);
    let mut after = |s: &Session<'_>, rep: &mut dyn Report| {
        callbacks::post_unpatch(&mut host_of(s), &s.proc, &mut cbs, rep);
        unregister(&s.proc, rep);
    };
    let result = if selected.is_empty() {
        after(session, rep);
        Ok(None)
    } else {
        session.remove_then(selected, false, rep, Some(&mut after))
    };
    if result.is_err() {
        let cbs = due(session, selected, objects);
        callbacks::revert_failed(&mut host_of(session), &cbs, rep);
    }
    result
}

/// Where the callbacks of a session's process run.
fn host_of<'s>(s: &'s Session<'_>) -> Host<'s> {
    Host::new(&s.proc, &s.loaded, s.images(), &[], s.options())
}
