//! One tool at a time per target: an advisory `flock` on a per-pid file, so a second
//! `libcare-ctl` on the same process waits its turn (or gives up after a while) instead of
//! interleaving with the first.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A held lock; released on drop (or when the process dies, and every process it was handed
/// to, see [`PidLock::fd`]).
#[derive(Debug)]
pub struct PidLock {
    file: File,
}

impl PidLock {
    /// The descriptor holding the lock: a helper process that inherits it keeps the lock held.
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }
}

/// Takes the lock of `pid` in `dir`, waiting up to `wait` for another holder to finish.
pub fn lock(dir: &Path, pid: i32, wait: Duration) -> Result<PidLock> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(format!("pid-{pid}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(PidLock { file }),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < wait => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::Locked { pid, path }),
            Err(std::fs::TryLockError::Error(source)) => return Err(Error::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path(), 42, Duration::ZERO).unwrap();
        let err = lock(dir.path(), 42, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, Error::Locked { pid: 42, .. }), "{err}");
        assert!(lock(dir.path(), 43, Duration::ZERO).is_ok());
        drop(first);
        assert!(lock(dir.path(), 42, Duration::ZERO).is_ok());
    }
}
