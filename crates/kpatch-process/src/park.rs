//! Parking a thread its caller holds ([`crate::HeldThread`]): a signal-delivery-stop, whose
//! signal the kernel would deliver if the tool died, is turned into an interrupt stop, which
//! delivers nothing.

use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::error::{Error, Result};
use crate::ptrace::{self, Event};
use crate::tracee::{SavedSignal, Tracee, TraceeState};

/// How long parking waits for the thread's interrupt stop.
pub(crate) const PARK_GRACE: Duration = Duration::from_millis(200);

/// The error of ptrace request `op` on thread `tid` of process `pid`.
pub(crate) fn ptrace_error_for(pid: i32, tid: i32, op: &'static str, errno: Errno) -> Error {
    Error::Ptrace {
        pid,
        tid,
        op,
        errno,
    }
}

/// Whether stopped thread `tid` is in a signal-delivery-stop (rather than an event stop:
/// interrupt, exec, clone..., or a group-stop).
fn in_signal_stop(tid: i32) -> bool {
    match ptrace::siginfo(tid) {
        // Event stops report SIGTRAP with the event in the high byte of si_code.
        Ok(info) => !(info.si_signo == libc::SIGTRAP && info.si_code >> 8 != 0),
        // A group-stop has no siginfo.
        Err(_) => false,
    }
}

/// Parks stopped thread `t` (see [`crate::HeldThread::park`]); `pid` names the process in
/// errors.
pub(crate) fn park(pid: i32, t: &mut Tracee) -> Result<()> {
    if !t.is_stopped() || !in_signal_stop(t.tid) {
        return Ok(());
    }
    // The interrupt is taken before any signal is dequeued: the thread stops again before it
    // runs an instruction.
    let deadline = Instant::now() + PARK_GRACE;
    match ptrace::interrupt(t.tid) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(errno) => return Err(ptrace_error_for(pid, t.tid, "INTERRUPT", errno)),
    }
    t.regs = None;
    match ptrace::cont(t.tid, 0) {
        Ok(()) => {}
        Err(Errno::ESRCH) => {}
        Err(errno) => return Err(ptrace_error_for(pid, t.tid, "CONT", errno)),
    }
    loop {
        let event = match ptrace::wait_event(t.tid, deadline) {
            Ok(e) => e,
            Err(Errno::ECHILD) => Event::Exited(0),
            Err(errno) => {
                return Err(Error::Wait {
                    pid,
                    tid: t.tid,
                    errno,
                })
            }
        };
        match event {
            Event::Running => {
                t.state = TraceeState::Running;
                return Err(Error::StopTimeout {
                    pid,
                    tids: vec![t.tid],
                    timeout: PARK_GRACE,
                });
            }
            Event::Exited(_) | Event::Killed(_) => {
                t.state = TraceeState::Gone;
                return Ok(());
            }
            Event::Signal(_) => {
                // A signal dequeued first after all: keep it for the release, stop again.
                if let Ok(info) = ptrace::siginfo(t.tid) {
                    t.saved.push(SavedSignal::new(&info));
                }
                let _ = ptrace::interrupt(t.tid);
                let _ = ptrace::cont(t.tid, 0);
            }
            Event::Ptrace { sig, event } => {
                t.reached_stop(event == libc::PTRACE_EVENT_STOP && sig != libc::SIGTRAP);
                return Ok(());
            }
        }
    }
}
