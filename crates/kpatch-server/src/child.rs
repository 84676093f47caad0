//! The program started by the `run` command. There is one at a time, as in LibcarePlus:
//! starting another one ends the previous one, and so do `stop` and the server's termination.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a child may take to exit after SIGTERM before it gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// The current `run` child, if any.
#[derive(Debug)]
pub struct RunChild {
    child: Option<Child>,
    /// Its pid (0 when none), for the termination handler that runs on another thread.
    pid: Arc<AtomicI32>,
    grace: Duration,
}

impl Default for RunChild {
    fn default() -> Self {
        RunChild {
            child: None,
            pid: Arc::default(),
            grace: TERM_GRACE,
        }
    }
}

/// Ends a child: SIGTERM, then SIGKILL if it lingers for `grace`; reaps it.
fn terminate(child: &mut Child, grace: Duration) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl RunChild {
    /// The cell holding the current child's pid (0 when none).
    pub fn pid_cell(&self) -> Arc<AtomicI32> {
        self.pid.clone()
    }

    /// Ends the previous child, then starts `sh -c COMMAND` with no standard streams of its
    /// own (redirect in the command to keep its output); returns its pid.
    pub fn start(&mut self, command: &str) -> std::io::Result<u32> {
        self.stop();
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.pid.store(pid as i32, Ordering::SeqCst);
        self.child = Some(child);
        Ok(pid)
    }

    /// Ends the child if its pid is `pid`; returns false when `pid` is not our child (the
    /// server only ends what it started).
    pub fn kill(&mut self, pid: i32) -> bool {
        match &self.child {
            Some(c) if c.id() as i32 == pid => {
                self.stop();
                true
            }
            _ => false,
        }
    }

    /// Ends the current child, if any.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, self.grace);
        }
        self.pid.store(0, Ordering::SeqCst);
    }
}

impl Drop for RunChild {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Ends the child whose pid is in `cell` from a signal-handling thread (which cannot own the
/// `Child`): SIGTERM, a grace period, SIGKILL; the caller exits right after.
pub fn terminate_pid(cell: &AtomicI32) {
    let raw = cell.swap(0, Ordering::SeqCst);
    if raw <= 0 {
        return;
    }
    let pid = Pid::from_raw(raw);
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < TERM_GRACE {
        match nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            _ => return,
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    #[test]
    fn one_child_at_a_time_and_only_ours_are_killed() {
        let mut r = RunChild::default();
        let first = r.start("exec sleep 30").unwrap();
        assert!(alive(first));
        assert_eq!(r.pid_cell().load(Ordering::SeqCst), first as i32);
        let second = r.start("exec sleep 30").unwrap();
        assert!(!alive(first), "starting another child ends the first");
        assert!(!r.kill(first as i32), "the first is no longer ours");
        assert!(!r.kill(1));
        assert!(r.kill(second as i32));
        assert!(!alive(second));
        assert_eq!(r.pid_cell().load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_child_ignoring_sigterm_is_killed() {
        let mut r = RunChild::default();
        r.grace = Duration::from_millis(100);
        let pid = r
            .start("trap '' TERM; while :; do sleep 0.05; done")
            .unwrap();
        // Wait until the shell has installed its trap (it shows as an ignored signal).
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let ignored = status
                .lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0);
            if ignored & (1 << (15 - 1)) != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(r.kill(pid as i32));
        assert!(!alive(pid));
    }
}
