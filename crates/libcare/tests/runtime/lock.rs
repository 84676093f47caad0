//! Two libcare-ctl on one pid: the second waits for the first (or, told not to wait long,
//! refuses); they never interleave.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::*;

/// Waits until `cond` holds (up to 60 s: a loaded machine is slow, never a reason to fail).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether process `pid` has the lock file of `target` open.
fn has_open(pid: u32, target: u32) -> bool {
    let lock = lock_dir().join(format!("pid-{target}.lock"));
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == lock))
    })
}

#[test]
fn a_second_tool_waits_or_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("frame_finish", "-O2"), &[1]);
    let mut p = built.start("Hello from UNPATCHED");
    let pid = p.pid_arg();
    let patch = built.patch(1).to_str().unwrap();

    // The first run stops itself (test-only pause point) just after it took the lock.
    let mut first = Killed(
        tool("libcare-ctl", dir)
            .args(["patch", "-p", &pid, patch])
            .env("LIBCARE_PAUSE_STEP", "locked")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start libcare-ctl"),
    );
    wait_until("the first run holds the lock", || {
        state(first.0.id()) == Some('T')
    });

    // One that will not wait refuses at once, naming the lock.
    let out = ctl(
        dir,
        &["patch", "-p", &pid, patch],
        &[("LIBCARE_LOCK_WAIT", "0.05")],
    );
    fails(&out, &["another libcare-ctl holds the lock"]);

    // One that waits runs after the first: it removes what the first applied.
    let mut second = Killed(
        tool("libcare-ctl", dir)
            .args(["unpatch", "-p", &pid, "-i", "0001"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the second libcare-ctl"),
    );
    wait_until("the second run waits on the lock", || {
        has_open(second.0.id(), p.pid())
    });
    assert_eq!(
        second.0.try_wait().expect("try_wait"),
        None,
        "it did not wait"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.0.id() as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("continue the first run");

    let first_out = output_of(&mut first.0);
    assert!(first_out.0, "first run failed:\n{}", first_out.1);
    assert!(
        first_out.1.contains("successfully applied"),
        "{}",
        first_out.1
    );
    let second_out = output_of(&mut second.0);
    assert!(second_out.0, "second run failed:\n{}", second_out.1);
    assert!(
        second_out.1.contains("successfully cancelled"),
        "{}",
        second_out.1
    );
    p.drain();
    p.wait_line("Hello from UNPATCHED");
    assert!(info_ids(dir, p.pid()).is_empty());
    assert_eq!(patch_regions(p.pid()), 0);
}

/// Whether `child` succeeded, and all it printed.
fn output_of(child: &mut std::process::Child) -> (bool, String) {
    let mut text = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut text).expect("read stdout");
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut text).expect("read stderr");
    }
    (child.wait().expect("wait").success(), text)
}

/// A tool run killed when the test ends, even by a failed assertion.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
