//! Start-up patching end to end with `libcare-server --self-load`: programs started after the
//! service run patched from their first line, a library loaded later is patched before `dlopen`
//! returns (again after `dlclose`), a program without a patch is never attached, patches added
//! to and removed from the storage take effect for the next start, a service killed while it
//! holds a starting process leaves that process running normally, patches the service does
//! not trust (unsigned, a storage others could write) leave the program running unpatched, and
//! an `execve` request naming another process's thread is refused.
//!
//! Each self-load test runs as pid 1 of a PID namespace of its own (the service looks at the
//! running processes, and must only see the test's), and starts the service as its child:
//! killing the service leaves the programs it held running. LibcarePlus's execve protocol is
//! driven through a wrapper program of our own (tests/fixtures/selfload/exec_wrapper.c).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// Copies fixture `name.c` of tests/fixtures/selfload into `dir` (where the runtime helpers
/// compile it).
fn fixture(dir: &Path, name: &str) {
    copy_fixture(dir, "selfload", name);
}

/// Builds `hello` and its patch (patch-id 0001).
fn hello(dir: &Path) -> Built {
    fixture(dir, "hello");
    build(dir, &Recipe::exe("hello", "-O2"), &[1])
}

/// [`hello`], its patch in `dir/storage` (returned) under its build-id.
fn hello_stored(dir: &Path) -> (Built, PathBuf) {
    let prog = hello(dir);
    let storage = dir.join("storage");
    put_flat(&storage, &prog.build_id, prog.patch(1));
    (prog, storage)
}

