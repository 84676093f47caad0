//! `libcare-server` driven by `libcare-client` the way LibcarePlus's test runner drives it
//! (its flavours test_patch_files, test_patch_dir, test_unpatch_files, test_patch_patchlevel,
//! on our own fixture), plus `storage`, `update`, `kill`, `stop` and exit statuses. The server
//! runs as pid 1 of its own PID namespace, so `update` only sees what the test started.

use std::path::Path;

use crate::server::*;
use crate::support::*;

fn text(out: &std::process::Output) -> String {
    stdout(out)
}

/// Builds greet and its level 1 and 2 patches in `dir`: files, and a storage directory
/// `storage/<bid>/{1,2}/kpatch.bin`.
fn build(dir: &Path) -> String {
    let (_, bid) = build_target(dir, "greet", ORIGINAL);
    let l1 = build_patch(dir, "greet", "level 1", "0001");
    let l2 = build_patch(dir, "greet", "level 2", "0002");
    put_level(&dir.join("storage"), &bid, 1, &l1);
    put_level(&dir.join("storage"), &bid, 2, &l2);
    bid
}

#[test]
fn the_test_runner_flavours_through_the_client() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let bid = build(dir);
    let storage = dir.join("storage");
    let socket = dir.join("test.sock");
    let mut server = Server::start(dir, socket.to_str().expect("utf-8"), &dir.join("none"));

    let pid = server.run("exec ./greet h >h.out 2>&1");
    let mut out = OutFile::new(dir.join("h.out"));
    out.wait_line("h: original");

    // test_patch_files: patch-user -p PID FILE.
    let r = server.client(&["patch-user", "-p", &pid, "greet-0001.kpatch"]);
    assert_status(&r, 0);
    let t = text(&r);
    for want in [
        format!("Applying patch for {pid} with greet-0001.kpatch"),
        format!("kpatch_ctl targeting pid {pid}"),
        format!("1 patch hunk(s) have been successfully applied to PID '{pid}'"),
    ] {
        assert!(t.lines().any(|l| l == want), "no {want:?} in:\n{t}");
    }
    out.wait_line("h: level 1");

    let r = server.client(&["info", "-p", &pid]);
    assert_status(&r, 0);
    let t = text(&r);
    for want in [
        format!("{:<25} {pid}", "Pid:"),
        format!("{:<25} greet", "Target:"),
        format!("{:<25} {bid}", "Build id:"),
        format!("{:<25} 1", "Applied patch number:"),
        format!("{:<25} 0001", "Patch id:"),
    ] {
        assert!(t.lines().any(|l| l == want), "no {want:?} in:\n{t}");
    }

    // test_unpatch_files: unpatch-user -p PID -i 0001.
    let r = server.client(&["unpatch-user", "-p", &pid, "-i", "0001"]);
    assert_status(&r, 0);
    assert!(text(&r).contains(&format!(
        "1 patch hunk(s) were successfully cancelled from PID '{pid}'"
    )));
    out.drain();
    out.wait_line("h: original");

    // test_patch_dir and test_patch_patchlevel: patch-user -p PID DIR, latest -> 1 then 2.
    set_latest(&storage, &bid, 1);
    assert_status(&server.client(&["patch-user", "-p", &pid, "storage"]), 0);
    out.wait_line("h: level 1");
    set_latest(&storage, &bid, 2);
    assert_status(&server.client(&["patch-user", "-p", &pid, "storage"]), 0);
    out.wait_line("h: level 2");
    let r = server.client(&["info", "-p", &pid, "--json"]);
    assert_status(&r, 0);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).expect("JSON");
    let levels: Vec<u64> = v[0]["patches"]
        .as_array()
        .expect("patches")
        .iter()
        .map(|p| p["level"].as_u64().expect("level"))
        .collect();
    assert_eq!(levels, [1, 2]);

    // Failures keep their status and text through the socket.
    let r = server.client(&["patch-user", "-p", &pid, "storage"]);
    assert_status(&r, 255);
    assert!(text(&r).contains("Failed to apply patch 'storage'"));
    assert!(text(&r).contains("libcare-ctl: error:"), "{}", text(&r));
    let r = server.client(&["frobnicate"]);
    assert_status(&r, 255);
    assert!(text(&r).starts_with("err: unknown command 'frobnicate'\nusage: libcare-ctl"));
    let r = server.client(&["info"]);
    assert_status(&r, 255);
    assert!(text(&r).contains("usage: libcare-ctl info"), "{}", text(&r));

    // kill ends the program (the server then reports it gone); only its own children.
    let r = server.client(&["kill", "1"]);
    assert_status(&r, 255);
    assert!(text(&r).contains("not started by this server"));
    assert_status(&server.client(&["kill", &pid]), 0);
    assert_status(&server.client(&["info", "-p", &pid]), 255);

    let r = server.client(&["stop"]);
    assert_status(&r, 0);
    assert_eq!(text(&r), "");
    assert!(server.wait_exit().success());
    assert!(
        !socket.exists(),
        "the server removes its socket when it stops"
    );
    let log = server.log_text();
    assert!(log.contains("request: patch-user -p"), "{log}");
}

