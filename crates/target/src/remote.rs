//! Working on one stopped thread: registers, syscalls run in the target, functions called in
//! the target. No code of the target is modified: a syscall borrows an existing syscall
//! instruction and is single-stepped; a call returns to an address that faults, and the fault
//! is intercepted before it is delivered.
//!
//! Every operation restores all registers (and, for calls, the floating-point/vector state)
//! before returning, so a thread that was blocked in `read`, `nanosleep`, `futex`, `accept`,
//! `epoll_wait`... restarts its syscall transparently and never sees `EINTR`. The kernel's
//! restart logic runs when the thread leaves our stop, on the registers we put back; for the
//! injected syscall itself restarting is cancelled (`orig_rax = -1` on x86_64,
//! `NT_ARM_SYSTEM_CALL = -1` on aarch64).

use std::time::{Duration, Instant};

use kpatch_arch::RegLayout;
use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::maps::MapEntry;
use crate::memory::Memory;
use crate::process::Process;
use crate::ptrace::{self, Event, NT_ARM_SYSTEM_CALL, NT_PRFPREG, NT_PRSTATUS, NT_X86_XSTATE};
use crate::signals::{self, sigbit, SavedSignal, SIGINFO_SIZE};
use crate::stop::{ptrace_error, Tracee};

/// Bytes below the stack pointer left untouched: the x86_64 ABI's red zone (other ABIs have
/// none and lose nothing).
pub const RED_ZONE: u64 = 128;
/// Where a called function returns to: page 0, never mapped (it lies below `mmap_min_addr`).
pub const CALL_RETURN_ADDRESS: u64 = 0;
/// How long an injected syscall may take.
pub const SYSCALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Stops tolerated (group-stops, late interrupts, signals) before an injected syscall is
/// declared stuck.
const MAX_STEPS: usize = 64;
/// Grace period to stop a thread again after a timed-out operation.
const RECOVER_GRACE: Duration = Duration::from_secs(1);
/// Large enough for any x86 XSAVE layout the kernel exports (AMX included).
const XSTATE_MAX: usize = 64 * 1024;

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;

/// A stopped thread of a [`StoppedProcess`](crate::StoppedProcess) or a
/// [`StoppedThread`](crate::StoppedThread): read and write its registers, run syscalls and
/// call functions in it.
#[derive(Debug)]
pub struct ThreadHandle<'a> {
    process: &'a Process,
    tracee: &'a mut Tracee,
}

/// Everything an injected operation changes and puts back.
struct Saved {
    regs: Vec<u64>,
    /// aarch64: the syscall number the kernel would restart.
    syscall_no: Option<Vec<u8>>,
    /// Floating-point/vector state: (regset, bytes).
    vector: Option<(u32, Vec<u8>)>,
    /// The signal mask, when we had to change it.
    mask: Option<u64>,
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

    fn pid(&self) -> i32 {
        self.process.pid()
    }

    fn ptrace_err(&self, op: &'static str, errno: Errno) -> Error {
        ptrace_error(self.process, self.tracee.tid, op, errno)
    }

    /// The register layout, checked against the words the kernel hands out.
    fn layout(&self) -> RegLayout {
        self.process.arch().regs()
    }

    /// The general-purpose registers (`NT_PRSTATUS`), as [`RegLayout::words`] 64-bit words.
    pub fn regs(&self) -> Result<Vec<u64>> {
        read_regs(self.process, self.tid())
    }

