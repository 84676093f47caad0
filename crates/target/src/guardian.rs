//! A dead man's switch for code writes: a helper process that holds a batch of writes to the
//! target and performs it only if this process dies while the batch is armed.
//!
//! Whatever kills the tool (SIGKILL, a crash, the OOM killer), the kernel detaches every
//! tracee and the target runs on with whatever the tool had written so far: half of a set of
//! redirects, or a breakpoint instruction that nobody will catch. The guardian turns such a
//! state into a consistent one within microseconds of the tool's death: before a series of
//! writes the tool arms it with the writes that put the target back into a safe state (the
//! original bytes under breakpoints, the original code under redirects, "pending" header
//! magic), and disarms it when the series is complete. Batches nest: arming again adds a batch
//! on top (breakpoints written while a commit is armed), disarming removes the top one, and a
//! death performs them all, top first. A batch must be safe to perform while the target's
//! threads run, which holds for writes that replace a jump or a breakpoint by original code, or
//! that rewrite bytes with their current value.
//!
//! The helper is a `fork` of this process (no `exec`), made while the target still runs. It
//! closes standard input and output, leaves our process group (a terminal's Ctrl-C does not
//! reach it), blocks termination signals, and inherits our file descriptors: the target's
//! `/proc/PID/mem` (opened, and access-checked, by [`Process::open`]) and the descriptors the
//! caller names (a lock file, which stays locked until the helper is done); it closes all
//! others. Between `fork` and its exit it only makes system calls, on its stack and on a buffer
//! it maps itself (no allocator), so it is safe even in a multi-threaded caller. The buffer is
//! mapped in the child, not allocated before the fork: touched only as batches arrive, it costs
//! the tool nothing per target (with `-p all`, one guardian per process).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::{Error, Result};
use crate::guardian_forker;
use crate::process::Process;

const OP_ARM: u8 = b'A';
const OP_DISARM: u8 = b'D';
/// Bytes of framing per write in an armed batch: address (8) and length (4).
const ENTRY_HEADER: usize = 12;
/// Most bytes of batches a guardian holds at once.
pub const GUARDIAN_CAPACITY: usize = 4 << 20;
/// Most batches a guardian holds at once.
const MAX_DEPTH: usize = 16;

/// A running guardian. Dropping it lets the helper exit, after it has performed any batch still
/// armed (an error path that could not undo its writes leaves that to it).
#[derive(Debug)]
pub struct Guardian {
    pid: libc::pid_t,
    /// Our end of the command pipe; closing it (or dying) is the signal.
    cmd: Option<OwnedFd>,
    /// Sizes of the armed batches, bottom first.
    armed: Vec<usize>,
    target: i32,
    /// Read end of a pipe the helper holds open until it exits, when it is not our child
    /// (forked by a [`crate::GuardianForker`]).
    done: Option<OwnedFd>,
}

