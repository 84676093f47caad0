//! Errors of the patch engine.

use std::path::PathBuf;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a patch, unpatch or query.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed ELF file: {0}")]
    BadElf(String),
    #[error("malformed patch payload: {0}")]
    Payload(String),
    #[error("cannot resolve symbol {name}: no loaded object defines it")]
    Unresolved { name: String },
    #[error("relocation against {symbol} in {section}: {source}")]
    Relocation {
        symbol: String,
        section: String,
        #[source]
        source: kpatch_arch::ArchError,
    },
    #[error(transparent)]
    Arch(#[from] kpatch_arch::ArchError),
    #[error("not supported: {0}")]
    Unsupported(String),
}
