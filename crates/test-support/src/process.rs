//! A process under test: its stdout read line by line with deadlines; killed and reaped when
//! dropped, also when the test panics.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::wait::DEADLINE;

/// A process under test.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

/// The name the first end-to-end tests gave [`Proc`].
pub type Target = Proc;

impl Proc {
    /// Starts `path` with `args` in its own directory, stdin null, stdout piped.
    pub fn spawn(path: &Path, args: &[&str]) -> Proc {
        let path = std::path::absolute(path).expect("absolute path");
        Proc::start(
            Command::new(&path)
                .args(args)
                .current_dir(path.parent().unwrap_or(Path::new("/")))
                .stdin(Stdio::null()),
        )
    }

    /// Starts `cmd` as configured, with stdout piped (and stdin kept for [`Proc::send`] when
    /// `cmd` pipes it).
    pub fn start(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let out = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Process id, as a command-line argument.
    pub fn pid_arg(&self) -> String {
        self.pid().to_string()
    }

    fn last_lines(&self) -> Vec<&String> {
        self.seen.iter().rev().take(8).collect()
    }

    /// The next line, waiting up to `within`; `None` if none came; panics if the process ends.
    pub fn next_line_within(&mut self, within: Duration) -> Option<String> {
        match self.lines.recv_timeout(within) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait().ok();
                panic!(
                    "pid {} exited ({status:?}); last lines: {:?}",
                    self.pid(),
                    self.last_lines()
                )
            }
        }
    }

    /// The next line the process prints (panics if none comes within [`DEADLINE`]).
    pub fn next_line(&mut self) -> String {
        self.next_line_within(DEADLINE).unwrap_or_else(|| {
            panic!(
                "pid {} printed nothing within {DEADLINE:?}; last lines: {:?}",
                self.pid(),
                self.last_lines()
            )
        })
    }

    /// Waits for a line satisfying `pred` (described by `what`); returns it.
    pub fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
            match self.next_line_within(left) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "pid {} printed no line {what} within {DEADLINE:?}; last lines: {:?}",
                    self.pid(),
                    self.last_lines()
                ),
            }
        }
    }

    /// Waits until the process prints a line equal to `want`; returns the lines read before it.
    pub fn wait_line(&mut self, want: &str) -> Vec<String> {
        let from = self.seen.len();
        self.wait_for(&format!("{want:?}"), |l| l == want);
        self.seen[from..self.seen.len() - 1].to_vec()
    }

    /// Waits for a line starting with `prefix`; returns it.
    pub fn expect(&mut self, prefix: &str) -> String {
        self.wait_for(&format!("starting with {prefix:?}"), |l| {
            l.starts_with(prefix)
        })
    }

    /// Every line printed during the next `span`, and at least one: on a loaded machine the
    /// first may come later (up to 10 s).
    pub fn lines_for(&mut self, span: Duration) -> Vec<String> {
        let end = Instant::now() + span;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(l) = self.next_line_within(left) {
                out.push(l);
            }
        }
        if out.is_empty() {
            if let Some(l) = self.next_line_within(Duration::from_secs(10)) {
                out.push(l);
            }
        }
        assert!(
            !out.is_empty(),
            "pid {} printed nothing for {span:?} and 10 s more",
            self.pid()
        );
        out
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

    /// Waits for the process to exit by itself; panics if it does not within [`DEADLINE`].
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let seen = self.seen.clone();
        crate::wait::wait_exit(&mut self.child, "the program", || {
            format!(
                "last lines: {:?}",
                seen.iter().rev().take(8).collect::<Vec<_>>()
            )
        })
    }

    /// Writes `line` and a newline to the process's stdin (which [`Proc::start`] must pipe).
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin piped");
        writeln!(stdin, "{line}").expect("write to the process");
        stdin.flush().expect("flush");
    }

    /// The process's threads listed in /proc, sorted.
    pub fn tids(&self) -> Vec<i32> {
        let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        tids.sort_unstable();
        tids
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // A thread left traced by a failed test would keep the process from being reaped
        // (its tracer, this test's thread, must reap it first): reap such threads too.
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => {}
            }
            for tid in self.tids() {
                let _ = waitpid(
                    Pid::from_raw(tid),
                    Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG),
                );
            }
            if Instant::now() > deadline {
                eprintln!("pid {} could not be reaped", self.pid());
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