    /// Replaces the general-purpose registers; `regs` must hold [`RegLayout::words`] words.
    pub fn set_regs(&mut self, regs: &[u64]) -> Result<()> {
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

    fn syscall_named(&mut self, name: &str, nr: u64, args: &[u64]) -> Result<u64> {
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
    fn raw_syscall(&mut self, name: &str, nr: u64, args: &[u64]) -> Result<u64> {
        if args.len() > 6 {
            return Err(Error::InvalidArgument(format!(
                "remote {name}: {} arguments given, at most 6 allowed",
                args.len()
            )));
        }
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
    fn step_over(&mut self, name: &str, at: u64, end: u64, deadline: Instant) -> Result<Vec<u64>> {
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

    /// Calls the function at `func` with up to 6 integer arguments and returns its integer
    /// result. The call runs on the thread's stack below the red zone and returns to
    /// [`CALL_RETURN_ADDRESS`], where the fault is intercepted and never delivered. If the
    /// function faults, or does not return within `timeout`, the thread is restored and the
    /// call reported as failed (whatever the function did to memory or locks stays done).
    pub fn call(&mut self, func: u64, args: &[u64], timeout: Duration) -> Result<u64> {
        if args.len() > 6 {
            return Err(Error::InvalidArgument(format!(
                "remote call of {func:#x}: {} arguments given, at most 6 allowed",
                args.len()
            )));
        }
        let ret_addr = CALL_RETURN_ADDRESS;
        let maps = self.process.maps()?;
        if maps.iter().any(|m: &MapEntry| m.contains(ret_addr)) {
            return Err(Error::InvalidArgument(format!(
                "pid {}: address {ret_addr:#x} is mapped, a remote call could not be caught returning",
                self.pid()
            )));
        }
        let layout = self.layout();
        let mut saved = self.save(true)?;
        let mut regs = saved.regs.clone();
        // ABI: the stack is 16-byte aligned at the call, i.e. before the return address is
        // pushed (x86_64) or with the return address in the link register (aarch64).
        let mut sp = regs[layout.sp].wrapping_sub(RED_ZONE) & !0xf;
        match layout.link {
            Some(lr) => regs[lr] = ret_addr,
            None => {
                sp -= 8;
                self.process.write_u64(sp, ret_addr)?;
            }
        }
        regs[layout.sp] = sp;
        regs[layout.pc] = func;
        for (&reg, &arg) in layout.call_args.iter().zip(args) {
            regs[reg] = arg;
        }
        if !layout.call_args.contains(&layout.ret) {
            // x86_64 variadic convention: %al = number of vector registers used.
            regs[layout.ret] = 0;
        }
        let deadline = Instant::now() + timeout;
        let outcome = self
            .unblock(libc::SIGSEGV, &mut saved)
            .and_then(|()| self.enter(regs, &saved))
            .and_then(|()| self.run_call(func, ret_addr, deadline, timeout));
        let restored = self.restore(&saved);
        let value = outcome?;
        restored?;
        Ok(value)
    }

    fn run_call(
        &mut self,
        func: u64,
        ret_addr: u64,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<u64> {
        let layout = self.layout();
        loop {
            ptrace::cont(self.tid(), 0).map_err(|e| self.ptrace_err("CONT", e))?;
            let Some(event) = self.wait(deadline, "a remote call")? else {
                self.recover(|sig, pc| sig == libc::SIGSEGV && pc == ret_addr)?;
                return Err(Error::RemoteTimeout {
                    pid: self.pid(),
                    tid: self.tid(),
                    what: format!("call of {func:#x}"),
                    timeout,
                });
            };
            let Event::Signal(sig) = event else {
                // A group-stop or an interrupt: keep the call going.
                continue;
            };
            let regs = self.regs()?;
            let pc = regs[layout.pc];
            if sig == libc::SIGSEGV && pc == ret_addr {
                return Ok(regs[layout.ret]);
            }
            let info = ptrace::siginfo(self.tid()).map_err(|e| self.ptrace_err("GETSIGINFO", e))?;
            if is_fault(sig, info.si_code) {
                // SAFETY: for the fault signals accepted by is_fault, the kernel filled the
                // si_addr member of the union.
                let addr = unsafe { info.si_addr() } as u64;
                return Err(Error::CallFault {
                    pid: self.pid(),
                    tid: self.tid(),
                    func,
                    signal: sig,
                    pc,
                    addr,
                });
            }
            self.tracee.saved.push(SavedSignal::new(&info));
        }
    }

    /// Waits for the thread's next state change; `None` at the deadline.
    fn wait(&mut self, deadline: Instant, during: &'static str) -> Result<Option<Event>> {
        let event = match ptrace::wait_event(self.tid(), deadline) {
            Ok(e) => e,
            Err(Errno::ECHILD) => Event::Exited(0),
            Err(errno) => {
                return Err(Error::Wait {
                    pid: self.pid(),
                    tid: self.tid(),
                    errno,
                })
            }
        };
        match event {
            Event::Running => Ok(None),
            Event::Exited(_) | Event::Killed(_) => {
                self.tracee.gone = true;
                Err(Error::ThreadExited {
                    pid: self.pid(),
                    tid: self.tid(),
                    during,
                })
            }
            e => Ok(Some(e)),
        }
    }

    /// Stops the thread again after an operation timed out. `ours` tells a stop caused by
    /// the operation itself (which completed just now) from a foreign signal to keep.
    fn recover(&mut self, ours: impl Fn(i32, u64) -> bool) -> Result<()> {
        match ptrace::interrupt(self.tid()) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(errno) => return Err(self.ptrace_err("INTERRUPT", errno)),
        }
        let deadline = Instant::now() + RECOVER_GRACE;
        match self.wait(deadline, "recovery from a timeout")? {
            None => Err(Error::StopTimeout {
                pid: self.pid(),
                tids: vec![self.tid()],
                timeout: RECOVER_GRACE,
            }),
            Some(Event::Signal(sig)) => {
                let pc = self.pc()?;
                if !ours(sig, pc) {
                    self.keep_signal()?;
                }
                Ok(())
            }
            Some(_) => Ok(()),
        }
    }

    /// Keeps the signal of the current signal-delivery-stop for later; the next resume
    /// (with signal 0) discards it from the thread.
    fn keep_signal(&mut self) -> Result<()> {
        let info = ptrace::siginfo(self.tid()).map_err(|e| self.ptrace_err("GETSIGINFO", e))?;
        self.tracee.saved.push(SavedSignal::new(&info));
        Ok(())
    }

    /// Saves what an injected operation changes.
    fn save(&self, with_vector: bool) -> Result<Saved> {
        let regs = self.regs()?;
        let syscall_no = if self.layout().orig_syscall.is_none() {
            // aarch64 keeps the restartable syscall outside the general registers.
            let mut buf = vec![0u8; 4];
            match ptrace::get_regset(self.tid(), NT_ARM_SYSTEM_CALL, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    Some(buf)
                }
                Err(_) => None,
            }
        } else {
            None
        };
        let vector = if with_vector {
            self.save_vector()?
        } else {
            None
        };
        Ok(Saved {
            regs,
            syscall_no,
            vector,
            mask: None,
        })
    }

    /// The richest floating-point/vector register set the kernel offers (x86 XSAVE area,
    /// else the classic FP regset), for calls: the called code may use any of them.
    fn save_vector(&self) -> Result<Option<(u32, Vec<u8>)>> {
        for regset in [NT_X86_XSTATE, NT_PRFPREG] {
            let mut buf = vec![0u8; XSTATE_MAX];
            match ptrace::get_regset(self.tid(), regset, &mut buf) {
                Ok(n) if n > 0 => {
                    buf.truncate(n);
                    return Ok(Some((regset, buf)));
                }
                Ok(_) | Err(Errno::EINVAL) | Err(Errno::ENODEV) | Err(Errno::EIO) => {}
                Err(errno) => return Err(self.ptrace_err("GETREGSET", errno)),
            }
        }
        Ok(None)
    }

    /// Makes sure `sig` is not blocked while we rely on it: the kernel forces a blocked fault
    /// signal through by unblocking it and resetting its handler to the default, which would
    /// change the program. The mask is put back by [`ThreadHandle::restore`].
    fn unblock(&mut self, sig: i32, saved: &mut Saved) -> Result<()> {
        let Some(mask) = self.sigmask()? else {
            return Ok(());
        };
        if mask & sigbit(sig) != 0 {
            self.set_sigmask(mask & !sigbit(sig))?;
            saved.mask = Some(mask);
        }
        Ok(())
    }

    /// The blocked-signal mask; `None` on kernels without `PTRACE_GETSIGMASK` (before 3.11).
    fn sigmask(&self) -> Result<Option<u64>> {
        let mut mask: u64 = 0;
        // SAFETY: the kernel writes one 8-byte sigset into `mask`, whose size we pass.
        let r = unsafe {
            libc::ptrace(
                PTRACE_GETSIGMASK,
                self.tid(),
                8usize as *mut libc::c_void,
                &mut mask as *mut u64 as *mut libc::c_void,
            )
        };
        match Errno::result(r) {
            Ok(_) => Ok(Some(mask)),
            Err(Errno::EINVAL) | Err(Errno::EIO) => Ok(None),
            Err(errno) => Err(self.ptrace_err("GETSIGMASK", errno)),
        }
    }

    fn set_sigmask(&self, mask: u64) -> Result<()> {
        // SAFETY: the kernel reads one 8-byte sigset from `mask`, whose size we pass.
        let r = unsafe {
            libc::ptrace(
                PTRACE_SETSIGMASK,
                self.tid(),
                8usize as *mut libc::c_void,
                &mask as *const u64 as *mut libc::c_void,
            )
        };
        Errno::result(r)
            .map(drop)
            .map_err(|e| self.ptrace_err("SETSIGMASK", e))
    }

    /// Installs the registers of an injected operation, with syscall restarting cancelled.
    fn enter(&mut self, mut regs: Vec<u64>, saved: &Saved) -> Result<()> {
        let layout = self.layout();
        if let Some(orig) = layout.orig_syscall {
            regs[orig] = u64::MAX;
        }
        self.set_regs(&regs)?;
        if let Some(no) = &saved.syscall_no {
            let minus_one = (-1i32).to_ne_bytes();
            ptrace::set_regset(
                self.tid(),
                NT_ARM_SYSTEM_CALL,
                &minus_one[..no.len().min(4)],
            )
            .map_err(|e| self.ptrace_err("SETREGSET(NT_ARM_SYSTEM_CALL)", e))?;
        }
        Ok(())
    }

    /// Puts back everything [`ThreadHandle::save`] saved (nothing if the thread is gone).
    fn restore(&mut self, saved: &Saved) -> Result<()> {
        if self.tracee.gone {
            return Ok(());
        }
        let mut result = self.set_regs(&saved.regs);
        if let Some(no) = &saved.syscall_no {
            let r = ptrace::set_regset(self.tid(), NT_ARM_SYSTEM_CALL, no)
                .map_err(|e| self.ptrace_err("SETREGSET(NT_ARM_SYSTEM_CALL)", e));
            result = result.and(r);
        }
        if let Some((regset, bytes)) = &saved.vector {
            let r = ptrace::set_regset(self.tid(), *regset, bytes)
                .map_err(|e| self.ptrace_err("SETREGSET(vector state)", e));
            result = result.and(r);
        }
        if let Some(mask) = saved.mask {
            result = result.and(self.set_sigmask(mask));
        }
        result
    }

    /// Queues the kept signals back to the thread (see [`crate::signals`]). Once one
    /// injected syscall has run, the kernel has put back any temporary mask of an interrupted
    /// `ppoll`/`pselect`/`sigsuspend`, so the real mask can be changed safely: the signals
    /// already queued are blocked until the thread is released, so that the next injected
    /// syscall does not dequeue them again.
    pub(crate) fn requeue_saved(&mut self) {
        let tgid = self.pid();
        let tid = self.tid();
        let Some(nr) = signals::sys_rt_tgsigqueueinfo(self.process.arch()) else {
            for sig in std::mem::take(&mut self.tracee.saved) {
                signals::queue_from_here(tgid, tid, &sig);
            }
            return;
        };
        let mut real_mask: Option<u64> = None;
        let mut blocked: u64 = 0;
        // Signals that arrive meanwhile join the list; the budget keeps a flood finite.
        let budget = self.tracee.saved.len() + MAX_STEPS;
        for _ in 0..budget {
            if self.tracee.saved.is_empty() || self.tracee.gone {
                break;
            }
            // A kept SIGTRAP goes last: it cannot be blocked and would merge with the trap of
            // the next single step.
            let next = self
                .tracee
                .saved
                .iter()
                .position(|s| s.signo != libc::SIGTRAP)
                .unwrap_or(0);
            let sig = self.tracee.saved.remove(next);
            if self.queue_to_self(nr, &sig).is_err() {
                signals::queue_from_here(tgid, tid, &sig);
            }
            if self.tracee.gone {
                break;
            }
            let wanted = self
                .tracee
                .saved
                .iter()
                .chain(std::iter::once(&sig))
                .fold(0, |m, s| m | sigbit(s.signo))
                & !(sigbit(libc::SIGTRAP) | sigbit(libc::SIGKILL) | sigbit(libc::SIGSTOP));
            if self.tracee.saved.is_empty() || wanted & !blocked == 0 {
                continue;
            }
            let Ok(Some(current)) = self.sigmask() else {
                continue;
            };
            let real = *real_mask.get_or_insert(current);
            blocked |= wanted;
            if self.set_sigmask(real | blocked).is_err() {
                real_mask = None;
            }
        }
        for sig in std::mem::take(&mut self.tracee.saved) {
            signals::queue_from_here(tgid, tid, &sig);
        }
        if let Some(mask) = real_mask {
            let _ = self.set_sigmask(mask);
        }
    }

    /// `rt_tgsigqueueinfo(tgid, tid, sig, info)` run by the thread itself, with the siginfo
    /// written below its red zone.
    fn queue_to_self(&mut self, nr: u64, sig: &SavedSignal) -> Result<()> {
        let scratch = self.sp()?.wrapping_sub(RED_ZONE + SIGINFO_SIZE as u64) & !0xf;
        self.process.write(scratch, &sig.raw)?;
        let args = [
            self.pid() as u64,
            self.tid() as u64,
            sig.signo as u64,
            scratch,
        ];
        self.syscall_named("rt_tgsigqueueinfo", nr, &args).map(drop)
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
    let max_index = [layout.pc, layout.sp, layout.syscall_nr, layout.ret]
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

/// A signal the kernel raised because of what the instruction stream did.
fn is_fault(sig: i32, code: i32) -> bool {
    matches!(
        sig,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGSYS
    ) && code > 0
}

impl Process {
    /// Address of an instruction that performs a syscall, correctly aligned, in an executable
    /// mapping: the vDSO first, then libc, then anything executable. Remembered, and checked
    /// again before each use (a patch may have overwritten it).
    pub(crate) fn syscall_instruction(&self) -> Result<u64> {
        let insn = self.arch().syscall_insn();
        let cached = *self
            .syscall_insn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(addr) = cached {
            if self.read_vec(addr, insn.len()).ok().as_deref() == Some(insn) {
                return Ok(addr);
            }
        }
        let maps = self.maps()?;
        let rank = |m: &MapEntry| {
            if m.is_special("[vdso]") {
                0
            } else if m
                .file_path()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.") || n.starts_with("libc-"))
            {
                1
            } else {
                2
            }
        };
        let mut candidates: Vec<&MapEntry> = maps
            .iter()
            .filter(|m| m.perms.exec && !m.is_special("[vsyscall]") && m.start < 1 << 63)
            .collect();
        candidates.sort_by_key(|m| rank(m));
        let align = self.arch().insn_alignment().max(1);
        let found = candidates
            .into_iter()
            .find_map(|m| find_instruction(self, m, insn, align))
            .ok_or(Error::NoSyscallInstruction { pid: self.pid() })?;
        *self
            .syscall_insn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(found);
        Ok(found)
    }
}

/// First `align`-aligned occurrence of `insn` in the mapping, read in chunks.
fn find_instruction(mem: &impl Memory, m: &MapEntry, insn: &[u8], align: u64) -> Option<u64> {
    const CHUNK: u64 = 64 * 1024;
    if insn.is_empty() {
        return None;
    }
    let mut at = m.start;
    while at < m.end {
        let len = (CHUNK + insn.len() as u64 - 1).min(m.end - at);
        // An unreadable (execute-only) mapping is skipped.
        let buf = mem.read_vec(at, len as usize).ok()?;
        let hit = buf
            .windows(insn.len())
            .enumerate()
            .map(|(i, w)| (at + i as u64, w))
            .find(|(a, w)| a % align == 0 && *w == insn);
        if let Some((addr, _)) = hit {
            return Some(addr);
        }
        at += CHUNK;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{MapName, Perms};
    use std::cell::RefCell;

    struct Fake(RefCell<Vec<u8>>, u64);

    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> Result<()> {
            let mem = self.0.borrow();
            let start = (addr - self.1) as usize;
            buf.copy_from_slice(&mem[start..start + buf.len()]);
            Ok(())
        }
        fn write(&self, _: u64, _: &[u8]) -> Result<()> {
            unreachable!()
        }
    }

    #[test]
    fn finds_aligned_instruction_across_chunks() {
        let base = 0x10000;
        let mut bytes = vec![0u8; 200 * 1024];
        // A misaligned svc, an aligned one further on, and a syscall straddling the first
        // chunk's end.
        let svc = [1, 0, 0, 0xd4];
        bytes[101..105].copy_from_slice(&svc);
        bytes[70000..70004].copy_from_slice(&svc);
        bytes[65535..65537].copy_from_slice(&[0x0f, 0x05]);
        let m = MapEntry {
            start: base,
            end: base + bytes.len() as u64,
            perms: Perms::default(),
            offset: 0,
            dev: (0, 0),
            inode: 0,
            name: MapName::Anonymous,
        };
        let fake = Fake(RefCell::new(bytes), base);
        assert_eq!(find_instruction(&fake, &m, &svc, 4), Some(base + 70000));
        assert_eq!(find_instruction(&fake, &m, &svc, 1), Some(base + 101));
        assert_eq!(
            find_instruction(&fake, &m, &[0x0f, 0x05], 1),
            Some(base + 65535)
        );
        assert_eq!(find_instruction(&fake, &m, &[0xcc, 0xcc], 1), None);
    }

    #[test]
    fn fault_signals_are_kernel_raised_ones() {
        assert!(is_fault(libc::SIGSEGV, 1));
        assert!(is_fault(libc::SIGBUS, 0x80));
        assert!(!is_fault(libc::SIGSEGV, 0)); // kill()
        assert!(!is_fault(libc::SIGSEGV, libc::SI_TKILL));
        assert!(!is_fault(libc::SIGUSR1, 1));
    }
}
