//! Applying patch files to the source tree with GNU `patch`, one file section at a time, and
//! putting the tree back afterwards.
//!
//! Before a file is first changed, it is renamed to `<file>.<N>.lpmakeorig` (N: the index of
//! the patch that first touched it), the peer's backup names, and a copy takes its place for
//! GNU `patch` to change; a file that a patch creates gets an empty, unreadable placeholder,
//! as GNU `patch -b` makes. [`restore_sources`] renames every such backup back (the lowest N
//! wins) and removes created files: the original file itself returns, modification time
//! included, so `make` sees the tree as it was. After an interrupted run, when what the
//! patched build left behind is not known, it gives them the current time instead so that
//! `make` rebuilds everything made from them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

/// The modification time restored sources get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoredTime {
    /// Their own, from before the patches: right when the build's outputs are as the original
    /// build left them.
    Original,
    /// The current time: everything made from them is rebuilt.
    Now,
}

use super::diff::{self, DiffError, FileDiff};
use super::target::{find_target, NoTarget};

/// Suffix of backup files.
pub const BACKUP_SUFFIX: &str = "lpmakeorig";

/// Why a patch did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The patch file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The patch file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The patch file is not a usable unified diff.
    #[error("{path}: {source}")]
    Parse {
        /// The patch file.
        path: PathBuf,
        /// What is wrong.
        source: DiffError,
    },
    /// A section's file is not in the tree.
    #[error("{path}: {source}")]
    NoTarget {
        /// The patch file.
        path: PathBuf,
        /// Which section.
        source: NoTarget,
    },
    /// A backup could not be made.
    #[error("cannot back up {path}: {source}")]
    Backup {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// GNU patch could not be run.
    #[error("cannot run `patch` (GNU patch): {0}")]
    Spawn(io::Error),
    /// GNU patch rejected some hunks.
    #[error(
        "{patch}: the changes to {file} (`{names}`, patch line {line}) do not apply: {detail}"
    )]
    Rejected {
        /// The patch file.
        patch: PathBuf,
        /// The file in the tree.
        file: PathBuf,
        /// The section's names.
        names: String,
        /// The section's header line in the patch.
        line: usize,
        /// GNU patch's verdict, with the failed hunks named.
        detail: String,
    },
}

/// Why the tree could not be put back.
#[derive(Debug, thiserror::Error)]
#[error("cannot restore {path} from its backup: {source}")]
pub struct RestoreError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// One applied section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The file changed, relative to the source directory.
    pub file: PathBuf,
    /// Strip level used.
    pub strip: usize,
    /// What GNU patch printed.
    pub output: String,
}

