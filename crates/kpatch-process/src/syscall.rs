//! Syscalls run in a stopped thread. No code of the target is modified: the thread borrows an
//! existing syscall instruction (see [`crate::syscall_insn`]) and is single-stepped over it.
//!
//! Every operation restores all registers before returning, so a thread that was blocked in
//! `read`, `nanosleep`, `futex`, `accept`... restarts its syscall transparently and never sees
//! `EINTR`: the kernel's restart logic runs when the thread leaves our stop, on the registers
//! we put back. For the injected syscall itself restarting is cancelled (`orig_rax = -1` on
//! x86_64, `NT_ARM_SYSTEM_CALL = -1` on aarch64). The few syscalls that fail with `EINTR`
//! rather than restart (`epoll_wait`...) are dealt with when the thread stops
//! ([`crate::restart`]).

use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::ptrace::{self, Event};
use crate::thread::ThreadHandle;

/// How long an injected syscall may take.
pub const SYSCALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Stops tolerated (group-stops, late interrupts) before an injected syscall is declared
/// stuck.
pub(crate) const MAX_STEPS: usize = 64;

impl ThreadHandle<'_> {
    /// Runs syscall `nr` with up to 6 arguments in the thread and returns its result; a
    /// negative errno becomes [`Error::RemoteSyscall`]. Numbers and argument meanings are the
    /// target's (see [`kpatch_arch::Arch`] for the common ones).
    pub fn syscall(&mut self, nr: u64, args: &[u64]) -> Result<u64> {
        self.syscall_named(&format!("syscall {nr}"), nr, args)
    }

    /// `mmap(addr, len, prot, flags, -1, 0)` in the target. With an address,
    /// `MAP_FIXED_NOREPLACE` is added, and a result elsewhere (a kernel that treats the address
    /// as a hint) is unmapped again and reported as [`Error::MmapMisplaced`]. `prot` and
    /// `flags` are Linux's generic values (`libc::PROT_*`, `libc::MAP_*`), the same on x86_64
    /// and aarch64.
    pub fn mmap(&mut self, addr: Option<u64>, len: u64, prot: i32, flags: i32) -> Result<u64> {
        let arch = self.process.arch();
        let mut flags = flags;
        if addr.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        let args = [
            addr.unwrap_or(0),
            len,
            prot as u64,
            flags as u64,
            u64::MAX, // fd -1
            0,
        ];
        let got = self.syscall_named("mmap", arch.sys_mmap(), &args)?;
        if let Some(want) = addr {
            if got != want {
                let _ = self.munmap(got, len);
                return Err(Error::MmapMisplaced {
                    pid: self.pid(),
                    want,
                    got,
                    len,
                });
            }
        }
        Ok(got)
    }

    /// `munmap(addr, len)` in the target.
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<()> {
        let nr = self.process.arch().sys_munmap();
        self.syscall_named("munmap", nr, &[addr, len]).map(drop)
    }

    /// `mprotect(addr, len, prot)` in the target.
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: i32) -> Result<()> {
        let nr = self.process.arch().sys_mprotect();
        self.syscall_named("mprotect", nr, &[addr, len, prot as u64])
            .map(drop)
    }

    pub(crate) fn syscall_named(&mut self, name: &str, nr: u64, args: &[u64]) -> Result<u64> {
        let value = self.raw_syscall(name, nr, args)?;
        let signed = value as i64;
        if (-4095..0).contains(&signed) {
            return Err(Error::RemoteSyscall {
                pid: self.pid(),
                tid: self.tid(),
                syscall: name.to_owned(),
                errno: Errno::from_raw((-signed) as i32),
            });
        }
        Ok(value)
    }

    /// Runs a syscall and returns the raw register value (negative errno included).
    pub(crate) fn raw_syscall(&mut self, name: &str, nr: u64, args: &[u64]) -> Result<u64> {
        if args.len() > 6 {
            return Err(Error::InvalidArgument(format!(
                "remote {name}: {} arguments given, at most 6 allowed",
                args.len()
            )));
        }
        // Never run what the thread's seccomp filter would refuse or punish.
        self.check_seccomp(name, nr, args)?;
        let layout = self.layout();
        let at = self.process.syscall_instruction()?;
        let end = at + self.process.arch().syscall_insn().len() as u64;
        let mut saved = self.save(false)?;
        let mut regs = saved.regs.clone();
        regs[layout.pc] = at;
        regs[layout.syscall_nr] = nr;
        for (&reg, &arg) in layout.syscall_args.iter().zip(args) {
            regs[reg] = arg;
        }
        let deadline = Instant::now() + SYSCALL_TIMEOUT;
        let outcome = self
            .unblock(libc::SIGTRAP, &mut saved)
            .and_then(|()| self.enter(regs, &saved))
            .and_then(|()| self.step_over(name, at, end, deadline));
        let restored = self.restore(&saved);
        let regs = outcome?;
        restored?;
        Ok(regs[layout.ret])
    }

    /// Single-steps the syscall instruction at `at` until the thread stops right after it.
    pub(crate) fn step_over(
        &mut self,
        name: &str,
        at: u64,
        end: u64,
        deadline: Instant,
    ) -> Result<Vec<u64>> {
        let layout = self.layout();
        // Signal stops are not counted: a flood of pending signals is dequeued one per
        // resume before the instruction runs, each kept for later; the deadline bounds that.
        let mut other_stops = 0;
        while other_stops < MAX_STEPS {
            ptrace::single_step(self.tid()).map_err(|e| self.ptrace_err("SINGLESTEP", e))?;
            let Some(event) = self.wait(deadline, "a remote syscall")? else {
                self.recover(|sig, pc| sig == libc::SIGTRAP && pc == end)?;
                return Err(Error::RemoteTimeout {
                    pid: self.pid(),
                    tid: self.tid(),
                    what: name.to_owned(),
                    timeout: SYSCALL_TIMEOUT,
                });
            };
            let regs = self.regs()?;
            let pc = regs[layout.pc];
            match event {
                Event::Signal(sig) if sig == libc::SIGTRAP && pc == end => return Ok(regs),
                Event::Signal(_) => self.keep_signal()?,
                // A group-stop or an interrupt came first; the step is still to do (or its
                // SIGTRAP is pending and comes next, with no instruction executed).
                _ => other_stops += 1,
            }
            if pc != at && pc != end {
                return Err(Error::UnexpectedStop {
                    pid: self.pid(),
                    tid: self.tid(),
                    detail: format!(
                        "the injected {name} left the program counter at {pc:#x}, expected {at:#x} or {end:#x}"
                    ),
                });
            }
        }
        Err(Error::UnexpectedStop {
            pid: self.pid(),
            tid: self.tid(),
            detail: format!("the injected {name} did not complete after {MAX_STEPS} stops"),
        })
    }
}
