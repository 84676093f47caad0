//! What patch and unpatch hold while they work on one process: its lock, the process opened
//! for tracing, the guardian that completes or undoes our writes if the tool dies, and what is
//! loaded in it, read once the regions an interrupted run left behind are reclaimed.

use std::ops::Range;

use kpatch_process::{DeferTermination, Guardian, Process, StoppedThread};

use crate::checked_stop::SafetyCheck;
use crate::discover::{ImageCache, Loaded};
use crate::error::Result;
use crate::lock::{self, PidLock};
use crate::options::Options;
use crate::report::Report;
use crate::Engine;

/// One process, locked, opened and guarded for a patch or unpatch run.
pub struct Session<'e> {
    /// Dropped first: it performs the writes still armed with the lock held (it has a copy).
    pub guardian: Guardian,
    pub proc: Process,
    _lock: PidLock,
    engine: &'e Engine,
    pub loaded: Loaded,
}

impl<'e> Session<'e> {
    /// Locks and opens process `pid`, starts its guardian, reads what is loaded in it and
    /// reclaims what an interrupted run left behind.
    pub fn open(engine: &'e Engine, pid: i32, rep: &mut dyn Report) -> Result<Session<'e>> {
        // The lock comes first: another run holding it also traces the process, which opening
        // it would refuse.
        if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(kpatch_process::Error::NoSuchProcess { pid }.into());
        }
        let opts = &engine.options;
        let lock = lock::lock(&opts.lock_dir, pid, opts.lock_wait)?;
        let proc = Process::open(pid)?;
        let guardian = Guardian::spawn(&proc, &[lock.fd()])?;
        let loaded = Loaded::read(&proc, &engine.images)?;
        let mut session = Session {
            guardian,
            proc,
            _lock: lock,
            engine,
            loaded,
        };
        session.reclaim_pending(rep)?;
        Ok(session)
    }

    /// The options of the run.
    pub fn options(&self) -> &'e Options {
        &self.engine.options
    }

    fn images(&self) -> &'e ImageCache {
        &self.engine.images
    }

    /// Removes patch regions an interrupted run left behind (header magic `KPATCH0`): any jump
    /// into one is reverted, then it is unmapped, and what is loaded is read again.
    fn reclaim_pending(&mut self, rep: &mut dyn Report) -> Result<()> {
        let all = &self.loaded.patches;
        let pending: Vec<usize> = (0..all.len()).filter(|&i| !all[i].committed).collect();
        if pending.is_empty() {
            return Ok(());
        }
        for &i in &pending {
            rep.detail(&format!(
                "reclaiming the region at {:#x} left by an interrupted run (patch {})",
                all[i].kpta, all[i].id
            ));
        }
        self.remove(&pending, true, rep)?;
        self.loaded = Loaded::read(&self.proc, self.images())?;
        Ok(())
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
            &self.images().trampolines,
        )
    }

    /// Stops one thread (the main one if it can) while the others run.
    pub fn stop_one(&self) -> Result<StoppedThread<'_>> {
        let (proc, timeout) = (&self.proc, self.options().stop_timeout);
        match proc.stop_one(proc.pid(), timeout) {
            Ok(t) => Ok(t),
            Err(first) => {
                for tid in proc.thread_ids()? {
                    if tid != proc.pid() {
                        if let Ok(t) = proc.stop_one(tid, timeout) {
                            return Ok(t);
                        }
                    }
                }
                Err(first.into())
            }
        }
    }

    /// Unmaps regions with one thread stopped; failures are ignored (the caller is already
    /// reporting an error, and an unreferenced region does no harm).
    pub fn unmap_regions(&self, regions: impl Iterator<Item = (u64, u64)>) {
        let regions: Vec<(u64, u64)> = regions.filter(|&(a, l)| a != 0 && l != 0).collect();
        if regions.is_empty() {
            return;
        }
        let _defer = DeferTermination::new();
        if let Ok(mut stopped) = self.stop_one() {
            let mut thread = stopped.thread();
            for (a, l) in regions {
                let _ = thread.munmap(a, l);
            }
            let _ = stopped.resume();
        }
    }
}