/// Reads and checks a patch file without touching the tree.
pub fn read_patch(path: &Path) -> Result<Vec<FileDiff>, ApplyError> {
    let text = fs::read_to_string(path).map_err(|source| ApplyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    diff::parse(&text).map_err(|source| ApplyError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// The backup name of `file` made for patch number `index`.
pub fn backup_path(file: &Path, index: usize) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(format!(".{index}.{BACKUP_SUFFIX}"));
    PathBuf::from(s)
}

/// Applies every section of the patch file `patch` (number `index` in the run) under
/// `srcdir`, backing up each file first. Stops at the first section that does not apply; the
/// tree is then partly patched and [`restore_sources`] puts it back.
pub fn apply_patch(srcdir: &Path, patch: &Path, index: usize) -> Result<Vec<Applied>, ApplyError> {
    let sections = read_patch(patch)?;
    let mut strip_seen = None;
    let mut applied = Vec::new();
    for section in &sections {
        let target =
            find_target(section, srcdir, strip_seen).map_err(|source| ApplyError::NoTarget {
                path: patch.to_path_buf(),
                source,
            })?;
        strip_seen.get_or_insert(target.strip);
        let file = srcdir.join(&target.path);
        back_up(srcdir, &file, index)?;
        let output = run_gnu_patch(srcdir, &target.path, &section.text).map_err(|e| match e {
            GnuPatchError::Spawn(e) => ApplyError::Spawn(e),
            GnuPatchError::Failed(output) => ApplyError::Rejected {
                patch: patch.to_path_buf(),
                file: target.path.clone(),
                names: section.describe(),
                line: section.line,
                detail: failure_detail(&output, section),
            },
        })?;
        applied.push(Applied {
            file: target.path,
            strip: target.strip,
            output,
        });
    }
    Ok(applied)
}

/// Makes the backup of `file` unless this run already made one (an earlier patch of the same
/// run touched it).
fn back_up(srcdir: &Path, file: &Path, index: usize) -> Result<(), ApplyError> {
    if (0..=index).any(|i| backup_path(file, i).exists()) {
        // Ours from an earlier patch of this run: restore_sources ran before the first patch,
        // so any backup present now was made by this run.
        return Ok(());
    }
    let bak = backup_path(file, index);
    let err = |source| ApplyError::Backup {
        path: file.to_path_buf(),
        source,
    };
    if file.exists() {
        // The original itself is kept (its inode, mode and modification time); patch changes
        // a copy.
        fs::rename(file, &bak).map_err(err)?;
        if let Err(e) = fs::copy(&bak, file) {
            // Put it back: the tree must not lose the file because the copy failed.
            let _ = fs::rename(&bak, file);
            return Err(err(e));
        }
    } else {
        // GNU patch's convention for "did not exist": an empty file without permissions.
        let parent = bak.parent().unwrap_or(srcdir);
        fs::create_dir_all(parent).map_err(err)?;
        fs::File::create(&bak).map_err(err)?;
        fs::set_permissions(&bak, fs::Permissions::from_mode(0o000)).map_err(err)?;
    }
    Ok(())
}

enum GnuPatchError {
    Spawn(io::Error),
    Failed(String),
}

/// Runs GNU patch on one file with one section on its standard input. Naming the file on the
/// command line keeps patch from looking for it (and from asking); `--batch` keeps it from
/// asking anything else; rejects are discarded since the backup is put back anyway.
fn run_gnu_patch(srcdir: &Path, file: &Path, section: &str) -> Result<String, GnuPatchError> {
    let mut child = Command::new("patch")
        .args([
            "--batch",
            "--forward",
            "--no-backup-if-mismatch",
            "--reject-file=-",
            "--quoting-style=literal",
        ])
        .arg(file)
        .current_dir(srcdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GnuPatchError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error means patch exited early; its status and output tell why.
        let _ = stdin.write_all(section.as_bytes());
    }
    let out = child.wait_with_output().map_err(GnuPatchError::Spawn)?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        Ok(text)
    } else {
        Err(GnuPatchError::Failed(text))
    }
}

/// The lines of GNU patch's output that say what failed, each failed hunk followed by its
/// header and line in the patch file.
fn failure_detail(output: &str, section: &FileDiff) -> String {
    let lines: Vec<String> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("patching file"))
        .map(|l| {
            let hunk = l
                .strip_prefix("Hunk #")
                .and_then(|r| r.split_once(' '))
                .filter(|(_, rest)| rest.starts_with("FAILED"))
                .and_then(|(n, _)| n.parse::<usize>().ok())
                .and_then(|n| section.hunks.get(n.checked_sub(1)?));
            match hunk {
                Some(h) => format!("{l} [{h}]"),
                None => l.to_string(),
            }
        })
        .collect();
    if lines.is_empty() {
        "GNU patch failed without saying why".to_string()
    } else {
        lines.join("; ")
    }
}

/// Puts back every `<file>.<N>.lpmakeorig` backup under `srcdir` (from this run or an
/// interrupted earlier one), with the modification time `time` says; returns the files
/// restored or removed.
pub fn restore_sources(srcdir: &Path, time: RestoredTime) -> Result<Vec<PathBuf>, RestoreError> {
    let mut backups: BTreeMap<PathBuf, Vec<(usize, PathBuf)>> = BTreeMap::new();
    collect_backups(srcdir, &mut backups).map_err(|source| RestoreError {
        path: srcdir.to_path_buf(),
        source,
    })?;
    let mut restored = Vec::new();
    for (file, mut baks) in backups {
        baks.sort();
        let Some((_, first)) = baks.first().cloned() else {
            continue;
        };
        let err = |source| RestoreError {
            path: file.clone(),
            source,
        };
        let meta = fs::metadata(&first).map_err(err)?;
        if meta.len() == 0 && meta.permissions().mode() & 0o777 == 0 {
            match fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            }
            fs::remove_file(&first).map_err(err)?;
        } else {
            fs::rename(&first, &file).map_err(err)?;
            if time == RestoredTime::Now {
                fs::File::open(&file)
                    .and_then(|f| f.set_modified(SystemTime::now()))
                    .map_err(err)?;
            }
        }
        for (_, other) in baks.iter().skip(1) {
            fs::remove_file(other).map_err(err)?;
        }
        restored.push(file);
    }
    Ok(restored)
}

