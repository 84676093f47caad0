//! Which files have a patch. The storage is keyed by build-id, the kernel's notifications by
//! file, so the files are found by build-id: in the search directories (those named on the
//! command line, or the usual program and library directories) and among the files running
//! processes have mapped (a program running from anywhere else). The build-id of each file is
//! remembered by its identity (device, inode, size, modification time): looking again costs
//! one `stat` per file.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kpatch_process::{parse_maps, MapName};

use crate::buildid;

/// Searched when no directory is named.
pub const DEFAULT_SEARCH_DIRS: &[&str] = &[
    "/usr/bin",
    "/usr/sbin",
    "/usr/libexec",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/local/libexec",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// Identity of a file's contents: device, inode, size, modification time (s, ns).
type FileKey = (u64, u64, u64, i64, i64);

fn key(meta: &std::fs::Metadata) -> FileKey {
    (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// The paths of what is directly in `dir`, sorted (none if it cannot be read).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
}

/// A file with a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its path, for messages (as a process of another mount namespace names it, when found
    /// through its mappings).
    pub path: PathBuf,
    /// Where this process opens it: `path`, or `/proc/PID/map_files/RANGE` for a file of
    /// another mount namespace.
    pub open_path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub build_id: String,
    /// A program (executed), not a library (loaded).
    pub program: bool,
}

/// Build-ids (and sonames) of the files looked at so far.
#[derive(Debug, Default)]
pub struct FileIndex {
    ids: HashMap<FileKey, Option<String>>,
    sonames: HashMap<FileKey, Option<String>>,
}

impl FileIndex {
    /// The build-id of the file at `path`, whose metadata is `meta`, read once per identity.
    fn build_id(&mut self, path: &Path, meta: &std::fs::Metadata) -> Option<String> {
        let k = key(meta);
        if let Some(id) = self.ids.get(&k) {
            return id.clone();
        }
        let id = if meta.is_file() && meta.size() >= 64 {
            buildid::of_path(path)
        } else {
            None
        };
        self.ids.insert(k, id.clone());
        id
    }

    /// The libraries directly in `dirs` (symbolic links followed) whose file name or soname is
    /// in `names`: those the callbacks of the storage's patches are for.
    pub fn locate_named(&mut self, names: &HashSet<String>, dirs: &[PathBuf]) -> Vec<Found> {
        let mut out: Vec<Found> = Vec::new();
        if names.is_empty() {
            return out;
        }
        for dir in dirs {
            for path in entries(dir) {
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if !meta.is_file() {
                    continue;
                }
                let by_name = path
                    .file_name()
                    .is_some_and(|n| names.contains(n.to_string_lossy().as_ref()));
                let named = by_name
                    || self
                        .sonames
                        .entry(key(&meta))
                        .or_insert_with(|| buildid::soname(&path))
                        .as_ref()
                        .is_some_and(|s| names.contains(s));
                if !named
                    || out
                        .iter()
                        .any(|f| (f.dev, f.ino) == (meta.dev(), meta.ino()))
                {
                    continue;
                }
                if buildid::is_program(&path) {
                    continue;
                }
                out.push(Found {
                    build_id: self.build_id(&path, &meta).unwrap_or_default(),
                    open_path: path.clone(),
                    path,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    program: false,
                });
            }
        }
        out
    }

    /// Whether the file at `path` has a build-id in `wanted`; the file if so.
    pub fn check(&mut self, path: &Path, wanted: &HashSet<String>) -> Option<Found> {
        let meta = std::fs::metadata(path).ok()?;
        let id = self.build_id(path, &meta)?;
        wanted.contains(&id).then(|| Found {
            path: path.to_owned(),
            open_path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            build_id: id,
            program: buildid::is_program(path),
        })
    }

    /// The files whose build-id is in `wanted`: those directly in `dirs` (symbolic links
    /// followed), then those mapped executable by running processes (but `exclude`), one per
    /// file whatever the names it goes by.
    pub fn locate(
        &mut self,
        wanted: &HashSet<String>,
        dirs: &[PathBuf],
        exclude: i32,
    ) -> Vec<Found> {
        let mut out: Vec<Found> = Vec::new();
        let mut seen: HashSet<(u64, u64)> = HashSet::new();
        if wanted.is_empty() {
            return out;
        }
        for dir in dirs {
            for path in entries(dir) {
                if let Some(f) = self.check(&path, wanted) {
                    if seen.insert((f.dev, f.ino)) {
                        out.push(f);
                    }
                }
            }
        }
        for f in self.mapped(wanted, exclude) {
            if seen.insert((f.dev, f.ino)) {
                out.push(f);
            }
        }
        out
    }

    /// Files mapped executable by running processes (but `exclude`) with a build-id in
    /// `wanted`.
    fn mapped(&mut self, wanted: &HashSet<String>, exclude: i32) -> Vec<Found> {
        let mut out = Vec::new();
        let mut looked: HashSet<(u64, u64)> = HashSet::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return out;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == exclude {
                continue;
            }
            let Ok(text) = std::fs::read(format!("/proc/{pid}/maps")) else {
                continue;
            };
            let Ok(maps) = parse_maps(&text) else {
                continue;
            };
            for m in maps.iter().filter(|m| m.perms.exec && m.inode != 0) {
                let MapName::File { path, .. } = &m.name else {
                    continue;
                };
                let dev = nix::sys::stat::makedev(u64::from(m.dev.0), u64::from(m.dev.1));
                if !looked.insert((dev, m.inode)) {
                    continue;
                }
                // The path as this process sees it, if it is the same file; otherwise the
                // mapping itself (a file of another mount namespace, or replaced since).
                let same = std::fs::metadata(path)
                    .is_ok_and(|meta| meta.dev() == dev && meta.ino() == m.inode);
                let open_path = if same {
                    path.clone()
                } else {
                    PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
                };
                let Ok(meta) = std::fs::metadata(&open_path) else {
                    continue;
                };
                let Some(id) = self.build_id(&open_path, &meta) else {
                    continue;
                };
                if wanted.contains(&id) {
                    out.push(Found {
                        path: path.clone(),
                        program: buildid::is_program(&open_path),
                        open_path,
                        dev,
                        ino: m.inode,
                        build_id: id,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_by_build_id_in_directories_and_mappings() {
        let me = std::env::current_exe().unwrap();
        let id = buildid::of_path(&me).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("copy");
        std::fs::copy(&me, &copy).unwrap();
        std::os::unix::fs::symlink(&copy, dir.path().join("link")).unwrap();
        std::fs::write(
            dir.path().join("other"),
            b"not ELF, long enough to be looked at....................",
        )
        .unwrap();
        let wanted = HashSet::from([id.clone()]);
        let mut index = FileIndex::default();
        // Not excluding ourselves: this test process maps its own executable.
        let found = index.locate(&wanted, &[dir.path().to_owned()], 0);
        let paths: Vec<&Path> = found.iter().map(|f| f.path.as_path()).collect();
        assert!(paths.contains(&copy.as_path()), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.ends_with("link")),
            "one entry per file: {paths:?}"
        );
        let me_canon = std::fs::canonicalize(&me).unwrap();
        assert!(
            paths
                .iter()
                .any(|p| std::fs::canonicalize(p).ok().as_ref() == Some(&me_canon)),
            "the running executable is found through the mappings: {paths:?}"
        );
        assert!(found.iter().all(|f| f.build_id == id));
        // Nothing wanted, nothing looked for.
        assert!(index
            .locate(&HashSet::new(), &[dir.path().to_owned()], 0)
            .is_empty());
        // Excluding ourselves and searching nowhere: the mapping is not looked at.
        let alone = index.locate(&wanted, &[], std::process::id() as i32);
        assert!(alone
            .iter()
            .all(|f| std::fs::canonicalize(&f.path).ok() != Some(me_canon.clone())));
    }
}
