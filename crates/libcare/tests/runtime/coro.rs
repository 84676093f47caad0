//! Coroutines (the peer's fail_coro and fail_coro_listed): a function on the stack of a
//! suspended coroutine cannot be waited for, so the patch fails at once, naming it, and the
//! target runs on unpatched; a patch of a function no coroutine holds applies as usual.
//! Three flavours of our own fixture: QEMU-style `jmp_buf` switches found by searching memory,
//! `swapcontext` switches (`ucontext_t`), and a program that lists its coroutines.

use std::time::{Duration, Instant};

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

    // coro_body() is suspended in both coroutines: no waiting, a clear refusal.
    let start = Instant::now();
    let out = ctl(
        dir,
        &["-v", "patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[("LIBCARE_SAFETY_TIMEOUT", "10")],
    );
    let err = fails(&out, &["coro_body", "coroutine"]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the refusal waited: {err}"
    );
    assert!(
        stdout(&out).contains(how),
        "coroutines not found the expected way ({how}):\n{}",
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
