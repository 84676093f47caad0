//! A handle on one stopped thread: its registers ([`crate::regs`]). What it can run is added by
//! the modules above it, each an `impl ThreadHandle` on this one: the frame every injected
//! operation shares ([`crate::inject`]), syscalls ([`crate::syscall`]), function calls
//! ([`crate::call`]) and the re-queueing of kept signals ([`crate::signals`]).

use kpatch_arch::RegLayout;
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::process::Process;
use crate::regs::{read_regs, write_regs};
use crate::tracee::Tracee;

/// A stopped thread of a [`StoppedProcess`](crate::StoppedProcess) or a
/// [`StoppedThread`](crate::StoppedThread): read and write its registers, run syscalls and
/// call functions in it.
#[derive(Debug)]
pub struct ThreadHandle<'a> {
    pub(crate) process: &'a Process,
    pub(crate) tracee: &'a mut Tracee,
}

impl<'a> ThreadHandle<'a> {
    pub(crate) fn new(process: &'a Process, tracee: &'a mut Tracee) -> Self {
        ThreadHandle { process, tracee }
    }

    /// The process.
    pub fn process(&self) -> &'a Process {
        self.process
    }

    /// Thread id.
    pub fn tid(&self) -> i32 {
        self.tracee.tid
    }

    pub(crate) fn pid(&self) -> i32 {
        self.process.pid()
    }

    pub(crate) fn ptrace_err(&self, op: &'static str, errno: Errno) -> Error {
        Error::ptrace(self.process.pid(), self.tracee.tid, op, errno)
    }

    /// The register layout, checked against the words the kernel hands out.
    pub(crate) fn layout(&self) -> RegLayout {
        self.process.arch().regs()
    }

    /// The general-purpose registers (`NT_PRSTATUS`), as [`RegLayout::words`] 64-bit words.
    pub fn regs(&self) -> Result<Vec<u64>> {
        match &self.tracee.regs {
            Some(regs) => Ok(regs.clone()),
            None => read_regs(self.process, self.tid()),
        }
    }

    /// Replaces the general-purpose registers; `regs` must hold [`RegLayout::words`] words.
    pub fn set_regs(&mut self, regs: &[u64]) -> Result<()> {
        self.tracee.regs = None;
        write_regs(self.process, self.tid(), regs)
    }

    /// Program counter.
    pub fn pc(&self) -> Result<u64> {
        Ok(self.regs()?[self.layout().pc])
    }

    /// Stack pointer.
    pub fn sp(&self) -> Result<u64> {
        Ok(self.regs()?[self.layout().sp])
    }
}
