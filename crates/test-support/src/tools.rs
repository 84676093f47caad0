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

/// Lock directory for the tools run by this test process (never the system's /run).
pub fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libcare-test-locks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create lock dir");
    dir
}

/// An empty key directory, so that the tools never read the system's /etc/libcare/keys.
pub fn no_keys_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("libcare-test-nokeys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create key dir");
    dir
}

/// Where the tools run by this test process write their audit lines (never the system log).
pub fn audit_log() -> PathBuf {
    std::env::temp_dir().join(format!("libcare-test-audit-{}.log", std::process::id()))
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
