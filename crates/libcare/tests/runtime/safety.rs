//! The safety check on live processes: a patch waits for a thread to return from a function it
//! replaces (the peer's frame_finish), and fails cleanly, naming the function and leaving the
//! target running unpatched, when a thread never does (fail_busy_single, fail_busy_top,
//! fail_busy_threads, fail_threading).

use std::time::Duration;

use crate::support::*;

fn frame_finish(opt: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("frame_finish", opt), &[1]);
    let mut p = built.start("Hello from UNPATCHED");
    let pid = p.pid_arg();
    let patch = built.patch(1).to_str().unwrap();

    let out = ok(&ctl(dir, &["-v", "patch", "-p", &pid, patch], &[]));
    assert!(
        out.contains("is in greet") && out.contains("letting it run to its return"),
        "the patch did not wait for greet() to return:\n{out}"
    );
    assert!(out.contains("process patch frozen_time is"), "{out}");
    assert!(out.contains(&format!(
        "1 patch hunk(s) have been successfully applied to PID '{pid}'"
    )));
    p.drain();
    p.wait_line("Hello from PATCHED");

    let out = ok(&ctl(dir, &["-v", "unpatch", "-p", &pid, "-i", "0001"], &[]));
    assert!(
        out.contains("letting it run to its return"),
        "the unpatch did not wait for the patched greet() to return:\n{out}"
    );
    p.drain();
    p.wait_line("Hello from UNPATCHED");
    assert!(info_ids(dir, p.pid()).is_empty());
    assert_eq!(patch_regions(p.pid()), 0);
    assert!(p.alive());
}

#[test]
fn frame_finish_at_o0() {
    frame_finish("-O0");
}

#[test]
fn frame_finish_at_o2() {
    frame_finish("-O2");
}

/// Applies version 1 of `name` with a short safety timeout and checks it fails naming
/// `function`, then that the process still runs, unpatched, unchanged. `started` is printed
/// once every thread runs.
fn must_fail(name: &str, opt: &str, function: &str, unpatched_line: &str, started: &str) {
    must_fail_recipe(&Recipe::exe(name, opt), function, unpatched_line, started);
}

fn must_fail_recipe(recipe: &Recipe<'_>, function: &str, unpatched_line: &str, started: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, recipe, &[1]);
    let mut p = built.start(started);
    let pid = p.pid_arg();
    let maps_before = maps(p.pid());
    let out = ctl(
        dir,
        &["patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[("LIBCARE_SAFETY_TIMEOUT", SHORT_TIMEOUT)],
    );
    fails(&out, &["safety check failed", function]);
    assert!(
        stdout(&out).contains("Failed to apply patch"),
        "{}",
        stdout(&out)
    );
    p.drain();
    p.wait_line(unpatched_line);
    assert!(p.alive());
    assert_eq!(maps(p.pid()), maps_before, "the target's mappings changed");
    assert!(info_ids(dir, p.pid()).is_empty());
}

#[test]
fn fail_busy_single() {
    must_fail(
        "busy_single",
        "-O0",
        "do_work (busy_single)",
        "Hello from UNPATCHED",
        "Hello from UNPATCHED",
    );
}

#[test]
fn fail_busy_top() {
    must_fail(
        "busy_top",
        "-O0",
        "do_work2 (busy_top)",
        "Hello from UNPATCHED",
        "Hello from UNPATCHED",
    );
}

/// The peer's fail_busy_single_top: the replaced function is an endless loop. kpatch_gensrc
/// builds the patch only with `--test-mode` (the peer's test suite passes it); libcare-ctl
/// refuses to apply it.
#[test]
fn fail_busy_forever_built_in_test_mode() {
    must_fail_recipe(
        &Recipe {
            cflags: &["-DFOREVER"],
            gensrc_flags: &["--test-mode"],
            ..Recipe::exe("busy_top", "-O2")
        },
        "do_work2 (busy_top)",
        "Hello from UNPATCHED",
        "Hello from UNPATCHED",
    );
}

#[test]
fn fail_busy_threads() {
    must_fail(
        "busy_threads",
        "-O2",
        "thread2_func (busy_threads)",
        "Hello from thread1 (UNPATCHED)",
        "Hello from thread2 (UNPATCHED)",
    );
}

/// The peer's fail_threading: the thread inside payload() creates the next one, which enters
/// payload() in turn. With a timeout shorter than a thread's stay in payload() the patch fails,
/// over threads created and exiting during the wait. Given the time, it succeeds: the thread
/// created while its parent is let run out of payload() is held at birth, so once the parent
/// has returned no thread is inside, and the newborn runs the new code (the chain ends).
#[test]
fn fail_threading_then_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("threading", "-O2"), &[1]);
    let mut p = built.start("HELLO FROM UNPATCHED");
    let pid = p.pid_arg();
    let patch = built.patch(1).to_str().unwrap();
    let out = ctl(
        dir,
        &["patch", "-p", &pid, patch],
        &[("LIBCARE_SAFETY_TIMEOUT", "0.2")],
    );
    fails(&out, &["safety check failed", "payload"]);
    p.drain();
    p.wait_line("HELLO FROM UNPATCHED");
    assert!(info_ids(dir, p.pid()).is_empty());

    let out = ok(&ctl(
        dir,
        &["-v", "patch", "-p", &pid, patch],
        &[("LIBCARE_SAFETY_TIMEOUT", "5")],
    ));
    assert!(out.contains("letting it run to its return"), "{out}");
    p.wait_line("HELLO FROM PATCHED");
    p.wait_line("chain ended");
    std::thread::sleep(Duration::from_millis(50));
    assert!(p.alive());
}