/// The files under `srcdir` that have a backup: the ones the patches changed or created.
pub fn backed_up_files(srcdir: &Path) -> Result<Vec<PathBuf>, RestoreError> {
    let mut backups = BTreeMap::new();
    collect_backups(srcdir, &mut backups).map_err(|source| RestoreError {
        path: srcdir.to_path_buf(),
        source,
    })?;
    Ok(backups.into_keys().collect())
}

/// Each file under `srcdir` that has a backup, with its first backup (the file as it was
/// before the first patch of the run).
pub fn originals(srcdir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, RestoreError> {
    let mut backups: BTreeMap<PathBuf, Vec<(usize, PathBuf)>> = BTreeMap::new();
    collect_backups(srcdir, &mut backups).map_err(|source| RestoreError {
        path: srcdir.to_path_buf(),
        source,
    })?;
    Ok(backups
        .into_iter()
        .filter_map(|(file, mut baks)| {
            baks.sort();
            baks.into_iter().next().map(|(_, first)| (file, first))
        })
        .collect())
}

/// Finds backups under `dir`, keyed by the file they belong to. Symlinks and `.git` are not
/// followed.
fn collect_backups(
    dir: &Path,
    out: &mut BTreeMap<PathBuf, Vec<(usize, PathBuf)>>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ty = entry.file_type()?;
        let path = entry.path();
        if ty.is_dir() {
            if entry.file_name() != ".git" {
                collect_backups(&path, out)?;
            }
            continue;
        }
        if !ty.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some((base, index)) = name.to_str().and_then(parse_backup_name) else {
            continue;
        };
        out.entry(dir.join(base)).or_default().push((index, path));
    }
    Ok(())
}

