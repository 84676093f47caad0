//! What the driver tests (libcare-cc, libcare-patch-make) share.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libcare_test_support::{assert_success, bin, bin_dir, copy_tree, fixtures, stdout};
pub use libcare_test_support::{gcc, wait_for_file, Running};

/// Path of libcare-cc.
pub fn libcare_cc() -> PathBuf {
    bin("libcare-cc")
}

/// Path of libcare-patch-make.
pub fn patch_make() -> PathBuf {
    bin("libcare-patch-make")
}

/// The directory all our binaries are built into.
pub fn tools_dir() -> PathBuf {
    bin_dir()
}

/// Whether the other engineers' tools are built next to ours.
pub fn kpatch_tools_present() -> bool {
    ["kpatch_gensrc", "kpatch_strip", "kpatch_make"]
        .iter()
        .all(|t| tools_dir().join(t).is_file())
}

/// A copy of `tests/fixtures/driver/<name>` in a fresh temporary directory.
pub fn fixture(name: &str) -> tempfile::TempDir {
    let src = fixtures().join("driver").join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&src, dir.path());
    dir
}

/// Runs `cmd` to completion, failing the test after `secs` seconds (the child is killed).
pub fn run(cmd: &mut Command, secs: u64) -> Output {
    Running::start(cmd).wait(secs)
}

/// Runs and asserts success, returning stdout.
pub fn run_ok(cmd: &mut Command, secs: u64) -> String {
    let out = run(cmd, secs);
    assert_success(cmd, &out);
    stdout(&out)
}

/// Every file under `dir`, relative, sorted (directories not listed).
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).expect("read_dir") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() {
                walk(base, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(base).expect("prefix").to_path_buf();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// A command for libcare-cc in `dir` with a clean wrapper environment.
pub fn cc(dir: &Path, stage: Option<&str>) -> Command {
    let mut c = Command::new(libcare_cc());
    c.current_dir(dir);
    for v in [
        "KPATCH_STAGE",
        "KPCCREAL",
        "KPCXXREAL",
        "KPCC_DEBUG",
        "KPCC_REMOVE_ARGS",
        "KPCC_APPEND_ARGS",
        "KPCC_DBGFILTER_ARGS",
        "KPCC_PATCH_ARGS",
        "KPATCH_GENSRC_ASM",
        "KPATCH_PREFIX",
        "KPATCH_ASM_DIR",
        "KPATCH_PATH",
        "KPCC_KEEP_LIST",
        "LIBCARE_CC_RUNNING",
    ] {
        c.env_remove(v);
    }
    if let Some(s) = stage {
        c.env("KPATCH_STAGE", s);
    }
    c
}

/// Reads a file, failing the test with its name.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
