//! The user guide's first walkthrough ("手动制作": build a patch by hand) followed by its
//! "应用 LibcarePlus 热补丁" section (apply, query, remove), on a live process, at -O0 and -O2.

use std::path::Path;

use libcare_test_support::*;

/// Builds `foo` and `foo.kpatch` in `dir` with the guide's commands, compiling with `opt`.
fn build_by_hand(dir: &Path, opt: &str) -> String {
    let guide = fixtures().join("guide");
    for f in ["foo.c", "bar.c"] {
        std::fs::copy(guide.join(f), dir.join(f)).expect("copy fixture");
    }
    gcc(dir, &[opt, "-S", "foo.c"]);
    gcc(dir, &[opt, "-S", "bar.c"]);
    // The guide renames the source file in bar.s before the diff.
    let bar = std::fs::read_to_string(dir.join("bar.s")).expect("bar.s");
    std::fs::write(dir.join("bar.s"), bar.replace("bar.c", "foo.c")).expect("write bar.s");
    gensrc(dir, "foo.s", "bar.s", "foobar.s", &[]);
    gcc(dir, &["-o", "foo", "foo.s"]);
    gcc(dir, &["-o", "foobar", "foobar.s", "-Wl,-q"]);
    strip_steps(dir, "foo", "foobar", "foobar.stripped");
    let bid = build_id(&dir.join("foo"));
    kpatch_make(dir, &bid, "0001", "foobar.stripped", "foo.kpatch");
    bid
}

fn walkthrough(opt: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let bid = build_by_hand(dir, opt);

    let mut proc = Proc::spawn(&dir.join("foo"), &[]);
    let pid = proc.pid().to_string();
    proc.wait_line("Hello world!");

    let out = run_ok(tool("libcare-ctl", dir).args(["-v", "patch", "-p", &pid, "./foo.kpatch"]));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "1 patch hunk(s) have been successfully applied to PID '{pid}'"
        )),
        "unexpected patch output:\n{text}"
    );
    proc.drain();
    proc.wait_line("Hello world being patched!");

    let out = run_ok(tool("libcare-ctl", dir).args(["info", "-p", &pid]));
    let text = stdout(&out);
    for want in [
        format!("{:<25} {pid}", "Pid:"),
        format!("{:<25} foo", "Target:"),
        format!("{:<25} {bid}", "Build id:"),
        format!("{:<25} 1", "Applied patch number:"),
        format!("{:<25} 0001", "Patch id:"),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "info lacks {want:?}:\n{text}"
        );
    }

    let out = run_ok(tool("libcare-ctl", dir).args(["unpatch", "-p", &pid]));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "1 patch hunk(s) were successfully cancelled from PID '{pid}'"
        )),
        "unexpected unpatch output:\n{text}"
    );
    proc.drain();
    proc.wait_line("Hello world!");
    let out = run_ok(tool("libcare-ctl", dir).args(["info", "-p", &pid]));
    assert!(
        !stdout(&out).contains("Patch id:"),
        "patch still listed after unpatch:\n{}",
        stdout(&out)
    );
    assert!(proc.alive());
}

#[test]
fn manual_walkthrough_at_o0() {
    walkthrough("-O0");
}

#[test]
fn manual_walkthrough_at_o2() {
    walkthrough("-O2");
}
