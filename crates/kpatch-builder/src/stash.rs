//! Keeping the original stage's outputs through the patched stage.
//!
//! In the patched stage `libcare-cc` is about to overwrite files the original stage made (the
//! object of a changed source, the linked program or library, a dependency file). With
//! [`stash`] it first moves each of them aside, beside it, as `.kpatch_<name>.original-output`
//! (or, when there was none, leaves an empty `.kpatch_<name>.no-original-output`), and appends
//! the file's absolute path to a list that `libcare-patch-make` names in `KPCC_KEEP_LIST`.
//! [`restore`] then puts every listed file back. Renames keep the original file itself —
//! content, mode, modification time — so the tree is left exactly as the original stage left
//! it, and the next original build has nothing to redo.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Prefix of the names below (fixed, unlike `KPATCH_PREFIX`: the driver must find them).
const PREFIX: &str = ".kpatch_";
/// Suffix of a kept original output.
const KEPT_SUFFIX: &str = ".original-output";
/// Suffix of the marker saying the original stage left no such file.
const ABSENT_SUFFIX: &str = ".no-original-output";

/// A failure while moving an output aside or putting it back.
#[derive(Debug, thiserror::Error)]
pub enum StashError {
    /// The list of kept outputs cannot be read or written.
    #[error("cannot {what} the list of kept original-stage outputs {list}: {source}")]
    List {
        /// `read`, `append to` or `remove`.
        what: &'static str,
        /// The list.
        list: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An output cannot be moved aside (patched stage) or put back (after it).
    #[error("cannot {what} {path} (kept as {kept}): {source}")]
    File {
        /// What was being done.
        what: &'static str,
        /// The output.
        path: PathBuf,
        /// Its kept original or marker.
        kept: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// `dir/.kpatch_<name><suffix>` for `dir/<name>`.
fn beside(output: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(PREFIX);
    name.push(output.file_name().unwrap_or_default());
    name.push(suffix);
    output.with_file_name(name)
}

/// Where the original-stage version of `output` is kept during the patched stage.
pub fn kept_path(output: &Path) -> PathBuf {
    beside(output, KEPT_SUFFIX)
}

/// The marker saying that the original stage left no `output`.
pub fn absent_path(output: &Path) -> PathBuf {
    beside(output, ABSENT_SUFFIX)
}

/// Whether `name` is that of a kept output or marker. Found outside a run's patched stage,
/// such a file is a stray: its list is gone, and it would keep the next patched stage from
/// keeping that output.
pub fn is_kept_name(name: &std::ffi::OsStr) -> bool {
    let name = name.as_bytes();
    name.starts_with(PREFIX.as_bytes())
        && (name.ends_with(KEPT_SUFFIX.as_bytes()) || name.ends_with(ABSENT_SUFFIX.as_bytes()))
}

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// Moves `output` aside before the patched stage writes it, and records it in `list`. Only
/// the first write of a run keeps anything: a second one finds the kept file (or the marker)
/// and leaves them alone, since what is there now was made by this stage.
pub fn stash(list: &Path, output: &Path) -> Result<(), StashError> {
    let output = std::path::absolute(output).unwrap_or_else(|_| output.to_path_buf());
    // Recorded before it moves, so that an interruption between the two cannot lose it.
    append(list, &output)?;
    let kept = kept_path(&output);
    let absent = absent_path(&output);
    if exists(&kept) || exists(&absent) {
        return Ok(());
    }
    let err = |what, kept: &Path| {
        let kept = kept.to_path_buf();
        let path = output.clone();
        move |source| StashError::File {
            what,
            path,
            kept,
            source,
        }
    };
    match fs::symlink_metadata(&output) {
        Ok(m) if m.is_file() || m.is_symlink() => {
            fs::rename(&output, &kept).map_err(err("move aside", &kept))
        }
        // A directory, a device (`-o /dev/null`), a pipe: not a build output to keep.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::File::create(&absent) {
            // A missing directory: the compiler reports it and writes nothing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.map(drop).map_err(err("mark as new", &absent)),
        },
        Err(e) => Err(err("look at", &kept)(e)),
    }
}

/// Appends `path` to `list` as one `write` (NUL-terminated, since a path may hold a newline),
/// so that parallel compilers never interleave their records.
fn append(list: &Path, path: &Path) -> Result<(), StashError> {
    let mut record = path.as_os_str().as_bytes().to_vec();
    record.push(0);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
        .and_then(|mut f| f.write_all(&record))
        .map_err(|source| StashError::List {
            what: "append to",
            list: list.to_path_buf(),
            source,
        })
}

/// Puts back every output listed in `list`: a kept original replaces what the patched stage
/// wrote, a file the original stage did not have is removed. Returns the outputs put back or
/// removed, and removes the list once all of them are done (a missing list means nothing to
/// do). Every output is tried; the first failure is returned.
pub fn restore(list: &Path) -> Result<Vec<PathBuf>, StashError> {
    let list_err = |what| {
        move |source| StashError::List {
            what,
            list: list.to_path_buf(),
            source,
        }
    };
    let mut raw = Vec::new();
    match fs::File::open(list) {
        Ok(mut f) => {
            f.read_to_end(&mut raw).map_err(list_err("read"))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(list_err("read")(e)),
    }
    let outputs: BTreeSet<PathBuf> = raw
        .split(|b| *b == 0)
        .filter(|r| !r.is_empty())
        .map(|r| PathBuf::from(OsString::from_vec(r.to_vec())))
        .collect();
    let mut done = Vec::new();
    let mut first_error = None;
    for output in outputs {
        match put_back(&output) {
            Ok(true) => done.push(output),
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    fs::remove_file(list).map_err(list_err("remove"))?;
    Ok(done)
}

/// Puts one output back; false when there was nothing to do (the compiler was stopped before
/// it moved anything, or an earlier restore finished this one).
fn put_back(output: &Path) -> Result<bool, StashError> {
    let kept = kept_path(output);
    let absent = absent_path(output);
    let err = |what, kept: &Path| {
        let kept = kept.to_path_buf();
        move |source| StashError::File {
            what,
            path: output.to_path_buf(),
            kept,
            source,
        }
    };
    if exists(&kept) {
        fs::rename(&kept, output).map_err(err("put back", &kept))?;
        return Ok(true);
    }
    if exists(&absent) {
        match fs::remove_file(output) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(err("remove the patched stage's", &absent)(e))
            }
            _ => {}
        }
        fs::remove_file(&absent).map_err(err("remove the marker of", &absent))?;
        return Ok(true);
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::time::{Duration, SystemTime};

    #[test]
    fn kept_names_are_recognised() {
        for p in ["/p/src/foo.o", "/p/app", "/p/.kpatch_x"] {
            let p = Path::new(p);
            assert!(is_kept_name(kept_path(p).file_name().unwrap()));
            assert!(is_kept_name(absent_path(p).file_name().unwrap()));
            assert!(!is_kept_name(p.file_name().unwrap()));
        }
        assert!(!is_kept_name(std::ffi::OsStr::new(
            ".kpatch_foo.o.original.s"
        )));
    }

    #[test]
    fn names() {
        assert_eq!(
            kept_path(Path::new("/p/src/foo.o")),
            PathBuf::from("/p/src/.kpatch_foo.o.original-output")
        );
        assert_eq!(
            absent_path(Path::new("/p/app")),
            PathBuf::from("/p/.kpatch_app.no-original-output")
        );
    }

    #[test]
    fn outputs_come_back_as_they_were() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("list");
        let obj = d.path().join("foo.o");
        fs::write(&obj, "original").unwrap();
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        fs::File::open(&obj).unwrap().set_modified(old).unwrap();
        let ino = fs::metadata(&obj).unwrap().ino();
        let new = d.path().join("new.o");

        stash(&list, &obj).unwrap();
        assert!(!obj.exists());
        fs::write(&obj, "patched").unwrap();
        // A second write in the same stage keeps the first original.
        stash(&list, &obj).unwrap();
        fs::write(&obj, "patched again").unwrap();
        stash(&list, &new).unwrap();
        fs::write(&new, "patched only").unwrap();
        stash(&list, &new).unwrap();

        let mut done = restore(&list).unwrap();
        done.sort();
        assert_eq!(done, [obj.clone(), new.clone()]);
        assert_eq!(fs::read_to_string(&obj).unwrap(), "original");
        let meta = fs::metadata(&obj).unwrap();
        assert_eq!(meta.modified().unwrap(), old);
        assert_eq!(meta.ino(), ino);
        assert!(!new.exists());
        let mut left: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["foo.o"]);
        // Nothing listed any more.
        assert!(restore(&list).unwrap().is_empty());
    }

    #[test]
    fn a_record_without_a_move_restores_nothing() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("list");
        let obj = d.path().join("foo.o");
        fs::write(&obj, "original").unwrap();
        append(&list, &obj).unwrap();
        assert!(restore(&list).unwrap().is_empty());
        assert_eq!(fs::read_to_string(&obj).unwrap(), "original");
        assert!(!list.exists());
    }

    #[test]
    fn special_files_are_never_moved() {
        // As `-o /dev/null` would be, without going near /dev: a socket is not a build output.
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("list");
        let sock = d.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        stash(&list, &sock).unwrap();
        assert!(fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
        assert!(!exists(&kept_path(&sock)));
        assert!(!exists(&absent_path(&sock)));
        assert!(restore(&list).unwrap().is_empty());
    }

    #[test]
    fn a_missing_directory_is_left_to_the_compiler() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("list");
        stash(&list, &d.path().join("no/such/dir/foo.o")).unwrap();
        assert!(restore(&list).unwrap().is_empty());
    }

    #[test]
    fn a_failed_restore_keeps_the_list() {
        let d = tempfile::tempdir().unwrap();
        let list = d.path().join("list");
        let out = d.path().join("app");
        fs::write(&out, "original").unwrap();
        stash(&list, &out).unwrap();
        // The patched stage made a directory where the file was: it cannot be replaced.
        fs::create_dir(&out).unwrap();
        fs::write(out.join("x"), "").unwrap();
        let e = restore(&list).unwrap_err();
        assert!(e.to_string().contains("cannot put back"), "{e}");
        assert!(list.exists());
    }
}
