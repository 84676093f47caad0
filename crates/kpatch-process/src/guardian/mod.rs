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
//!
//! Here is the tool's side; `shared` is the memory both see, `helper` the guardian's life after
//! the fork, and `forker` a helper that forks guardians in the tool's place.

mod forker;
mod helper;
mod shared;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::{fork, pipe2, ForkResult, Pid};

pub use forker::GuardianForker;
pub use shared::GUARDIAN_CAPACITY;

use crate::error::{Error, Result};
use crate::process::Process;
use shared::{Shared, ENTRY_HEADER, MAX_DEPTH};

/// A running guardian. Dropping it lets the helper exit, after it has performed any batch still
/// armed (an error path that could not undo its writes leaves that to it).
#[derive(Debug)]
pub struct Guardian {
    pid: Pid,
    /// Our end of the pipe; closing it (or dying) is the signal.
    cmd: Option<OwnedFd>,
    shared: Shared,
    /// Sizes of the armed batches, bottom first.
    armed: Vec<usize>,
    target: i32,
    /// Read end of a pipe the helper holds open until it exits, when it is not our child
    /// (forked by a [`GuardianForker`]).
    done: Option<OwnedFd>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::guardian("pipe2", e))
}

impl Guardian {
    /// Starts a guardian for `process` (do it while the target runs: forking copies this
    /// process's page tables), forked by `forker` when one is given (and still runs), else by
    /// this process. The helper keeps the descriptors in `keep` open (a lock held through one
    /// of them stays held until the helper exits) and closes every other one.
    pub fn spawn(
        process: &Process,
        keep: &[RawFd],
        forker: Option<&GuardianForker>,
    ) -> Result<Guardian> {
        let (shm, shared) = Shared::create()?;
        let (cmd_r, cmd_w) = pipe()?;
        let mem = process.mem.as_raw_fd();
        let (done_r, done_w) = pipe()?;
        let asked = forker.and_then(|f| {
            f.request(
                cmd_r.as_raw_fd(),
                done_w.as_raw_fd(),
                mem,
                shm.as_raw_fd(),
                keep,
            )
        });
        if let Some(pid) = asked {
            return Ok(Guardian {
                pid: pid?,
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
        // SAFETY: the child only runs `helper::guardian`, which makes async-signal-safe system
        // calls on memory allocated before the fork or mapped by itself, and ends with _exit.
        let pid = match unsafe { fork() }.map_err(|e| Error::guardian("fork", e))? {
            ForkResult::Child => {
                helper::quiet_and_alone(&keep_sorted);
                helper::close_all_but(&keep_sorted);
                helper::guardian(cmd_r.as_raw_fd(), mem, shm.as_raw_fd());
            }
            ForkResult::Parent { child } => child,
        };
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
        let mut at = held;
        for (addr, bytes) in writes {
            let mut head = [0u8; ENTRY_HEADER];
            head[..8].copy_from_slice(&addr.to_ne_bytes());
            head[8..].copy_from_slice(&(bytes.len() as u32).to_ne_bytes());
            for part in [&head[..], &bytes[..]] {
                let fits = self.shared.write(at, part);
                debug_assert!(fits, "the capacity was checked above");
                at += part.len();
            }
        }
        let depth = self.armed.len();
        let head = self.shared.head();
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
            let head = self.shared.head();
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
        self.pid.as_raw()
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
        if let Some(done) = self.done.take() {
            // Not our child: its exit shows as end of file on the pipe it held.
            let mut byte = [0u8];
            while let Err(Errno::EINTR) = nix::unistd::read(&done, &mut byte) {}
            return;
        }
        helper::reap(self.pid);
    }
}
