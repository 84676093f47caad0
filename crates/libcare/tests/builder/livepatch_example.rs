//! The README's example for patch authors (tests/fixtures/builder/livepatch_example): a patch
//! whose source includes `<libcare/livepatch.h>`, made by `libcare-patch-make` (through
//! `libcare-cc`, which finds the header) and applied to the running program: its callbacks
//! run, a shadow variable adds a field to live structures, `info` shows its state; remade with
//! `--replace`, it replaces the first.

use std::process::Command;

use libcare_test_support::*;

#[test]
fn the_readme_example_builds_with_libcare_patch_make_and_runs() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().canonicalize().expect("canonical tempdir");
    copy_tree(&fixtures().join("builder/livepatch_example"), &dir);
    let diff = run(Command::new("diff")
        .args(["-up", "sessions.c", "fixed.c"])
        .current_dir(&dir));
    std::fs::write(dir.join("fix.patch"), &diff.stdout).expect("write fix.patch");
    run_ok(
        tool("libcare-patch-make", &dir)
            .args(["--clean", "-i", "0001", "fix.patch"])
            .env("CFLAGS", "-O2 -g")
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH"),
    );
    let mut p = Proc::spawn(&dir.join("lpmake/sessions"), &[]);
    let pid = p.pid_arg();
    p.wait_for("a session line", |l| l.starts_with("session 1: "));
    ok(&ctl(&dir, &["patch", "-p", &pid, "patchroot"], &[]));
    p.wait_line("patch: counting requests since now");
    p.wait_for("a patched line", |l| l.ends_with(", 3 since the patch"));
    let info = ok(&ctl(&dir, &["info", "-p", &pid], &[]));
    for want in [
        "States:                   1 (version 1)",
        "Callbacks:                (program): patched",
    ] {
        assert!(info.contains(want), "{info}");
    }
    // The same fix remade cumulative (`-u`: from the install trees, no build) replaces 0001:
    // 0001's disable does not run, the counts it attached go on.
    run_ok(
        tool("libcare-patch-make", &dir)
            .args(["-u", "--replace", "-i", "0002"])
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH"),
    );
    let out = ok(&ctl(&dir, &["patch", "-p", &pid, "patchroot"], &[]));
    assert!(out.contains("patch(es) 0001 replaced by 0002"), "{out}");
    p.wait_line("patch: counting requests since now");
    let line = p.next_line();
    assert!(
        !line.ends_with(", 1 since the patch"),
        "the counts go on: {line}"
    );
    assert_eq!(info_ids(&dir, p.pid()), ["0002"]);
    ok(&ctl(&dir, &["unpatch", "-p", &pid], &[]));
    p.wait_line("patch: counts freed");
    p.wait_for("an unpatched line", |l| l.ends_with(" requests"));
}
