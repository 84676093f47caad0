//! Shared helpers for the end-to-end tests: build C fixtures, run our binaries, and watch live
//! target processes with deadlines. Every process started here is killed when its guard drops,
//! even when a test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long a test waits for a process to print an expected line.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Path of the repository's fixture directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Path of one of our binaries.
pub fn bin(name: &str) -> PathBuf {
    // Integration tests run from target/<profile>/deps; the binaries sit one level up.
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let path = dir.join(name);
    assert!(path.exists(), "binary {} was not built", path.display());
    path
}

/// Runs a command to completion, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command to completion and returns its output whatever the status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Stdout of a command as a string.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr of a command as a string.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Lock directory for the tools run by this test process (never the system's /run).
pub fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libcare-test-locks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create lock dir");
    dir
}

/// An empty key directory, so that the tools never read the system's /etc/libcare/keys.
pub fn no_keys_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libcare-test-nokeys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create key dir");
    dir
}

/// Where the tools run by this test process write their audit lines (never the system log).
pub fn audit_log() -> PathBuf {
    std::env::temp_dir().join(format!("libcare-test-audit-{}.log", std::process::id()))
}

/// Our tool binary as a command running in `dir`.
pub fn tool(name: &str, dir: &Path) -> Command {
    let mut c = Command::new(bin(name));
    c.current_dir(dir)
        .env("LIBCARE_LOCK_DIR", lock_dir())
        .env("LIBCARE_KEYS", no_keys_dir())
        .env("LIBCARE_AUDIT_LOG", audit_log());
    c
}

/// Runs `gcc` with `args` in `dir`.
pub fn gcc(dir: &Path, args: &[&str]) {
    run_ok(Command::new("gcc").args(args).current_dir(dir));
}

/// The GNU build-id of an ELF file, as lowercase hex.
pub fn build_id(path: &Path) -> String {
    let data = std::fs::read(path).expect("read ELF");
    kpatch_engine::elf_image::build_id_of(&data)
        .expect("parse ELF")
        .expect("ELF has a build-id")
}

/// A process under test. Killed and reaped on drop.
pub struct Target {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Target {
    /// Starts `path` with stdout piped.
    pub fn spawn(path: &Path, args: &[&str]) -> Target {
        let mut child = Command::new(path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Target {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the process prints a line equal to `want`; returns the lines read before it.
    pub fn wait_line(&mut self, want: &str) -> Vec<String> {
        let start = Instant::now();
        let mut before = Vec::new();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line == want {
                        return before;
                    }
                    before.push(line);
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "pid {} did not print {want:?} within {DEADLINE:?}; last lines: {:?}",
                    self.pid(),
                    self.seen.iter().rev().take(5).collect::<Vec<_>>()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "pid {} exited ({status:?}) before printing {want:?}; last lines: {:?}",
                        self.pid(),
                        self.seen.iter().rev().take(5).collect::<Vec<_>>()
                    )
                }
            }
        }
    }

    /// The next line the process prints (panics if none comes within [`DEADLINE`]).
    pub fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(DEADLINE) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(RecvTimeoutError::Timeout) => panic!(
                "pid {} printed nothing within {DEADLINE:?}; last lines: {:?}",
                self.pid(),
                self.seen.iter().rev().take(5).collect::<Vec<_>>()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!(
                    "pid {} exited ({status:?}); last lines: {:?}",
                    self.pid(),
                    self.seen.iter().rev().take(5).collect::<Vec<_>>()
                )
            }
        }
    }

    /// Discards what the process printed so far.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
