//! The user guide's "通过脚本制作" walkthrough carried through to a live process: the patch
//! that `libcare-patch-make` writes for `lpmake/foo` applies to a running `lpmake/foo` and
//! changes what it prints, and comes off again.

use std::process::Command;

use libcare_test_support::*;

fn script_walkthrough(cflags: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().canonicalize().expect("canonical tempdir");
    let guide = fixtures().join("guide");
    for f in ["foo.c", "bar.c", "Makefile"] {
        std::fs::copy(guide.join(f), dir.join(f)).expect("copy fixture");
    }
    // The guide's own command; diff exits 1 when the files differ.
    let diff = run(Command::new("diff")
        .args(["-up", "foo.c", "bar.c"])
        .current_dir(&dir));
    std::fs::write(dir.join("foo.patch"), &diff.stdout).expect("write foo.patch");

    let out = run_ok(
        tool("libcare-patch-make", &dir)
            .args(["--clean", "-i", "0001", "foo.patch"])
            .env("CFLAGS", cflags)
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH"),
    );
    let text = stdout(&out);
    let bid = build_id(&dir.join("lpmake/foo"));
    let patch = dir.join(format!("patchroot/{bid}.kpatch"));
    assert!(
        text.contains(&format!(
            "patch for {}/lpmake/foo is in {}",
            dir.display(),
            patch.display()
        )),
        "{text}"
    );

    let mut target = Proc::spawn(&dir.join("lpmake/foo"), &[]);
    let pid = target.pid().to_string();
    target.wait_line("Hello world!");
    let out = run_ok(tool("libcare-ctl", &dir).args([
        "-v",
        "patch",
        "-p",
        &pid,
        &patch.to_string_lossy(),
    ]));
    assert!(
        stdout(&out).contains(&format!(
            "1 patch hunk(s) have been successfully applied to PID '{pid}'"
        )),
        "{}",
        stdout(&out)
    );
    target.drain();
    target.wait_line("Hello world being patched!");

    let out = run_ok(tool("libcare-ctl", &dir).args(["unpatch", "-p", &pid]));
    assert!(
        stdout(&out).contains(&format!(
            "1 patch hunk(s) were successfully cancelled from PID '{pid}'"
        )),
        "{}",
        stdout(&out)
    );
    target.drain();
    target.wait_line("Hello world!");
    assert!(target.alive());
}

#[test]
fn script_walkthrough_applies_to_a_live_process_at_o0() {
    script_walkthrough("-O0");
}

#[test]
fn script_walkthrough_applies_to_a_live_process_at_o2_with_debug_info() {
    script_walkthrough("-O2 -g");
}

/// A program and its shared library, both changed by one patch built with `-j 2`: patching
/// the running program through the patch directory patches both objects.
#[test]
fn program_and_shared_library_patched_live_from_the_patch_directory() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().canonicalize().expect("canonical tempdir");
    let src = fixtures().join("driver/multi");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(&src)
            .arg(dir.join("multi")),
    );
    let dir = dir.join("multi");
    run_ok(
        tool("libcare-patch-make", &dir)
            .args(["-j", "2", "--clean", "-i", "0001", "change.patch"])
            .env_remove("MAKEFLAGS")
            .env_remove("KPATCH_PATH"),
    );

    let mut target = Proc::spawn(&dir.join("lpmake/usr/bin/app"), &[]);
    let pid = target.pid().to_string();
    target.wait_line("library says hello 1");
    let out = run_ok(tool("libcare-ctl", &dir).args([
        "patch",
        "-p",
        &pid,
        &dir.join("patchroot").to_string_lossy(),
    ]));
    assert!(
        stdout(&out).contains(&format!(
            "2 patch hunk(s) have been successfully applied to PID '{pid}'"
        )),
        "{}",
        stdout(&out)
    );
    target.drain();
    target.wait_line("patched library says hello 2");

    let out = run_ok(tool("libcare-ctl", &dir).args(["unpatch", "-p", &pid]));
    assert!(
        stdout(&out).contains(&format!(
            "2 patch hunk(s) were successfully cancelled from PID '{pid}'"
        )),
        "{}",
        stdout(&out)
    );
    target.drain();
    target.wait_line("library says hello 1");
    assert!(target.alive());
}