/// An executable shell script `dir/run.sh` that starts `hello` with its arguments.
fn script(dir: &Path) -> PathBuf {
    let path = dir.join("run.sh");
    std::fs::write(&path, "#!/bin/sh\n./hello \"$@\"\n").expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn started_and_loaded_code_runs_patched() {
    run_in_pid_namespace("selfload::started_and_loaded_code_runs_patched_inner");
}

#[test]
#[ignore = "runs as pid 1 of its own PID namespace; started by its outer test"]
fn started_and_loaded_code_runs_patched_inner() {
    assert_pid_namespace_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let prog = hello(dir);
    let lib = build(
        dir,
        &Recipe {
            shared: true,
            ldflags: &[],
            ..Recipe::exe("libboth", "-O2")
        },
        &[1],
    );
    fixture(dir, "dlopen");
    gcc(dir, &["-O2", "-o", "dlopen", "dlopen.c", "-ldl"]);
    fixture(dir, "tracer");
    gcc(dir, &["-O2", "-o", "tracer", "tracer.c"]);
    let storage = dir.join("storage");
    put_flat(&storage, &prog.build_id, prog.patch(1));
    put_flat(&storage, &lib.build_id, lib.patch(1));

    // A program that will load the library once asked to, running before the service starts.
    let mut loader = Proc::spawn(&dir.join("dlopen"), &["./libboth.so", "2"]);
    loader.wait_line("ready");

    let service = SelfLoadService::start(dir, &storage, &[]);
    service.wait_log(&["self-load: watching", "/hello ", &prog.build_id]);
    service.wait_log(&["self-load: watching", "/libboth.so ", &lib.build_id]);

    // Started by a shell script after the service: patched from its first line.
    let mut p = Proc::spawn(&script(dir), &["s"]);
    assert_eq!(p.next_line_within(DEADLINE).as_deref(), Some("s: patched"));
    let line = service.wait_log(&["start-up: pid", "patched at start-up: hello 0001"]);
    assert!(line.contains("held") && line.contains("us"), "{line}");
    let pid = line
        .split_whitespace()
        .nth(2)
        .expect("the pid in the log line")
        .to_owned();
    let info = run_ok(tool("libcare-ctl", dir).args(["info", "-p", &pid]));
    let text = stdout(&info);
    assert!(
        text.contains(&format!("{:<25} at start-up", "Applied:")),
        "{text}"
    );
    let json = run_ok(tool("libcare-ctl", dir).args(["info", "-p", &pid, "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(v[0]["patches"][0]["at_startup"], true, "{v}");
    drop(p);

    // A program no patch is for is not even attached.
    let mut t = Proc::spawn(&dir.join("tracer"), &[]);
    assert_eq!(
        t.next_line_within(DEADLINE).as_deref(),
        Some("TracerPid: 0")
    );
    assert!(
        !service.log_text().contains(&format!("pid {} ", t.pid())),
        "{}",
        service.log_text()
    );

    // The library, loaded by a program that ran before the service: patched before dlopen
    // returns, and again after dlclose and a second dlopen.
    std::fs::write(dir.join("go.0"), "").expect("go.0");
    loader.wait_line("0: lib PATCHED");
    std::fs::write(dir.join("go.1"), "").expect("go.1");
    loader.wait_line("1: lib PATCHED");
    loader.wait_line("done");
    let loads = service.wait_lines(
        &[
            &format!("pid {} ", loader.pid()),
            "patched when loaded: libboth.so 0001",
        ],
        2,
    );
    assert_eq!(loads.len(), 2, "{loads:?}");
    // Each dlclose is followed: the patch goes with the library, while it is still mapped.
    let unloads = service.wait_lines(
        &[
            &format!("pid {}: unloading ", loader.pid()),
            "/libboth.so: removed libboth.so 0001",
        ],
        2,
    );
    assert_eq!(unloads.len(), 2, "{unloads:?}");

    // The patch removed from the storage: the next start runs the original.
    std::fs::remove_file(storage.join(format!("{}.kpatch", prog.build_id))).expect("rm");
    service.wait_log(&["no longer watching", "/hello "]);
    let mut p = Proc::spawn(&dir.join("hello"), &["u"]);
    assert_eq!(p.next_line_within(DEADLINE).as_deref(), Some("u: original"));

    // `update` patches the running one; a patch level added to the storage is used by the
    // next start.
    put_level(&storage, &prog.build_id, 1, prog.patch(1));
    set_latest(&storage, &prog.build_id, 1);
    service.wait_lines(&["self-load: watching", "/hello ", &prog.build_id], 2);
    let out = service.client(&["update"]);
    assert!(out.status.success(), "{}", stdout(&out));
    p.wait_line("u: patched");
    let mut p = Proc::spawn(&dir.join("hello"), &["l"]);
    assert_eq!(p.next_line_within(DEADLINE).as_deref(), Some("l: patched"));
}

#[test]
fn a_killed_service_leaves_the_starting_process_running() {
    run_in_pid_namespace("selfload::a_killed_service_leaves_the_starting_process_running_inner");
}

#[test]
#[ignore = "runs as pid 1 of its own PID namespace; started by its outer test"]
fn a_killed_service_leaves_the_starting_process_running_inner() {
    assert_pid_namespace_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_, storage) = hello_stored(dir);
    // Killed while the process waits in the dynamic loader's hook, and while the engine,
    // having run a syscall in the held thread, is about to write the patch.
    for (step, words) in [
        (kpatch_selfload::HANG_STEP, &["holding it until killed"][..]),
        ("after-mmap", &[][..]),
    ] {
        let mut service = SelfLoadService::start(dir, &storage, &[("LIBCARE_FAULT_STEP", step)]);
        service.wait_log(&["self-load: watching", "/hello "]);
        let mut p = Proc::spawn(&dir.join("hello"), &[step, "5"]);
        if words.is_empty() {
            let status = service.child.wait().expect("wait for the service");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(libc::SIGKILL),
                "the engine's fault point kills the service: {}",
                service.log_text()
            );
        } else {
            service.wait_log(words);
            service.kill();
        }
        for _ in 0..5 {
            assert_eq!(
                p.next_line_within(DEADLINE),
                Some(format!("{step}: original")),
                "{}",
                service.log_text()
            );
        }
        let status = p.wait_exit();
        assert!(status.success(), "{step}: {status}");
    }
}

#[test]
fn the_execve_protocol_patches_the_program_before_it_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let prog = hello(dir);
    fixture(dir, "exec_wrapper");
    gcc(dir, &["-O2", "-o", "exec_wrapper", "exec_wrapper.c"]);
    let storage = dir.join("storage");
    put_flat(&storage, &prog.build_id, prog.patch(1));
    let socket = dir.join("p.sock");
    let socket = socket.to_str().expect("utf-8");
    let server = Server::start(dir, socket, &storage);

    // The wrapper asks the server, then executes hello: its first line is patched.
    let pid = server.run(&format!(
        "exec ./exec_wrapper {socket} ./hello w >w.out 2>&1"
    ));
    let first = first_line(&dir.join("w.out"));
    assert_eq!(first, "w: patched", "{}", server.log_text());
    let info = server.client(&["info", "-p", &pid]);
    assert!(
        stdout(&info).contains(&format!("{:<25} at start-up", "Applied:")),
        "{}",
        stdout(&info)
    );

    // `startup PID`: patched, then the 4-byte answer.
    let pid = server.run("exec ./hello r >r.out 2>&1");
    let mut out = OutFile::new(dir.join("r.out"));
    out.wait_line("r: original");
    let reply = raw_request(Path::new(socket), format!("startup\0{pid}\0\0").as_bytes());
    assert_eq!(reply, 0i32.to_ne_bytes(), "{}", server.log_text());
    out.drain();
    out.wait_line("r: patched");

    // `execve` may only name a thread of the client's own process: a client (in the server's
    // PID namespace) naming another process's thread is refused, and that process goes on.
    server.run(&format!(
        "./hello v >v.out 2>&1 & echo \"victim $!\" >e.out; {} {socket} execve $! >>e.out 2>&1; echo \"status $?\" >>e.out; wait",
        bin("libcare-client").display()
    ));
    let mut e = OutFile::new(dir.join("e.out"));
    e.wait_line("status 255");
    let text = std::fs::read_to_string(dir.join("e.out")).expect("e.out");
    let victim = text
        .lines()
        .find_map(|l| l.strip_prefix("victim "))
        .expect("the victim's pid");
    assert!(
        text.contains(&format!(
            "libcare-server: error: execve: thread {victim} is not a thread of the requesting process"
        )),
        "{text}"
    );
    let mut v = OutFile::new(dir.join("v.out"));
    v.wait_line("v: original");
    v.drain();
    v.wait_line("v: original");
    // Refused before the start-up code saw it, and recorded as refused.
    assert!(
        !server
            .log_text()
            .contains(&format!("execve: thread {victim}: ")),
        "{}",
        server.log_text()
    );
    let trail = std::fs::read_to_string(audit_log()).unwrap_or_default();
    assert!(
        trail
            .lines()
            .any(|l| l.contains("action=request result=refused")
                && l.contains(&format!("execve: thread {victim} is not a thread"))),
        "{trail}"
    );
}

#[test]
fn patches_the_service_does_not_trust_are_refused_and_the_program_runs_unpatched() {
    run_in_pid_namespace(
        "selfload::patches_the_service_does_not_trust_are_refused_and_the_program_runs_unpatched_inner",
    );
}

#[test]
#[ignore = "runs as pid 1 of its own PID namespace; started by its outer test"]
fn patches_the_service_does_not_trust_are_refused_and_the_program_runs_unpatched_inner() {
    assert_pid_namespace_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (prog, storage) = hello_stored(dir);
    let stored = storage.join(format!("{}.kpatch", prog.build_id));
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f", "release"])
            .current_dir(dir),
    );
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).expect("keys");
    std::fs::copy(dir.join("release.pub"), keys.join("release.pub")).expect("key");
    let audit = dir.join("audit.log");
    let audit_s = audit.to_str().expect("utf-8");
    let service = SelfLoadService::start_with(
        dir,
        &storage,
        &["--keys".as_ref(), keys.as_os_str()],
        &[("LIBCARE_AUDIT_LOG", audit_s)],
    );
    // Said when the storage is read, and for each process that needed the patch.
    let unsigned = format!("{}: refused: it is not signed", stored.display());
    service.wait_log(&["self-load: not trusted:", &unsigned]);
    service.wait_log(&["self-load: watching", "/hello "]);
    let mut p = Proc::spawn(&dir.join("hello"), &["u"]);
    assert_eq!(p.next_line_within(DEADLINE).as_deref(), Some("u: original"));
    let line = service.wait_log(&["not patched at start-up:", &unsigned, "it runs unpatched"]);
    assert!(line.contains("/hello): "), "{line}");
    let audited = |words: &[&str]| {
        wait_until(&format!("an audit line with {words:?}"), || {
            std::fs::read_to_string(&audit)
                .unwrap_or_default()
                .lines()
                .any(|l| words.iter().all(|w| l.contains(w)))
        })
    };
    audited(&["action=patch result=refused", "not signed"]);
    drop(p);

    // Signed with the listed key: trusted, and applied at the next start.
    let key = kpatch_trust::SigningKey::load(&dir.join("release")).expect("signing key");
    let signed =
        kpatch_trust::sign(&std::fs::read(prog.patch(1)).expect("patch"), &key).expect("sign");
    std::fs::write(dir.join("signed.kpatch"), signed).expect("write");
    std::fs::rename(dir.join("signed.kpatch"), &stored).expect("rename into the storage");
    service.wait_log(&["self-load: the storage", "is trusted again"]);
    let mut p = Proc::spawn(&dir.join("hello"), &["s"]);
    assert_eq!(p.next_line_within(DEADLINE).as_deref(), Some("s: patched"));
    audited(&[
        "action=patch result=ok",
        "patch_id=0001",
        "start-up patching",
    ]);
    drop(p);

    // As root, a storage another user could write is refused as `patch` refuses it.
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let writable = format!(
        "{}: refused: it is writable by its group",
        storage.display()
    );
    service.wait_log(&["self-load: not trusted:", &writable]);
    let mut p = Proc::spawn(&dir.join("hello"), &["g"]);
    assert_eq!(p.next_line_within(DEADLINE).as_deref(), Some("g: original"));
    service.wait_log(&["not patched at start-up:", &writable, "it runs unpatched"]);
}

