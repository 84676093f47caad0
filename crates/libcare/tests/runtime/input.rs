//! Bad input: truncated, garbage and other-build-id patch files, a pid that does not exist, a
//! zombie, a kernel thread: a clear message, exit status 255, and the target untouched. And a
//! static executable, which our design patches like any other (no C library needed in the
//! target).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// Runs `args` against a live stacked process and checks it fails with `words` while the
/// process goes on unchanged.
fn refused(dir: &Path, p: &mut Proc, args: &[&str], words: &[&str]) {
    let maps_before = maps(p.pid());
    let out = ctl(dir, args, &[]);
    fails(&out, words);
    assert_eq!(maps(p.pid()), maps_before, "{args:?} changed the mappings");
    p.drain();
    p.wait_line("version v0");
    for line in p.lines_for(Duration::from_millis(60)) {
        assert_eq!(line, "version v0");
    }
    assert!(info_ids(dir, p.pid()).is_empty());
}

#[test]
fn bad_patch_files_are_refused_and_the_target_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("stacked", "-O2"), &[1]);
    let other = build(dir, &Recipe::exe("frame_finish", "-O2"), &[1]);
    let mut p = built.start("version v0");
    let pid = p.pid_arg();

    let good = std::fs::read(built.patch(1)).expect("patch");
    let truncated = dir.join("truncated.kpatch");
    std::fs::write(&truncated, &good[..good.len() / 2]).expect("write");
    refused(
        dir,
        &mut p,
        &["patch", "-p", &pid, truncated.to_str().unwrap()],
        &["truncated.kpatch"],
    );

    let garbage = dir.join("garbage.kpatch");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, noise).expect("write");
    refused(
        dir,
        &mut p,
        &["patch", "-p", &pid, garbage.to_str().unwrap()],
        &["garbage.kpatch"],
    );

    // A valid patch with one byte of its payload changed fails its checksum.
    let mut flipped = good.clone();
    let last = flipped.len() - 40;
    flipped[last] ^= 0x55;
    let corrupt = dir.join("corrupt.kpatch");
    std::fs::write(&corrupt, flipped).expect("write");
    refused(
        dir,
        &mut p,
        &["patch", "-p", &pid, corrupt.to_str().unwrap()],
        &["corrupt.kpatch"],
    );

    refused(
        dir,
        &mut p,
        &["patch", "-p", &pid, other.patch(1).to_str().unwrap()],
        &[&other.build_id, "which no object of pid"],
    );

    let missing = dir.join("missing.kpatch");
    refused(
        dir,
        &mut p,
        &["patch", "-p", &pid, missing.to_str().unwrap()],
        &["missing.kpatch"],
    );
}

/// A pid that no process has.
fn free_pid() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (2..max)
        .rev()
        .find(|p| !Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid")
}

#[test]
fn processes_that_cannot_be_patched_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let built = build(dir, &Recipe::exe("stacked", "-O2"), &[1]);
    let patch = built.patch(1).to_str().unwrap().to_owned();

    let none = free_pid().to_string();
    for args in [
        vec!["patch", "-p", &none, &patch],
        vec!["unpatch", "-p", &none, "-i", "0001"],
        vec!["info", "-p", &none],
    ] {
        let out = ctl(dir, &args, &[]);
        fails(&out, &[&format!("no process with pid {none}")]);
    }

    // A child that exited and that we do not reap yet.
    let mut zombie = Command::new("true").spawn().expect("spawn true");
    let zpid = zombie.id() as i32;
    let start = Instant::now();
    while !std::fs::read_to_string(format!("/proc/{zpid}/stat"))
        .unwrap_or_default()
        .contains(") Z ")
    {
        assert!(start.elapsed() < DEADLINE, "no zombie");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = ctl(dir, &["patch", "-p", &zpid.to_string(), &patch], &[]);
    fails(&out, &["zombie"]);
    let _ = zombie.wait();

    // Pid 2 is kthreadd on a normal system (not inside a PID namespace of its own).
    let stat = std::fs::read_to_string("/proc/2/stat").unwrap_or_default();
    let flags: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_ascii_whitespace().nth(6)?.parse().ok())
        .unwrap_or(0);
    if flags & 0x0020_0000 != 0 {
        let out = ctl(dir, &["patch", "-p", "2", &patch], &[]);
        fails(&out, &["pid 2 is a kernel thread"]);
    } else {
        eprintln!("pid 2 is not a kernel thread here; that case is not checked");
    }
}

/// No C library, no dynamic symbols: the jump, the region and the calls to printf & co. (which
/// the patch reaches inside the executable) work all the same.
#[test]
fn a_static_executable_is_patched_and_unpatched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let recipe = Recipe {
        ldflags: &["-static"],
        ..Recipe::exe("frame_finish", "-O2")
    };
    let built = build(dir, &recipe, &[1]);
    let mut p = built.start("Hello from UNPATCHED");
    let pid = p.pid_arg();
    assert!(!maps(p.pid()).contains("libc"), "the fixture is not static");
    ok(&ctl(
        dir,
        &["patch", "-p", &pid, built.patch(1).to_str().unwrap()],
        &[],
    ));
    p.drain();
    p.wait_line("Hello from PATCHED");
    ok(&ctl(dir, &["unpatch", "-p", &pid, "-i", "0001"], &[]));
    p.drain();
    p.wait_line("Hello from UNPATCHED");
    assert_eq!(patch_regions(p.pid()), 0);
}
