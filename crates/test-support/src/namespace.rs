//! A test run as pid 1 of a PID namespace of its own, so that "every process" means the
//! processes that test starts.

use std::process::Command;

use crate::command::{stderr, stdout};
use crate::tools::{lock_dir, NAMESPACE_LOCK_DIR};

/// Runs the `#[ignore]`d test `inner` (its full path in this test binary, such as
/// `all_processes::inner_patch_all`) as pid 1 of a new PID namespace with its own /proc.
/// When it ends, the kernel kills whatever it left in the namespace.
pub fn run_in_pid_namespace(inner: &str) {
    run_in_pid_namespace_with(inner, &[]);
}

/// [`run_in_pid_namespace`], with `env` set for the inner test.
pub fn run_in_pid_namespace_with(inner: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let exe = std::env::current_exe().expect("test executable");
    // Its own: pids of different namespaces are the same numbers.
    let locks = lock_dir().join(inner.replace("::", "-"));
    std::fs::create_dir_all(&locks).expect("create the namespace's lock directory");
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
        .env("LIBCARE_LOCK_DIR", &locks)
        .env(NAMESPACE_LOCK_DIR, &locks)
        .envs(env.iter().copied())
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
