//! Errors of start-up patching.

use std::path::PathBuf;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can keep a process from being patched at start-up, or the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service cannot use its mechanism; the message says what to do.
    #[error("{0}")]
    Unavailable(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pid {pid}: {what}")]
    Process { pid: i32, what: String },
    /// The caller's guard does not trust the storage: why.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Target(#[from] kpatch_process::Error),
    #[error(transparent)]
    Engine(Box<kpatch_engine::Error>),
}

impl From<kpatch_engine::Error> for Error {
    fn from(e: kpatch_engine::Error) -> Error {
        Error::Engine(Box::new(e))
    }
}

impl Error {
    /// Whether this is a refusal of the caller's trust rules (the guard's, or the engine's
    /// check of a patch file), rather than a failure.
    pub fn is_refusal(&self) -> bool {
        match self {
            Error::Refused(_) => true,
            Error::Engine(e) => matches!(**e, kpatch_engine::Error::Refused(_)),
            _ => false,
        }
    }
}
