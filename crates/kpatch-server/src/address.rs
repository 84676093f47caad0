//! The socket address forms of `libcare-server`: a path, `@name` for an abstract socket, or
//! `&FD` for a listening socket inherited from the caller (socket activation).

use std::os::fd::RawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use kpatch_process::adopt_inherited_fd;
use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

use crate::conn::Listener;
use crate::error::{Error, Result};

/// `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_PATH: usize = 107;

/// The default socket of `libcare-client`.
pub const DEFAULT_SOCKET: &str = "/var/run/libcare.sock";

/// Where the server listens or the client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Path(PathBuf),
    /// An abstract socket (no file). The name is used as LibcarePlus binds it: with its
    /// terminating NUL byte.
    Abstract(String),
    /// An already listening socket at this descriptor.
    Fd(RawFd),
}

impl Address {
    /// Parses a command-line address.
    pub fn parse(s: &str) -> Result<Address> {
        if let Some(fd) = s.strip_prefix('&') {
            return fd
                .parse::<RawFd>()
                .ok()
                .filter(|&fd| fd >= 0)
                .map(Address::Fd)
                .ok_or_else(|| Error::BadAddress(s.to_owned()));
        }
        if let Some(name) = s.strip_prefix('@') {
            if name.is_empty() || name.len() + 1 > MAX_PATH {
                return Err(Error::BadAddress(s.to_owned()));
            }
            return Ok(Address::Abstract(name.to_owned()));
        }
        if s.is_empty() {
            return Err(Error::BadAddress(s.to_owned()));
        }
        if s.len() > MAX_PATH {
            return Err(Error::AddressTooLong(s.into()));
        }
        Ok(Address::Path(s.into()))
    }

    fn abstract_addr(name: &str) -> std::io::Result<SocketAddr> {
        let mut bytes = name.as_bytes().to_vec();
        bytes.push(0);
        SocketAddr::from_abstract_name(bytes)
    }

    /// Starts listening, with a path socket's file mode 0600 (see [`Address::listen_as`]).
    pub fn listen(&self) -> Result<Listener> {
        self.listen_as(0o600, None)
    }

    /// Starts listening. A path socket gets file mode `mode` and, when given, group `gid`,
    /// whatever the umask, before anyone can connect to it: it is bound in a private
    /// directory, set up there, then renamed into place. A path must not exist yet (a stale
    /// socket file is not removed: it may belong to a running server).
    pub fn listen_as(&self, mode: u32, gid: Option<u32>) -> Result<Listener> {
        let err = |source| Error::Listen {
            address: self.to_string(),
            source,
        };
        match self {
            Address::Path(p) => bind_path(p, mode, gid).map(Listener).map_err(err),
            Address::Abstract(name) => Address::abstract_addr(name)
                .and_then(|a| UnixListener::bind_addr(&a))
                .map(Listener)
                .map_err(err),
            Address::Fd(fd) => adopt_inherited_fd(*fd)
                .map(|fd| Listener(UnixListener::from(fd)))
                .map_err(err),
        }
    }

    /// Connects to a server.
    pub fn connect(&self) -> Result<UnixStream> {
        let err = |source| Error::Connect {
            address: self.to_string(),
            source,
        };
        match self {
            Address::Path(p) => UnixStream::connect(p).map_err(err),
            Address::Abstract(name) => Address::abstract_addr(name)
                .and_then(|a| UnixStream::connect_addr(&a))
                .map_err(err),
            Address::Fd(_) => Err(Error::BadAddress(self.to_string())),
        }
    }
}

/// Binds a path socket with exactly `mode` and `gid` (see [`Address::listen_as`]).
fn bind_path(path: &Path, mode: u32, gid: Option<u32>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // mkdtemp makes it 0700: nobody else can reach the socket inside it. (A short name: the
    // path inside must fit in a socket address too.)
    let private = nix::unistd::mkdtemp(&parent.join(".XXXXXX"))?;
    let inside = private.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&inside)?;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            nix::unistd::chown(&inside, None, Some(gid.into()))?;
        }
        renameat2(
            AT_FDCWD,
            &inside,
            AT_FDCWD,
            path,
            RenameFlags::RENAME_NOREPLACE,
        )?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&inside);
    let _ = std::fs::remove_dir(&private);
    bound
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Path(p) => write!(f, "{}", p.display()),
            Address::Abstract(n) => write!(f, "@{n}"),
            Address::Fd(fd) => write!(f, "&{fd}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse() {
        assert_eq!(
            Address::parse("/tmp/x.sock").unwrap(),
            Address::Path("/tmp/x.sock".into())
        );
        assert_eq!(
            Address::parse("@libcare").unwrap(),
            Address::Abstract("libcare".into())
        );
        assert_eq!(Address::parse("&3").unwrap(), Address::Fd(3));
        for bad in ["", "@", "&", "&x", "&-1"] {
            assert!(Address::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Address::parse(&format!("/{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn an_inherited_descriptor_is_served() {
        use std::io::{Read, Write};
        use std::os::fd::IntoRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let owner = UnixListener::bind(&path).unwrap();
        let a = Address::parse(&format!("&{}", owner.into_raw_fd())).unwrap();
        let inherited = a.listen().unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        let mut conn = inherited.accept().unwrap();
        client.write_all(b"stop\0\0").unwrap();
        let mut buf = [0u8; 6];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"stop\0\0");
        conn.write_all(b"ok").unwrap();
        drop(conn);
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"ok");
    }

    #[test]
    fn a_path_socket_gets_its_mode_whatever_the_umask() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let a = Address::parse(path.to_str().unwrap()).unwrap();
        let gid = nix::unistd::getegid().as_raw();
        let _l = a.listen_as(0o660, Some(gid)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
        assert_eq!(meta.gid(), gid);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no leftovers"
        );
        // An existing path is left alone.
        let err = a.listen().unwrap_err().to_string();
        assert!(err.contains("exists"), "{err}");
        let _c = a.connect().unwrap();
    }

    #[test]
    fn an_abstract_socket_connects() {
        let name = format!("libcare-test-{}", std::process::id());
        let a = Address::parse(&format!("@{name}")).unwrap();
        let l = a.listen().unwrap();
        let _client = a.connect().unwrap();
        let conn = l.accept().unwrap();
        drop(conn);
    }
}