/// A signal handler that never returns sits above work(), which the patch replaces: the walk
/// must step through the signal frame to the interrupted work() (framehop cannot: glibc
/// describes its trampoline with a CFA expression), so the patch fails.
#[test]
fn fail_busy_below_a_signal_frame_at_o0() {
    must_fail(
        "sig_frame",
        "-O0",
        "work (sig_frame)",
        "Hello from UNPATCHED",
        "Hello from UNPATCHED",
    );
}

#[test]
fn fail_busy_below_a_signal_frame_at_o2() {
    must_fail(
        "sig_frame",
        "-O2",
        "work (sig_frame)",
        "Hello from UNPATCHED",
        "Hello from UNPATCHED",
    );
}

/// The patched say() passes show() a string of the patch by a tail call; show() reads it again
/// after a sleep, with no frame of the patch on the stack. An unpatch meanwhile must keep the
/// patch's memory mapped until show() is done with it (unmapping it at once kills the program),
/// and free it then.
#[test]
fn unpatch_keeps_memory_in_use_until_it_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("tail_data", "-O2"), &[1]);
    let mut p = built.start("begin UNPATCHED");
    let pid = p.pid_arg();
    let patch = built.patch(1).to_str().unwrap();
    // show() holds the string 400 ms out of every 410: an unpatch nearly always finds it held.
    let mut waited = false;
    for _ in 0..3 {
        ok(&ctl(dir, &["patch", "-p", &pid, patch], &[]));
        p.drain();
        p.wait_line("begin PATCHED");
        let out = ok(&ctl(dir, &["-v", "unpatch", "-p", &pid], &[]));
        assert!(out.contains("successfully cancelled"), "{out}");
        assert_eq!(
            patch_regions(p.pid()),
            0,
            "the region is still mapped:\n{out}"
        );
        p.wait_line("end PATCHED");
        p.wait_line("begin UNPATCHED");
        if out.contains("in the memory being removed") {
            waited = true;
            break;
        }
    }
    assert!(waited, "no unpatch found the patch's string in use");
    assert!(p.alive());
}

/// When the memory is still in use at the end of the safety timeout, the unpatch is done but
/// the memory stays mapped (pending, listed nowhere), with a warning; a later run frees it.
#[test]
fn memory_still_in_use_is_freed_by_a_later_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("tail_data", "-O2"), &[1]);
    let mut p = built.start("begin UNPATCHED");
    let pid = p.pid_arg();
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[],
    ));
    p.drain();
    let mut warned = false;
    for _ in 0..3 {
        p.wait_line("begin PATCHED");
        let out = ok(&ctl(
            dir,
            &["unpatch", "-p", &pid],
            &[("LIBCARE_SAFETY_TIMEOUT", "0.05")],
        ));
        assert!(out.contains("successfully cancelled"), "{out}");
        if out.contains("still in use") {
            warned = true;
            break;
        }
        // Caught between two calls: patch again and retry.
        ok(&ctl(
            dir,
            &["patch", "-p", &pid, built.patch(1).to_str().unwrap()],
            &[],
        ));
        p.drain();
    }
    assert!(warned, "no unpatch found the patch's string in use");
    assert_eq!(patch_regions(p.pid()), 1, "the region in use was unmapped");
    assert!(info_ids(dir, p.pid()).is_empty());
    p.wait_line("end PATCHED");
    p.wait_line("begin UNPATCHED");
    let out = ok(&ctl(dir, &["-v", "unpatch", "-p", &pid], &[]));
    assert_eq!(patch_regions(p.pid()), 0, "not reclaimed:\n{out}");
    p.wait_line("end UNPATCHED");
    assert!(p.alive());
}
