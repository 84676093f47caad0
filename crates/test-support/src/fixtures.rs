//! The repository's fixtures: their folder, C programs compiled once, folders copied.

use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::command::run_ok;
use crate::tools::bin_dir;

/// Path of the repository's fixture directory, `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Copies fixture `name.c` of tests/fixtures/`set` into `dir`.
pub fn copy_fixture(dir: &Path, set: &str, name: &str) {
    let src = fixtures().join(set).join(format!("{name}.c"));
    std::fs::copy(&src, dir.join(format!("{name}.c")))
        .unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
}

/// The C program `src` compiled by gcc with `flags`, once per test run (and kept, under the
/// build directory, for later runs while the source and flags stay the same). The binary is
/// named as the source without `.c`.
pub fn compiled(src: &Path, flags: &[&str]) -> PathBuf {
    static BUILT: Mutex<BTreeMap<(PathBuf, Vec<String>), PathBuf>> = Mutex::new(BTreeMap::new());
    let key = (
        src.to_path_buf(),
        flags.iter().map(|f| f.to_string()).collect(),
    );
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let text = std::fs::read(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display()));
    let mut hash = DefaultHasher::new();
    (&text, flags).hash(&mut hash);
    let dir = bin_dir()
        .join("test-fixtures")
        .join(format!("{:016x}", hash.finish()));
    std::fs::create_dir_all(&dir).expect("create fixture directory");
    let name = src.file_stem().expect("a file name");
    let out = dir.join(name);
    if !out.exists() {
        // Several test binaries may compile the same fixture at once: each writes its own
        // file and renames it into place.
        let tmp = dir.join(format!(
            ".{}.{}",
            name.to_string_lossy(),
            crate::tools::process_key()
        ));
        run_ok(Command::new("gcc").args(flags).arg("-o").arg(&tmp).arg(src));
        std::fs::rename(&tmp, &out).expect("move the compiled fixture into place");
    }
    built.insert(key, out.clone());
    out
}

/// Copies the folder `src` into `dst` (created), recursively.
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).unwrap_or_else(|e| panic!("read {}: {e}", src.display())) {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}
