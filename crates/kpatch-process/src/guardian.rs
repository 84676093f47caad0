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
//! others. Between `fork` and its exit it only makes system calls, on its stack and on the
//! shared buffer (no allocator), so it is safe even in a multi-threaded caller.
//!
//! Batches travel through memory shared with the helper (a `memfd` both map, whose descriptor
//! the helper is given like the others; only the pages batches touch cost anything), not
//! through the pipe: arming and disarming are stores, which wake nobody, so they cost next to
//! nothing even while the target is stopped (a pipe write that woke the helper cost ~14 µs
//! there). The helper sleeps on the pipe, which we never write to: its end (our death, or
//! dropping the [`Guardian`]) is the signal, after which it performs what the shared memory
//! says is armed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::guardian_forker;
use crate::process::Process;

/// Bytes of framing per write in an armed batch: address (8) and length (4).
const ENTRY_HEADER: usize = 12;
/// Most bytes of batches a guardian holds at once.
pub const GUARDIAN_CAPACITY: usize = 4 << 20;
/// Most batches a guardian holds at once.
const MAX_DEPTH: usize = 16;
/// Where the batches start in the shared memory (after [`Armed`]).
const DATA_OFFSET: usize = 4096;
const SHARED_LEN: usize = DATA_OFFSET + GUARDIAN_CAPACITY;
/// Bytes of batches whose pages are faulted in before any stop.
const PREFAULT: usize = 16 << 10;

/// The head of the shared memory: which batches are armed. A batch's bytes and its entry in
/// `layers` are stored before `depth` counts it (release), and the helper reads `depth`
/// (acquire) before them, so a death half-way through arming leaves the batch unarmed.
#[repr(C)]
struct Armed {
    depth: AtomicU32,
    /// (start in the data, length, count of writes) of each batch, bottom first.
    layers: [[AtomicU64; 3]; MAX_DEPTH],
}

const _: () = assert!(std::mem::size_of::<Armed>() <= DATA_OFFSET);

/// A running guardian. Dropping it lets the helper exit, after it has performed any batch still
/// armed (an error path that could not undo its writes leaves that to it).
#[derive(Debug)]
pub struct Guardian {
    pid: libc::pid_t,
    /// Our end of the pipe; closing it (or dying) is the signal.
    cmd: Option<OwnedFd>,
    /// The shared memory, mapped ([`SHARED_LEN`] bytes, starting with an [`Armed`]).
    shared: *mut u8,
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

// SAFETY: the shared mapping belongs to this value alone (the helper only reads it after we
// let go); nothing ties it to the thread that made it.
unsafe impl Send for Guardian {}

/// The [`Armed`] head of a shared mapping.
///
/// # Safety
/// `shared` must be a live mapping of [`SHARED_LEN`] bytes of the guardian's memfd.
unsafe fn armed_head<'a>(shared: *mut u8) -> &'a Armed {
    // SAFETY: the mapping is page-aligned, zero-filled at creation (a valid `Armed`: atomics
    // of zero) and at least DATA_OFFSET bytes long; it is only accessed through atomics.
    unsafe { &*shared.cast::<Armed>() }
}

/// Maps the guardian's shared memory from `fd`.
fn map_shared(fd: RawFd) -> Option<*mut u8> {
    // SAFETY: a new shared mapping of a memfd of SHARED_LEN bytes; the caller owns it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SHARED_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast::<u8>())
}

/// The shared memory: a memfd of [`SHARED_LEN`] bytes, mapped, its first pages faulted in (so
/// that arming a usual batch inside a stop takes no page fault).
fn shared_memory() -> Result<(OwnedFd, *mut u8)> {
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"libcare-guardian".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(os_error("memfd_create"));
    }
    // SAFETY: a descriptor just created, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sizes our own memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), SHARED_LEN as libc::off_t) } != 0 {
        return Err(os_error("ftruncate"));
    }
    let shared = map_shared(fd.as_raw_fd()).ok_or_else(|| os_error("mmap"))?;
    for page in (0..DATA_OFFSET + PREFAULT).step_by(4096) {
        // SAFETY: within the mapping; nothing else uses it yet.
        unsafe { shared.add(page).write_volatile(0) };
    }
    Ok((fd, shared))
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
        let (shm, shared) = shared_memory()?;
        let unmap = || {
            // SAFETY: the mapping made above, not used after this.
            unsafe { libc::munmap(shared.cast(), SHARED_LEN) };
        };
        let (cmd_r, cmd_w) = pipe().inspect_err(|_| unmap())?;
        let mem = process.mem.as_raw_fd();
        let (done_r, done_w) = pipe().inspect_err(|_| unmap())?;
        let asked = guardian_forker::request(
            cmd_r.as_raw_fd(),
            done_w.as_raw_fd(),
            mem,
            shm.as_raw_fd(),
            keep,
        );
        if let Some(pid) = asked {
            return Ok(Guardian {
                pid: pid.inspect_err(|_| unmap())?,
                cmd: Some(cmd_w),
                shared,
                armed: Vec::new(),
                target: process.pid(),
                done: Some(done_r),
            });
        }
        drop((done_r, done_w));
        let mut keep_sorted: Vec<RawFd> = keep
            .iter()
            .copied()
            .chain([mem, cmd_r.as_raw_fd(), shm.as_raw_fd()])
            .collect();
        keep_sorted.sort_unstable();
        keep_sorted.dedup();
        // SAFETY: the child only runs `helper`, which makes async-signal-safe system calls on
        // memory allocated before the fork or mapped by itself, and ends with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = os_error("fork");
            unmap();
            return Err(e);
        }
        if pid == 0 {
            quiet_and_alone(&keep_sorted);
            close_all_but(&keep_sorted);
            helper(cmd_r.as_raw_fd(), mem, shm.as_raw_fd());
        }
        drop(cmd_r);
        Ok(Guardian {
            pid,
            cmd: Some(cmd_w),
            shared,
            armed: Vec::new(),
            target: process.pid(),
            done: None,
        })
    }

    /// Arms the guardian with one more batch of `writes` (address, bytes). It is armed once
    /// this returns: the batch is in the shared memory and counted there (a death before the
    /// count leaves it unarmed, and what it was to guard had not started). Fails if the helper
    /// is gone.
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
        self.check_alive()?;
        let mut at = DATA_OFFSET + held;
        for (addr, bytes) in writes {
            let mut head = [0u8; ENTRY_HEADER];
            head[..8].copy_from_slice(&addr.to_ne_bytes());
            head[8..].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
            for part in [&head[..], &bytes[..]] {
                // SAFETY: `at + part.len()` stays within DATA_OFFSET + GUARDIAN_CAPACITY
                // (checked above), inside the live mapping; the helper does not read it
                // before the depth counts it.
                unsafe {
                    std::ptr::copy_nonoverlapping(part.as_ptr(), self.shared.add(at), part.len())
                };
                at += part.len();
            }
        }
        let depth = self.armed.len();
        // SAFETY: the mapping is live while `self` is.
        let head = unsafe { armed_head(self.shared) };
        for (slot, v) in
            head.layers[depth]
                .iter()
                .zip([held as u64, size as u64, writes.len() as u64])
        {
            slot.store(v, Ordering::Relaxed);
        }
        head.depth.store(depth as u32 + 1, Ordering::Release);
        self.armed.push(size);
        Ok(())
    }

    /// Disarms the batch armed last: it will not be performed.
    pub fn disarm(&mut self) -> Result<()> {
        if self.armed.pop().is_some() {
            // SAFETY: the mapping is live while `self` is.
            let head = unsafe { armed_head(self.shared) };
            head.depth.store(self.armed.len() as u32, Ordering::Release);
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

    /// Fails if the helper is gone (no reader is left on the pipe), without waking it.
    fn check_alive(&self) -> Result<()> {
        let Some(fd) = &self.cmd else {
            return Err(Error::InvalidArgument("guardian already closed".into()));
        };
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: 0,
            revents: 0,
        };
        // SAFETY: polls one descriptor of ours through a live pollfd, without waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n < 0 || p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return Err(Error::InvalidArgument(format!(
                "pid {}: the guardian process {} is gone",
                self.target, self.pid
            )));
        }
        Ok(())
    }
}

