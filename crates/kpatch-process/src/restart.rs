//! Undoing the `EINTR` that our stop itself causes. A few syscalls do not ask the kernel to
//! restart them when interrupted (they return `-EINTR` instead of `-ERESTART*`), so a thread
//! blocked in `epoll_wait` that we stop would see `EINTR` once resumed, although no signal was
//! delivered to it (signal(7): "Interruption of system calls ... by stop signals"). When such
//! a syscall shows `-EINTR` at our stop and no signal is pending that could explain it, we
//! rewind the thread onto the syscall instruction with the syscall number back in place: on
//! resume it simply calls again (with its full timeout, if it had one).
//!
//! This needs the syscall's arguments after the return. Where the return value lands in a
//! register that carries no argument (x86_64: `rax`, with the number kept in `orig_rax`) they
//! are all still there. On aarch64 the return value overwrites the first argument (`x0`; the
//! kernel's copy, `orig_x0`, is not exported through ptrace), so it is read beforehand from
//! `/proc/PID/task/TID/syscall` while the thread is blocked, and the rewind is done only when
//! the thread stopped right after that same call (same number, program counter and stack
//! pointer).

use std::path::PathBuf;

use crate::error::Result;
use crate::memory::Memory;
use crate::process::Process;
use crate::procfs::{self, CurrentSyscall};
use crate::regs::{read_regs, write_regs};

const EINTR: u64 = (-(libc::EINTR as i64)) as u64;

/// Where a syscall's return value overwrites its first argument (aarch64), what thread `tid`
/// is blocked in when it is one of those syscalls; read after seizing it and before
/// interrupting it.
pub(crate) fn blocked_syscall(process: &Process, tid: i32) -> Option<CurrentSyscall> {
    let arch = process.arch();
    if arch.regs().orig_syscall.is_some() {
        return None;
    }
    let dir = PathBuf::from(format!("/proc/{}/task/{tid}", process.pid()));
    procfs::current_syscall(&dir).filter(|s| arch.sys_eintr_on_stop(s.nr))
}

/// If thread `tid`, just stopped by our interrupt, returned `EINTR` from such a syscall
/// because of the stop, rewinds it so that it calls again when resumed. `before` is what
/// [`blocked_syscall`] saw. Returns its registers as they now are.
pub(crate) fn undo_stop_eintr(
    process: &Process,
    tid: i32,
    before: Option<&CurrentSyscall>,
) -> Result<Vec<u64>> {
    let arch = process.arch();
    let layout = arch.regs();
    let mut regs = read_regs(process, tid)?;
    if regs[layout.ret] != EINTR {
        return Ok(regs);
    }
    let (nr, first_arg) = match layout.orig_syscall {
        Some(orig) if !layout.syscall_args.contains(&layout.ret) => (regs[orig], None),
        Some(_) => return Ok(regs),
        None => match before {
            Some(b)
                if regs[layout.syscall_nr] == b.nr
                    && regs[layout.pc] == b.pc
                    && regs[layout.sp] == b.sp =>
            {
                (b.nr, Some(b.args[0]))
            }
            _ => return Ok(regs),
        },
    };
    if !arch.sys_eintr_on_stop(nr) {
        return Ok(regs);
    }
    let insn = arch.syscall_insn();
    let at = regs[layout.pc].wrapping_sub(insn.len() as u64);
    if process.read_vec(at, insn.len()).ok().as_deref() != Some(insn) {
        return Ok(regs);
    }
    // A deliverable signal is waiting: it interrupted the call and its handler will run, so
    // the EINTR is genuine.
    let dir = PathBuf::from(format!("/proc/{}/task/{tid}", process.pid()));
    match procfs::signal_state(&dir) {
        Some(s) if (s.pending | s.shared_pending) & !s.blocked == 0 => {}
        _ => return Ok(regs),
    }
    regs[layout.syscall_nr] = nr;
    if let Some(a) = first_arg {
        regs[layout.syscall_args[0]] = a;
    }
    regs[layout.pc] = at;
    write_regs(process, tid, &regs)?;
    Ok(regs)
}
