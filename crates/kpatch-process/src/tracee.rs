//! What we know of a seized thread: where it stands (running, stopped by us, stopped by job
//! control, gone), its ptrace options, the registers read at its stop, and the signals it
//! dequeued while it ran our injected code.

use crate::procfs::CurrentSyscall;

/// Size of the kernel's `siginfo_t`.
pub(crate) const SIGINFO_SIZE: usize = 128;

/// Where a seized thread stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TraceeState {
    /// Seized, and running (not stopped yet, or resumed by a run).
    Running,
    /// It reported the stop we asked for and has not been resumed since, except by our own
    /// injected operations: it can run injected code.
    Stopped,
    /// Its stop is a group-stop (job control): it must not be resumed by us except to detach.
    GroupStopped,
    /// It exited; nothing to release.
    Gone,
}

/// One seized thread.
#[derive(Debug)]
pub(crate) struct Tracee {
    pub tid: i32,
    pub state: TraceeState,
    /// Signals dequeued while it ran our injected code; sent back to it when released.
    pub saved: Vec<SavedSignal>,
    /// It was asleep (or stopped by job control) when we stopped it: it is released after the
    /// threads that were running.
    pub asleep: bool,
    /// Its ptrace options now (`PTRACE_O_*`).
    pub options: libc::c_int,
    /// Its registers as read when it reached its stop, while nothing changed them since: set
    /// by the stop, dropped by anything that writes them or lets the thread run.
    pub regs: Option<Vec<u64>>,
    /// The syscall it was blocked in before we interrupted it, where the stop may lose an
    /// argument (see [`crate::restart`]).
    pub blocked: Option<CurrentSyscall>,
}

impl Tracee {
    /// A thread just seized (running), with ptrace `options`.
    pub(crate) fn new(tid: i32, options: libc::c_int) -> Self {
        Tracee {
            tid,
            state: TraceeState::Running,
            saved: Vec::new(),
            asleep: false,
            options,
            regs: None,
            blocked: None,
        }
    }

    /// A thread that is gone (or a slot whose thread was handed elsewhere).
    pub(crate) fn gone(tid: i32) -> Self {
        Tracee {
            state: TraceeState::Gone,
            ..Tracee::new(tid, 0)
        }
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.state == TraceeState::Gone
    }

    /// Stopped, by us or by job control.
    pub(crate) fn is_stopped(&self) -> bool {
        matches!(self.state, TraceeState::Stopped | TraceeState::GroupStopped)
    }

    /// Stopped by us: it can run injected code.
    pub(crate) fn can_run_code(&self) -> bool {
        self.state == TraceeState::Stopped
    }

    /// It reached a stop; `group` when the stop is job control's.
    pub(crate) fn reached_stop(&mut self, group: bool) {
        self.state = if group {
            TraceeState::GroupStopped
        } else {
            TraceeState::Stopped
        };
    }
}

/// A dequeued signal with its siginfo, bytes as the kernel reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedSignal {
    pub signo: i32,
    pub code: i32,
    pub raw: [u8; SIGINFO_SIZE],
}

impl SavedSignal {
    pub(crate) fn new(info: &libc::siginfo_t) -> Self {
        let mut raw = [0u8; SIGINFO_SIZE];
        let size = std::mem::size_of::<libc::siginfo_t>().min(SIGINFO_SIZE);
        // SAFETY: siginfo_t is plain old data of at least `size` bytes, borrowed for the copy.
        let bytes = unsafe {
            std::slice::from_raw_parts(info as *const libc::siginfo_t as *const u8, size)
        };
        raw[..size].copy_from_slice(bytes);
        SavedSignal {
            signo: info.si_signo,
            code: info.si_code,
            raw,
        }
    }
}

/// Bit of `sig` in a kernel signal set.
pub(crate) fn sigbit(sig: i32) -> u64 {
    if (1..=64).contains(&sig) {
        1u64 << (sig - 1)
    } else {
        0
    }
}
