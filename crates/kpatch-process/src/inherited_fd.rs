//! A descriptor this process was started with (a listening socket handed over by socket
//! activation, `libcare-server &FD`), taken over as an owned descriptor so that safe code
//! (`std`, `nix`) can use it.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of the inherited descriptor `fd`. Fails if it is not open. Call it once
/// per descriptor: the result closes it when dropped.
pub fn adopt_inherited_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // The magic link exists exactly while the descriptor is open.
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}"))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: `fd` is open (checked just above) and owned by nothing else in this process: it
    // was inherited at start, and the caller adopts it once (documented contract).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn an_open_descriptor_is_adopted_and_a_closed_one_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let raw = a.into_raw_fd();
        let owned = adopt_inherited_fd(raw).unwrap();
        drop(owned);
        // (`raw` itself may be reused at once by another test's thread.)
        assert!(adopt_inherited_fd(1 << 20).is_err());
        assert!(adopt_inherited_fd(-1).is_err());
    }
}
