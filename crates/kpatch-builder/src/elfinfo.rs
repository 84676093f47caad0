//! What the driver needs to know about a built file: is it ELF, its GNU build-id, and whether
//! its patched build carries `.kpatch*` sections.

use std::io;
use std::path::{Path, PathBuf};

use kpatch_file::{build_id_hex, KPATCH_PREFIX};
use object::{Object, ObjectSection};

/// A file could not be read or inspected.
#[derive(Debug, thiserror::Error)]
pub enum ElfInfoError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The ELF is damaged.
    #[error("{path}: bad ELF: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: object::Error,
    },
}

/// Facts about one ELF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfInfo {
    /// The GNU build-id, lowercase hex, if the file has one.
    pub build_id: Option<String>,
    /// Whether a section name contains `.kpatch` ([`KPATCH_PREFIX`]: `.kpatch.text`,
    /// `.rela.kpatch.info`...).
    pub has_kpatch: bool,
    /// The names in `.kpatch.strtab`: one per function the patch replaces (`f.kpatch`) or
    /// adds (`f`), in order.
    pub patch_functions: Vec<String>,
}

/// Inspects `path`; `Ok(None)` when it is not an object file (a script, a data file).
pub fn inspect(path: &Path) -> Result<Option<ElfInfo>, ElfInfoError> {
    let data = std::fs::read(path).map_err(|source| ElfInfoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !data.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let parse_err = |source| ElfInfoError::Parse {
        path: path.to_path_buf(),
        source,
    };
    let file = object::File::parse(&*data).map_err(parse_err)?;
    let build_id = file.build_id().map_err(parse_err)?.map(build_id_hex);
    let has_kpatch = file
        .sections()
        .any(|s| s.name().is_ok_and(|n| n.contains(KPATCH_PREFIX)));
    let patch_functions = match file.section_by_name(kpatch_file::KPATCH_STRTAB) {
        Some(sec) => sec
            .data()
            .map_err(parse_err)?
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect(),
        None => Vec::new(),
    };
    Ok(Some(ElfInfo {
        build_id,
        has_kpatch,
        patch_functions,
    }))
}
