//! The guardian processes' side, from `fork` to `_exit`: detaching from the tool's terminal and
//! signals, keeping only the descriptors they were given, and, for a guardian, performing the
//! armed batches once the tool lets go. Everything here runs in a child forked from a process
//! that may have threads: only system calls, on the stack and on memory mapped before or by the
//! child itself, and no allocation.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::shared::{Shared, ENTRY_HEADER, MAX_DEPTH};

/// The guardian's whole life, once detached ([`quiet_and_alone`]) and left with only its
/// descriptors: `cmd` (the pipe's end), `mem` (the target's memory) and `shm` (the shared
/// memory). Never returns.
pub(super) fn guardian(cmd: RawFd, mem: RawFd, shm: RawFd) -> ! {
    // Without it we exit at once, and the requester's first `arm` fails.
    let Some(shared) = Shared::map(shm) else {
        exit(1)
    };
    // Nothing is ever written to the pipe: this returns at its end (or on an error).
    let mut byte = [0u8];
    while read_full(cmd, &mut byte) == 1 {}
    let head = shared.head();
    let data = shared.data();
    let depth = (head.depth.load(Ordering::Acquire) as usize).min(MAX_DEPTH);
    for layer in head.layers[..depth].iter().rev() {
        let [start, len, count] = layer.each_ref().map(|v| v.load(Ordering::Relaxed) as usize);
        if let Some(batch) = start.checked_add(len).and_then(|end| data.get(start..end)) {
            perform(mem, batch, count as u32);
        }
    }
    exit(0)
}

/// Ends a helper without running anything of the forked state (no destructor, no `atexit`).
pub(super) fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process at once; nothing of the forked state runs.
    unsafe { libc::_exit(code) }
}

/// Waits for our child `pid` to exit and reaps it.
pub(super) fn reap(pid: Pid) {
    // Its status does not matter (one nix cannot decode is an error after the reaping).
    while matches!(waitpid(pid, None), Err(Errno::EINTR)) {}
}

/// Detaches a helper from the terminal and the tool's signals: closes standard input, output
/// and error (unless one is in `keep`), leaves the process group, blocks the signals meant for
/// the tool.
pub(super) fn quiet_and_alone(keep: &[RawFd]) {
    // SAFETY: async-signal-safe calls on descriptors and memory we own.
    unsafe {
        for fd in 0..3 {
            if !keep.contains(&fd) {
                libc::close(fd);
            }
        }
        libc::setpgid(0, 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
        ] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Closes every descriptor from 3 up, except those of `keep` (sorted), so that the helper
/// holds no pipe end or lock it was not given.
pub(super) fn close_all_but(keep: &[RawFd]) {
    let mut from: RawFd = 3;
    for &k in keep.iter().filter(|&&k| k >= 3) {
        close_range(from, k - 1);
        from = k + 1;
    }
    close_range(from, RawFd::MAX);
}

fn close_range(first: RawFd, last: RawFd) {
    if first > last {
        return;
    }
    // SAFETY: close_range takes three integers and only closes descriptors of this process.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    if r == 0 {
        return;
    }
    // Kernels before 5.9: close one by one up to the descriptor limit.
    // SAFETY: sysconf only reads a configuration value.
    let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 1 << 16) as RawFd;
    for fd in first..=last.min(max) {
        // SAFETY: closing a descriptor number; EBADF for unused ones is harmless.
        unsafe { libc::close(fd) };
    }
}

/// Reads until `buf` is full or EOF/error; returns the bytes read.
fn read_full(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: reads into a live buffer of the given length.
        let n = unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return done;
        }
        if n == 0 {
            return done;
        }
        done += n as usize;
    }
    done
}

/// Performs the armed writes, each as one `pwrite` (retried until complete).
fn perform(mem: RawFd, batch: &[u8], count: u32) {
    let mut at = 0usize;
    for _ in 0..count {
        let Some(head) = batch.get(at..at + ENTRY_HEADER) else {
            return;
        };
        let mut a = [0u8; 8];
        a.copy_from_slice(&head[..8]);
        let addr = u64::from_ne_bytes(a);
        let len = u32::from_ne_bytes([head[8], head[9], head[10], head[11]]) as usize;
        at += ENTRY_HEADER;
        let Some(bytes) = batch.get(at..at + len) else {
            return;
        };
        at += len;
        let mut done = 0usize;
        while done < len {
            let rest = &bytes[done..];
            // SAFETY: writes from a live buffer of the given length at a file offset.
            let n = unsafe {
                libc::pwrite(
                    mem,
                    rest.as_ptr().cast(),
                    rest.len(),
                    (addr + done as u64) as libc::off_t,
                )
            };
            if n <= 0 {
                if n < 0 && Errno::last() == Errno::EINTR {
                    continue;
                }
                break;
            }
            done += n as usize;
        }
    }
}
