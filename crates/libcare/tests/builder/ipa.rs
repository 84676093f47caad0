//! What gcc's interprocedural optimisation at -O2 lets callers assume about a callee, and line
//! shifts, on a real process built by libcare-patch-make (tests/fixtures/builder/ipa): a
//! `const` callee whose call main hoists out of its loop, a leaf callee that gains a call
//! (IPA-RA), an identically folded pair, and a `__LINE__` in a main that never returns, below
//! every change. Built as libcare-cc builds (with -flive-patching=inline-clone) each change
//! shows in the running process; built as plain gcc -O2 builds, the callers that may depend
//! on the old bodies are named (or the change refused), the folded pair refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cases::patched_functions;
use crate::support::*;
use libcare_test_support::{copy_tree, ctl, fixtures, ok, stderr, stdout, Proc};

const BEFORE: &str = "scale=14 leaf=8 twin_a=22 twin_b=22 line=50";
const AFTER: &str = "scale=21 leaf=18 twin_a=23 twin_b=22 line=50";

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&fixtures().join("builder/ipa"), dir.path());
    dir
}

/// libcare-patch-make `args` in `dir`, at -O2, none of our variables inherited.
fn patch_make_run(dir: &Path, args: &[&str]) -> (Output, String) {
    let mut c = Command::new(patch_make());
    c.current_dir(dir)
        .args(["-j", "2", "-i", "0001"])
        .args(args);
    for v in [
        "KPATCH_PATH",
        "KPCC_PATCH_ARGS",
        "KPCC_LIVE_PATCHING",
        "MAKEFLAGS",
        "CC",
    ] {
        c.env_remove(v);
    }
    c.env("OPT", "-O2");
    let out = run(&mut c, 300);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    (out, text)
}

fn only_patch(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("patchroot"))
        .expect("patchroot")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

#[test]
fn built_for_live_patching_every_callee_change_shows_and_moved_lines_are_left_out() {
    let p = project();
    let dir = p.path();
    let (out, text) = patch_make_run(dir, &["--clean", "-v", "change.diff"]);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("main.c: unchanged code from patched line")
            && text.contains("keeps its original line numbers"),
        "{text}"
    );
    let names = patched_functions(&only_patch(dir));
    for f in ["scale", "leaf", "twin_a"] {
        assert!(names.iter().any(|n| n == f), "{f} not in {names:?}");
    }
    for f in ["main", "twin_b", "bump"] {
        assert!(!names.iter().any(|n| n == f), "{f} in {names:?}");
    }

    let mut t = Proc::spawn(&dir.join("lpmake/prog"), &[]);
    let pid = t.pid_arg();
    t.wait_line(BEFORE);
    let patch_root = dir.join("patchroot");
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, patch_root.to_str().unwrap()],
        &[],
    ));
    t.wait_line(AFTER);
    assert_eq!(t.next_line(), AFTER);
    ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    t.wait_line(BEFORE);
    assert!(t.alive());
}

#[test]
fn a_plain_o2_original_gets_the_dependent_callers_named_or_is_refused() {
    let p = project();
    let dir = p.path();
    let plain = "--no-live-patching-flags";
    let (out, text) = patch_make_run(dir, &["--clean", plain, "--strict-ipa", "const_only.diff"]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("without -flive-patching=inline-clone: callers may depend on the old bodies of `scale` (called by main)"),
        "{text}"
    );
    assert!(
        !dir.join("patchroot").exists()
            || std::fs::read_dir(dir.join("patchroot"))
                .unwrap()
                .next()
                .is_none()
    );

    let (out, text) = patch_make_run(dir, &[plain, "const_only.diff"]);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: `scale` changed")
            && text.contains("its callers main may depend on its old body"),
        "{text}"
    );

    let (out, text) = patch_make_run(dir, &[plain, "twin_only.diff"]);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("function `twin_a` changed, but gcc folded `twin_b` into it"),
        "{text}"
    );
    assert_eq!(
        read(&dir.join("main.c")),
        read(&fixtures().join("builder/ipa/main.c")),
        "the sources were not put back"
    );
}
