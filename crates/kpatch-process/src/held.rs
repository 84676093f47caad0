//! A thread its caller holds on its own, outside any stop of the whole process: start-up
//! patching seizes the thread that is about to execute a program (or to load a library), lets
//! it run until the dynamic loader has loaded everything, and hands it to the patch engine as a
//! thread already stopped ([`Process::open_held`]).
//!
//! Whatever stop a held thread is left in must be harmless if the holder dies, since the kernel
//! then lets it go with the signal of its stop delivered: an `exec` or interrupt stop (a ptrace
//! event) delivers nothing; the signal-delivery-stop of a trap (a single step, a breakpoint, the
//! fault that ends an injected call) delivers a fatal `SIGTRAP` or `SIGSEGV`. So every stop of
//! that kind is turned into an interrupt stop as soon as it is reached ([`HeldThread::park`]),
//! and after every operation the engine runs in the thread.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::park::{park, ptrace_error_for};
use crate::process::Process;
use crate::procfs;
use crate::ptrace::{self, Event};
use crate::signals;
use crate::thread::ThreadHandle;
use crate::tracee::{SavedSignal, Tracee, TraceeState};

/// How long releasing waits for a running held thread to stop.
const RELEASE_GRACE: Duration = Duration::from_millis(200);
/// Polls of a held thread sleep this long at most while it is expected to stop soon (it runs
/// the dynamic loader, a few milliseconds): the holder learns of a stop within this.
const SHORT_POLL: Duration = Duration::from_micros(50);
/// How long polls stay short before they back off to [`LONG_POLL`].
const SHORT_PHASE: Duration = Duration::from_millis(50);
const LONG_POLL: Duration = Duration::from_millis(2);

/// What a held thread did when it stopped (or ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldEvent {
    /// It executed a new program, of which nothing has run yet (`PTRACE_EVENT_EXEC`).
    Exec,
    /// It stopped for [`HeldThread::interrupt`] (or a pending interrupt of ours).
    Interrupted,
    /// A job-control stop (`SIGSTOP`, `SIGTSTP`...): it is the user's, not ours.
    JobControl(i32),
    /// It is about to receive signal `sig` (a signal-delivery-stop); resume it with `sig` to
    /// deliver it, with 0 to discard it.
    Signal(i32),
    /// A syscall-entry or syscall-exit stop, after [`HeldThread::resume_to_syscall`].
    Syscall,
    /// Another ptrace event (`PTRACE_EVENT_*`).
    Other(i32),
    /// It exited or was killed.
    Gone,
}

/// The syscall a thread is blocked in, read from `/proc/PID/task/TID/syscall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockedSyscall {
    /// Syscall number.
    pub nr: u64,
    /// User program counter (just after the syscall instruction).
    pub pc: u64,
}

/// The syscall thread `tid` of process `pid` is blocked in; `None` when it is not in a
/// syscall, gone, or the file is unreadable. A thread the kernel shows as running is waited
/// for up to `settle`: one that has just queued an event we must answer (a fanotify
/// permission event) is on its way to sleep, and may not be there yet when we read the event
/// on another CPU.
pub fn blocked_syscall(pid: i32, tid: i32, settle: Duration) -> Option<BlockedSyscall> {
    let file = PathBuf::from(format!("/proc/{pid}/task/{tid}/syscall"));
    let deadline = Instant::now() + settle;
    loop {
        let text = std::fs::read_to_string(&file).ok()?;
        if text.trim() != "running" || Instant::now() >= deadline {
            return procfs::parse_syscall(&text).map(|s| BlockedSyscall { nr: s.nr, pc: s.pc });
        }
        std::thread::sleep(SHORT_POLL);
    }
}

/// The signals thread `tid` of process `pid` blocks (`SigBlk`, bit `n - 1` for signal `n`).
pub fn blocked_signals(pid: i32, tid: i32) -> Option<u64> {
    let dir = PathBuf::from(format!("/proc/{pid}/task/{tid}"));
    procfs::signal_state(&dir).map(|s| s.blocked)
}

/// One thread, seized by the calling thread (ptrace binds it there) and held until released or
/// dropped, which detaches it: it then runs on from where it was.
#[derive(Debug)]
pub struct HeldThread {
    tgid: i32,
    tracee: Tracee,
}

