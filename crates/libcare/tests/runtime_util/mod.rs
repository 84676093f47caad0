//! Helpers of the runtime end-to-end tests: build a fixture of tests/fixtures/runtime and its
//! patches by hand (gcc -S twice, kpatch_gensrc, link with -Wl,-q, kpatch_strip, kpatch_make),
//! run libcare-ctl, and watch the target's output with deadlines. Every process started is
//! killed and reaped when its guard drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::common::{build_id, fixtures, gcc, run, run_ok, stderr, stdout, tool};

/// How long a test waits for something it expects.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How one program (or library) is compiled and linked.
#[derive(Debug, Clone)]
pub struct Recipe<'a> {
    /// Fixture file name without `.c`.
    pub name: &'a str,
    pub opt: &'a str,
    /// Extra compiler flags (both builds).
    pub cflags: &'a [&'a str],
    /// Extra link flags (both builds), after the object.
    pub ldflags: &'a [&'a str],
    /// Build a shared library `<name>.so` rather than an executable.
    pub shared: bool,
    /// Extra `kpatch_gensrc` options.
    pub gensrc_flags: &'a [&'a str],
}

impl<'a> Recipe<'a> {
    /// An executable at `opt`, linked with -pthread.
    pub fn exe(name: &'a str, opt: &'a str) -> Recipe<'a> {
        Recipe {
            name,
            opt,
            cflags: &[],
            ldflags: &["-pthread"],
            shared: false,
            gensrc_flags: &[],
        }
    }

    fn output(&self) -> String {
        if self.shared {
            format!("{}.so", self.name)
        } else {
            self.name.to_owned()
        }
    }
}

/// A built program and its patches.
#[derive(Debug)]
pub struct Built {
    /// The original binary.
    pub binary: PathBuf,
    pub build_id: String,
    /// `(version, patch file)`.
    pub patches: Vec<(u32, PathBuf)>,
}

impl Built {
    /// The patch file of `version`.
    pub fn patch(&self, version: u32) -> &Path {
        &self
            .patches
            .iter()
            .find(|(v, _)| *v == version)
            .unwrap_or_else(|| panic!("no patch for version {version}"))
            .1
    }

    /// Starts the original binary and waits for it to print `line`.
    pub fn start(&self, line: &str) -> Proc {
        let mut p = Proc::spawn(&self.binary, &[]);
        p.wait_line(line);
        p
    }
}

