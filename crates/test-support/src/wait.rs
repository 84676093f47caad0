//! Waiting with a deadline instead of sleeping a fixed time.

use std::path::Path;
use std::time::{Duration, Instant};

/// How long a test waits for something it expects (generous: the machine may be busy).
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Waits until `cond` holds, polling, failing the test after [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Polls until `path` exists, failing the test after `secs` seconds.
pub fn wait_for_file(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear in {secs} s",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