/// Splits `foo.c.3.lpmakeorig` into `("foo.c", 3)`.
fn parse_backup_name(name: &str) -> Option<(&str, usize)> {
    let rest = name.strip_suffix(BACKUP_SUFFIX)?.strip_suffix('.')?;
    let dot = rest.rfind('.')?;
    let (base, num) = (&rest[..dot], &rest[dot + 1..]);
    if base.is_empty() || num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((base, num.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    fn read(dir: &Path, rel: &str) -> String {
        fs::read_to_string(dir.join(rel)).unwrap()
    }

    #[test]
    fn backup_names() {
        assert_eq!(parse_backup_name("foo.c.0.lpmakeorig"), Some(("foo.c", 0)));
        assert_eq!(parse_backup_name("a.b.12.lpmakeorig"), Some(("a.b", 12)));
        assert_eq!(parse_backup_name("foo.c.x.lpmakeorig"), None);
        assert_eq!(parse_backup_name(".3.lpmakeorig"), None);
        assert_eq!(
            backup_path(Path::new("d/foo.c"), 2),
            PathBuf::from("d/foo.c.2.lpmakeorig")
        );
    }

    #[test]
    fn applies_diff_up_with_different_names_and_restores() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        write(&src, "foo.c", "a\nb\nc\n");
        write(&src, "sub/keep.c", "1\n2\n");
        let patch = d.path().join("foo.patch");
        fs::write(
            &patch,
            "diff -up foo.c bar.c\n--- foo.c\t2020-12-10 09:43:04 +0800\n+++ bar.c\t2020-12-10 09:48:36 +0800\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n\
             --- /dev/null\n+++ sub/new.c\n@@ -0,0 +1 @@\n+new\n\
             --- a/sub/keep.c\n+++ b/sub/keep.c\n@@ -1,2 +1,2 @@\n 1\n-2\n+two\n",
        )
        .unwrap();
        let old_time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::open(src.join("foo.c"))
            .unwrap()
            .set_modified(old_time)
            .unwrap();
        let foo_ino = fs::metadata(src.join("foo.c")).unwrap().ino();
        let applied = apply_patch(&src, &patch, 0).unwrap();
        let files: Vec<_> = applied.iter().map(|a| a.file.clone()).collect();
        assert_eq!(
            files,
            [
                PathBuf::from("foo.c"),
                PathBuf::from("sub/new.c"),
                PathBuf::from("sub/keep.c")
            ]
        );
        assert_eq!(read(&src, "foo.c"), "a\nB\nc\n");
        assert_eq!(read(&src, "sub/new.c"), "new\n");
        assert_eq!(read(&src, "sub/keep.c"), "1\ntwo\n");
        assert!(src.join("foo.c.0.lpmakeorig").exists());

        let mut changed = backed_up_files(&src).unwrap();
        changed.sort();
        assert_eq!(
            changed,
            [
                src.join("foo.c"),
                src.join("sub/keep.c"),
                src.join("sub/new.c")
            ]
        );

        let mut restored = restore_sources(&src, RestoredTime::Original).unwrap();
        restored.sort();
        assert_eq!(restored.len(), 3);
        assert_eq!(read(&src, "foo.c"), "a\nb\nc\n");
        // The original file itself came back, with its modification time.
        let meta = fs::metadata(src.join("foo.c")).unwrap();
        assert_eq!(meta.modified().unwrap(), old_time);
        assert_eq!(meta.ino(), foo_ino);
        assert_eq!(read(&src, "sub/keep.c"), "1\n2\n");
        assert!(!src.join("sub/new.c").exists());
        let mut left: Vec<_> = walk(&src);
        left.sort();
        assert_eq!(left, ["foo.c", "sub/keep.c"]);
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                let name = e.file_name().to_string_lossy().into_owned();
                out.extend(walk(&e.path()).into_iter().map(|f| format!("{name}/{f}")));
            } else {
                out.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        out
    }

    #[test]
    fn rejected_hunk_names_file_and_hunk_and_restore_undoes_earlier_sections() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.c", "1\n2\n3\n");
        write(d.path(), "b.c", "x\ny\nz\n");
        let patch = d.path().join("p.diff");
        fs::write(
            &patch,
            "--- a.c\n+++ a.c\n@@ -1,3 +1,3 @@\n 1\n-2\n+II\n 3\n\
             --- b.c\n+++ b.c\n@@ -1,3 +1,3 @@\n x\n-NOT THERE\n+Y\n z\n",
        )
        .unwrap();
        let e = apply_patch(d.path(), &patch, 0).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("b.c"), "{msg}");
        assert!(msg.contains("Hunk #1 FAILED"), "{msg}");
        assert!(msg.contains("patch line 8"), "{msg}");
        assert!(msg.contains("[@@ -1,3 +1,3 @@ (patch line 10)]"), "{msg}");
        assert_eq!(read(d.path(), "a.c"), "1\nII\n3\n");
        restore_sources(d.path(), RestoredTime::Original).unwrap();
        assert_eq!(read(d.path(), "a.c"), "1\n2\n3\n");
        assert_eq!(read(d.path(), "b.c"), "x\ny\nz\n");
        assert!(!d.path().join("b.c.rej").exists());
        assert!(!d.path().join("b.c.orig").exists());
    }

    #[test]
    fn second_patch_on_same_file_keeps_the_first_backup() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.c", "1\n2\n");
        let p1 = d.path().join("1.diff");
        let p2 = d.path().join("2.diff");
        fs::write(&p1, "--- a.c\n+++ a.c\n@@ -1,2 +1,2 @@\n 1\n-2\n+3\n").unwrap();
        fs::write(&p2, "--- a.c\n+++ a.c\n@@ -1,2 +1,2 @@\n 1\n-3\n+4\n").unwrap();
        apply_patch(d.path(), &p1, 0).unwrap();
        apply_patch(d.path(), &p2, 1).unwrap();
        assert_eq!(read(d.path(), "a.c"), "1\n4\n");
        assert!(!d.path().join("a.c.1.lpmakeorig").exists());
        restore_sources(d.path(), RestoredTime::Original).unwrap();
        assert_eq!(read(d.path(), "a.c"), "1\n2\n");
    }

    #[test]
    fn lowest_backup_wins_and_restored_file_is_newer() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.c", "patched\n");
        write(d.path(), "a.c.0.lpmakeorig", "orig\n");
        write(d.path(), "a.c.1.lpmakeorig", "mid\n");
        let before = SystemTime::now();
        restore_sources(d.path(), RestoredTime::Now).unwrap();
        assert_eq!(read(d.path(), "a.c"), "orig\n");
        assert!(!d.path().join("a.c.1.lpmakeorig").exists());
        let mtime = fs::metadata(d.path().join("a.c"))
            .unwrap()
            .modified()
            .unwrap();
        assert!(mtime >= before);
    }

    #[test]
    fn already_applied_patch_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a.c", "1\n3\n");
        let p = d.path().join("p.diff");
        fs::write(&p, "--- a.c\n+++ a.c\n@@ -1,2 +1,2 @@\n 1\n-2\n+3\n").unwrap();
        let msg = apply_patch(d.path(), &p, 0).unwrap_err().to_string();
        assert!(msg.contains("previously applied"), "{msg}");
    }
}
