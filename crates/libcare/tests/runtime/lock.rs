//! Two libcare-ctl on one pid: the second waits for the first (or, told not to wait long,
//! refuses); they never interleave.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::*;

#[test]
fn a_second_tool_waits_or_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("frame_finish", "-O2"), &[1]);
    let mut p = built.start("Hello from UNPATCHED");
    let pid = p.pid_arg();
    let patch = built.patch(1).to_str().unwrap();

    // The first run holds the lock while it waits for greet() to return (up to 300 ms). It
    // nearly always finds the thread inside; if not, it is undone and started again.
    let (mut first, lines) = loop {
        let mut first = tool("libcare-ctl", dir)
            .args(["-v", "patch", "-p", &pid, patch])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start libcare-ctl");
        let mut lines = BufReader::new(first.stdout.take().expect("stdout")).lines();
        let waiting = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|l| l.contains("letting it run to its return"));
        if waiting {
            break (first, lines);
        }
        assert!(first.wait().expect("wait").success());
        ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    };
    let mut first_out = String::new();

    // One that will not wait refuses at once, naming the lock.
    let out = ctl(
        dir,
        &["patch", "-p", &pid, patch],
        &[("LIBCARE_LOCK_WAIT", "0.05")],
    );
    fails(&out, &["another libcare-ctl holds the lock"]);

    // One that waits runs after the first: it removes what the first applied.
    let second = ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]);
    for line in lines {
        first_out.push_str(&line.expect("read"));
        first_out.push('\n');
    }
    let status = first.wait().expect("wait");
    assert!(status.success(), "first run failed:\n{first_out}");
    assert!(first_out.contains("successfully applied"), "{first_out}");
    let text = ok(&second);
    assert!(text.contains("successfully cancelled"), "{text}");
    p.drain();
    p.wait_line("Hello from UNPATCHED");
    assert!(info_ids(dir, p.pid()).is_empty());
    assert_eq!(patch_regions(p.pid()), 0);
}
