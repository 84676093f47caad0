//! Undoing the `EINTR` that our stop itself causes. A few syscalls do not ask the kernel to
//! restart them when interrupted (they return `-EINTR` instead of `-ERESTART*`), so a thread
//! blocked in `epoll_wait` that we stop would see `EINTR` once resumed, although no signal was
//! delivered to it (signal(7): "Interruption of system calls ... by stop signals"). When such
//! a syscall shows `-EINTR` at our stop and no signal is pending that could explain it, we
//! rewind the thread onto the syscall instruction with the syscall number back in place: on
//! resume it simply calls again (with its full timeout, if it had one).
//!
//! This needs the syscall's arguments intact after the return, which holds where the return
//! value lands in a register that carries no argument (x86_64: `rax`, with the number kept in
//! `orig_rax`). On aarch64 the return value overwrites the first argument (`x0`; the kernel's
//! copy, `orig_x0`, is not exported), so there the `EINTR` cannot be undone.

use std::path::PathBuf;

use kpatch_arch::{Arch, EM_X86_64};

use crate::error::Result;
use crate::memory::Memory;
use crate::process::Process;
use crate::procfs;
use crate::thread::{read_regs, write_regs};

const EINTR: u64 = (-(libc::EINTR as i64)) as u64;

/// Syscalls that fail with `EINTR` when a ptrace stop interrupts them, and that may be called
/// again with the same arguments.
fn eintr_on_stop(arch: &dyn Arch, nr: u64) -> bool {
    match arch.e_machine() {
        // epoll_wait, epoll_pwait, epoll_pwait2, semop, semtimedop, io_getevents,
        // io_pgetevents, rt_sigtimedwait
        EM_X86_64 => matches!(nr, 232 | 281 | 441 | 65 | 220 | 208 | 333 | 128),
        _ => false,
    }
}

/// If thread `tid`, just stopped by our interrupt, returned `EINTR` from such a syscall
/// because of the stop, rewinds it so that it calls again when resumed. Returns its registers
/// as they now are, when it read them.
pub(crate) fn undo_stop_eintr(process: &Process, tid: i32) -> Result<Option<Vec<u64>>> {
    let arch = process.arch();
    let layout = arch.regs();
    let Some(orig) = layout.orig_syscall else {
        return Ok(None);
    };
    if layout.syscall_args.contains(&layout.ret) {
        return Ok(None);
    }
    let mut regs = read_regs(process, tid)?;
    let nr = regs[orig];
    if regs[layout.ret] != EINTR || !eintr_on_stop(arch, nr) {
        return Ok(Some(regs));
    }
    let insn = arch.syscall_insn();
    let at = regs[layout.pc].wrapping_sub(insn.len() as u64);
    if process.read_vec(at, insn.len()).ok().as_deref() != Some(insn) {
        return Ok(Some(regs));
    }
    // A deliverable signal is waiting: it interrupted the call and its handler will run, so
    // the EINTR is genuine.
    let dir = PathBuf::from(format!("/proc/{}/task/{tid}", process.pid()));
    match procfs::signal_state(&dir) {
        Some(s) if (s.pending | s.shared_pending) & !s.blocked == 0 => {}
        _ => return Ok(Some(regs)),
    }
    regs[layout.ret] = nr;
    regs[layout.pc] = at;
    write_regs(process, tid, &regs)?;
    Ok(Some(regs))
}
