//! Which file of the source tree a diff section changes, and with which `-p` strip level.
//!
//! `diff -up foo.c bar.c` names the old and the new file differently, and neither `patch -p1`
//! nor `patch -p0` alone finds the file without asking. We try, for `-p0`, `-p1`, ..., the old
//! name and then the new name, and take the first one that exists under the source directory.

use std::path::{Path, PathBuf};

use super::diff::FileDiff;

/// Where a section applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The file, relative to the source directory.
    pub path: PathBuf,
    /// The strip level that gave it.
    pub strip: usize,
    /// The section creates the file (its old name is `/dev/null`).
    pub creates: bool,
}

/// No file of the tree matches a section.
#[derive(Debug, thiserror::Error)]
#[error("cannot find the file changed by `{names}` (patch line {line}) under {srcdir}: tried the old and the new name with -p0 to -p{max_strip}")]
pub struct NoTarget {
    /// The section's names.
    pub names: String,
    /// Its header line.
    pub line: usize,
    /// The source directory.
    pub srcdir: PathBuf,
    /// The highest strip level tried.
    pub max_strip: usize,
}

/// `name` without its first `n` slash-separated components, as `patch -pN` does; `None` when
/// nothing is left, or when the rest is absolute or climbs out with `..` (only files inside
/// the source directory are patched).
pub fn strip_components(name: &str, n: usize) -> Option<&str> {
    let mut rest = name;
    for _ in 0..n {
        let i = rest.find('/')?;
        rest = rest[i + 1..].trim_start_matches('/');
    }
    let unsafe_path =
        rest.is_empty() || rest.starts_with('/') || rest.split('/').any(|c| c == "..");
    (!unsafe_path).then_some(rest)
}

/// Finds the file `diff` applies to under `srcdir`. A section that creates a file uses
/// `preferred_strip` (the level found for another section of the same patch) if given, else
/// the lowest level whose parent directory exists.
pub fn find_target(
    diff: &FileDiff,
    srcdir: &Path,
    preferred_strip: Option<usize>,
) -> Result<Target, NoTarget> {
    let names: Vec<&str> = [diff.old.as_deref(), diff.new.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    let max_strip = names
        .iter()
        .map(|n| n.matches('/').count())
        .max()
        .unwrap_or(0);
    let no_target = || NoTarget {
        names: diff.describe(),
        line: diff.line,
        srcdir: srcdir.to_path_buf(),
        max_strip,
    };

    if diff.old.is_some() {
        for strip in 0..=max_strip {
            for name in &names {
                if let Some(rel) = strip_components(name, strip) {
                    if srcdir.join(rel).is_file() {
                        return Ok(Target {
                            path: PathBuf::from(rel),
                            strip,
                            creates: false,
                        });
                    }
                }
            }
        }
        return Err(no_target());
    }

    let new = diff.new.as_deref().ok_or_else(no_target)?;
    let fits = |strip: usize| {
        strip_components(new, strip).filter(|rel| {
            let parent = Path::new(rel).parent().unwrap_or(Path::new(""));
            srcdir.join(parent).is_dir() && !srcdir.join(rel).exists()
        })
    };
    let strip = preferred_strip
        .filter(|s| fits(*s).is_some())
        .or_else(|| (0..=max_strip).find(|s| fits(*s).is_some()))
        .ok_or_else(no_target)?;
    let rel = strip_components(new, strip).ok_or_else(no_target)?;
    Ok(Target {
        path: PathBuf::from(rel),
        strip,
        creates: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patchfile::diff::parse;

    fn tree(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x\n").unwrap();
        }
        d
    }

    fn section(old: &str, new: &str) -> FileDiff {
        parse(&format!("--- {old}\n+++ {new}\n@@ -1 +1 @@\n-x\n+y\n"))
            .unwrap()
            .remove(0)
    }

    #[test]
    fn strip_levels() {
        assert_eq!(strip_components("a/b/c.c", 0), Some("a/b/c.c"));
        assert_eq!(strip_components("a//b/c.c", 1), Some("b/c.c"));
        assert_eq!(strip_components("a/b/c.c", 3), None);
        assert_eq!(strip_components("/abs/c.c", 0), None);
        assert_eq!(strip_components("/abs/c.c", 1), Some("abs/c.c"));
        assert_eq!(strip_components("a/../c.c", 0), None);
    }

    #[test]
    fn old_name_at_p0_wins_over_new_name() {
        let d = tree(&["foo.c", "bar.c"]);
        let t = find_target(&section("foo.c", "bar.c"), d.path(), None).unwrap();
        assert_eq!(
            (t.path, t.strip, t.creates),
            (PathBuf::from("foo.c"), 0, false)
        );
    }

    #[test]
    fn new_name_when_old_is_absent() {
        let d = tree(&["bar.c"]);
        let t = find_target(&section("foo.c", "bar.c"), d.path(), None).unwrap();
        assert_eq!(t.path, PathBuf::from("bar.c"));
    }

    #[test]
    fn git_style_p1() {
        let d = tree(&["src/x.c"]);
        let t = find_target(&section("a/src/x.c", "b/src/x.c"), d.path(), None).unwrap();
        assert_eq!((t.path, t.strip), (PathBuf::from("src/x.c"), 1));
    }

    #[test]
    fn new_file_levels() {
        let d = tree(&["src/x.c"]);
        let t = find_target(&section("/dev/null", "b/src/new.c"), d.path(), None).unwrap();
        assert_eq!(
            (t.path, t.strip, t.creates),
            (PathBuf::from("src/new.c"), 1, true)
        );
        let t = find_target(&section("/dev/null", "new.c"), d.path(), None).unwrap();
        assert_eq!((t.path, t.strip), (PathBuf::from("new.c"), 0));
        // The level of the other sections wins when it fits.
        let t = find_target(&section("/dev/null", "src/new.c"), d.path(), Some(1)).unwrap();
        assert_eq!((t.path, t.strip), (PathBuf::from("new.c"), 1));
    }

    #[test]
    fn nothing_found_names_the_section() {
        let d = tree(&[]);
        let e = find_target(&section("a/x.c", "b/x.c"), d.path(), None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("--- a/x.c / +++ b/x.c"), "{msg}");
        assert!(msg.contains("-p1"), "{msg}");
    }
}
