//! `<libcare/livepatch.h>` beyond the seed's callback scenarios, on live processes
//! (tests/fixtures/runtime/livepatch.c, hammer.c): atomic replace, shadow variables, states,
//! and callbacks that use the C library while every other thread is inside the allocator.

use std::path::{Path, PathBuf};

use kpatch_engine::{Engine, Options, Report, Storage};

use crate::callbacks::include_flag;
use crate::support::*;

/// Builds tests/fixtures/runtime/`name`.c at -O2 with its patches `versions` in `dir`.
fn build_with_header(dir: &Path, name: &str, ldflags: &[&str], versions: &[u32]) -> Built {
    let include = include_flag();
    build(
        dir,
        &Recipe {
            cflags: &[include.as_str()],
            ldflags,
            gensrc_flags: &["--force-gotpcrel"],
            ..Recipe::exe(name, "-O2")
        },
        versions,
    )
}

/// `name`'s patch `version` remade cumulative by `kpatch_make --replace`.
fn replacing(dir: &Path, built: &Built, name: &str, version: u32) -> PathBuf {
    let out = dir.join(format!("{name}.v{version}.replace.kpatch"));
    run_ok(tool("kpatch_make", dir).args([
        "--replace",
        "-b",
        &built.build_id,
        "-i",
        &format!("{version:04}"),
        &format!("{name}.v{version}.stripped"),
        "-o",
        out.to_str().unwrap(),
    ]));
    out
}

/// `libcare-ctl patch -p PID FILE` in `dir`.
fn patch(dir: &Path, pid: &str, file: &Path) -> std::process::Output {
    ctl(dir, &["patch", "-p", pid, file.to_str().unwrap()], &[])
}

/// Waits for the line "greeting=G farewell=F uses=..." and returns its use count.
fn expect_state(p: &mut Proc, greeting: &str, farewell: &str) -> i64 {
    p.drain();
    let want = format!("greeting={greeting} farewell={farewell} uses=");
    let line = p.wait_for(&want, |l| l.starts_with(&want));
    line[want.len()..].parse().expect("a use count")
}

#[test]
fn an_atomic_replace_takes_over_the_earlier_patches_and_their_shadow_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build_with_header(dir, "livepatch", &[], &[1, 2]);
    let v2 = replacing(dir, &built, "livepatch", 2);
    let mut p = built.start("greeting=v0 farewell=v0 uses=-1");
    let pid = p.pid_arg();
    ok(&patch(dir, &pid, built.patch(1)));
    expect_state(&mut p, "v1", "v1");
    let out = ok(&patch(dir, &pid, &v2));
    assert!(out.contains("patch(es) 0001 replaced by 0002"), "{out}");
    // The audit trail has 0001's removal as well as 0002's application.
    let audit = std::fs::read_to_string(audit_log()).expect("the tests' audit log");
    let mine = |action: &str, id: &str| {
        audit.lines().any(|l| {
            l.contains(&format!(
                " action={action} result=ok pid={pid} patch_id={id} "
            )) && (action == "patch" || l.contains("(replaced by 0002)"))
        })
    };
    assert!(mine("patch", "0002") && mine("unpatch", "0001"), "{audit}");
    // 0002 changes greeting only: farewell, which only 0001 changed, is the original again;
    // the use count 0001's use_conn kept in a shadow variable is read by 0002's report.
    p.wait_line("0002: previous state 1: version 1, data \"set by 0001\"; mine: version 2");
    let uses = expect_state(&mut p, "v2", "v0");
    assert!(
        uses > 0,
        "the use count 0001 attached is visible to 0002: {uses}"
    );
    // 0001 was removed in the same stop; 0002 alone is listed. (0001's memory goes as soon as
    // no thread holds a pointer into it; a stale word on a stack can keep it, pending, until
    // a later run.)
    assert_eq!(info_ids(dir, p.pid()), ["0002"]);
    let info = ok(&ctl(dir, &["info", "-p", &pid], &[]));
    assert!(info.contains("Replace:"), "{info}");
    assert!(
        info.contains("States:                   1 (version 2)"),
        "{info}"
    );
    // Unpatching the replaced patch is no longer needed (nor possible).
    let out = ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]);
    assert_eq!(out.status.code(), Some(255));
    ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    p.wait_line("0002: use counts freed");
    expect_state(&mut p, "v0", "v0");
    assert!(info_ids(dir, p.pid()).is_empty());
}

#[test]
fn a_patch_must_carry_the_states_of_the_applied_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build_with_header(dir, "livepatch", &[], &[1, 3, 4]);
    let mut p = built.start("greeting=v0 farewell=v0 uses=-1");
    let pid = p.pid_arg();
    ok(&patch(dir, &pid, built.patch(1)));
    expect_state(&mut p, "v1", "v1");
    let before = maps(p.pid());
    let out = patch(dir, &pid, built.patch(3));
    fails(
        &out,
        &["patch 0003 does not carry state 1 (version 1) that applied patch 0001 set"],
    );
    let out = patch(dir, &pid, built.patch(4));
    fails(
        &out,
        &["patch 0004 carries state 1 at version 0, lower than version 1 that applied patch 0001 set"],
    );
    assert_eq!(maps(p.pid()), before);
    expect_state(&mut p, "v1", "v1");
    // Without 0001, nothing asks for the state.
    ok(&ctl(dir, &["unpatch", "-p", &pid], &[]));
    ok(&patch(dir, &pid, built.patch(3)));
    expect_state(&mut p, "v3", "v0");
}

/// Engine progress, dropped.
struct Quiet;

impl Report for Quiet {
    fn info(&mut self, _: &str) {}
    fn detail(&mut self, _: &str) {}
}

/// libpulp's problem: a callback that calls malloc and printf while the other threads are in
/// the allocator (holding its locks, some in mmap with the lock held) must neither deadlock
/// nor corrupt it. Both threads of the process allocate without a pause (none sleeps, so a
/// thread must be caught outside libc); 25 patch/unpatch cycles run 100 such callbacks.
#[test]
fn callbacks_use_malloc_while_every_thread_hammers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build_with_header(dir, "hammer", &["-pthread"], &[1]);
    let mut p = built.start("hammering");
    let pid = p.pid() as i32;
    let engine = Engine::new(Options {
        lock_dir: lock_dir(),
        ..Options::default()
    });
    let storage = Storage::open(built.patch(1)).expect("storage");
    const CYCLES: usize = 25;
    for cycle in 0..CYCLES {
        if let Err(e) = engine.patch(pid, &storage, &mut Quiet) {
            panic!("cycle {cycle}: patch: {e}");
        }
        if let Err(e) = engine.unpatch(pid, None, &[], &mut Quiet) {
            panic!("cycle {cycle}: unpatch: {e}");
        }
    }
    let stages = ["pre_patch", "post_patch", "pre_unpatch", "post_unpatch"];
    for cycle in 0..CYCLES {
        for stage in stages {
            let line = p.next_line();
            assert_eq!(line, format!("{stage}_callback"), "cycle {cycle}");
        }
    }
    assert!(p.alive());
}