impl Drop for Guardian {
    fn drop(&mut self) {
        // EOF tells the helper to perform what is armed, if anything, and exit.
        self.cmd = None;
        // Ours is not needed for that: the helper has its own mapping.
        // SAFETY: our mapping, not used after this.
        unsafe { libc::munmap(self.shared.cast(), SHARED_LEN) };
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
        reap(self.pid);
    }
}

/// Waits for our child `pid` to exit and reaps it.
pub(crate) fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: reaps our own child; `status` is a valid out-pointer.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
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
/// descriptors: `cmd` (the pipe's end), `mem` (the target's memory) and `shm` (the shared
/// memory). Never returns.
pub(crate) fn helper(cmd: RawFd, mem: RawFd, shm: RawFd) -> ! {
    // Without it we exit at once, and the requester's first `arm` fails.
    let Some(shared) = map_shared(shm) else {
        // SAFETY: ends the helper without running anything of the forked state.
        unsafe { libc::_exit(1) }
    };
    // Nothing is ever written to the pipe: this returns at its end (or on an error).
    let mut byte = [0u8];
    while read_full(cmd, &mut byte) == 1 {}
    // SAFETY: our own mapping of the shared memory; its owner is gone.
    let head = unsafe { armed_head(shared) };
    // SAFETY: the data part of the same mapping.
    let data: &[u8] =
        unsafe { std::slice::from_raw_parts(shared.add(DATA_OFFSET), GUARDIAN_CAPACITY) };
    let depth = (head.depth.load(Ordering::Acquire) as usize).min(MAX_DEPTH);
    for layer in head.layers[..depth].iter().rev() {
        let [start, len, count] = layer.each_ref().map(|v| v.load(Ordering::Relaxed) as usize);
        if let Some(batch) = start.checked_add(len).and_then(|end| data.get(start..end)) {
            perform(mem, batch, count as u32);
        }
    }
    // SAFETY: ends the helper without running anything of the forked state.
    unsafe { libc::_exit(0) }
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
