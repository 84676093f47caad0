//! Confined targets: a seccomp filter that kills on the syscalls a patch needs, one that
//! leaves another way, and `PR_SET_MDWE`. A patch either goes in (and out again) by a way the
//! confinement allows, or is refused naming the filter before anything is injected; the
//! target lives on either way. And a target in a mount namespace of its own, whose files are
//! read from its root, never from same-named files of the host.

use std::path::Path;
use std::process::Command;

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

/// Copies `binary` to `root` + `at`, with the libraries and dynamic loader it uses at their
/// own paths, so that it runs with `root` as its `/`.
fn populate_root(root: &Path, binary: &Path, at: &Path) {
    let place = |from: &Path, to: &Path| {
        let dest = root.join(to.strip_prefix("/").expect("absolute path"));
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, &dest).expect("copy into the root");
    };
    place(binary, at);
    let out = run_ok(Command::new("ldd").arg(binary));
    for line in stdout(&out).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            place(Path::new(p), Path::new(p));
        }
    }
}

#[test]
fn a_target_in_its_own_root_is_patched_from_its_own_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path().canonicalize().expect("canonical tempdir");
    let b = build(&dir, &Recipe::exe("hardened", "-O2"), &[1]);
    // The program's path inside its root names, on the host, another program.
    let at = dir.join("app");
    std::fs::copy("/bin/true", &at).expect("a different program at the same path");
    let root = dir.join("root");
    populate_root(&root, &b.binary, &at);
    std::fs::create_dir_all(root.join(".old")).expect("mkdir");
    // A mount namespace whose root is `root`, as a container's: /proc/PID/maps then names
    // files by their paths inside it.
    let mut p = Proc::start(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount --bind \"$1\" \"$1\" && cd \"$1\" && pivot_root . .old && exec \"$2\"")
            .arg("sh")
            .arg(&root)
            .arg(&at)
            .stdin(std::process::Stdio::null()),
    );
    let pid = p.pid_arg();
    p.wait_line("hello unpatched");
    let m = maps(p.pid());
    assert!(
        m.lines()
            .any(|l| l.ends_with(&format!(" {}", at.display())))
            && !m.contains("/root/"),
        "the target does not see its own root:\n{m}"
    );
    let out = ok(&ctl(
        &dir,
        &["patch", "-p", &pid, b.patch(1).to_str().unwrap()],
        &[],
    ));
    assert!(out.contains("successfully applied"), "{out}");
    p.drain();
    p.wait_line("hello patched");
    ok(&ctl(&dir, &["unpatch", "-p", &pid], &[]));
    p.drain();
    p.wait_line("hello unpatched");
    assert!(p.alive());
}
