//! Forking guardians from a small helper rather than from the tool. A fork copies the forking
//! process's page tables and write-protects its memory; in a tool with several threads at work
//! (`-p all` handles processes in parallel) every copy-on-write fault that follows costs a TLB
//! shootdown on every core running one of them. The forker is forked once, early, and keeps
//! nothing but a socket; each guardian is then a fork of it, given its descriptors over the
//! socket (`SCM_RIGHTS`). The forker and the guardians are made of the same async-signal-safe
//! code, so the forker may be started from a process with threads.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::guardian::{close_all_but, helper, os_error, quiet_and_alone, reap};

/// Most descriptors one request passes.
const MAX_FDS: usize = 16;
/// Control-message buffer, in 8-byte words (aligned for `cmsghdr`): room for `MAX_FDS`.
const CMSG_WORDS: usize = 16;

struct Forker {
    sock: OwnedFd,
    pid: libc::pid_t,
}

/// The forker of this run, if one was started.
static FORKER: Mutex<Option<Forker>> = Mutex::new(None);

/// While this lives, [`crate::Guardian::spawn`] has its guardians forked by a helper process
/// started by [`GuardianForker::start`]. Dropping it ends the helper (guardians already
/// started are not affected).
#[derive(Debug)]
pub struct GuardianForker {
    owner: bool,
}

impl GuardianForker {
    /// Starts the forker (a fork of this process, made now: start it before this process
    /// grows or starts threads). If one already runs, it is used and this does nothing.
    pub fn start() -> Result<GuardianForker> {
        let mut slot = FORKER.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Ok(GuardianForker { owner: false });
        }
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
            return Err(os_error("socketpair"));
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: the child only runs `forker`, which makes async-signal-safe system calls on
        // its own stack, and ends with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_error("fork"));
        }
        if pid == 0 {
            forker(theirs.as_raw_fd());
        }
        drop(theirs);
        *slot = Some(Forker { sock: ours, pid });
        Ok(GuardianForker { owner: true })
    }
}

impl Drop for GuardianForker {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        let taken = FORKER.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = taken {
            // EOF on its socket ends it.
            drop(f.sock);
            reap(f.pid);
        }
    }
}

/// Asks the forker for a guardian waiting on `cmd`, writing through `mem` what the shared
/// memory `shm` holds, holding `done` open until it exits, and keeping `keep` open; returns
/// its pid. `None` when no forker
/// runs (or it is gone): the caller forks the guardian itself.
pub(crate) fn request(
    cmd: RawFd,
    done: RawFd,
    mem: RawFd,
    shm: RawFd,
    keep: &[RawFd],
) -> Option<Result<libc::pid_t>> {
    let slot = FORKER.lock().unwrap_or_else(|e| e.into_inner());
    let f = slot.as_ref()?;
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
    if send_fds(f.sock.as_raw_fd(), &fds).is_err() {
        return None;
    }
    let mut reply = [0u8; 4];
    let n = loop {
        // SAFETY: receives into a live 4-byte buffer.
        let n = unsafe { libc::recv(f.sock.as_raw_fd(), reply.as_mut_ptr().cast(), 4, 0) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n != 4 {
        return None;
    }
    let pid = i32::from_ne_bytes(reply);
    Some(if pid > 0 {
        Ok(pid)
    } else {
        Err(Error::InvalidArgument(format!(
            "guardian process: fork: {}",
            std::io::Error::from_raw_os_error(-pid)
        )))
    })
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
        let count = match receive_fds(sock, &mut fds) {
            Some(n) => n,
            // SAFETY: ends the forker without running anything of the forked state.
            None => unsafe { libc::_exit(0) },
        };
        let reply: i32 = if count < 4 {
            -libc::EINVAL
        } else {
            // SAFETY: the child only runs `helper` (async-signal-safe calls, _exit).
            match unsafe { libc::fork() } {
                0 => {
                    let mut keep = fds;
                    keep[..count].sort_unstable();
                    // Our socket is closed with every descriptor not kept (0-2 are closed
                    // already or were received).
                    close_all_but(&keep[..count]);
                    helper(fds[0], fds[2], fds[3]);
                }
                pid if pid > 0 => pid,
                _ => -std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EAGAIN),
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
            if n < 0 && *libc::__errno_location() == libc::EINTR {
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