/// The first line of the file at `path`, once it has one.
fn first_line(path: &Path) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text
            .split_inclusive('\n')
            .next()
            .filter(|l| l.ends_with('\n'))
        {
            return l.trim_end().to_owned();
        }
        assert!(start.elapsed() < DEADLINE, "{} stays empty", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `request` on a new connection to `socket`; returns the whole reply.
fn raw_request(socket: &Path, request: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.write_all(request).expect("send");
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).expect("read");
    reply
}

#[test]
fn without_its_privileges_the_service_says_what_to_do_and_does_not_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    for (cap, words) in [
        (
            "-sys_admin",
            [
                "fanotify_init",
                "CAP_SYS_ADMIN",
                "run libcare-server as root",
            ],
        ),
        (
            "-sys_ptrace",
            ["CAP_SYS_PTRACE", "hold starting processes", "as root"],
        ),
    ] {
        let socket = dir.join(format!("{cap}.sock"));
        let out = run(Command::new("setpriv")
            .args(["--bounding-set", cap])
            .arg(bin("libcare-server"))
            .arg("--self-load")
            .arg(&socket)
            .arg(dir));
        assert_eq!(out.status.code(), Some(255), "{cap}: {}", stderr(&out));
        for w in words {
            assert!(
                stderr(&out).contains(w),
                "{cap}: no {w:?} in {}",
                stderr(&out)
            );
        }
        assert!(!socket.exists(), "{cap}: it must not listen");
    }
}
