//! The workspace's built binaries, run with a lock directory, an (empty) key directory and an
//! audit log of the test's own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory cargo builds the binaries of the package under test into.
pub fn bin_dir() -> PathBuf {
    // Integration tests run from target/<profile>/deps; the binaries sit one level up.
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

/// Path of one of our binaries.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "binary {} was not built", path.display());
    path
}

/// Where the test processes keep their lock directories, key directories and audit logs: in
/// the build tree (`cargo clean` removes them), never in the system's directories.
fn state_dir() -> PathBuf {
    let dir = bin_dir().join("test-state");
    std::fs::create_dir_all(&dir).expect("create the tests' state directory");
    dir
}

/// This process's name among every process of the machine: its pid with its PID namespace,
/// since the inner tests run as pid 1 of namespaces of their own, several at once (with a
/// bare pid they shared their lock directory, and a tool in one namespace waited for the
/// lock another held on the same pid number of another process).
pub(crate) fn process_key() -> String {
    use std::os::unix::fs::MetadataExt;
    // The namespace file's inode is the namespace's identity (what `pid:[N]` shows).
    let ns = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or_default();
    format!("{ns}-{}", std::process::id())
}

/// Set by [`crate::namespace`] for the inner test: the lock directory of its namespace.
pub(crate) const NAMESPACE_LOCK_DIR: &str = "LIBCARE_TEST_LOCK_DIR";

/// Lock directory for the tools run by this test process (never the system's /run).
pub fn lock_dir() -> PathBuf {
    let dir = std::env::var_os(NAMESPACE_LOCK_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir().join(format!("locks-{}", process_key())));
    std::fs::create_dir_all(&dir).expect("create lock dir");
    dir
}

/// An empty key directory, so that the tools never read the system's /etc/libcare/keys.
pub fn no_keys_dir() -> PathBuf {
    let dir = state_dir().join(format!("nokeys-{}", process_key()));
    std::fs::create_dir_all(&dir).expect("create key dir");
    dir
}

/// Where the tools run by this test process write their audit lines (never the system log).
pub fn audit_log() -> PathBuf {
    state_dir().join(format!("audit-{}.log", process_key()))
}

/// Our tool binary as a command running in `dir`.
pub fn tool(name: &str, dir: &Path) -> Command {
    let mut c = Command::new(bin(name));
    c.current_dir(dir)
        .env("LIBCARE_LOCK_DIR", lock_dir())
        .env("LIBCARE_KEYS", no_keys_dir())
        .env("LIBCARE_AUDIT_LOG", audit_log());
    c
}
