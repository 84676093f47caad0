//! Objects coming and going while patches are applied (the kernel's module notifiers): what a
//! service that follows a process's `dlopen` and `dlclose` calls when a library appears (it is
//! mapped and relocated, its initialisers have not run yet) or is about to go (its finalisers
//! have run, it is still mapped).
//!
//! - Loaded: the storage's patch for the library (if any) is applied to it alone, and the
//!   callbacks for it run: its own patch's and those that applied patches declared for it
//!   and that have not run (pre-patch, the switch, post-patch). A pre-patch that fails leaves
//!   the library unpatched (it loads all the same; the failure is returned, and `info` shows
//!   it), after post-unpatch for the callbacks whose pre-patch had succeeded.
//! - Unloading: pre-unpatch of the callbacks for it that are patched, the revert of its
//!   patches, post-unpatch; the callbacks are then as never run, ready for a new load.

use std::path::Path;

use crate::apply::{self, PatchOutcome};
use crate::callbacks::{self, callback_state_waits};
use crate::discover::{ImageCache, Loaded};
use crate::error::{Error, Result};
use crate::host::Host;
use crate::options::Options;
use crate::removal;
use crate::report::Report;
use crate::session::Session;
use crate::storage::Storage;
use crate::unapply::{self, RemovedPatch, UnpatchOutcome};
use kpatch_process::Process;

/// The index of the loaded object `object` names: its path, file name or soname.
fn find_object(loaded: &Loaded, pid: i32, object: &str) -> Result<usize> {
    let base = Path::new(object)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| object.to_owned());
    loaded
        .objects
        .iter()
        .position(|o| o.name == base || callbacks::soname(&o.image.data).as_deref() == Some(object))
        .ok_or_else(|| Error::NoSuchObject {
            object: object.to_owned(),
            pid,
        })
}

/// Whether anything is to be done for `object` in process `pid`: `storage` has a patch for
/// it, a patch is applied to it, or an applied patch has callbacks for it. Looked at without
/// stopping or tracing the process, so that a service can report every library it sees at
/// little cost.
fn concerns(
    images: &ImageCache,
    pid: i32,
    object: &str,
    storage: Option<&Storage>,
) -> Result<bool> {
    let proc = Process::inspect(pid)?;
    let loaded = Loaded::read(&proc, images)?;
    let index = find_object(&loaded, pid, object)?;
    let target = &loaded.objects[index];
    let bid = target.build_id().unwrap_or_default();
    if let Some(storage) = storage {
        let has = match storage.file_bytes()? {
            Some(f) => kpatch_file::KpatchFile::parse(&f.bytes)
                .map(|k| k.build_id() == bid)
                .unwrap_or(false),
            None => !bid.is_empty() && storage.lookup_dir(bid)?.is_some(),
        };
        if has {
            return Ok(true);
        }
    }
    let applied = loaded.patches.iter().filter(|p| p.committed);
    for p in applied {
        if p.build_id == bid
            || callbacks::of_applied(&proc, p, 0)
                .iter()
                .any(|c| c.is_for(target))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `object` has just been loaded into process `pid`: applies `storage`'s patch for it, if any,
/// and runs the callbacks due for it.
pub fn loaded(
    opts: &Options,
    images: &ImageCache,
    pid: i32,
    object: &str,
    storage: Option<&Storage>,
    rep: &mut dyn Report,
) -> Result<PatchOutcome> {
    if !concerns(images, pid, object, storage)? {
        return Ok(PatchOutcome::default());
    }
    let mut session = Session::open(opts, images, pid, rep)?;
    let index = find_object(&session.loaded, pid, object)?;
    let jobs = match storage {
        Some(s) => apply::jobs_for_object(&session, s, index)?,
        None => Vec::new(),
    };
    let loaded = &session.loaded;
    let target = &loaded.objects[index];
    let mut waiting = Vec::new();
    let mut applied: Vec<_> = loaded.patches.iter().filter(|p| p.committed).collect();
    applied.sort_by_key(|p| p.header.applied_seq());
    for (rank, p) in applied.into_iter().enumerate() {
        waiting.extend(
            callbacks::of_applied(&session.proc, p, rank)
                .into_iter()
                .filter(|c| c.is_for(target) && callback_state_waits(c.state)),
        );
    }
    if !jobs.is_empty() {
        // The new patch's callbacks run after those of the patches already applied.
        let rank = waiting.iter().map(|c| c.rank + 1).max().unwrap_or(0);
        return apply::apply_jobs(&mut session, jobs, storage, waiting, rank, rep);
    }
    callbacks::sort(&mut waiting);
    if waiting.is_empty() {
        return Ok(PatchOutcome::default());
    }
    let proc = &session.proc;
    let mut host = Host::new(proc, loaded, session.images(), &[], opts);
    callbacks::pre_patch(&mut host, proc, pid, &mut waiting, rep)?;
    callbacks::post_patch(&mut host, proc, &mut waiting, rep);
    Ok(PatchOutcome::default())
}

/// `object` is about to be unloaded from process `pid`: reverts its patches with the
/// callbacks due for it.
pub fn unloading(
    opts: &Options,
    images: &ImageCache,
    pid: i32,
    object: &str,
    rep: &mut dyn Report,
) -> Result<UnpatchOutcome> {
    if !concerns(images, pid, object, None)? {
        return Ok(UnpatchOutcome::default());
    }
    let mut session = Session::open(opts, images, pid, rep)?;
    let index = find_object(&session.loaded, pid, object)?;
    let loaded = &session.loaded;
    let selected = match loaded.objects[index].build_id() {
        Some(bid) => removal::select(loaded, None, &[bid.to_owned()]),
        None => Vec::new(),
    };
    let removed: Vec<RemovedPatch> = selected
        .iter()
        .map(|&i| RemovedPatch {
            object: loaded.object_name(&loaded.patches[i]),
            id: loaded.patches[i].id.clone(),
        })
        .collect();
    let frozen = unapply::remove_with_callbacks(&mut session, &selected, &[index], rep)?;
    Ok(UnpatchOutcome { removed, frozen })
}
