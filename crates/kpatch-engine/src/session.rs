//! What patch and unpatch hold while they work on one process: its lock, the process opened
//! for tracing, the guardian that completes or undoes our writes if the tool dies, and what is
//! loaded in it, read once the regions an interrupted run left behind are reclaimed. Removing
//! patches (unpatch, and reclaiming) is done here too; applying them is `apply.rs`.

use std::ops::Range;
use std::time::Duration;

use kpatch_file::MAGIC_PENDING;
use kpatch_process::{DeferTermination, Guardian, HeldThread, Memory, Process, StoppedThread};

use crate::checked_stop::{self, AfterCommit, SafetyCheck};
use crate::discover::{ImageCache, Loaded};
use crate::eh_frames::{self, Unwinder};
use crate::error::Result;
use crate::fault;
use crate::lock::{self, PidLock};
use crate::options::Options;
use crate::process_view;
use crate::registry;
use crate::removal::{self, Removal};
use crate::report::Report;
use crate::runs;
use crate::scope::Scope;

/// What runs once a removal has reverted the code, before the regions go.
pub type AfterRevert<'a, 'e> = dyn FnMut(&Session<'e>, &mut dyn Report) + 'a;

/// One process, locked, opened and guarded for a patch or unpatch run.
pub struct Session<'e> {
    /// Dropped first: it performs the writes still armed with the lock held (it has a copy).
    pub guardian: Guardian,
    pub proc: Process,
    _lock: PidLock,
    opts: &'e Options,
    images: &'e ImageCache,
    pub loaded: Loaded,
}

