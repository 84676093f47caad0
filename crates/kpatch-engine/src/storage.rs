//! Where patches come from: one `.kpatch` file, or a directory holding
//! `<build-id>/latest/kpatch.bin` (the `latest` link names the patch level) or
//! `<build-id>.kpatch`, plus optional `before`/`after` scripts.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A patch storage given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    File(PathBuf),
    Dir(PathBuf),
}

/// A patch file found in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Patch level, from the name of the `latest` link's target.
    pub level: Option<u32>,
}

/// The scripts a directory storage may hold, run as `script PID` while the target is stopped.
const SCRIPTS: [&str; 2] = ["before", "after"];

fn is_executable_file(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

impl Storage {
    /// Opens a storage path, which must be a file or a directory. A directory's `before` and
    /// `after` scripts, when present, must be executable files: a script that exists but
    /// cannot run is refused here, before any process is touched.
    pub fn open(path: &Path) -> Result<Storage> {
        let meta = std::fs::metadata(path).map_err(io(path))?;
        if !meta.is_dir() {
            return Ok(Storage::File(path.to_owned()));
        }
        for name in SCRIPTS {
            let p = path.join(name);
            match std::fs::metadata(&p) {
                Ok(m) if !is_executable_file(&m) => {
                    return Err(Error::Io {
                        path: p,
                        source: std::io::Error::other(
                            "not an executable file: a storage script must be executable (chmod +x it, or remove it)",
                        ),
                    })
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Ok(Storage::Dir(path.to_owned()))
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        match self {
            Storage::File(p) | Storage::Dir(p) => p,
        }
    }

    /// Reads the single patch file of a file storage.
    pub(crate) fn file_bytes(&self) -> Result<Option<Found>> {
        match self {
            Storage::File(p) => Ok(Some(Found {
                path: p.clone(),
                bytes: std::fs::read(p).map_err(io(p))?,
                level: None,
            })),
            Storage::Dir(_) => Ok(None),
        }
    }

    /// Looks a build-id up in a directory storage: `<bid>/latest/kpatch.bin` first, then
    /// `<bid>.kpatch`. A file storage is not searched here (its header names its build-id).
    pub(crate) fn lookup_dir(&self, build_id: &str) -> Result<Option<Found>> {
        let Storage::Dir(dir) = self else {
            return Ok(None);
        };
        let latest = dir.join(build_id).join("latest");
        let bin = latest.join("kpatch.bin");
        if bin.is_file() {
            let level = std::fs::read_link(&latest).ok().and_then(|t| {
                t.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok())
            });
            let bytes = std::fs::read(&bin).map_err(io(&bin))?;
            return Ok(Some(Found {
                path: bin,
                bytes,
                level,
            }));
        }
        let file = dir.join(format!("{build_id}.kpatch"));
        if file.is_file() {
            let bytes = std::fs::read(&file).map_err(io(&file))?;
            return Ok(Some(Found {
                path: file,
                bytes,
                level: None,
            }));
        }
        Ok(None)
    }

    /// An executable `before` or `after` script of a directory storage.
    pub(crate) fn script(&self, name: &str) -> Option<PathBuf> {
        let Storage::Dir(dir) = self else { return None };
        let p = dir.join(name);
        let meta = std::fs::metadata(&p).ok()?;
        is_executable_file(&meta).then_some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_lookup_prefers_latest_and_reads_the_level() {
        let dir = tempfile::tempdir().unwrap();
        let bid = "ab".repeat(20);
        std::fs::write(dir.path().join(format!("{bid}.kpatch")), b"flat").unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let f = s.lookup_dir(&bid).unwrap().unwrap();
        assert_eq!(f.bytes, b"flat");
        assert_eq!(f.level, None);
        std::fs::create_dir_all(dir.path().join(&bid).join("2")).unwrap();
        std::fs::write(dir.path().join(&bid).join("2/kpatch.bin"), b"level2").unwrap();
        std::os::unix::fs::symlink("2", dir.path().join(&bid).join("latest")).unwrap();
        let f = s.lookup_dir(&bid).unwrap().unwrap();
        assert_eq!(f.bytes, b"level2");
        assert_eq!(f.level, Some(2));
        assert!(s.lookup_dir(&"cd".repeat(20)).unwrap().is_none());
    }

    #[test]
    fn scripts_must_be_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        assert!(s.script("before").is_none());
        std::fs::write(dir.path().join("before"), "#!/bin/sh\n").unwrap();
        let err = Storage::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not an executable file"), "{err}");
        std::fs::set_permissions(
            dir.path().join("before"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let s = Storage::open(dir.path()).unwrap();
        assert!(s.script("before").is_some());
        std::fs::create_dir(dir.path().join("after")).unwrap();
        assert!(Storage::open(dir.path()).is_err());
        assert!(Storage::open(&dir.path().join("missing")).is_err());
    }
}