fn compile_s(dir: &Path, r: &Recipe<'_>, define: Option<u32>, out: &str) {
    let src = fixtures().join("runtime").join(format!("{}.c", r.name));
    let local = dir.join(format!("{}.c", r.name));
    if !local.exists() {
        std::fs::copy(&src, &local).expect("copy fixture");
    }
    let mut args: Vec<String> = vec![r.opt.into(), "-S".into()];
    if r.shared {
        args.push("-fPIC".into());
    }
    args.extend(r.cflags.iter().map(|s| s.to_string()));
    if let Some(v) = define {
        args.push(format!("-DPATCHED={v}"));
    }
    args.extend([format!("{}.c", r.name), "-o".into(), out.into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    gcc(dir, &refs);
}

fn link(dir: &Path, r: &Recipe<'_>, asm: &str, out: &str, with_relocs: bool) {
    let mut args: Vec<&str> = Vec::new();
    if r.shared {
        args.extend(["-shared", "-fPIC"]);
    }
    args.extend(["-o", out, asm]);
    if with_relocs {
        args.push("-Wl,-q");
    }
    args.extend(r.ldflags);
    gcc(dir, &args);
}

/// Builds the fixture in `dir` and one patch per version (`-DPATCHED=<version>`), each with
/// patch-id `<version>` on four digits, by the user guide's manual steps.
pub fn build(dir: &Path, r: &Recipe<'_>, versions: &[u32]) -> Built {
    let out = r.output();
    compile_s(dir, r, None, &format!("{}.s", r.name));
    link(dir, r, &format!("{}.s", r.name), &out, false);
    let binary = dir.join(&out);
    let bid = build_id(&binary);
    let mut patches = Vec::new();
    for &v in versions {
        let patched_s = format!("{}.v{v}.s", r.name);
        let combined = format!("{}.v{v}.combined.s", r.name);
        let patched_bin = format!("{out}.v{v}");
        let stripped = format!("{out}.v{v}.stripped");
        let kpatch = format!("{out}.v{v}.kpatch");
        compile_s(dir, r, Some(v), &patched_s);
        run_ok(
            tool("kpatch_gensrc", dir)
                .args([
                    "--os=rhel6",
                    "-i",
                    &format!("{}.s", r.name),
                    "-i",
                    &patched_s,
                    "-o",
                    &combined,
                    "--force-global",
                ])
                .args(r.gensrc_flags),
        );
        link(dir, r, &combined, &patched_bin, true);
        run_ok(tool("kpatch_strip", dir).args(["--strip", &patched_bin, &stripped]));
        run_ok(tool("kpatch_strip", dir).args(["--rel-fixup", &out, &stripped]));
        run_ok(
            Command::new("strip")
                .args(["--strip-unneeded", &stripped])
                .current_dir(dir),
        );
        run_ok(tool("kpatch_strip", dir).args(["--undo-link", &out, &stripped]));
        run_ok(tool("kpatch_make", dir).args([
            "-b",
            &bid,
            "-i",
            &format!("{v:04}"),
            &stripped,
            "-o",
            &kpatch,
        ]));
        patches.push((v, dir.join(kpatch)));
    }
    Built {
        binary,
        build_id: bid,
        patches,
    }
}

/// `libcare-ctl ARGS` run in `dir` with `env` set.
pub fn ctl(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = tool("libcare-ctl", dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

/// Asserts that a libcare-ctl run succeeded; returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "libcare-ctl failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Asserts that a libcare-ctl run failed with status 255 and that its error output contains
/// every one of `words`; returns its stderr.
pub fn fails(out: &Output, words: &[&str]) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(255),
        "expected failure (255), got {}\n--- stdout\n{}\n--- stderr\n{err}",
        out.status,
        stdout(out)
    );
    for w in words {
        assert!(err.contains(w), "error output lacks {w:?}:\n{err}");
    }
    err
}

/// A process under test.
pub struct Proc {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far.
    pub seen: Vec<String>,
}

impl Proc {
    /// Starts `path` with `args`, stdout piped, in its own directory.
    pub fn spawn(path: &Path, args: &[&str]) -> Proc {
        let mut child = Command::new(path)
            .args(args)
            .current_dir(path.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::null())
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
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn pid_arg(&self) -> String {
        self.pid().to_string()
    }

    /// The next line, waiting up to `within`; panics if the process ends.
    pub fn next_line(&mut self, within: Duration) -> Option<String> {
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
                    self.seen.iter().rev().take(8).collect::<Vec<_>>()
                )
            }
        }
    }

    /// Waits for a line satisfying `pred`; returns it.
    pub fn wait_for(&mut self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
            match self.next_line(left) {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!(
                    "pid {} printed no line {what} within {DEADLINE:?}; last lines: {:?}",
                    self.pid(),
                    self.seen.iter().rev().take(8).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits for a line equal to `want`.
    pub fn wait_line(&mut self, want: &str) -> String {
        self.wait_for(&format!("{want:?}"), |l| l == want)
    }

    /// Every line printed during the next `span` (at least one is expected).
    pub fn lines_for(&mut self, span: Duration) -> Vec<String> {
        let end = Instant::now() + span;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(l) = self.next_line(left) {
                out.push(l);
            }
        }
        assert!(
            !out.is_empty(),
            "pid {} printed nothing for {span:?}",
            self.pid()
        );
        out
    }

    /// Discards what was printed so far.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself; panics if it does not within [`DEADLINE`].
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let seen = self.seen.clone();
        crate::common::wait_exit(&mut self.child, "the program", || {
            format!(
                "last lines: {:?}",
                seen.iter().rev().take(8).collect::<Vec<_>>()
            )
        })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mappings of `pid` (text of /proc/PID/maps).
pub fn maps(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default()
}

/// Anonymous read-execute mappings of `pid`: patch regions, committed or pending (our fixtures
/// have no other).
pub fn patch_regions(pid: i32) -> usize {
    maps(pid)
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            f.len() == 5 && f[1] == "r-xp"
        })
        .count()
}

/// The patch ids `libcare-ctl info` lists for `pid`.
pub fn info_ids(dir: &Path, pid: i32) -> Vec<String> {
    let out = ctl(dir, &["info", "-p", &pid.to_string()], &[]);
    ok(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("Patch id:"))
        .map(|s| s.trim().to_owned())
        .collect()
}

/// The safety timeout, in seconds, the tests give libcare-ctl where a patch must fail.
pub const SHORT_TIMEOUT: &str = "0.6";
