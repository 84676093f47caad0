//! Confined targets: a seccomp filter that kills on the syscalls a patch needs, one that
//! leaves another way, and `PR_SET_MDWE`. A patch either goes in (and out again) by a way the
//! confinement allows, or is refused naming the filter before anything is injected; the
//! target lives on either way.

use crate::support::*;

#[test]
fn confined_targets_are_patched_another_way_or_refused_and_live_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let b = build(dir, &Recipe::exe("hardened", "-O2"), &[1]);
    let patch = b.patch(1).to_str().unwrap().to_owned();

    // Nothing but mmap could make the region, and the filter kills on it: refused.
    let mut p = Proc::spawn(&b.binary, &["kill-map"]);
    p.wait_line("hello unpatched");
    let err = fails(
        &ctl(dir, &["patch", "-p", &p.pid_arg(), &patch], &[]),
        &[
            "seccomp filter",
            "kill the process",
            "mmap",
            "nothing was injected",
        ],
    );
    assert!(!err.contains("patched"), "{err}");
    p.drain();
    p.wait_line("hello unpatched");
    assert!(p.alive(), "the filter killed the target");
    assert_eq!(patch_regions(p.pid()), 0, "{}", maps(p.pid()));

    // A filter that kills on mprotect only, and MDWE: the code is mapped read-execute from
    // the start (two mappings where mprotect is refused), filled through /proc/PID/mem.
    for how in ["kill-mprotect", "mdwe"] {
        let mut p = Proc::spawn(&b.binary, &[how]);
        let pid = p.pid_arg();
        p.wait_line("hello unpatched");
        let out = ok(&ctl(dir, &["patch", "-p", &pid, &patch], &[]));
        assert!(out.contains("successfully applied"), "{how}: {out}");
        p.drain();
        p.wait_line("hello patched");
        ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
        p.drain();
        p.wait_line("hello unpatched");
        assert!(p.alive(), "{how}: the target died");
        assert_eq!(patch_regions(p.pid()), 0, "{how}: {}", maps(p.pid()));
    }
}
