//! The files of a patch storage that a run may load or execute: the file itself, or for a
//! directory every `<name>.kpatch`, every `<name>/latest/kpatch.bin` and the `before` and
//! `after` scripts (the layouts `kpatch-engine`'s storage looks patches up in).

use std::path::{Path, PathBuf};

use crate::error::TrustError;

/// What a storage holds.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StorageFiles {
    pub patches: Vec<PathBuf>,
    pub scripts: Vec<PathBuf>,
}

/// The scripts a directory storage may hold.
pub const SCRIPTS: [&str; 2] = ["before", "after"];

/// Lists the files of the storage at `path`, sorted.
pub fn files(path: &Path) -> Result<StorageFiles, TrustError> {
    let meta = std::fs::metadata(path).map_err(TrustError::io(path))?;
    if !meta.is_dir() {
        return Ok(StorageFiles {
            patches: vec![path.to_owned()],
            scripts: Vec::new(),
        });
    }
    let mut out = StorageFiles::default();
    for entry in std::fs::read_dir(path).map_err(TrustError::io(path))? {
        let entry = entry.map_err(TrustError::io(path))?;
        let p = entry.path();
        let leveled = p.join("latest").join("kpatch.bin");
        if p.extension().is_some_and(|x| x == "kpatch") && p.is_file() {
            out.patches.push(p);
        } else if leveled.is_file() {
            out.patches.push(leveled);
        }
    }
    out.patches.sort();
    out.scripts = SCRIPTS
        .iter()
        .map(|s| path.join(s))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_and_the_scripts_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("aa.kpatch"), b"").unwrap();
        std::fs::write(d.join("notes.txt"), b"").unwrap();
        std::fs::create_dir_all(d.join("bb/2")).unwrap();
        std::fs::write(d.join("bb/2/kpatch.bin"), b"").unwrap();
        std::os::unix::fs::symlink("2", d.join("bb/latest")).unwrap();
        std::fs::create_dir_all(d.join("cc/1")).unwrap();
        std::fs::write(d.join("before"), b"").unwrap();
        let f = files(d).unwrap();
        assert_eq!(
            f.patches,
            [d.join("aa.kpatch"), d.join("bb/latest/kpatch.bin")]
        );
        assert_eq!(f.scripts, [d.join("before")]);
        let one = files(&d.join("aa.kpatch")).unwrap();
        assert_eq!(one.patches, [d.join("aa.kpatch")]);
        assert!(files(&d.join("missing")).is_err());
    }
}
