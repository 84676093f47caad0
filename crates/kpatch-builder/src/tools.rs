//! Finding programs: the real compiler on `PATH`, our own tools next to the running executable.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Whether `path` is a regular file (after symlinks) with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The running executable, symlinks resolved.
pub fn self_exe() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok())
}

/// Whether `candidate` is, after resolving symlinks, the same file as `exe`.
pub fn is_same_file(candidate: &Path, exe: &Path) -> bool {
    candidate.canonicalize().map(|c| c == exe).unwrap_or(false)
}

/// Finds the executable `name` in the directories of `path_var` (a `PATH` value), skipping
/// any candidate that resolves to `skip` (so a wrapper never finds itself through a `cc` or
/// `gcc` symlink placed ahead of the real compiler).
pub fn find_on_path(name: &str, path_var: Option<&OsStr>, skip: Option<&Path>) -> Option<PathBuf> {
    let path_var = path_var?;
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .filter(|cand| is_executable(cand))
        .find(|cand| skip.is_none_or(|s| !is_same_file(cand, s)))
}

/// The directory holding our tools (`kpatch_gensrc`, `kpatch_strip`, `kpatch_make`,
/// `libcare-cc`): `KPATCH_PATH` if given, else the running executable's directory.
pub fn tools_dir(kpatch_path: Option<&Path>) -> Option<PathBuf> {
    match kpatch_path {
        Some(p) => Some(p.to_path_buf()),
        None => self_exe().and_then(|e| e.parent().map(Path::to_path_buf)),
    }
}

/// The header patch sources include, relative to an include directory.
pub const LIVEPATCH_HEADER: &str = "libcare/livepatch.h";

/// The include directory holding [`LIVEPATCH_HEADER`] (`<libcare/livepatch.h>`) next to our
/// tools: `../include` from `tools` or the running executable's directory (an installed tree:
/// `/usr/bin` -> `/usr/include`), or `../../include` (a cargo build in the source tree:
/// `target/debug` -> `include`). `None` when there is none.
pub fn livepatch_include_dir(tools: Option<&Path>) -> Option<PathBuf> {
    let exe_dir = self_exe().and_then(|e| e.parent().map(Path::to_path_buf));
    [tools.map(Path::to_path_buf), exe_dir]
        .into_iter()
        .flatten()
        .flat_map(|d| [d.join("../include"), d.join("../../include")])
        .find(|d| d.join(LIVEPATCH_HEADER).is_file())
        .and_then(|d| d.canonicalize().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn skips_links_to_the_skipped_file() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let me = d.path().join("me");
        std::fs::write(&me, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&me, std::fs::Permissions::from_mode(0o755)).unwrap();
        let real = b.join("gcc");
        std::fs::write(&real, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink(&me, a.join("gcc")).unwrap();
        let path = std::env::join_paths([&a, &b]).unwrap();
        let me = me.canonicalize().unwrap();
        assert_eq!(find_on_path("gcc", Some(&path), Some(&me)), Some(real));
        assert_eq!(find_on_path("gcc", Some(&path), None), Some(a.join("gcc")));
        assert_eq!(find_on_path("nothere", Some(&path), None), None);
    }
}
