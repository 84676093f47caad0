//! Helpers shared by the driver tests (libcare-cc, libcare-patch-make).
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of one of our binaries.
pub fn libcare_cc() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_libcare-cc"))
}

/// Path of libcare-patch-make.
pub fn patch_make() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_libcare-patch-make"))
}

/// The directory all our binaries are built into.
pub fn tools_dir() -> PathBuf {
    libcare_cc()
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Whether the other engineers' tools are built next to ours.
pub fn kpatch_tools_present() -> bool {
    ["kpatch_gensrc", "kpatch_strip", "kpatch_make"]
        .iter()
        .all(|t| tools_dir().join(t).is_file())
}

/// A copy of `tests/fixtures/driver/<name>` in a fresh temporary directory.
pub fn fixture(name: &str) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/driver")
        .join(name);
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&src, dir.path());
    dir
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("fixture exists") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// Kills the child on drop unless it was reaped.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion, failing the test after `secs` seconds (the child is killed).
pub fn run(cmd: &mut Command, secs: u64) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut reaper = Reaper(Some(child));
    let child = reaper.0.as_mut().expect("child");
    // Drain the pipes in threads so a chatty child never blocks.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not finish in {secs} s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    reaper.0 = None;
    Output {
        status,
        stdout: t_out.join().expect("stdout thread"),
        stderr: t_err.join().expect("stderr thread"),
    }
}

/// Runs and asserts success, returning stdout.
pub fn run_ok(cmd: &mut Command, secs: u64) -> String {
    let out = run(cmd, secs);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        "LIBCARE_CC_RUNNING",
    ] {
        c.env_remove(v);
    }
    if let Some(s) = stage {
        c.env("KPATCH_STAGE", s);
    }
    c
}

/// `gcc ARGS` in `dir`.
pub fn gcc(dir: &Path, args: &[&str]) {
    run_ok(Command::new("gcc").args(args).current_dir(dir), 120);
}

/// Reads a file, failing the test with its name.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