#[test]
fn update_patches_every_process_the_storage_has_a_patch_for() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let bid = build(dir);
    build_target(dir, "other", "unrelated");
    set_latest(&dir.join("storage"), &bid, 1);
    let socket = dir.join("test.sock");
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let server = Server::start(dir, socket.to_str().expect("utf-8"), &empty);

    let pid = server.run("./other c >c.out 2>&1 & exec ./greet g >g.out 2>&1");
    let mut g = OutFile::new(dir.join("g.out"));
    let mut c = OutFile::new(dir.join("c.out"));
    g.wait_line("g: original");
    c.wait_line("c: unrelated");

    // The storage given at start-up has nothing.
    let r = server.client(&["update"]);
    assert_status(&r, 0);
    let lines = result_lines(&stdout(&r)).len();
    assert_eq!(lines, 2, "one line per process:\n{}", text(&r));
    assert!(!text(&r).contains("successfully applied"));

    let r = server.client(&["storage", "/nonexistent/patches"]);
    assert_status(&r, 255);
    assert!(text(&r).contains("does not exist"));

    let dir_arg = dir.join("storage");
    let r = server.client(&["storage", dir_arg.to_str().expect("utf-8")]);
    assert_status(&r, 0);
    assert_eq!(text(&r), "");
    let r = server.client(&["update"]);
    assert_status(&r, 0);
    let t = text(&r);
    let results = result_lines(&t);
    assert_eq!(results.len(), 2, "{t}");
    assert!(results.contains(
        &format!("1 patch hunk(s) have been successfully applied to PID '{pid}'").as_str()
    ));
    assert!(
        results
            .iter()
            .any(|l| l.starts_with("No patch(es) applicable to PID '")),
        "{t}"
    );
    g.wait_line("g: level 1");
    c.drain();
    c.wait_line("c: unrelated");

    // Again: greet has that patch already, which is a failure.
    let r = server.client(&["update"]);
    assert_status(&r, 255);
    assert!(text(&r).contains("Failed to apply patch"), "{}", text(&r));
}

#[test]
fn an_abstract_socket_serves_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    build_target(dir, "greet", ORIGINAL);
    let name = format!("@libcare-rs-test-{}", std::process::id());
    let mut server = Server::start(dir, &name, dir);
    let pid = server.run("exec ./greet a >a.out 2>&1");
    OutFile::new(dir.join("a.out")).wait_line("a: original");
    let r = server.client(&["info", "-p", &pid]);
    assert_status(&r, 0);
    assert_eq!(text(&r), "", "no patch, no lines");
    assert_status(&server.client(&["stop"]), 0);
    assert!(server.wait_exit().success());
}

#[test]
fn the_client_reports_an_unreachable_server_and_usage_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock = tmp.path().join("nobody.sock");
    let out = run(std::process::Command::new(bin("libcare-client"))
        .arg(&sock)
        .arg("info"));
    assert_status(&out, 1);
    assert!(stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    let out = run(std::process::Command::new(bin("libcare-client")).arg(&sock));
    assert_status(&out, 1);
    assert!(stderr(&out).contains("usage: libcare-client"));
    let out = run(&mut std::process::Command::new(bin("libcare-server")));
    assert_status(&out, 255);
    assert!(stderr(&out).contains("usage: libcare-server"));
    let out = run(std::process::Command::new(bin("libcare-server")).args(["-x", "/tmp/s"]));
    assert_status(&out, 255);
}
