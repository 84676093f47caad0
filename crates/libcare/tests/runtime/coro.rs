//! Coroutines (the peer's fail_coro and fail_coro_listed, and QEMU's case): a function on the
//! stack of a suspended coroutine cannot be let run out of it, so the run waits and then fails,
//! naming it, and the target runs on unpatched; a patch of a function no coroutine is
//! suspended in applies as usual, even one the coroutines run through. Three flavours of our
//! own fixture: QEMU-style `jmp_buf` switches found by searching memory, `swapcontext`
//! switches (`ucontext_t`), and a program that lists its coroutines. With `-DIDLE`, guest-like
//! memory full of look-alike contexts (never read), and coroutines made or moved while the tool
//! is held between its search of memory and the stop.

use std::process::{Command, Stdio};

use crate::support::*;

fn coroutines(cflags: &'static [&'static str], ldflags: &'static [&'static str], how: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let recipe = Recipe {
        cflags,
        ldflags,
        ..Recipe::exe("coro", "-O2")
    };
    let built = build(dir, &recipe, &[1, 2]);
    let mut p = built.start("co2 UNPATCHED");
    let pid = p.pid_arg();
    let maps_before = maps(p.pid());

    // coro_body() is suspended in both coroutines all the time: waited for, then a clear
    // refusal.
    let out = ctl(
        dir,
        &["-v", "patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[("LIBCARE_SAFETY_TIMEOUT", SHORT_TIMEOUT)],
    );
    fails(&out, &["coro_body", "suspended coroutine"]);
    assert!(
        stdout(&out).contains(how),
        "coroutines not found the expected way ({how}):\n{}",
        stdout(&out)
    );
    // Each round after the first searches only what was written since the one before.
    assert!(
        how.contains("lists") || stdout(&out).contains("written since the last search"),
        "{}",
        stdout(&out)
    );
    p.drain();
    p.wait_line("co1 UNPATCHED");
    p.wait_line("tick UNPATCHED");
    assert_eq!(maps(p.pid()), maps_before);
    assert!(info_ids(dir, p.pid()).is_empty());

    // tick() is on no coroutine stack: the same search finds nothing against it.
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, built.patch(2).to_str().unwrap()],
        &[],
    ));
    p.drain();
    p.wait_line("tick PATCHED");
    p.wait_line("co1 UNPATCHED");
    ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0002"], &[]));
    p.drain();
    p.wait_line("tick UNPATCHED");
    assert!(p.alive());
}

#[test]
fn fail_coro_found_by_searching_memory() {
    coroutines(&[], &[], "coro imports makecontext");
}

#[test]
fn fail_coro_with_swapcontext() {
    coroutines(&["-DSWAP"], &[], "coro imports makecontext");
}

#[test]
fn fail_coro_listed() {
    coroutines(&["-DLISTED"], &["-rdynamic"], "coro lists its coroutines");
}

/// The `-DIDLE` fixture and its patches of `versions`, built in `dir`.
fn build_idle(dir: &std::path::Path, versions: &[u32]) -> Built {
    let recipe = Recipe {
        cflags: &["-DIDLE"],
        ..Recipe::exe("coro", "-O2")
    };
    build(dir, &recipe, versions)
}

/// The `-DIDLE` fixture started with commands on stdin, once it ticks; and the address of its
/// guest-like memory.
fn start_idle(built: &Built) -> (Proc, u64) {
    let mut p = Proc::start(Command::new(&built.binary).stdin(Stdio::piped()));
    let lines = p.wait_line("tick UNPATCHED");
    let guest = lines
        .iter()
        .find_map(|l| l.strip_prefix("guest 0x"))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .expect("a guest line");
    (p, guest)
}

/// Kilobytes of process `pid`'s mapping at `start` accessed since its referenced bits were
/// cleared (`/proc/PID/clear_refs`).
fn referenced_kb(pid: u32, start: u64) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    smaps
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{start:x}-")))
        .find_map(|l| l.strip_prefix("Referenced:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a Referenced line")
}

#[test]
fn guest_memory_is_not_read_and_coroutines_elsewhere_do_not_hold_a_patch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build_idle(dir, &[1, 3]);
    let (mut p, guest) = start_idle(&built);
    let pid = p.pid_arg();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "1").expect("clear_refs");

    // coro_body() is on no coroutine's stack, only in copies of a context in guest memory.
    let patch = |id: u32| built.patch(id).to_str().unwrap().to_owned();
    let out = ok(&ctl(dir, &["-v", "patch", "-p", &pid, &patch(1)], &[]));
    assert!(out.contains("saved context(s)"), "{out}");
    // idle_step() runs in the coroutines between their switches: patched while they run.
    ok(&ctl(dir, &["patch", "-p", &pid, &patch(3)], &[]));
    p.wait_line("co1 step PATCHED");
    // A new coroutine runs the new coro_body() and stays suspended in it: that code stays.
    p.send("spawn");
    p.wait_line("co3 PATCHED");
    let out = ctl(
        dir,
        &["unpatch", "-p", &pid, "-i", "0001"],
        &[("LIBCARE_SAFETY_TIMEOUT", SHORT_TIMEOUT)],
    );
    fails(&out, &["patch 0001", "suspended coroutine"]);
    ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0003"], &[]));
    p.drain();
    p.wait_line("co2 step UNPATCHED");
    p.wait_line("co3 PATCHED");
    assert_eq!(info_ids(dir, p.pid()), ["0001"]);
    assert_eq!(referenced_kb(p.pid(), guest), 0, "guest memory was read");
}

/// One-letter state of process `pid`.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

#[test]
fn coroutines_made_or_moved_between_the_search_and_the_stop_are_seen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build_idle(dir, &[1]);
    // A new coroutine that suspends in coro_body(), or co1 suspending in it from now on.
    for (command, line) in [("spawn", "co3 UNPATCHED"), ("dive", "co1 UNPATCHED")] {
        let (mut p, _) = start_idle(&built);
        let pid = p.pid_arg();
        let mut ctl = tool("libcare-ctl", dir);
        ctl.args(["-v", "patch", "-p", &pid, built.patch(1).to_str().unwrap()])
            .env("LIBCARE_PAUSE_STEP", "searched")
            .env("LIBCARE_SAFETY_TIMEOUT", SHORT_TIMEOUT);
        let run = Running::start(&mut ctl);
        wait_until("libcare-ctl to stop after its search", || {
            state(run.pid()) == Some('T')
        });
        p.drain();
        p.send(command);
        p.wait_line(line);
        p.wait_line("tick UNPATCHED");
        run_ok(Command::new("kill").args(["-CONT", &run.pid().to_string()]));
        let out = run.wait(60);
        fails(&out, &["coro_body", "suspended coroutine"]);
        // Found in the pages written meanwhile, not by a new search.
        assert!(
            !stdout(&out).contains("searching again"),
            "{command}: {}",
            stdout(&out)
        );
        p.drain();
        p.wait_line("tick UNPATCHED");
        assert!(info_ids(dir, p.pid()).is_empty());
    }
}