impl HeldThread {
    /// Seizes thread `tid` of process `tgid` (nothing stops it). With `follow_exec` an `exec`
    /// stops it in [`HeldEvent::Exec`].
    pub fn seize(tgid: i32, tid: i32, follow_exec: bool) -> Result<HeldThread> {
        let options = if follow_exec {
            libc::PTRACE_O_TRACEEXEC
        } else {
            0
        };
        match ptrace::seize(tid, options) {
            Ok(()) => {}
            Err(Errno::ESRCH) => {
                return Err(Error::ThreadExited {
                    pid: tgid,
                    tid,
                    during: "seizing",
                })
            }
            Err(errno) => {
                let dir = PathBuf::from(format!("/proc/{tgid}/task/{tid}"));
                if let Ok(Some(s)) = procfs::status(&dir) {
                    if s.tracer != 0 {
                        return Err(Error::AlreadyTraced {
                            pid: tgid,
                            tracer: s.tracer,
                        });
                    }
                }
                return Err(Error::Ptrace {
                    pid: tgid,
                    tid,
                    op: "SEIZE",
                    errno,
                });
            }
        }
        Ok(HeldThread {
            tgid,
            tracee: Tracee {
                held: true,
                ..Tracee::new(tid, options)
            },
        })
    }

    /// The thread's id. After an `exec` by a thread other than the leader it is the process's
    /// id (the kernel gives the executing thread the leader's).
    pub fn tid(&self) -> i32 {
        self.tracee.tid
    }

    /// The process's id.
    pub fn tgid(&self) -> i32 {
        self.tgid
    }

    /// Whether it is in a ptrace stop now.
    pub fn is_stopped(&self) -> bool {
        self.tracee.is_stopped()
    }

