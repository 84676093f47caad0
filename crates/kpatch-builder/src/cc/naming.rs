//! Names of the assembly files the wrapper keeps (the peer's names, so that its users find
//! them where they expect): for an object `dir/foo.o` built in stage `S`,
//! `dir/.kpatch_foo.o.S.s`; the combined file of the patched stage is `dir/.kpatch_foo.o.s`.
//! When a command compiles and links in one go, the names derive from the source instead.

use std::path::{Path, PathBuf};

use super::CcError;

/// Where kept assembly goes.
#[derive(Clone, Debug)]
pub struct AsmNaming {
    /// File name prefix (`KPATCH_PREFIX`, default `.kpatch_`).
    pub prefix: String,
    /// `KPATCH_ASM_DIR`: a root under which the absolute directory of the object is recreated.
    pub asm_dir: Option<PathBuf>,
}

impl AsmNaming {
    /// The directory kept files for `base` go to, created if it is under `KPATCH_ASM_DIR`.
    fn dir_for(&self, base: &Path) -> Result<PathBuf, CcError> {
        let dir = match base.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(root) = &self.asm_dir else {
            return Ok(dir);
        };
        let abs = dir.canonicalize().map_err(|source| CcError::Io {
            path: dir.clone(),
            what: "cannot resolve the directory of",
            source,
        })?;
        let mut joined = root.as_os_str().to_owned();
        joined.push(abs.as_os_str());
        let joined = PathBuf::from(joined);
        std::fs::create_dir_all(&joined).map_err(|source| CcError::Io {
            path: joined.clone(),
            what: "cannot create KPATCH_ASM_DIR directory",
            source,
        })?;
        Ok(joined)
    }

    fn name(&self, base: &Path, suffix: &str) -> Result<PathBuf, CcError> {
        let dir = self.dir_for(base)?;
        let file = base.file_name().map(|f| f.to_string_lossy().into_owned());
        let file = file.unwrap_or_default();
        Ok(dir.join(format!("{}{}{}", self.prefix, file, suffix)))
    }

    /// The assembly kept for `base` (an object, or a source) in stage `stage`.
    pub fn stage_asm(&self, base: &Path, stage: &str) -> Result<PathBuf, CcError> {
        self.name(base, &format!(".{stage}.s"))
    }

    /// The combined (original + patched) assembly for `base`.
    pub fn combined_asm(&self, base: &Path) -> Result<PathBuf, CcError> {
        self.name(base, ".s")
    }
}

/// The object or assembly file gcc names after `input` when no `-o` is given: its file name,
/// last extension replaced by `ext`, in the current directory.
pub fn default_output(input: &str, ext: &str) -> String {
    let name = Path::new(input)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| input.to_string());
    format!("{}.{}", strip_ext(&name), ext)
}

/// `name` without its last extension (a leading dot does not start one).
fn strip_ext(name: &str) -> &str {
    match name.rfind('.') {
        Some(i) if i > 0 => &name[..i],
        _ => name,
    }
}

/// `path` with the last extension of its file name replaced by `ext` (appended if it has
/// none), as gcc derives the `-MD` dependency file from `-o`.
pub fn replace_ext(path: &str, ext: &str) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => path.split_at(i + 1),
        None => ("", path),
    };
    format!("{dir}{}.{ext}", strip_ext(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names() {
        let n = AsmNaming {
            prefix: ".kpatch_".into(),
            asm_dir: None,
        };
        assert_eq!(
            n.stage_asm(Path::new("obj/foo.o"), "original").unwrap(),
            PathBuf::from("obj/.kpatch_foo.o.original.s")
        );
        assert_eq!(
            n.stage_asm(Path::new("foo.o"), "patched").unwrap(),
            PathBuf::from("./.kpatch_foo.o.patched.s")
        );
        assert_eq!(
            n.combined_asm(Path::new("foo.o")).unwrap(),
            PathBuf::from("./.kpatch_foo.o.s")
        );
    }

    #[test]
    fn asm_dir_recreates_the_absolute_directory() {
        let root = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let n = AsmNaming {
            prefix: ".kpatch_".into(),
            asm_dir: Some(root.path().to_path_buf()),
        };
        let base = src.path().join("foo.o");
        let got = n.stage_asm(&base, "original").unwrap();
        let abs = src.path().canonicalize().unwrap();
        let mut want = root.path().as_os_str().to_owned();
        want.push(abs.as_os_str());
        assert_eq!(got, PathBuf::from(want).join(".kpatch_foo.o.original.s"));
        assert!(got.parent().unwrap().is_dir());
    }

    #[test]
    fn derived_names() {
        assert_eq!(default_output("src/foo.c", "o"), "foo.o");
        assert_eq!(default_output("x.tar.c", "s"), "x.tar.s");
        assert_eq!(replace_ext("a.b/prog", "d"), "a.b/prog.d");
        assert_eq!(replace_ext("out/x.y.o", "d"), "out/x.y.d");
        assert_eq!(replace_ext("prog", "d"), "prog.d");
    }
}
