//! Errors of the control socket.

use std::path::PathBuf;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong talking over the control socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to {address}: {source}; is libcare-server listening there?")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("socket address {0:?} is invalid: use a path, @name (abstract) or &FD (an inherited descriptor)")]
    BadAddress(String),
    #[error("socket path {0} is longer than a UNIX socket address allows (107 bytes)")]
    AddressTooLong(PathBuf),
    #[error("argument {0:?} cannot be sent: arguments must be non-empty and contain no NUL byte")]
    BadArgument(String),
    #[error("request is {size} bytes; at most {max} fit")]
    TooLong { size: usize, max: usize },
    #[error("request is empty")]
    EmptyRequest,
    #[error("group {0} does not exist")]
    NoSuchGroup(String),
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
}
