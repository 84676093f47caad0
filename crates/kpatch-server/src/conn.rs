//! Accepted connections. A socket inherited as `&FD` exists only as a descriptor number, so
//! every connection is handled through its descriptor with `accept4`/`recv`/`send`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;

use nix::errno::Errno;
use nix::sys::socket::{accept4, recv, send, MsgFlags, SockFlag};

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// Bound by us; closed on drop.
    Owned(UnixListener),
    /// Inherited from whoever started us; left open.
    Inherited(RawFd),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Owned(l) => l.as_raw_fd(),
            Listener::Inherited(fd) => *fd,
        }
    }

    /// Waits for the next client.
    pub fn accept(&self) -> std::io::Result<Conn> {
        loop {
            match accept4(self.fd(), SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => return Ok(Conn(fd)),
                // A client that gave up before we got to it is no reason to stop serving.
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// One client's connection; closed on drop.
#[derive(Debug)]
pub struct Conn(RawFd);

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match recv(self.0, buf, MsgFlags::empty()) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                // A client that closes with unread data resets the connection: that is its end.
                Err(Errno::ECONNRESET) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            // MSG_NOSIGNAL: a client that went away must not kill the server with SIGPIPE.
            match send(self.0, buf, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}
