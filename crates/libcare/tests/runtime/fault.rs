//! Fault injection: libcare-ctl is killed (SIGKILL, by itself, at the step that
//! `LIBCARE_FAULT_STEP` names) at every step of patch and unpatch, including while breakpoints
//! are in the target and between code writes. Each time the target must go on running, wholly
//! patched or wholly unpatched (it prints the state of two replaced functions on one line),
//! `info` must not list an uncommitted patch, and the next run must succeed, reclaiming what
//! was left.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

const PATCHED: &str = "f1 PATCHED f2 PATCHED";
const UNPATCHED: &str = "f1 UNPATCHED f2 UNPATCHED";

/// Checks that the target prints `line`, and only that, for a while.
fn steady(p: &mut Proc, line: &str, step: &str) {
    // Let a guardian that repairs the target after the tool's death do it.
    std::thread::sleep(Duration::from_millis(30));
    p.drain();
    p.wait_line(line);
    for l in p.lines_for(Duration::from_millis(100)) {
        assert_eq!(l, line, "after a death at {step}");
    }
}

fn patch(dir: &Path, pid: &str, file: &str, env: &[(&str, &str)]) -> std::process::Output {
    ctl(dir, &["patch", "-p", pid, file], env)
}

fn unpatch(dir: &Path, pid: &str, env: &[(&str, &str)]) -> std::process::Output {
    ctl(dir, &["unpatch", "-p", pid, "-i", "0001"], env)
}

#[test]
fn killed_at_any_step_the_target_stays_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("fault", "-O2"), &[1]);
    let file = built.patch(1).to_str().unwrap().to_owned();
    let mut p = Proc::spawn(&built.binary, &[]);
    let pid = p.pid_arg();
    steady(&mut p, UNPATCHED, "start");

    // (step, during unpatch, patched afterwards, a pending region left behind)
    let steps: &[(&str, bool, bool, bool)] = &[
        ("after-mmap", false, false, true),
        ("after-write", false, false, true),
        ("stopped", false, false, true),
        ("breakpoints", false, false, true),
        ("first-hunk", false, false, true),
        ("after-hunks", false, false, true),
        ("after-commit", false, false, true),
        ("committed", false, true, false),
        ("unpatch-stopped", true, true, false),
        ("breakpoints", true, true, false),
        ("unpatch-first-restore", true, false, true),
        ("unpatch-after-restore", true, false, true),
        ("unpatch-before-munmap", true, false, true),
    ];
    for &(step, in_unpatch, patched, pending) in steps {
        // The starting state: patched for an unpatch step.
        if in_unpatch {
            ok(&patch(dir, &pid, &file, &[]));
            steady(&mut p, PATCHED, "setup");
        }
        let env = [("LIBCARE_FAULT_STEP", step)];
        // "breakpoints" needs slow() to be caught inside, which it nearly always is.
        let mut died = false;
        for _ in 0..5 {
            let out = if in_unpatch {
                unpatch(dir, &pid, &env)
            } else {
                patch(dir, &pid, &file, &env)
            };
            if out.status.signal() == Some(libc::SIGKILL) {
                died = true;
                break;
            }
            assert!(
                step == "breakpoints" && out.status.success(),
                "libcare-ctl did not die at {step}: {}\n{}",
                out.status,
                stderr(&out)
            );
            // It went through: go back to the starting state and try again.
            if in_unpatch {
                ok(&patch(dir, &pid, &file, &[]));
            } else {
                ok(&unpatch(dir, &pid, &[]));
            }
        }
        assert!(died, "libcare-ctl never reached {step}");
        assert!(p.alive(), "the target died with the tool at {step}");
        steady(&mut p, if patched { PATCHED } else { UNPATCHED }, step);
        let ids = info_ids(dir, p.pid());
        assert_eq!(
            ids.is_empty(),
            !patched,
            "info lists {ids:?} after a death at {step}"
        );
        let regions = usize::from(patched) + usize::from(pending);
        assert_eq!(patch_regions(p.pid()), regions, "regions after {step}");

        // The next run succeeds and reclaims what was left; then back to unpatched.
        if patched {
            ok(&unpatch(dir, &pid, &[]));
        } else {
            ok(&patch(dir, &pid, &file, &[]));
            steady(&mut p, PATCHED, step);
            assert_eq!(
                patch_regions(p.pid()),
                1,
                "a region was not reclaimed ({step})"
            );
            assert_eq!(info_ids(dir, p.pid()), vec!["0001"]);
            ok(&unpatch(dir, &pid, &[]));
        }
        steady(&mut p, UNPATCHED, step);
        assert_eq!(patch_regions(p.pid()), 0, "after recovering from {step}");
        assert!(info_ids(dir, p.pid()).is_empty());
    }
}
