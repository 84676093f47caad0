//! Listening sockets and accepted connections, with each client's credentials.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};

use nix::errno::Errno;
use nix::sys::socket::{getsockopt, send, sockopt::PeerCredentials, MsgFlags};

use crate::access::Peer;

/// A listening socket: bound by us, or inherited (`&FD`).
#[derive(Debug)]
pub struct Listener(pub(crate) UnixListener);

impl Listener {
    /// Waits for the next client.
    pub fn accept(&self) -> std::io::Result<Conn> {
        loop {
            match self.0.accept() {
                Ok((stream, _)) => return Ok(Conn(stream)),
                // A client that gave up before we got to it is no reason to stop serving.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One client's connection; closed on drop.
#[derive(Debug)]
pub struct Conn(UnixStream);

impl Conn {
    /// Who connected: the credentials the kernel recorded at `connect` (`SO_PEERCRED`).
    pub fn peer(&self) -> std::io::Result<Peer> {
        let c = getsockopt(&self.0, PeerCredentials)?;
        Ok(Peer {
            pid: c.pid(),
            uid: c.uid(),
            gid: c.gid(),
        })
    }

    /// Ends our side: the client reads the end of the reply.
    pub fn finish(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Write);
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A client that closes with unread data resets the connection: that is its end.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            // MSG_NOSIGNAL: a client that went away must not kill the server with SIGPIPE.
            match send(self.0.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
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