impl<'e> Session<'e> {
    /// Locks and opens process `pid`, starts its guardian, reads what is loaded in it (through
    /// `images`, the run's cache of the files it has read) and reclaims what an interrupted run
    /// left behind.
    pub fn open(
        opts: &'e Options,
        images: &'e ImageCache,
        pid: i32,
        rep: &mut dyn Report,
    ) -> Result<Session<'e>> {
        Session::open_with(opts, images, pid, None, rep)
    }

    /// [`Session::open`], for a process one of whose threads the caller holds stopped
    /// (start-up patching): the session's stops adopt that thread and leave it stopped.
    pub fn open_with(
        opts: &'e Options,
        images: &'e ImageCache,
        pid: i32,
        held: Option<&HeldThread>,
        rep: &mut dyn Report,
    ) -> Result<Session<'e>> {
        // The lock comes first: another run holding it also traces the process, which opening
        // it would refuse.
        if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(kpatch_process::Error::NoSuchProcess { pid }.into());
        }
        let lock = lock::lock(&opts.lock_dir, pid, opts.lock_wait)?;
        crate::fault::pause(opts, "locked");
        let proc = match held {
            Some(h) if h.tgid() == pid => Process::open_held(h)?,
            _ => Process::open(pid)?,
        };
        let guardian = Guardian::spawn(&proc, &[lock.fd()], opts.guardian_forker.as_deref())?;
        let loaded = Loaded::read(&proc, images)?;
        let mut session = Session {
            guardian,
            proc,
            _lock: lock,
            opts,
            images,
            loaded,
        };
        session.reclaim_pending(rep)?;
        Ok(session)
    }

    /// The options of the run.
    pub fn options(&self) -> &'e Options {
        self.opts
    }

    /// The run's cache of the files it has read.
    pub fn images(&self) -> &'e ImageCache {
        self.images
    }

    /// Removes patch regions an interrupted run left behind (header magic `KPATCH0`) and those
    /// of unloaded objects (orphans, see [`crate::discover::mark_orphans`]): any jump into one
    /// is reverted, then it is unmapped, and what is loaded is read again.
    fn reclaim_pending(&mut self, rep: &mut dyn Report) -> Result<()> {
        let all = &self.loaded.patches;
        let pending: Vec<usize> = (0..all.len())
            .filter(|&i| !all[i].committed || all[i].orphan)
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for &i in &pending {
            let why = if all[i].orphan {
                "whose object is no longer loaded"
            } else {
                "left by an interrupted run"
            };
            rep.detail(&format!(
                "reclaiming the region at {:#x} {why} (patch {})",
                all[i].kpta, all[i].id
            ));
        }
        let regions: Vec<_> = pending.iter().map(|&i| all[i].range()).collect();
        self.remove(&pending, true, rep)?;
        // Their states, if the run got as far as registering them.
        if let Some(at) = registry::find(&self.proc, &self.loaded.maps) {
            let _ = registry::remove_states(&self.proc, at, &regions);
        }
        self.loaded = Loaded::read(&self.proc, self.images)?;
        Ok(())
    }

    /// Removes `self.loaded.patches[selected]`, in that order, from the process (see
    /// [`removal::plan`]): the writes are made in a checked stop, with the guardian armed with
    /// the whole series, and the regions unmapped once no thread uses them. `tolerant` (for
    /// reclaiming an interrupted run's region) skips records whose jump is not found instead of
    /// refusing, and does not wait for a region still in use.
    pub fn remove(
        &mut self,
        selected: &[usize],
        tolerant: bool,
        rep: &mut dyn Report,
    ) -> Result<Option<Duration>> {
        self.remove_then(selected, tolerant, rep, None)
    }

    /// [`Session::remove`], with `after` run once the code is reverted and the threads run
    /// again, before the regions are unmapped (the post-unpatch callbacks live there).
    pub fn remove_then(
        &mut self,
        selected: &[usize],
        tolerant: bool,
        rep: &mut dyn Report,
        mut after: Option<&mut AfterRevert<'_, 'e>>,
    ) -> Result<Option<Duration>> {
        let defer_unmap = after.is_some();
        let opts = self.options();
        let Removal { writes, names } =
            removal::plan(&self.proc, &self.loaded, selected, tolerant, rep)?;
        let proc = &self.proc;
        let all = &self.loaded.patches;
        let committed = selected.iter().any(|&i| all[i].committed);
        let runs = runs::plan(proc, &writes, proc.page_size())?;
        let regions: Vec<(u64, u64)> = selected
            .iter()
            .map(|&i| (all[i].kpta, all[i].len))
            .collect();
        let held = regions
            .iter()
            .map(|&(a, l)| a..a.saturating_add(l))
            .collect();
        // Read while the process runs: which regions have unwind tables to deregister.
        let regs = eh_frames::registrations(
            proc,
            || Unwinder::find(&Scope::of(proc, &self.loaded.objects)),
            &regions,
        );
        let mut check = self.safety_check(names)?.holding(held);
        let mut frozen = None;
        let mut unmapped = false;
        if committed || !writes.is_empty() {
            // Every write moves the target towards "unpatched" and may be done again, so the
            // guardian is armed with the whole series: a tool dying half-way leaves it
            // completed. The regions are marked pending so that, if we die before unmapping
            // them, they are never listed again and the next run reclaims them.
            let marks: Vec<(u64, Vec<u8>)> = selected
                .iter()
                .map(|&i| (all[i].kpta, MAGIC_PENDING.to_vec()))
                .collect();
            let mut guarded = writes.clone();
            guarded.extend(marks.iter().cloned());
            let unmapped = &mut unmapped;
            frozen = Some(checked_stop::with_safe_stop(
                proc,
                opts,
                &mut check,
                &mut self.guardian,
                rep,
                |stopped, guardian, found, rep| {
                    fault::point(opts, "unpatch-stopped");
                    guardian.arm(&guarded)?;
                    // A failed run write puts back the runs already written: still fully
                    // patched.
                    if let Err(e) =
                        runs::commit(proc, &runs, &|| fault::point(opts, "unpatch-first-restore"))
                    {
                        let _ = guardian.disarm();
                        return Err(e);
                    }
                    // The jumps are gone: the threads that were running need not wait for the
                    // headers, as long as a thread stays stopped to run the munmap.
                    if let Err(e) = stopped.release_running(true) {
                        let _ = guardian.disarm();
                        return Err(e.into());
                    }
                    let mut first_error = None;
                    for (addr, bytes) in &marks {
                        if let Err(e) = proc.write(*addr, bytes) {
                            first_error.get_or_insert(e);
                        }
                    }
                    fault::point(opts, "unpatch-after-restore");
                    let _ = guardian.disarm();
                    if let Some(e) = first_error {
                        return Err(e.into());
                    }
                    fault::point(opts, "unpatch-before-munmap");
                    // No jump leads into the regions any more. Unless a thread holds a pointer
                    // into them now, none can get one (short of one stored in memory), so they
                    // go as soon as the threads that were running are released.
                    if found.refs.is_empty() && !defer_unmap {
                        *unmapped = true;
                        return Ok(AfterCommit {
                            unmap: regions.clone(),
                            registrations: regs.clone(),
                        });
                    }
                    for r in &found.refs {
                        rep.detail(&checked_stop::describe_reference(r));
                    }
                    Ok(AfterCommit::default())
                },
            )?);
        } else {
            fault::point(opts, "unpatch-before-munmap");
        }
        if let Some(after) = after.as_mut() {
            after(self, rep);
        }
        let proc = &self.proc;
        if !unmapped {
            // Reclaiming a region left pending does not wait: it is tried again next time.
            // Nor does a process whose thread the caller holds in the dynamic loader (an
            // object being unloaded): that thread does not run while we wait, and the load or
            // unload it is in would wait for us.
            let patience = if tolerant || proc.held_tid().is_some() {
                Duration::ZERO
            } else {
                opts.safety_timeout
            };
            if !checked_stop::unmap_when_unused(
                proc, &mut check, &regions, &regs, patience, opts, rep,
            )? && !tolerant
            {
                rep.info(&format!(
                    "warning: PID '{}': the removed patch's memory is still in use; it stays mapped and a later run will free it",
                    proc.pid()
                ));
            }
        }
        Ok(frozen)
    }

    /// A safety check of the ranges in `names` (see [`SafetyCheck::new`]).
    pub fn safety_check(&self, names: Vec<(Range<u64>, String)>) -> Result<SafetyCheck> {
        let l = &self.loaded;
        SafetyCheck::new(
            &self.proc,
            &l.maps,
            &l.objects,
            &l.patches,
            names,
            &self.images.trampolines,
        )
    }

    /// Stops one thread (the main one if it can) while the others run.
    pub fn stop_one(&self) -> Result<StoppedThread<'_>> {
        process_view::stop_one_thread(&self.proc, self.options().stop_timeout)
    }

    /// Unmaps regions with one thread stopped, deregistering their unwind tables first (with
    /// `unwinder`, the process's); failures are ignored (the caller is already reporting an
    /// error, and an unreferenced region does no harm; one whose tables could not be
    /// deregistered stays).
    pub fn unmap_regions(
        &self,
        regions: impl Iterator<Item = (u64, u64)>,
        unwinder: Option<Unwinder>,
    ) {
        let regions: Vec<(u64, u64)> = regions.filter(|&(a, l)| a != 0 && l != 0).collect();
        if regions.is_empty() {
            return;
        }
        let regs = eh_frames::registrations(&self.proc, || unwinder, &regions);
        let _defer = DeferTermination::new();
        if let Ok(mut stopped) = self.stop_one() {
            let mut thread = stopped.thread();
            for (a, l) in regions {
                if eh_frames::before_unmap(&mut thread, &regs, a).is_ok() {
                    let _ = thread.munmap(a, l);
                }
            }
            let _ = stopped.resume();
        }
    }
}
