//! Forking guardians from a small helper rather than from the tool. A fork copies the forking
//! process's page tables and write-protects its memory; in a tool with several threads at work
//! (`-p all` handles processes in parallel) every copy-on-write fault that follows costs a TLB
//! shootdown on every core running one of them. The forker is forked once, early, and keeps
//! nothing but a socket; each guardian is then a fork of it, given its descriptors over the
//! socket (`SCM_RIGHTS`). The forker and the guardians are made of the same async-signal-safe
//! code, so the forker may be started from a process with threads.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::unistd::{fork, ForkResult, Pid};

use super::helper::{close_all_but, exit, guardian, quiet_and_alone, reap};
use crate::error::{Error, Result};

/// Most descriptors one request passes.
const MAX_FDS: usize = 16;
/// Control-message buffer, in 8-byte words (aligned for `cmsghdr`): room for `MAX_FDS`.
const CMSG_WORDS: usize = 16;

/// A helper process that forks guardians: pass it to [`crate::Guardian::spawn`]. Dropping it
/// ends the helper (guardians already started are not affected).
#[derive(Debug)]
pub struct GuardianForker {
    /// One request and its reply at a time; `None` once dropped.
    sock: Mutex<Option<OwnedFd>>,
    pid: Pid,
}

impl GuardianForker {
    /// Starts the forker (a fork of this process, made now: start it before this process
    /// grows or starts threads).
    pub fn start() -> Result<GuardianForker> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: socketpair writes two descriptors into the array we pass.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if r != 0 {
            return Err(Error::guardian("socketpair", Errno::last()));
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only runs `forker`, which makes async-signal-safe system calls on
        // its own stack, and ends with _exit.
        match unsafe { fork() }.map_err(|e| Error::guardian("fork", e))? {
            ForkResult::Child => forker(theirs.as_raw_fd()),
            ForkResult::Parent { child } => Ok(GuardianForker {
                sock: Mutex::new(Some(ours)),
                pid: child,
            }),
        }
    }

    /// Asks for a guardian waiting on `cmd`, writing through `mem` what the shared memory
    /// `shm` holds, holding `done` open until it exits, and keeping `keep` open; returns its
    /// pid. `None` when the forker is gone: the caller forks the guardian itself.
    pub(super) fn request(
        &self,
        cmd: RawFd,
        done: RawFd,
        mem: RawFd,
        shm: RawFd,
        keep: &[RawFd],
    ) -> Option<Result<Pid>> {
        let fds: Vec<RawFd> = [cmd, done, mem, shm]
            .into_iter()
            .chain(keep.iter().copied())
            .collect();
        if fds.len() > MAX_FDS {
            return Some(Err(Error::InvalidArgument(format!(
                "guardian: {} descriptors to keep, at most {MAX_FDS}",
                fds.len()
            ))));
        }
        let guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        let sock = guard.as_ref()?;
        if send_fds(sock.as_raw_fd(), &fds).is_err() {
            return None;
        }
        let mut reply = [0u8; 4];
        let n = loop {
            // SAFETY: receives into a live 4-byte buffer.
            let n = unsafe { libc::recv(sock.as_raw_fd(), reply.as_mut_ptr().cast(), 4, 0) };
            if n < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            break n;
        };
        if n != 4 {
            return None;
        }
        let pid = i32::from_ne_bytes(reply);
        Some(if pid > 0 {
            Ok(Pid::from_raw(pid))
        } else {
            Err(Error::guardian("fork", Errno::from_raw(-pid)))
        })
    }
}

impl Drop for GuardianForker {
    fn drop(&mut self) {
        // EOF on its socket ends it.
        drop(
            self.sock
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        reap(self.pid);
    }
}

/// Sends one byte with `fds` attached.
fn send_fds(sock: RawFd, fds: &[RawFd]) -> std::io::Result<()> {
    let mut byte = [b'G'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; CMSG_WORDS];
    let data_len = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_* compute sizes and positions inside `control`, which is large enough for
    // MAX_FDS descriptors (checked by the caller) and aligned for cmsghdr; sendmsg reads
    // `msg`, `iov` and `control`, all live for the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(data_len) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as usize;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            fds.len(),
        );
        loop {
            if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }
}

/// The forker's whole life: for each request, fork a guardian with the descriptors received,
/// close them, reply with its pid (or `-errno`). Ends when the socket is closed. Never
/// returns; allocates nothing.
fn forker(sock: RawFd) -> ! {
    // The guardians inherit this: they are quiet and alone too.
    quiet_and_alone(&[sock]);
    close_all_but(&[sock]);
    // SAFETY: guardians are reaped by the kernel; signal() only changes a disposition.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    loop {
        let mut fds = [-1 as RawFd; MAX_FDS];
        let Some(count) = receive_fds(sock, &mut fds) else {
            exit(0)
        };
        let reply: i32 = if count < 4 {
            -libc::EINVAL
        } else {
            // SAFETY: the child only runs `guardian` (async-signal-safe calls, _exit).
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    let mut keep = fds;
                    keep[..count].sort_unstable();
                    // Our socket is closed with every descriptor not kept (0-2 are closed
                    // already or were received).
                    close_all_but(&keep[..count]);
                    guardian(fds[0], fds[2], fds[3]);
                }
                Ok(ForkResult::Parent { child }) => child.as_raw(),
                Err(errno) => -(errno as i32),
            }
        };
        for &fd in &fds[..count] {
            // SAFETY: closes descriptors we received; the guardian holds its own copies.
            unsafe { libc::close(fd) };
        }
        let bytes = reply.to_ne_bytes();
        // SAFETY: sends from a live 4-byte buffer.
        unsafe { libc::send(sock, bytes.as_ptr().cast(), 4, libc::MSG_NOSIGNAL) };
    }
}

/// Receives one request's descriptors into `fds`; returns how many, or `None` at end of file.
fn receive_fds(sock: RawFd, fds: &mut [RawFd; MAX_FDS]) -> Option<usize> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; CMSG_WORDS];
    // SAFETY: recvmsg writes into `byte` and `control`, both live and of the sizes given; the
    // CMSG_* walk stays within `msg_controllen` bytes of `control`, as the kernel set it.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        let n = loop {
            let n = libc::recvmsg(sock, &mut msg, 0);
            if n < 0 && Errno::last() == Errno::EINTR {
                continue;
            }
            break n;
        };
        if n <= 0 {
            return None;
        }
        let mut count = 0;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                for i in 0..len {
                    let fd = data.add(i).read_unaligned();
                    if count < MAX_FDS {
                        fds[count] = fd;
                        count += 1;
                    } else {
                        libc::close(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Some(count)
    }
}
