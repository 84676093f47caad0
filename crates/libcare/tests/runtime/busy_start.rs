//! Patching processes that are hard to hold still: one in its first milliseconds (as libvirt's
//! hotpatch autoload patches a QEMU it just started), and one whose threads are created and end
//! in a tight loop. Every stop must hold every thread (the task list is read again until no new
//! thread shows up, and threads born meanwhile are held from birth), and the patch must apply
//! or fail cleanly, never half. The engine is driven in-process, as `libcare-ctl` drives it,
//! so that hundreds of rounds stay fast.

use std::path::Path;

use crate::support::*;
use kpatch_engine::{Engine, Options, Report, Storage};

struct Quiet;

impl Report for Quiet {
    fn info(&mut self, _msg: &str) {}
    fn detail(&mut self, _msg: &str) {}
}

fn engine() -> Engine {
    Engine::new(Options {
        lock_dir: lock_dir(),
        ..Options::default()
    })
}

/// Copies fixture `name.c` of tests/fixtures/selfload into `dir` (where the runtime helpers
/// compile it).
fn fixture(dir: &Path, name: &str) {
    copy_fixture(dir, "selfload", name);
}

#[test]
fn a_process_patched_in_its_first_milliseconds_is_patched_or_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    fixture(dir, "hello");
    let built = build(dir, &Recipe::exe("hello", "-O2"), &[1]);
    let storage = Storage::open(built.patch(1)).expect("storage");
    let engine = engine();
    let (mut applied, mut refused) = (0, 0);
    for round in 0..20 {
        let tag = format!("e{round}");
        // Patched as soon as exec has happened: the loader may not have run yet.
        let mut p = Proc::spawn(&built.binary, &[&tag]);
        match engine.patch(p.pid() as i32, &storage, &mut Quiet) {
            Ok(o) => {
                assert_eq!(o.applied.len(), 1, "round {round}");
                applied += 1;
                p.wait_line(&format!("{tag}: patched"));
                // Patched for good: only patched lines from then on.
                for _ in 0..3 {
                    assert_eq!(
                        p.next_line_within(DEADLINE),
                        Some(format!("{tag}: patched"))
                    );
                }
            }
            Err(e) => {
                refused += 1;
                assert_eq!(patch_regions(p.pid()), 0, "round {round}: {e}");
                for _ in 0..3 {
                    assert_eq!(
                        p.next_line_within(DEADLINE),
                        Some(format!("{tag}: original")),
                        "round {round}: {e}"
                    );
                }
            }
        }
        assert!(p.alive(), "round {round}");
    }
    eprintln!("first milliseconds: applied {applied}, refused {refused}");
    assert!(applied > 0, "applied {applied}, refused {refused}");
}

#[test]
fn thread_churn_patched_and_unpatched_200_times() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    fixture(dir, "churn");
    let built = build(dir, &Recipe::exe("churn", "-O2"), &[1]);
    let storage = Storage::open(built.patch(1)).expect("storage");
    let engine = engine();
    let mut p = Proc::spawn(&built.binary, &[]);
    p.wait_line("ready");
    let pid = p.pid();
    let mut failures = Vec::new();
    for round in 0..200 {
        match engine.patch(pid as i32, &storage, &mut Quiet) {
            Ok(o) => assert_eq!(o.applied.len(), 1, "round {round}"),
            Err(e) => {
                // Refused: nothing of it is left.
                assert_eq!(patch_regions(pid), 0, "round {round}: {e}");
                failures.push(format!("patch {round}: {e}"));
                continue;
            }
        }
        if let Err(e) = engine.unpatch(pid as i32, None, &[], &mut Quiet) {
            failures.push(format!("unpatch {round}: {e}"));
            // Still patched, whole: the next round cannot apply it again.
            engine
                .unpatch(pid as i32, None, &[], &mut Quiet)
                .unwrap_or_else(|e2| panic!("round {round}: {e}, then {e2}"));
        }
        assert!(p.alive(), "round {round}");
    }
    // Every call returned the old or the new value (the program aborts on anything else), and
    // both happened.
    p.drain();
    let counts = p.wait_for("with counts", |l| l.starts_with("old "));
    let n: Vec<u64> = counts
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(n.len() == 2 && n[0] > 0 && n[1] > 0, "{counts}");
    assert!(p.alive());
    eprintln!(
        "churn: {counts}; {} failed round(s): {failures:?}",
        failures.len()
    );
    assert!(failures.len() < 20, "{failures:#?}");
}
