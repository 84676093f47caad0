//! The target as the planner and the safety check see it: two narrow traits, implemented by the
//! live process of `kpatch-process` and, in the unit tests, by an in-memory fake. Attaching,
//! stopping, injecting syscalls and writing the commit stay with the live process.

use std::ops::Range;
use std::time::Duration;

use kpatch_arch::Arch;
use kpatch_process::{MapEntry, Memory, Process, StoppedProcess, StoppedThread};

use crate::error::Result;

/// A running process: its memory, and what the plan depends on besides.
pub trait ProcessView {
    /// Its memory, read (and written) while it runs.
    fn memory(&self) -> &dyn Memory;
    fn pid(&self) -> i32;
    fn arch(&self) -> &'static dyn Arch;
    /// The pages of `range` that hold data (see [`Process::resident`]); all of it when that
    /// cannot be known.
    fn resident(&self, range: Range<u64>) -> Vec<Range<u64>> {
        vec![range]
    }
}

impl ProcessView for Process {
    fn memory(&self) -> &dyn Memory {
        self
    }
    fn pid(&self) -> i32 {
        Process::pid(self)
    }
    fn arch(&self) -> &'static dyn Arch {
        Process::arch(self)
    }
    fn resident(&self, range: Range<u64>) -> Vec<Range<u64>> {
        Process::resident(self, range.clone()).unwrap_or_else(|_| vec![range])
    }
}

/// A process with threads stopped, as the safety check inspects it.
pub trait StoppedView<'p> {
    /// The process.
    fn process(&self) -> &'p dyn ProcessView;
    /// The stopped threads, sorted.
    fn tids(&self) -> Vec<i32>;
    /// The registers (`NT_PRSTATUS` words) of stopped thread `tid`; `None` when it is not one
    /// (it exited).
    fn regs(&mut self, tid: i32) -> Option<kpatch_process::Result<Vec<u64>>>;
    /// The registers of any stopped thread whose registers can be read.
    fn any_regs(&mut self) -> Option<Vec<u64>>;
    /// The mappings now.
    fn maps(&self) -> kpatch_process::Result<Vec<MapEntry>>;
}

impl<'p> StoppedView<'p> for StoppedProcess<'p> {
    fn process(&self) -> &'p dyn ProcessView {
        StoppedProcess::process(self)
    }
    fn tids(&self) -> Vec<i32> {
        StoppedProcess::tids(self)
    }
    fn regs(&mut self, tid: i32) -> Option<kpatch_process::Result<Vec<u64>>> {
        self.thread(tid).ok().map(|th| th.regs())
    }
    fn any_regs(&mut self) -> Option<Vec<u64>> {
        self.threads().find_map(|th| th.regs().ok())
    }
    fn maps(&self) -> kpatch_process::Result<Vec<MapEntry>> {
        StoppedProcess::process(self).maps()
    }
}

/// Stops one thread of `proc` (the main one if it can) while the others run.
pub fn stop_one_thread(proc: &Process, timeout: Duration) -> Result<StoppedThread<'_>> {
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
