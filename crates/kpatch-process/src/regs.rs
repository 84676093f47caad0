//! The general-purpose registers of a stopped thread, as `NT_PRSTATUS` word vectors laid out as
//! [`kpatch_arch::RegLayout`] says, so one code path serves every architecture.

use crate::error::{Error, Result};
use crate::process::Process;
use crate::ptrace::{self, NT_PRSTATUS};

/// The general-purpose registers of stopped thread `tid`, checked against the layout.
pub(crate) fn read_regs(process: &Process, tid: i32) -> Result<Vec<u64>> {
    let layout = process.arch().regs();
    let mut words = vec![0u64; layout.words];
    // SAFETY: the byte view covers exactly the words' memory, which is initialised and
    // exclusively borrowed for the duration of the call.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    let got = ptrace::get_regset(tid, NT_PRSTATUS, bytes)
        .map_err(|e| Error::ptrace(process.pid(), tid, "GETREGSET", e))?;
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
        .map_err(|e| Error::ptrace(process.pid(), tid, "SETREGSET", e))
}
