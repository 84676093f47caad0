//! Errors of the trust checks.

use std::path::PathBuf;

/// Why a patch file, storage or script is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is not signed, and the keys in {keys} require a signature (sign it with kpatch_make --sign KEY)")]
    Unsigned { keys: PathBuf },
    #[error("not a .kpatch file: {0}")]
    NotAPatch(kpatch_file::FormatError),
    #[error("the bytes after its contents are not an SSH signature ({0})")]
    BadSignature(String),
    #[error("its signature is for namespace \"{0}\", not \"libcare\"")]
    Namespace(String),
    #[error("it is signed by key {fingerprint}, which is not in {keys}")]
    UnknownKey { fingerprint: String, keys: PathBuf },
    #[error("its signature by key {fingerprint} does not match its contents: the file was changed after it was signed")]
    Mismatch { fingerprint: String },
    #[error("{reason}; as root, libcare trusts only files that no other user could have written (--no-strict-modes turns this check off)")]
    Unsafe { reason: String },
}

/// Errors of loading keys and checking files.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file that is not to be trusted.
    #[error("{path}: refused: {why}")]
    Refused { path: PathBuf, why: Refusal },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("cannot sign the patch: {0}")]
    Sign(String),
}

impl TrustError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
        move |source| TrustError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn refused(path: &std::path::Path, why: Refusal) -> TrustError {
        TrustError::Refused {
            path: path.to_owned(),
            why,
        }
    }
}
