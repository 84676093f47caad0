//! What every injected operation shares: saving and restoring what it changes (registers,
//! the aarch64 restartable syscall number, vector state, the signal mask), cancelling syscall
//! restart for the injected code, waiting for the thread with a deadline, and stopping it
//! again after a timeout.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::ptrace::{self, Event};
use crate::thread::ThreadHandle;
use crate::tracee::{sigbit, SavedSignal, TraceeState};

/// Grace period to stop a thread again after a timed-out operation.
const RECOVER_GRACE: Duration = Duration::from_secs(1);
/// Large enough for any x86 XSAVE layout the kernel exports (AMX included).
const XSTATE_MAX: usize = 64 * 1024;

/// Everything an injected operation changes and puts back.
pub(crate) struct Saved {
    pub regs: Vec<u64>,
    /// The syscall number the kernel would restart, where it is kept in a register set of its
    /// own: (regset, bytes).
    pub syscall_no: Option<(u32, Vec<u8>)>,
    /// Floating-point/vector state: (regset, bytes).
    pub vector: Option<(u32, Vec<u8>)>,
    /// The signal mask, when we had to change it.
    pub mask: Option<u64>,
}

impl ThreadHandle<'_> {
    /// Waits for the thread's next state change; `None` at the deadline.
    pub(crate) fn wait(
        &mut self,
        deadline: Instant,
        during: &'static str,
    ) -> Result<Option<Event>> {
        // It ran: what was read of its registers before is stale.
        self.tracee.regs = None;
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
                self.tracee.state = TraceeState::Gone;
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
    pub(crate) fn recover(&mut self, ours: impl Fn(i32, u64) -> bool) -> Result<()> {
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
    pub(crate) fn keep_signal(&mut self) -> Result<()> {
        let info = ptrace::siginfo(self.tid()).map_err(|e| self.ptrace_err("GETSIGINFO", e))?;
        self.tracee.saved.push(SavedSignal::new(&info));
        Ok(())
    }

    /// Saves what an injected operation changes.
    pub(crate) fn save(&self, with_vector: bool) -> Result<Saved> {
        let regs = self.regs()?;
        let syscall_no = self.process.arch().restart_regset().and_then(|regset| {
            let mut buf = vec![0u8; 4];
            let n = ptrace::get_regset(self.tid(), regset, &mut buf).ok()?;
            buf.truncate(n);
            Some((regset, buf))
        });
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
    pub(crate) fn save_vector(&self) -> Result<Option<(u32, Vec<u8>)>> {
        for &regset in self.process.arch().vector_regsets() {
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
    pub(crate) fn unblock(&mut self, sig: i32, saved: &mut Saved) -> Result<()> {
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
    pub(crate) fn sigmask(&self) -> Result<Option<u64>> {
        match ptrace::sigmask(self.tid()) {
            Ok(mask) => Ok(Some(mask)),
            Err(Errno::EINVAL) | Err(Errno::EIO) => Ok(None),
            Err(errno) => Err(self.ptrace_err("GETSIGMASK", errno)),
        }
    }

    pub(crate) fn set_sigmask(&self, mask: u64) -> Result<()> {
        ptrace::set_sigmask(self.tid(), mask).map_err(|e| self.ptrace_err("SETSIGMASK", e))
    }

    /// Installs the registers of an injected operation, with syscall restarting cancelled.
    /// A thread the injected code creates is not followed (it would stay stopped, unknown).
    pub(crate) fn enter(&mut self, mut regs: Vec<u64>, saved: &Saved) -> Result<()> {
        if self.tracee.options != 0 {
            ptrace::set_options(self.tid(), 0).map_err(|e| self.ptrace_err("SETOPTIONS", e))?;
            self.tracee.options = 0;
        }
        let layout = self.layout();
        if let Some(orig) = layout.orig_syscall {
            regs[orig] = u64::MAX;
        }
        self.set_regs(&regs)?;
        if let Some((regset, no)) = &saved.syscall_no {
            let minus_one = (-1i32).to_ne_bytes();
            ptrace::set_regset(self.tid(), *regset, &minus_one[..no.len().min(4)])
                .map_err(|e| self.ptrace_err("SETREGSET(NT_ARM_SYSTEM_CALL)", e))?;
        }
        Ok(())
    }

    /// Puts back everything [`ThreadHandle::save`] saved (nothing if the thread is gone).
    pub(crate) fn restore(&mut self, saved: &Saved) -> Result<()> {
        if self.tracee.is_gone() {
            return Ok(());
        }
        let mut result = self.set_regs(&saved.regs);
        if let Some((regset, no)) = &saved.syscall_no {
            let r = ptrace::set_regset(self.tid(), *regset, no)
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
}
