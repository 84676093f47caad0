//! `libcare-ctl patch -p PID DIR` with a patch storage directory: `<build-id>.kpatch`,
//! `<build-id>/latest/kpatch.bin` with the patch level from the `latest` link, and the
//! `before`/`after` scripts run as `script PID` while the target is stopped.

use std::path::{Path, PathBuf};

use crate::support::*;

/// A built `greet` program and a live instance of it, tagged "t".
struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    bid: String,
    proc: Proc,
    pid: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_owned();
    let (exe, bid) = build_target(&dir, "greet", ORIGINAL);
    let mut proc = Proc::spawn(&exe, &["t"]);
    proc.wait_line("t: original");
    let pid = proc.pid().to_string();
    Setup {
        _tmp: tmp,
        dir,
        bid,
        proc,
        pid,
    }
}

/// The `info --json` entries of `pid` as (patch id, level) pairs.
fn json_levels(dir: &Path, pid: &str) -> Vec<(String, u64)> {
    let out = run_ok(tool("libcare-ctl", dir).args(["info", "-p", pid, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info --json is JSON");
    let mut levels = Vec::new();
    for obj in v.as_array().expect("an array of objects") {
        for p in obj["patches"].as_array().expect("patches") {
            levels.push((
                p["id"].as_str().expect("id").to_owned(),
                p["level"].as_u64().expect("level"),
            ));
        }
    }
    levels
}

#[test]
fn a_build_id_named_file_in_a_directory_applies() {
    let mut s = setup();
    let kpatch = build_patch(&s.dir, "greet", "level 1", "0001");
    let storage = s.dir.join("storage");
    // A patch for another build-id in the same directory is not applicable.
    put_flat(&storage, &"0f".repeat(20), &kpatch);
    let out = ctl(&s.dir, &["patch", "-p", &s.pid, "storage"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        result_lines(&stdout(&out)),
        [format!(
            "No patch(es) applicable to PID '{}' have been found",
            s.pid
        )]
    );

    put_flat(&storage, &s.bid, &kpatch);
    let out = ctl(&s.dir, &["patch", "-p", &s.pid, "storage"], &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let exe = s.dir.join("greet");
    for want in [
        format!("Applying patch for {} with storage", s.pid),
        format!("kpatch_ctl targeting pid {}", s.pid),
        format!("kpatch_ctl cmdline=\"{}\\x00t\\x00\"", exe.display()),
        format!(
            "1 patch hunk(s) have been successfully applied to PID '{}'",
            s.pid
        ),
    ] {
        assert!(text.lines().any(|l| l == want), "no {want:?} in:\n{text}");
    }
    s.proc.drain();
    s.proc.wait_line("t: level 1");
    assert_eq!(json_levels(&s.dir, &s.pid), [("0001".to_owned(), 0)]);
}

#[test]
fn the_latest_link_names_the_patch_level() {
    let mut s = setup();
    let storage = s.dir.join("storage");
    let l1 = build_patch(&s.dir, "greet", "level 1", "0001");
    let l2 = build_patch(&s.dir, "greet", "level 2", "0002");
    let flat = build_patch(&s.dir, "greet", "flat file", "0009");
    put_level(&storage, &s.bid, 1, &l1);
    put_level(&storage, &s.bid, 2, &l2);
    // `<bid>/latest/kpatch.bin` wins over `<bid>.kpatch`.
    put_flat(&storage, &s.bid, &flat);

    // LibcarePlus's patchlevel test: level 1, then the link moves to 2 and level 2 stacks on it.
    set_latest(&storage, &s.bid, 1);
    run_ok(tool("libcare-ctl", &s.dir).args(["patch-user", "-p", &s.pid, "storage"]));
    s.proc.drain();
    s.proc.wait_line("t: level 1");
    assert_eq!(json_levels(&s.dir, &s.pid), [("0001".to_owned(), 1)]);

    set_latest(&storage, &s.bid, 2);
    run_ok(tool("libcare-ctl", &s.dir).args(["patch-user", "-p", &s.pid, "storage"]));
    s.proc.drain();
    s.proc.wait_line("t: level 2");
    assert_eq!(
        json_levels(&s.dir, &s.pid),
        [("0001".to_owned(), 1), ("0002".to_owned(), 2)]
    );

    // The same level again is refused: its patch-id is applied already.
    let out = ctl(&s.dir, &["patch", "-p", &s.pid, "storage"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert!(stdout(&out).contains("Failed to apply patch 'storage'"));

    run_ok(tool("libcare-ctl", &s.dir).args(["unpatch-user", "-p", &s.pid, "-i", "0002"]));
    s.proc.drain();
    s.proc.wait_line("t: level 1");
    run_ok(tool("libcare-ctl", &s.dir).args(["unpatch-user", "-p", &s.pid, "-i", "0001"]));
    s.proc.drain();
    s.proc.wait_line("t: original");
    assert!(json_levels(&s.dir, &s.pid).is_empty());
}

/// A script that appends "NAME PID STATE" to `log`, STATE being the target's scheduler state
/// (`t` while it is stopped by a tracer), then exits with `status`.
fn logging_script(name: &str, log: &Path, status: i32) -> String {
    format!(
        "state=$(sed 's/.*) //' /proc/$1/stat | cut -d' ' -f1)\n\
         echo \"{name} $1 $state\" >> '{}'\nexit {status}",
        log.display()
    )
}

fn read_log(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn before_and_after_scripts_run_with_the_pid_while_the_target_is_stopped() {
    let mut s = setup();
    let storage = s.dir.join("storage");
    put_flat(
        &storage,
        &s.bid,
        &build_patch(&s.dir, "greet", "level 1", "0001"),
    );
    let log = s.dir.join("scripts.log");
    put_script(&storage, "before", &logging_script("before", &log, 0));
    put_script(&storage, "after", &logging_script("after", &log, 0));
    run_ok(tool("libcare-ctl", &s.dir).args(["patch", "-p", &s.pid, "storage"]));
    assert_eq!(
        read_log(&log),
        [format!("before {} t", s.pid), format!("after {} t", s.pid)]
    );
    s.proc.drain();
    s.proc.wait_line("t: level 1");
    // Removing a patch runs no script.
    run_ok(tool("libcare-ctl", &s.dir).args(["unpatch", "-p", &s.pid, "-i", "0001"]));
    assert_eq!(read_log(&log).len(), 2);
}

#[test]
fn a_failing_before_script_aborts_the_patch_cleanly() {
    let mut s = setup();
    let storage = s.dir.join("storage");
    put_flat(
        &storage,
        &s.bid,
        &build_patch(&s.dir, "greet", "level 1", "0001"),
    );
    let log = s.dir.join("scripts.log");
    put_script(&storage, "before", &logging_script("before", &log, 3));
    put_script(&storage, "after", &logging_script("after", &log, 0));
    let regions = rx_anonymous_regions(s.proc.pid());

    let out = ctl(&s.dir, &["patch", "-p", &s.pid, "storage"], &[]);
    assert_eq!(out.status.code(), Some(255), "{}", stdout(&out));
    assert_eq!(
        result_lines(&stdout(&out)),
        ["Failed to apply patch 'storage'"]
    );
    assert!(stderr(&out).contains("before"), "{}", stderr(&out));
    assert_eq!(read_log(&log), [format!("before {} t", s.pid)]);
    // Nothing is left behind: no patch, no region, the original code runs on.
    assert!(json_levels(&s.dir, &s.pid).is_empty());
    assert_eq!(rx_anonymous_regions(s.proc.pid()), regions);
    s.proc.drain();
    s.proc.wait_line("t: original");
    s.proc.wait_line("t: original");

    // Once the script succeeds, the same storage applies.
    put_script(&storage, "before", &logging_script("before", &log, 0));
    run_ok(tool("libcare-ctl", &s.dir).args(["patch", "-p", &s.pid, "storage"]));
    s.proc.drain();
    s.proc.wait_line("t: level 1");
}

#[test]
fn a_failing_after_script_leaves_the_patch_applied() {
    let mut s = setup();
    let storage = s.dir.join("storage");
    put_flat(
        &storage,
        &s.bid,
        &build_patch(&s.dir, "greet", "level 1", "0001"),
    );
    let log = s.dir.join("scripts.log");
    put_script(&storage, "after", &logging_script("after", &log, 1));
    let out = run_ok(tool("libcare-ctl", &s.dir).args(["patch", "-p", &s.pid, "storage"]));
    let text = stdout(&out);
    assert!(text.contains("after"), "the failure is reported:\n{text}");
    assert_eq!(read_log(&log), [format!("after {} t", s.pid)]);
    s.proc.drain();
    s.proc.wait_line("t: level 1");
    s.proc.wait_line("t: level 1");
    assert!(s.proc.alive());
    assert_eq!(json_levels(&s.dir, &s.pid), [("0001".to_owned(), 0)]);
}

#[test]
fn a_script_that_cannot_run_is_refused_before_anything_is_touched() {
    let mut s = setup();
    let storage = s.dir.join("storage");
    put_flat(
        &storage,
        &s.bid,
        &build_patch(&s.dir, "greet", "level 1", "0001"),
    );
    std::fs::write(storage.join("before"), "#!/bin/sh\n").expect("write script");
    let out = ctl(&s.dir, &["patch", "-p", &s.pid, "storage"], &[]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("not an executable file"),
        "{}",
        stderr(&out)
    );
    assert!(json_levels(&s.dir, &s.pid).is_empty());
    s.proc.drain();
    s.proc.wait_line("t: original");
}
