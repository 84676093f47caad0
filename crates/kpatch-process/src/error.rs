//! Errors of every operation on a target process. Each says what failed, on which process,
//! thread, address or file, and, where there is one, what to do about it.

use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;

/// Result of an operation on a target process.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while looking at or controlling a target process. Fields are what the
/// messages print: `pid` the process, `tid` the thread, `addr`/`len` a memory range, `errno`
/// the kernel's answer, `path` the /proc file, `timeout` the time allowed.
#[allow(missing_docs)] // the fields, named as above
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pid does not name a process.
    #[error("no process with pid {pid}")]
    NoSuchProcess { pid: i32 },
    /// The process has exited and waits to be reaped.
    #[error("pid {pid} is a zombie (it has exited and waits for its parent to reap it): nothing to patch")]
    Zombie { pid: i32 },
    /// The process is being torn down.
    #[error("pid {pid} is exiting: nothing to patch")]
    Dead { pid: i32 },
    /// The pid is a kernel thread, which has no user address space.
    #[error("pid {pid} is a kernel thread: nothing to patch")]
    KernelThread { pid: i32 },
    /// The pid is the calling process (or one of its threads).
    #[error("pid {pid} is this process itself: a process cannot patch itself, run the tool from another process")]
    SelfTarget { pid: i32 },
    /// The pid is a thread that does not lead its thread group.
    #[error("pid {tid} is a thread of process {tgid}: use the process id {tgid}")]
    NotProcess { tid: i32, tgid: i32 },
    /// Another tracer (a debugger) is attached.
    #[error("pid {pid} is already traced by pid {tracer}: detach the debugger first")]
    AlreadyTraced { pid: i32, tracer: i32 },
    /// The executable is not a 64-bit little-endian program of a supported architecture.
    #[error("pid {pid} runs {}, {what}: only 64-bit little-endian x86_64 and aarch64 programs are supported", exe.display())]
    Unsupported {
        pid: i32,
        exe: PathBuf,
        what: String,
    },
    /// A file under /proc could not be read.
    #[error("cannot read {}: {source}{}", path.display(), permission_hint(source))]
    Proc {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file under /proc does not have the expected format.
    #[error("{}: {detail}", path.display())]
    ProcFormat { path: PathBuf, detail: String },
    /// Reading the target's memory failed.
    #[error("pid {pid}: cannot read {len} bytes at {addr:#x}: {source}")]
    Read {
        pid: i32,
        addr: u64,
        len: usize,
        source: std::io::Error,
    },
    /// Writing the target's memory failed.
    #[error("pid {pid}: cannot write {len} bytes at {addr:#x}: {source}")]
    Write {
        pid: i32,
        addr: u64,
        len: usize,
        source: std::io::Error,
    },
    /// A ptrace request failed.
    #[error("pid {pid}: ptrace {op} on thread {tid} failed: {errno}{}", ptrace_hint(*errno))]
    Ptrace {
        pid: i32,
        tid: i32,
        op: &'static str,
        errno: Errno,
    },
    /// Waiting for a thread's state change failed.
    #[error("pid {pid}: waiting for thread {tid} failed: {errno}")]
    Wait { pid: i32, tid: i32, errno: Errno },
    /// Threads did not stop in time (typically blocked in an uninterruptible kernel wait).
    #[error("pid {pid}: thread(s) {tids:?} did not stop within {timeout:?}; they may be in an uninterruptible wait (state D), try again later")]
    StopTimeout {
        pid: i32,
        tids: Vec<i32>,
        timeout: Duration,
    },
    /// Every thread exited while we tried to stop them.
    #[error("pid {pid} exited while being stopped")]
    ProcessExited { pid: i32 },
    /// The thread exited (or was killed) while we were using it.
    #[error("pid {pid}: thread {tid} exited during {during}")]
    ThreadExited {
        pid: i32,
        tid: i32,
        during: &'static str,
    },
    /// The thread is not part of this stopped set.
    #[error("pid {pid}: thread {tid} is not stopped by this handle")]
    UnknownThread { pid: i32, tid: i32 },
    /// The thread does not belong to the process.
    #[error("pid {pid} has no thread {tid}")]
    NoSuchThread { pid: i32, tid: i32 },
    /// The register set has an unexpected size (the target's architecture does not match).
    #[error("pid {pid}: thread {tid}: register set {regset:#x} has {got} bytes, expected {want}")]
    RegisterSize {
        pid: i32,
        tid: i32,
        regset: u32,
        got: usize,
        want: usize,
    },
    /// No executable mapping holds a system-call instruction to borrow.
    #[error("pid {pid}: no executable mapping contains a system-call instruction; cannot run remote syscalls")]
    NoSyscallInstruction { pid: i32 },
    /// An injected syscall returned an error.
    #[error("pid {pid}: remote {syscall} in thread {tid} failed: {errno} ({})", errno.desc())]
    RemoteSyscall {
        pid: i32,
        tid: i32,
        syscall: String,
        errno: Errno,
    },
    /// The thread's seccomp filter would not let an injected syscall through: it was not run.
    #[error("pid {pid}: thread {tid} runs under {filter}, which would {action} on the {syscall} we need; nothing was injected")]
    SeccompRefuses {
        pid: i32,
        tid: i32,
        syscall: String,
        filter: String,
        action: String,
    },
    /// A thread's seccomp filter could not be read, so no syscall may be injected into it.
    #[error("pid {pid}: thread {tid} runs under a seccomp filter that cannot be read (PTRACE_SECCOMP_GET_FILTER: {errno}; it needs CAP_SYS_ADMIN): not injecting a syscall it might punish")]
    SeccompUnreadable { pid: i32, tid: i32, errno: Errno },
    /// `mmap` with `MAP_FIXED_NOREPLACE` answered with another address (old kernels ignore the
    /// flag and treat the address as a hint).
    #[error("pid {pid}: remote mmap of {len:#x} bytes at {want:#x} returned {got:#x}; the range was unmapped again, pick another address")]
    MmapMisplaced {
        pid: i32,
        want: u64,
        got: u64,
        len: u64,
    },
    /// An injected syscall or call did not come back in time; the thread was restored.
    #[error("pid {pid}: remote {what} in thread {tid} did not complete within {timeout:?}; the thread was restored")]
    RemoteTimeout {
        pid: i32,
        tid: i32,
        what: String,
        timeout: Duration,
    },
    /// A called function faulted; the thread was restored and the signal discarded.
    #[error("pid {pid}: remote call of {func:#x} in thread {tid} faulted with signal {signal} at pc {pc:#x} (fault address {addr:#x}); the thread was restored")]
    CallFault {
        pid: i32,
        tid: i32,
        func: u64,
        signal: i32,
        pc: u64,
        addr: u64,
    },
    /// The thread stopped somewhere we did not expect.
    #[error("pid {pid}: thread {tid}: {detail}")]
    UnexpectedStop { pid: i32, tid: i32, detail: String },
    /// Watching the process's writes failed (see [`crate::WriteWatch`]).
    #[error("pid {pid}: cannot watch what it writes ({what}): {source}")]
    WriteWatch {
        pid: i32,
        what: &'static str,
        source: std::io::Error,
    },
    /// A caller-supplied argument is unusable.
    #[error("{0}")]
    InvalidArgument(String),
}

fn permission_hint(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (run as root or as the owner of the process, with ptrace allowed)"
        }
        _ => "",
    }
}

fn ptrace_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::EPERM => {
            " (not permitted: run as root or as the process owner; check /proc/sys/kernel/yama/ptrace_scope)"
        }
        Errno::ESRCH => " (the thread is gone or not stopped)",
        _ => "",
    }
}

impl Error {
    pub(crate) fn proc(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Proc {
            path: path.into(),
            source,
        }
    }

    /// A system call of the guardian machinery failed.
    pub(crate) fn guardian(what: &str, errno: Errno) -> Self {
        Error::InvalidArgument(format!(
            "guardian process: {what}: {}",
            std::io::Error::from(errno)
        ))
    }

    /// A ptrace request on thread `tid` of process `pid` failed.
    pub(crate) fn ptrace(pid: i32, tid: i32, op: &'static str, errno: Errno) -> Self {
        Error::Ptrace {
            pid,
            tid,
            op,
            errno,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::ProcFormat {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