pub(crate) fn os_error(what: &str) -> Error {
    Error::InvalidArgument(format!(
        "guardian process: {what}: {}",
        std::io::Error::last_os_error()
    ))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe2"));
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl Guardian {
    /// Starts a guardian for `process` (do it while the target runs: forking copies this
    /// process's page tables). The helper keeps the descriptors in `keep` open (a lock held
    /// through one of them stays held until the helper exits) and closes every other one.
    pub fn spawn(process: &Process, keep: &[RawFd]) -> Result<Guardian> {
        let (cmd_r, cmd_w) = pipe()?;
        let mem = process.mem.as_raw_fd();
        let (done_r, done_w) = pipe()?;
        let asked = guardian_forker::request(cmd_r.as_raw_fd(), done_w.as_raw_fd(), mem, keep);
        if let Some(pid) = asked {
            return Ok(Guardian {
                pid: pid?,
                cmd: Some(cmd_w),
                armed: Vec::new(),
                target: process.pid(),
                done: Some(done_r),
            });
        }
        drop((done_r, done_w));
        let mut keep_sorted: Vec<RawFd> = keep
            .iter()
            .copied()
            .chain([mem, cmd_r.as_raw_fd()])
            .collect();
        keep_sorted.sort_unstable();
        keep_sorted.dedup();
        // SAFETY: the child only runs `helper`, which makes async-signal-safe system calls on
        // memory allocated before the fork or mapped by itself, and ends with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_error("fork"));
        }
        if pid == 0 {
            quiet_and_alone(&keep_sorted);
            close_all_but(&keep_sorted);
            helper(cmd_r.as_raw_fd(), mem);
        }
        drop(cmd_r);
        Ok(Guardian {
            pid,
            cmd: Some(cmd_w),
            armed: Vec::new(),
            target: process.pid(),
            done: None,
        })
    }

    /// Arms the guardian with one more batch of `writes` (address, bytes). It is armed once
    /// this returns: the whole message is in the pipe, which the helper reads to its end
    /// even after our death (a message cut short by our death is ignored, and so is what it
    /// was to guard, which had not started).
    pub fn arm(&mut self, writes: &[(u64, Vec<u8>)]) -> Result<()> {
        let size: usize = writes.iter().map(|(_, b)| ENTRY_HEADER + b.len()).sum();
        let held: usize = self.armed.iter().sum();
        if held + size > GUARDIAN_CAPACITY
            || writes.len() > u32::MAX as usize
            || self.armed.len() >= MAX_DEPTH
        {
            return Err(Error::InvalidArgument(format!(
                "pid {}: {} bytes of guarded writes in {} batches, more than the guardian holds ({GUARDIAN_CAPACITY} bytes, {MAX_DEPTH} batches)",
                self.target,
                held + size,
                self.armed.len() + 1
            )));
        }
        let mut msg = Vec::with_capacity(9 + size);
        msg.push(OP_ARM);
        msg.extend_from_slice(&(writes.len() as u32).to_ne_bytes());
        msg.extend_from_slice(&(size as u32).to_ne_bytes());
        for (addr, bytes) in writes {
            msg.extend_from_slice(&addr.to_ne_bytes());
            msg.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
            msg.extend_from_slice(bytes);
        }
        self.send(&msg)?;
        self.armed.push(size);
        Ok(())
    }

    /// Disarms the batch armed last: it will not be performed.
    pub fn disarm(&mut self) -> Result<()> {
        if self.armed.pop().is_some() {
            self.send(&[OP_DISARM])?;
        }
        Ok(())
    }

    /// How many batches are armed.
    pub fn armed(&self) -> usize {
        self.armed.len()
    }

    /// The helper's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn send(&self, msg: &[u8]) -> Result<()> {
        let Some(fd) = &self.cmd else {
            return Err(Error::InvalidArgument("guardian already closed".into()));
        };
        let mut done = 0;
        while done < msg.len() {
            let rest = &msg[done..];
            // SAFETY: writes from a live buffer of the given length.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(Error::InvalidArgument(format!(
                    "pid {}: the guardian process {} is gone: {}",
                    self.target,
                    self.pid,
                    std::io::Error::last_os_error()
                )));
            }
            done += n as usize;
        }
        Ok(())
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // EOF tells the helper to perform what is armed, if anything, and exit.
        self.cmd = None;
        if let Some(done) = self.done.take() {
            // Not our child: its exit shows as end of file on the pipe it held.
            let mut byte = [0u8];
            // SAFETY: reads into a live 1-byte buffer.
            while unsafe { libc::read(done.as_raw_fd(), byte.as_mut_ptr().cast(), 1) } != 0 {
                if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            return;
        }
        let mut status = 0;
        // SAFETY: reaps our own child; `status` is a valid out-pointer.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0 {
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
    }
}

/// Closes every descriptor from 3 up, except those of `keep` (sorted), so that the helper
/// holds no pipe end or lock it was not given.
pub(crate) fn close_all_but(keep: &[RawFd]) {
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
            // SAFETY: __errno_location returns this thread's errno slot.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
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

/// The helper's whole life, once detached ([`quiet_and_alone`]) and left with only its
/// descriptors. Never returns.
pub(crate) fn helper(cmd: RawFd, mem: RawFd) -> ! {
    // SAFETY: a private anonymous mapping of our own, never unmapped (the process ends with
    // _exit); without it we exit at once, and the requester's first `arm` fails on the pipe.
    let buf: &mut [u8] = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            GUARDIAN_CAPACITY,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            libc::_exit(1);
        }
        std::slice::from_raw_parts_mut(p.cast::<u8>(), GUARDIAN_CAPACITY)
    };
    helper_loop(cmd, mem, buf)
}

/// Detaches a helper from the terminal and the tool's signals: closes standard input, output
/// and error (unless one is in `keep`), leaves the process group, blocks the signals meant for
/// the tool.
pub(crate) fn quiet_and_alone(keep: &[RawFd]) {
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

fn helper_loop(cmd: RawFd, mem: RawFd, buf: &mut [u8]) -> ! {
    // (start, length, count) of each armed batch in `buf`, bottom first.
    let mut layers = [(0usize, 0usize, 0u32); MAX_DEPTH];
    let mut depth = 0usize;
    loop {
        let mut op = [0u8];
        if read_full(cmd, &mut op) != 1 {
            break;
        }
        match op[0] {
            OP_ARM => {
                let mut head = [0u8; 8];
                if read_full(cmd, &mut head) != 8 {
                    // The requester died mid-message: the batch never took effect.
                    break;
                }
                let count = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]);
                let size = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]) as usize;
                let start = match depth {
                    0 => 0,
                    d => layers[d - 1].0 + layers[d - 1].1,
                };
                if depth >= MAX_DEPTH
                    || start + size > buf.len()
                    || read_full(cmd, &mut buf[start..start + size]) != size
                {
                    break;
                }
                layers[depth] = (start, size, count);
                depth += 1;
            }
            OP_DISARM => depth = depth.saturating_sub(1),
            _ => break,
        }
    }
    for &(start, len, count) in layers[..depth].iter().rev() {
        perform(mem, &buf[start..start + len], count);
    }
    // SAFETY: ends the helper without running anything of the forked state.
    unsafe { libc::_exit(0) }
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
                // SAFETY: __errno_location returns this thread's errno slot.
                if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
                    continue;
                }
                break;
            }
            done += n as usize;
        }
    }
}
