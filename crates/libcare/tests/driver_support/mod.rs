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

/// A started child whose output is collected in the background; killed on drop unless it
/// was waited for.
pub struct Running {
    child: Option<Child>,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
    what: String,
}

impl Running {
    /// Starts `cmd` with null stdin and collected stdout/stderr.
    pub fn start(cmd: &mut Command) -> Running {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let collect = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = child.stdout.take().map(|o| collect(Box::new(o)));
        let err = child.stderr.take().map(|e| collect(Box::new(e)));
        Running {
            child: Some(child),
            out,
            err,
            what: format!("{cmd:?}"),
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Waits for the end, failing the test after `secs` seconds.
    pub fn wait(mut self, secs: u64) -> Output {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let child = self.child.as_mut().expect("not waited yet");
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not finish in {secs} s",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| {
            h.map(|h| h.join().expect("reader thread"))
                .unwrap_or_default()
        };
        Output {
            status,
            stdout: join(self.out.take()),
            stderr: join(self.err.take()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` to completion, failing the test after `secs` seconds (the child is killed).
pub fn run(cmd: &mut Command, secs: u64) -> Output {
    Running::start(cmd).wait(secs)
}

/// Polls until `path` exists, failing the test after `secs` seconds.
pub fn wait_for_file(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear in {secs} s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
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

/// `gcc ARGS` in `dir`.
pub fn gcc(dir: &Path, args: &[&str]) {
    run_ok(Command::new("gcc").args(args).current_dir(dir), 120);
}

/// Reads a file, failing the test with its name.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
