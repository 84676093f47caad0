//! Thin wrappers over the raw ptrace and waitpid calls. Signals are plain numbers here (real-time
//! signals have no `nix::sys::signal::Signal` value), and register sets are byte or word
//! buffers of whatever size the kernel hands out, so one code path serves every architecture.

use std::ffi::c_void;
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// `NT_PRSTATUS`: general-purpose registers.
pub(crate) const NT_PRSTATUS: u32 = 1;

fn request(req: libc::c_uint, tid: i32, addr: usize, data: usize) -> Result<libc::c_long, Errno> {
    Errno::clear();
    // SAFETY: every request issued through this helper passes either plain integers or a
    // pointer to a buffer that the caller keeps alive and sized for the request (see callers);
    // the kernel validates the tid and the request.
    let r = unsafe { libc::ptrace(req, tid, addr as *mut c_void, data as *mut c_void) };
    if r == -1 && Errno::last_raw() != 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `PTRACE_SEIZE` with `options`.
pub(crate) fn seize(tid: i32, options: libc::c_int) -> Result<(), Errno> {
    request(libc::PTRACE_SEIZE, tid, 0, options as usize).map(drop)
}

/// `PTRACE_INTERRUPT`.
pub(crate) fn interrupt(tid: i32) -> Result<(), Errno> {
    request(libc::PTRACE_INTERRUPT, tid, 0, 0).map(drop)
}

/// `PTRACE_CONT`, delivering `sig` when stopped in a signal-delivery-stop (0: none).
pub(crate) fn cont(tid: i32, sig: i32) -> Result<(), Errno> {
    request(libc::PTRACE_CONT, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_SINGLESTEP` without a signal.
pub(crate) fn single_step(tid: i32) -> Result<(), Errno> {
    request(libc::PTRACE_SINGLESTEP, tid, 0, 0).map(drop)
}

/// `PTRACE_SINGLESTEP` delivering `sig` (from a signal-delivery-stop).
pub(crate) fn single_step_with(tid: i32, sig: i32) -> Result<(), Errno> {
    request(libc::PTRACE_SINGLESTEP, tid, 0, sig as usize).map(drop)
}

/// `PTRACE_DETACH` without a signal.
pub(crate) fn detach(tid: i32) -> Result<(), Errno> {
    request(libc::PTRACE_DETACH, tid, 0, 0).map(drop)
}

/// `PTRACE_SETOPTIONS`.
pub(crate) fn set_options(tid: i32, options: libc::c_int) -> Result<(), Errno> {
    request(libc::PTRACE_SETOPTIONS, tid, 0, options as usize).map(drop)
}

const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;

/// `PTRACE_GETSIGMASK`: the blocked-signal mask.
pub(crate) fn sigmask(tid: i32) -> Result<u64, Errno> {
    let mut mask: u64 = 0;
    // The kernel writes one 8-byte sigset into `mask`, whose size is passed.
    request(PTRACE_GETSIGMASK, tid, 8, &mut mask as *mut u64 as usize)?;
    Ok(mask)
}

/// `PTRACE_SETSIGMASK`.
pub(crate) fn set_sigmask(tid: i32, mask: u64) -> Result<(), Errno> {
    // The kernel reads one 8-byte sigset from `mask`, whose size is passed.
    request(PTRACE_SETSIGMASK, tid, 8, &mask as *const u64 as usize).map(drop)
}

/// `PTRACE_GETEVENTMSG`.
pub(crate) fn event_msg(tid: i32) -> Result<u64, Errno> {
    let mut msg: libc::c_ulong = 0;
    request(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    )?;
    Ok(msg)
}

/// `PTRACE_GETSIGINFO`.
pub(crate) fn siginfo(tid: i32) -> Result<libc::siginfo_t, Errno> {
    // SAFETY: siginfo_t is plain old data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    request(
        libc::PTRACE_GETSIGINFO,
        tid,
        0,
        &mut info as *mut libc::siginfo_t as usize,
    )?;
    Ok(info)
}

/// `PTRACE_GETREGSET` into `buf`; returns how many bytes the kernel filled.
pub(crate) fn get_regset(tid: i32, regset: u32, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    request(
        libc::PTRACE_GETREGSET,
        tid,
        regset as usize,
        &mut iov as *mut libc::iovec as usize,
    )?;
    Ok(iov.iov_len)
}

/// `PTRACE_SETREGSET` from `buf`.
pub(crate) fn set_regset(tid: i32, regset: u32, buf: &[u8]) -> Result<(), Errno> {
    let mut iov = libc::iovec {
        // The kernel only reads through this pointer for SETREGSET.
        iov_base: buf.as_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    request(
        libc::PTRACE_SETREGSET,
        tid,
        regset as usize,
        &mut iov as *mut libc::iovec as usize,
    )
    .map(drop)
}

/// A state change reported by `waitpid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Nothing to report yet.
    Running,
    /// The thread exited with this status.
    Exited(i32),
    /// The thread was killed by this signal.
    Killed(i32),
    /// Signal-delivery-stop: the thread is about to receive `sig`.
    Signal(i32),
    /// A `PTRACE_EVENT_*` stop. `PTRACE_EVENT_STOP` covers our interrupt (sig = SIGTRAP) and
    /// group-stops (sig = the stop signal).
    Ptrace { sig: i32, event: i32 },
}

/// Decodes a raw wait status.
pub(crate) fn decode(status: i32) -> Event {
    if libc::WIFEXITED(status) {
        Event::Exited(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Event::Killed(libc::WTERMSIG(status))
    } else if libc::WIFSTOPPED(status) {
        let sig = libc::WSTOPSIG(status);
        match status >> 16 {
            0 => Event::Signal(sig),
            event => Event::Ptrace { sig, event },
        }
    } else {
        Event::Running
    }
}

/// `waitpid(tid, __WALL | WNOHANG)`. Not nix's `waitpid`: its `WaitStatus` holds a
/// `Signal`, which fails for a real-time signal after the status was consumed.
pub(crate) fn poll(tid: i32) -> Result<Event, Errno> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer for the duration of the call.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        match r {
            0 => return Ok(Event::Running),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(Errno::last()),
            _ => return Ok(decode(status)),
        }
    }
}

/// Backs off between polls: yields first (a stop usually takes microseconds), then sleeps
/// for growing intervals up to a millisecond.
pub(crate) struct Backoff {
    deadline: Instant,
    rounds: u32,
}

impl Backoff {
    pub(crate) fn new(deadline: Instant) -> Self {
        Backoff {
            deadline,
            rounds: 0,
        }
    }

    /// Waits a little; false once the deadline has passed.
    pub(crate) fn wait(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            return false;
        }
        self.rounds += 1;
        if self.rounds <= 20 {
            std::thread::yield_now();
        } else {
            let micros = 10u64 << (self.rounds - 20).min(7);
            std::thread::sleep(Duration::from_micros(micros.min(1000)));
        }
        true
    }
}

/// Polls one thread until it reports a state change or the deadline passes (`Ok(Running)`).
pub(crate) fn wait_event(tid: i32, deadline: Instant) -> Result<Event, Errno> {
    let mut backoff = Backoff::new(deadline);
    loop {
        match poll(tid)? {
            Event::Running => {
                if !backoff.wait() {
                    return Ok(Event::Running);
                }
            }
            event => return Ok(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(decode(3 << 8), Event::Exited(3));
        assert_eq!(decode(9), Event::Killed(9));
        assert_eq!(decode(0x7f | (34 << 8)), Event::Signal(34));
        assert_eq!(
            decode(0x7f | (5 << 8) | (libc::PTRACE_EVENT_STOP << 16)),
            Event::Ptrace {
                sig: 5,
                event: libc::PTRACE_EVENT_STOP
            }
        );
        assert_eq!(decode(0xffff), Event::Running);
    }
}
