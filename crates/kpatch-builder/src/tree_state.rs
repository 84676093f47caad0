//! What the patched stage changed in the tree besides the patched sources and the outputs
//! `libcare-cc` keeps (see [`crate::stash`]): files written by other tools (an archive made by
//! `ar`, a generated header) now hold patched content with a fresh modification time, so the
//! next original build would take them as up to date. [`TreeState`] records every file's
//! identity before the patched stage; [`make_stale`] then gives each file changed since the
//! oldest possible modification time, so that `make` remakes it from the original sources.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A directory could not be listed or a file not inspected.
#[derive(Debug, thiserror::Error)]
#[error("cannot list {path} to record the state of the build tree: {source}")]
pub struct ScanError {
    /// The directory or file.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// What identifies one version of a file: a rewrite changes the inode or the modification
/// time, a rename back (how kept outputs and sources return) restores both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        }
    }
}

/// The regular files under some directories, each with its stamp.
#[derive(Debug, Default)]
pub struct TreeState {
    files: HashMap<PathBuf, Stamp>,
}

impl TreeState {
    /// Records every regular file under `roots` (symlinks not followed), leaving out `.git`
    /// and the directories `skip` (the same directories by identity, however they are named).
    /// A root inside another root is listed once; a missing directory in `skip` is ignored.
    pub fn scan(roots: &[&Path], skip: &[&Path]) -> Result<TreeState, ScanError> {
        let skip: HashSet<(u64, u64)> = skip
            .iter()
            .filter_map(|d| fs::metadata(d).ok())
            .map(|m| (m.dev(), m.ino()))
            .collect();
        let mut state = TreeState::default();
        let mut seen_dirs = HashSet::new();
        for root in roots {
            state.walk(root, &skip, &mut seen_dirs)?;
        }
        Ok(state)
    }

    fn walk(
        &mut self,
        dir: &Path,
        skip: &HashSet<(u64, u64)>,
        seen: &mut HashSet<(u64, u64)>,
    ) -> Result<(), ScanError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ScanError { path, source }
        };
        let meta = fs::metadata(dir).map_err(err(dir))?;
        let id = (meta.dev(), meta.ino());
        if skip.contains(&id) || !seen.insert(id) {
            return Ok(());
        }
        for entry in fs::read_dir(dir).map_err(err(dir))? {
            let entry = entry.map_err(err(dir))?;
            let path = entry.path();
            let ty = entry.file_type().map_err(err(&path))?;
            if ty.is_dir() {
                if entry.file_name() != ".git" {
                    self.walk(&path, skip, seen)?;
                }
            } else if ty.is_file() {
                // Gone since it was listed: a parallel job removed it; nothing to record.
                if let Ok(m) = entry.metadata() {
                    self.files.insert(path, Stamp::of(&m));
                }
            }
        }
        Ok(())
    }

    /// The files recorded in both `self` (earlier) and `now` that changed in between, sorted.
    pub fn changed_in(&self, now: &TreeState) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(p, s)| now.files.get(*p).is_some_and(|n| n != *s))
            .map(|(p, _)| p.clone())
            .collect();
        v.sort();
        v
    }

    /// The recorded files whose name satisfies `pred`, sorted.
    pub fn files_named(&self, pred: impl Fn(&std::ffi::OsStr) -> bool) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.file_name().is_some_and(&pred))
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// Forgets `path` (a file removed since the scan).
    pub fn forget(&mut self, path: &Path) {
        self.files.remove(path);
    }
}

/// Whether `path` is a build tool's record of its own runs rather than something the build
/// makes: ninja's `.ninja_log` (the command and time of each output) and `.ninja_deps` (the
/// headers each object read), rewritten by every ninja run, and meson's logs (`meson-logs/`,
/// which `meson install` rewrites). No tool judges them by their modification times, and
/// what the patched stage wrote in ninja's holds for the original outputs put back (the same
/// commands, the same headers), so they are left as they are.
pub fn is_build_tool_record(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n == ".ninja_log" || n == ".ninja_deps")
        || path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|d| d == "meson-logs")
}

/// Gives `path` the oldest modification time there is, so that `make` takes it as older than
/// any of its prerequisites and remakes it.
pub fn make_stale(path: &Path) -> io::Result<()> {
    fs::File::open(path).and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rewritten_files_and_not_renamed_back_ones() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for f in ["a.o", "lib.a", "sub/b.o", ".git/index", "out/app"] {
            let p = root.join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, f).unwrap();
        }
        let before = TreeState::scan(&[root, &root.join("sub")], &[&root.join("out")]).unwrap();
        assert_eq!(before.files.len(), 3);

        // Moved aside and back: unchanged. Rewritten: changed. New: not reported.
        fs::rename(root.join("a.o"), root.join("kept")).unwrap();
        fs::write(root.join("a.o"), "patched").unwrap();
        fs::rename(root.join("kept"), root.join("a.o")).unwrap();
        fs::write(root.join("lib.a"), "patched archive").unwrap();
        fs::write(root.join("new"), "x").unwrap();
        fs::write(root.join("out/app"), "patched").unwrap();
        fs::write(root.join(".git/index"), "patched").unwrap();

        let now = TreeState::scan(&[root], &[&root.join("out")]).unwrap();
        assert_eq!(before.changed_in(&now), [root.join("lib.a")]);
        assert_eq!(
            now.files_named(|n| n.to_string_lossy().ends_with(".o")),
            [root.join("a.o"), root.join("sub/b.o")]
        );

        assert!(is_build_tool_record(&root.join("build/.ninja_log")));
        assert!(is_build_tool_record(Path::new(".ninja_deps")));
        assert!(is_build_tool_record(Path::new(
            "build/meson-logs/install-log.txt"
        )));
        assert!(!is_build_tool_record(&root.join("lib.a")));

        make_stale(&root.join("lib.a")).unwrap();
        let m = fs::metadata(root.join("lib.a")).unwrap();
        assert_eq!(m.modified().unwrap(), SystemTime::UNIX_EPOCH);
    }
}
