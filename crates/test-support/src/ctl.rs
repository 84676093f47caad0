//! `libcare-ctl` runs and what a test reads back of a patched process.

use std::path::Path;
use std::process::Output;

use crate::command::{assert_success, run, stderr, stdout};
use crate::tools::tool;

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
    assert_success(&"libcare-ctl", out);
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

/// The patch ids `libcare-ctl info` lists for `pid`.
pub fn info_ids(dir: &Path, pid: u32) -> Vec<String> {
    let out = ctl(dir, &["info", "-p", &pid.to_string()], &[]);
    ok(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("Patch id:"))
        .map(|s| s.trim().to_owned())
        .collect()
}

/// The mappings of `pid` (text of /proc/PID/maps; empty once the process is gone).
pub fn maps(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default()
}

/// The anonymous read-execute mappings in `maps`, as `start-end` strings.
fn rx_anonymous(maps: &str) -> Vec<String> {
    maps.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_ascii_whitespace().collect();
            f.len() == 5 && f[1] == "r-xp"
        })
        .map(|l| l.split_ascii_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

/// How many anonymous read-execute mappings `pid` has: patch regions, committed or pending
/// (our fixtures have no other); 0 once the process is gone.
pub fn patch_regions(pid: u32) -> usize {
    rx_anonymous(&maps(pid)).len()
}

/// The anonymous read-execute mappings of `pid` (patch regions and nothing else, for our
/// fixtures), as `start-end` strings; the process must exist.
pub fn rx_anonymous_regions(pid: u32) -> Vec<String> {
    rx_anonymous(&std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps"))
}
