//! A stopped thread: its general-purpose registers, as `NT_PRSTATUS` word vectors laid out
//! as [`kpatch_arch::RegLayout`] says, so one code path serves x86_64 and aarch64. Syscalls and
//! calls run in it are in [`crate::syscall`] and [`crate::call`].

use kpatch_arch::RegLayout;
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::process::Process;
use crate::ptrace::{self, NT_PRSTATUS};
use crate::stop::{ptrace_error, Tracee};

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
        ptrace_error(self.process, self.tracee.tid, op, errno)
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

/// The general-purpose registers of stopped thread `tid`, checked against the layout.
pub(crate) fn read_regs(process: &Process, tid: i32) -> Result<Vec<u64>> {
    let layout = process.arch().regs();
    let mut words = vec![0u64; layout.words];
    // SAFETY: the byte view covers exactly the words' memory, which is initialised and
    // exclusively borrowed for the duration of the call.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    let got = ptrace::get_regset(tid, NT_PRSTATUS, bytes)
        .map_err(|e| ptrace_error(process, tid, "GETREGSET", e))?;
    let max_index = [
        layout.pc,
        layout.sp,
        layout.fp,
        layout.syscall_nr,
        layout.ret,
    ]
    .into_iter()
    .chain(layout.syscall_args)
    .chain(layout.call_args)
    .chain(layout.orig_syscall)
    .chain(layout.link)
    .max()
    .unwrap_or(0);
    if got != layout.words * 8 || max_index >= layout.words {
        return Err(Error::RegisterSize {
            pid: process.pid(),
            tid,
            regset: NT_PRSTATUS,
            got,
            want: layout.words * 8,
        });
    }
    Ok(words)
}

/// Replaces the general-purpose registers of stopped thread `tid`.
pub(crate) fn write_regs(process: &Process, tid: i32, regs: &[u64]) -> Result<()> {
    let want = process.arch().regs().words;
    if regs.len() != want {
        return Err(Error::InvalidArgument(format!(
            "pid {}: thread {tid}: {} register words given, the register set has {want}",
            process.pid(),
            regs.len()
        )));
    }
    let bytes: Vec<u8> = regs.iter().flat_map(|w| w.to_ne_bytes()).collect();
    ptrace::set_regset(tid, NT_PRSTATUS, &bytes)
        .map_err(|e| ptrace_error(process, tid, "SETREGSET", e))
}
