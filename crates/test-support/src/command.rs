//! Commands run to completion, failing the test with everything they printed.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs a command to completion and returns its output whatever the status.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command to completion, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert_success(cmd, &out);
    out
}

/// Panics with `what`, the status and both outputs unless `out` is a success.
pub fn assert_success(what: &dyn std::fmt::Debug, out: &Output) {
    assert!(
        out.status.success(),
        "{what:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Panics with both outputs unless the command exited with `code`.
pub fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "status of the command\n--- stdout\n{}\n--- stderr\n{}",
        stdout(out),
        stderr(out)
    );
}

/// Stdout of a command as a string.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr of a command as a string.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `gcc` with `args` in `dir`.
pub fn gcc(dir: &Path, args: &[&str]) {
    run_ok(Command::new("gcc").args(args).current_dir(dir));
}

/// A started command whose output is collected in the background; killed on drop unless it
/// was waited for.
pub struct Running {
    child: Option<Child>,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
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
        let join = |h: Option<JoinHandle<Vec<u8>>>| {
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
