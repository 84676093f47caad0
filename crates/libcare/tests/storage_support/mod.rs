//! Helpers for the storage, `-p all`, server and layout tests: the `greet` fixture and its
//! patches, storage directories, and running a test inside a PID namespace of its own.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{build_id, fixtures, gcc, lock_dir, run_ok, stderr, stdout, tool};

/// The original program's greeting.
pub const ORIGINAL: &str = "original";

/// Compiles fixture `source` (under tests/fixtures/storage) printing `greeting` to
/// `dir/NAME.s`.
fn assembly(dir: &Path, source: &str, name: &str, greeting: &str) -> String {
    let src = dir.join(source);
    if !src.exists() {
        std::fs::copy(fixtures().join("storage").join(source), &src).expect("copy fixture");
    }
    let s = format!("{name}.s");
    gcc(
        dir,
        &[
            "-O2",
            "-S",
            &format!("-DGREETING=\"{greeting}\""),
            source,
            "-o",
            &s,
        ],
    );
    s
}

/// Builds the program `dir/NAME` from `greet.c` printing `greeting`; returns its path and
/// build-id.
pub fn build_target(dir: &Path, name: &str, greeting: &str) -> (PathBuf, String) {
    let s = assembly(dir, "greet.c", name, greeting);
    gcc(dir, &["-o", name, &s]);
    let exe = dir.join(name);
    let bid = build_id(&exe);
    (exe, bid)
}

/// Builds, with our tools and the user guide's commands, a patch with patch-id `id` that makes
/// program `target` (built by [`build_target`]) print `greeting`; returns the `.kpatch` path.
pub fn build_patch(dir: &Path, target: &str, greeting: &str, id: &str) -> PathBuf {
    build_patch_edited(dir, target, greeting, id, &|_| {})
}

/// [`build_patch`], with `edit` applied to the payload ELF file just before `kpatch_make`.
pub fn build_patch_edited(
    dir: &Path,
    target: &str,
    greeting: &str,
    id: &str,
    edit: &dyn Fn(&Path),
) -> PathBuf {
    let name = format!("{target}-{id}");
    let patched = assembly(dir, "greet.c", &name, greeting);
    let combined = format!("{name}.combined.s");
    run_ok(tool("kpatch_gensrc", dir).args([
        "--os=rhel6",
        "-i",
        &format!("{target}.s"),
        "-i",
        &patched,
        "-o",
        &combined,
        "--force-global",
    ]));
    let linked = format!("{name}.patched");
    gcc(dir, &["-o", &linked, &combined, "-Wl,-q"]);
    let stripped = format!("{name}.stripped");
    run_ok(tool("kpatch_strip", dir).args(["--strip", &linked, &stripped]));
    run_ok(tool("kpatch_strip", dir).args(["--rel-fixup", target, &stripped]));
    run_ok(
        Command::new("strip")
            .args(["--strip-unneeded", &stripped])
            .current_dir(dir),
    );
    run_ok(tool("kpatch_strip", dir).args(["--undo-link", target, &stripped]));
    edit(&dir.join(&stripped));
    let bid = build_id(&dir.join(target));
    let out = format!("{name}.kpatch");
    run_ok(tool("kpatch_make", dir).args(["-b", &bid, "-i", id, &stripped, "-o", &out]));
    dir.join(out)
}

/// Puts `kpatch` into `storage` as `<bid>.kpatch`.
pub fn put_flat(storage: &Path, bid: &str, kpatch: &Path) {
    std::fs::create_dir_all(storage).expect("create storage");
    std::fs::copy(kpatch, storage.join(format!("{bid}.kpatch"))).expect("copy patch");
}

/// Puts `kpatch` into `storage` as `<bid>/<level>/kpatch.bin`.
pub fn put_level(storage: &Path, bid: &str, level: u32, kpatch: &Path) {
    let dir = storage.join(bid).join(level.to_string());
    std::fs::create_dir_all(&dir).expect("create level directory");
    std::fs::copy(kpatch, dir.join("kpatch.bin")).expect("copy patch");
}

/// Points `<bid>/latest` at `level`, as LibcarePlus's test suite does (`ln -fs LEVEL latest`).
pub fn set_latest(storage: &Path, bid: &str, level: u32) {
    let link = storage.join(bid).join("latest");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(level.to_string(), &link).expect("create latest link");
}

/// Writes an executable shell script `storage/name`.
pub fn put_script(storage: &Path, name: &str, body: &str) -> PathBuf {
    let path = storage.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Lines of `text` that are a `libcare-ctl` result line (one per process it looked at).
pub fn result_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            l.contains("patch hunk(s) have been successfully applied to PID")
                || l.starts_with("No patch(es) applicable to PID")
                || l.starts_with("Failed to apply patch")
                || l.contains("patch hunk(s) were successfully cancelled from PID")
                || l.starts_with("No patch(es) cancellable from PID")
                || l.starts_with("Failed to cancel patches for")
        })
        .collect()
}

/// The anonymous read-execute mappings of `pid` (patch regions and nothing else, for our
/// fixtures), as `start-end` strings.
pub fn rx_anonymous_regions(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    maps.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 5 && f[1] == "r-xp"
        })
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

/// Runs the `#[ignore]`d test `inner` of this test binary as pid 1 of a new PID namespace
/// (with its own /proc), so that "every process" means the processes that test starts. When
/// it ends, the kernel kills whatever it left in the namespace.
pub fn run_in_pid_namespace(inner: &str) {
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "--kill-child"])
        .arg(exe)
        .args([
            inner,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LIBCARE_LOCK_DIR", lock_dir())
        .output()
        .expect("run unshare (util-linux)");
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "{inner} failed in its PID namespace ({})\n--- stdout\n{o}\n--- stderr\n{e}",
        out.status
    );
    assert!(
        o.contains("1 passed"),
        "{inner} did not run in its PID namespace\n--- stdout\n{o}\n--- stderr\n{e}"
    );
}

/// Fails unless this process is pid 1 of its PID namespace: a test that patches "every
/// process" must never run where it could reach processes it did not start.
pub fn assert_pid_namespace_init() {
    assert_eq!(
        std::process::id(),
        1,
        "this test must run as pid 1 of its own PID namespace (its outer test starts it so)"
    );
}
