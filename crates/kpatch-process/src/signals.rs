//! Signals a thread dequeued while it ran code we injected (a single-stepped syscall, a called
//! function). They cannot be delivered there: the handler frame would be built on the injected
//! register state, which we then overwrite. So they are kept, with their full siginfo, and
//! queued back to the same thread just before it is released, from inside the thread itself
//! (`rt_tgsigqueueinfo` to itself may carry any `si_code`, which a signal sent from outside
//! may not): the thread then receives each as if it had just arrived, with the same sender,
//! code and value.

use crate::call::RED_ZONE;
use crate::error::Result;
use crate::memory::Memory;
use crate::process::Process;
use crate::syscall::MAX_STEPS;
use crate::thread::ThreadHandle;
use crate::tracee::{sigbit, SavedSignal, Tracee, SIGINFO_SIZE};

/// Queues every saved signal of `t` back to it (the thread must be stopped).
pub(crate) fn requeue(process: &Process, t: &mut Tracee) {
    ThreadHandle::new(process, t).requeue_saved();
}

/// Last resort when the thread cannot queue a signal to itself: queue it from here. Only
/// `si_code`s of `sigqueue()`-like senders may be forged from outside; anything else is sent
/// as a plain `tgkill` (same signal, our pid as sender).
pub(crate) fn queue_from_here(tgid: i32, tid: i32, sig: &SavedSignal) {
    if sig.code < 0 && sig.code != libc::SI_TKILL {
        // SAFETY: rt_tgsigqueueinfo reads a siginfo_t from the pointer; `raw` holds one and
        // outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_tgsigqueueinfo,
                tgid,
                tid,
                sig.signo,
                sig.raw.as_ptr(),
            )
        };
        if r == 0 {
            return;
        }
    }
    // SAFETY: tgkill takes three integers.
    unsafe {
        libc::syscall(libc::SYS_tgkill, tgid, tid, sig.signo);
    }
}

impl ThreadHandle<'_> {
    /// Queues the kept signals back to the thread (see [`crate::signals`]). Once one
    /// injected syscall has run, the kernel has put back any temporary mask of an interrupted
    /// `ppoll`/`pselect`/`sigsuspend`, so the real mask can be changed safely: the signals
    /// already queued are blocked until the thread is released, so that the next injected
    /// syscall does not dequeue them again.
    pub(crate) fn requeue_saved(&mut self) {
        let tgid = self.pid();
        let tid = self.tid();
        let nr = self.process.arch().sys_rt_tgsigqueueinfo();
        let mut real_mask: Option<u64> = None;
        let mut blocked: u64 = 0;
        // Signals that arrive meanwhile join the list; the budget keeps a flood finite.
        let budget = self.tracee.saved.len() + MAX_STEPS;
        for _ in 0..budget {
            if self.tracee.saved.is_empty() || self.tracee.is_gone() {
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
                queue_from_here(tgid, tid, &sig);
            }
            if self.tracee.is_gone() {
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
            queue_from_here(tgid, tid, &sig);
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