    /// Asks it to stop ([`HeldEvent::Interrupted`]) as soon as it runs user code or is
    /// resumed from its current stop.
    pub fn interrupt(&self) -> Result<()> {
        match ptrace::interrupt(self.tid()) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(self.err("INTERRUPT", errno)),
        }
    }

    /// Sets its ptrace options (`PTRACE_O_*`).
    pub fn set_options(&mut self, options: libc::c_int) -> Result<()> {
        ptrace::set_options(self.tid(), options).map_err(|e| self.err("SETOPTIONS", e))?;
        self.tracee.options = options;
        Ok(())
    }

    /// Resumes it from its stop, delivering `sig` (0: none) if that stop is a
    /// signal-delivery-stop.
    pub fn resume(&mut self, sig: i32) -> Result<()> {
        self.tracee.regs = None;
        match ptrace::cont(self.tid(), sig) {
            Ok(()) | Err(Errno::ESRCH) => {
                self.tracee.state = TraceeState::Running;
                Ok(())
            }
            Err(errno) => Err(self.err("CONT", errno)),
        }
    }

    /// Resumes it like [`HeldThread::resume`], to stop again at its next syscall entry or exit
    /// ([`HeldEvent::Syscall`]) if nothing stops it before.
    pub fn resume_to_syscall(&mut self, sig: i32) -> Result<()> {
        let want = self.tracee.options | libc::PTRACE_O_TRACESYSGOOD;
        if self.tracee.options != want {
            self.set_options(want)?;
        }
        self.tracee.regs = None;
        match ptrace::syscall(self.tid(), sig) {
            Ok(()) | Err(Errno::ESRCH) => {
                self.tracee.state = TraceeState::Running;
                Ok(())
            }
            Err(errno) => Err(self.err("SYSCALL", errno)),
        }
    }

    /// The syscall it is stopped at the entry of (number and arguments); `None` when it is in
    /// another stop.
    pub fn syscall_entry(&self) -> Result<Option<(u64, [u64; 6])>> {
        ptrace::syscall_entry(self.tid()).map_err(|e| self.err("GET_SYSCALL_INFO", e))
    }

    /// From a syscall-entry stop, takes it back to a stop in user mode on the syscall
    /// instruction, the call not made: resumed, it makes the same call. In between the
    /// kernel skips the call (its number set to -1) and the thread is rewound at the exit
    /// stop. `process` must be its process, opened with [`Process::open_held`]. Returns false
    /// if it is gone.
    pub fn back_out_of_syscall(&mut self, process: &Process) -> Result<bool> {
        let arch = process.arch();
        let layout = arch.regs();
        let saved = self.handle(process)?.regs()?;
        let nr = match layout.orig_syscall {
            Some(orig) => saved[orig],
            None => saved[layout.syscall_nr],
        };
        let mut skip = saved.clone();
        if let Some(orig) = layout.orig_syscall {
            skip[orig] = u64::MAX;
        }
        self.handle(process)?.set_regs(&skip)?;
        if let Some(regset) = arch.restart_regset() {
            ptrace::set_regset(self.tid(), regset, &(-1i32).to_ne_bytes())
                .map_err(|e| self.err("SETREGSET(NT_ARM_SYSTEM_CALL)", e))?;
        }
        self.resume_to_syscall(0)?;
        let at_exit = self.wait_for_stop(
            |e| e == HeldEvent::Syscall,
            |held| held.resume_to_syscall(0),
        )?;
        if !at_exit {
            return Ok(false);
        }
        let mut back = saved;
        back[layout.pc] = back[layout.pc].wrapping_sub(arch.syscall_insn().len() as u64);
        back[layout.syscall_nr] = nr;
        if let Some(orig) = layout.orig_syscall {
            back[orig] = u64::MAX;
        }
        self.handle(process)?.set_regs(&back)?;
        self.stop_in_user_mode()
    }

    /// Waits for its next stop (or its end) until `deadline`; `None` if nothing happened by
    /// then.
    pub fn wait(&mut self, deadline: Instant) -> Result<Option<HeldEvent>> {
        let start = Instant::now();
        let mut yields = 0;
        loop {
            let event = match ptrace::poll(self.tid()) {
                Ok(e) => e,
                Err(Errno::ECHILD) if self.tid() != self.tgid => {
                    // An exec by another thread than the leader gave it the leader's id.
                    self.tracee.tid = self.tgid;
                    continue;
                }
                Err(Errno::ECHILD) => Event::Exited(0),
                Err(errno) => {
                    return Err(Error::Wait {
                        pid: self.tgid,
                        tid: self.tid(),
                        errno,
                    })
                }
            };
            let Some(held) = self.stopped_with(event) else {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(None);
                }
                if yields < 20 {
                    yields += 1;
                    std::thread::yield_now();
                } else {
                    let nap = if now - start < SHORT_PHASE {
                        SHORT_POLL
                    } else {
                        LONG_POLL
                    };
                    std::thread::sleep(nap.min(deadline - now));
                }
                continue;
            };
            return Ok(Some(held));
        }
    }

    /// What a state change reported by `waitpid` means; `None` when there is none.
    fn stopped_with(&mut self, event: Event) -> Option<HeldEvent> {
        if event == Event::Running {
            return None;
        }
        self.tracee.regs = None;
        self.tracee.reached_stop(false);
        Some(match event {
            Event::Running => return None,
            Event::Exited(_) | Event::Killed(_) => {
                self.tracee.state = TraceeState::Gone;
                HeldEvent::Gone
            }
            // PTRACE_O_TRACESYSGOOD marks syscall stops.
            Event::Signal(sig) if sig == libc::SIGTRAP | 0x80 => HeldEvent::Syscall,
            Event::Signal(sig) => HeldEvent::Signal(sig),
            Event::Ptrace { event, .. } if event == libc::PTRACE_EVENT_EXEC => HeldEvent::Exec,
            Event::Ptrace { sig, event } if event == libc::PTRACE_EVENT_STOP => {
                self.tracee.reached_stop(sig != libc::SIGTRAP);
                if sig == libc::SIGTRAP {
                    HeldEvent::Interrupted
                } else {
                    HeldEvent::JobControl(sig)
                }
            }
            Event::Ptrace { event, .. } => HeldEvent::Other(event),
        })
    }

    /// A handle on the stopped thread, to read and write its registers and run syscalls in it;
    /// `process` must be its process, opened with [`Process::open_held`].
    pub fn handle<'a>(&'a mut self, process: &'a Process) -> Result<ThreadHandle<'a>> {
        if process.pid() != self.tgid || process.held_tid() != Some(self.tid()) {
            return Err(Error::InvalidArgument(format!(
                "thread {} of pid {} is not held through this process handle",
                self.tid(),
                self.tgid
            )));
        }
        if !self.tracee.is_stopped() {
            return Err(Error::InvalidArgument(format!(
                "pid {}: held thread {} is not stopped",
                self.tgid,
                self.tid()
            )));
        }
        Ok(ThreadHandle::new(process, &mut self.tracee))
    }

    /// Turns a signal-delivery-stop (whose signal the kernel would deliver if we died) into an
    /// interrupt stop, discarding its signal; nothing else changes.
    pub fn park(&mut self) -> Result<()> {
        park(self.tgid, &mut self.tracee)
    }

    /// Lets it go: interrupted first if it runs, signals kept while it ran injected code sent
    /// back to it, then detached without a signal.
    pub fn release(mut self) -> Result<()> {
        self.release_now()
    }

    /// Moves it from a stop inside a syscall (the `exec` stop: the new program's registers are
    /// only final once `execve` returns) to a stop on its way back to user code, before it runs
    /// an instruction: injected syscalls need that. Returns false if it is gone.
    pub fn stop_in_user_mode(&mut self) -> Result<bool> {
        self.interrupt()?;
        self.resume(0)?;
        self.wait_for_stop(
            |e| matches!(e, HeldEvent::Interrupted | HeldEvent::JobControl(_)),
            |held| held.interrupt().and_then(|()| held.resume(0)),
        )
    }

    /// Waits (up to a short grace period) for a stop that `wanted` accepts: true then, false
    /// if it is gone. A signal that comes first is kept, to be sent back when it is released;
    /// after it, and after any other stop, `again` lets it go on.
    fn wait_for_stop(
        &mut self,
        wanted: fn(HeldEvent) -> bool,
        again: fn(&mut HeldThread) -> Result<()>,
    ) -> Result<bool> {
        let deadline = Instant::now() + RELEASE_GRACE;
        loop {
            match self.wait(deadline)? {
                None => {
                    return Err(Error::StopTimeout {
                        pid: self.tgid,
                        tids: vec![self.tid()],
                        timeout: RELEASE_GRACE,
                    })
                }
                Some(HeldEvent::Gone) => return Ok(false),
                Some(e) if wanted(e) => return Ok(true),
                Some(HeldEvent::Signal(_)) => {
                    if let Ok(info) = ptrace::siginfo(self.tid()) {
                        self.tracee.saved.push(SavedSignal::new(&info));
                    }
                    again(self)?;
                }
                Some(_) => again(self)?,
            }
        }
    }

    /// Whether it is stopped by job control (a group-stop): it is then the user's to resume,
    /// and nothing may run in it.
    pub fn in_job_control(&self) -> bool {
        self.tracee.state == TraceeState::GroupStopped
    }

    /// Stops it if it runs: interrupts it and waits (up to a short grace period) for the stop;
    /// a signal that arrives first stops it too and is kept, to be sent back when it is
    /// released. Returns false if it is gone.
    pub fn stop(&mut self) -> Result<bool> {
        if self.tracee.is_gone() {
            return Ok(false);
        }
        if self.tracee.is_stopped() {
            return Ok(true);
        }
        self.interrupt()?;
        let deadline = Instant::now() + RELEASE_GRACE;
        match self.wait(deadline)? {
            None => Err(Error::StopTimeout {
                pid: self.tgid,
                tids: vec![self.tid()],
                timeout: RELEASE_GRACE,
            }),
            Some(HeldEvent::Gone) => Ok(false),
            Some(HeldEvent::Signal(_)) => {
                // Not ours: it goes back to the thread once released.
                if let Ok(info) = ptrace::siginfo(self.tid()) {
                    self.tracee.saved.push(SavedSignal::new(&info));
                }
                Ok(true)
            }
            Some(_) => Ok(true),
        }
    }

    fn release_now(&mut self) -> Result<()> {
        if self.tracee.is_gone() || self.tracee.tid == 0 {
            return Ok(());
        }
        if !self.stop()? {
            return Ok(());
        }
        let tid = self.tid();
        for sig in std::mem::take(&mut self.tracee.saved) {
            signals::queue_from_here(self.tgid, tid, &sig);
        }
        self.tracee.state = TraceeState::Gone;
        match ptrace::detach(tid) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ptrace_error_for(self.tgid, tid, "DETACH", errno)),
        }
    }

    fn err(&self, op: &'static str, errno: Errno) -> Error {
        ptrace_error_for(self.tgid, self.tid(), op, errno)
    }
}

impl Drop for HeldThread {
    fn drop(&mut self) {
        let _ = self.release_now();
    }
}
