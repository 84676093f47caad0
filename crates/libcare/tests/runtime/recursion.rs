//! A directly recursive function with a thread deep inside it (the report's constraints refuse
//! such functions): the patch lets the thread run out of its outermost call, and the next
//! descent runs the new code. An unpatch is made while the thread rests outside the function:
//! inside the patch's copy (code without unwind tables) the walk cannot always find the
//! outermost call, and the unpatch must then fail cleanly, leaving the patch in place.

use std::process::Command;

use crate::support::*;

fn recursion(opt: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("recursive", opt), &[1]);
    let mut p = built.start("depth sum 64");
    let pid = p.pid_arg();
    let toggle = || run_ok(Command::new("kill").args(["-USR1", &pid]));

    let out = ok(&ctl(
        dir,
        &["-v", "patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[],
    ));
    assert!(
        out.contains("is in descend") && out.contains("letting it run to its return"),
        "the patch did not wait for the outermost descend() to return:\n{out}"
    );
    p.drain();
    p.wait_line("depth sum 640");

    // Deep in the patched copy: removed after waiting, or refused, and then still patched.
    let out = ctl(
        dir,
        &["unpatch", "-p", &pid, "-i", "0001"],
        &[("LIBCARE_SAFETY_TIMEOUT", "1")],
    );
    let expect = if out.status.success() {
        "depth sum 64"
    } else {
        fails(&out, &["safety check failed", "patch 0001"]);
        assert_eq!(info_ids(dir, p.pid()), ["0001"]);
        "depth sum 640"
    };
    p.drain();
    p.wait_line(expect);
    if expect == "depth sum 640" {
        toggle();
        p.wait_line("resting");
        ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]));
        toggle();
        p.wait_line("descending");
    }
    p.wait_line("depth sum 64");
    assert!(info_ids(dir, p.pid()).is_empty());
    assert!(p.alive());
}

#[test]
fn recursion_at_o0() {
    recursion("-O0");
}

#[test]
fn recursion_at_o2() {
    recursion("-O2");
}
