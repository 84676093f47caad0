//! Small readers of /proc files: a task's state and flags, its thread-group id and tracer, the
//! thread list, and a few system-wide values.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The fields of `/proc/PID/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// One-letter state: R, S, D, T, t, Z, X, I, ...
    pub state: u8,
    /// `task->flags` (`PF_*`).
    pub flags: u64,
}

/// Parses `/proc/PID/stat`: `pid (comm) state ppid pgrp session tty tpgid flags ...`. The
/// command name may hold spaces and parentheses, so fields are counted from its last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let flags = fields.nth(5)?.parse().ok()?;
    Some(Stat { state, flags })
}

/// Reads `path` with `read`; `Ok(None)` when it does not exist (the task is gone).
fn optional<T>(path: &Path, read: impl FnOnce(&Path) -> std::io::Result<T>) -> Result<Option<T>> {
    match read(path) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Ok(None)
        }
        Err(e) => Err(Error::proc(path, e)),
    }
}

/// Reads a whole /proc file as bytes; `Ok(None)` when it does not exist (the task is gone).
pub(crate) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    // /proc files report size 0, so std::fs::read would start with a 32-byte read and
    // double from there: a dozen reads for a `maps` file, each a trip through seq_file.
    optional(path, |path| {
        let mut bytes = Vec::with_capacity(16 << 10);
        std::fs::File::open(path)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    })
}

/// Whether the file at `path` has any content (`None` when it or its process is gone); reads
/// one byte, so that a `/proc` file that is costly to generate in full is not.
pub(crate) fn has_content(path: &Path) -> Result<Option<bool>> {
    use std::io::Read;
    optional(path, |path| {
        let mut byte = [0u8];
        Ok(std::fs::File::open(path)?.read(&mut byte)? > 0)
    })
}

/// The state and flags of a task (`dir` is `/proc/PID` or `/proc/PID/task/TID`); `None` when
/// the task is gone.
pub(crate) fn stat(dir: &Path) -> Result<Option<Stat>> {
    let path = dir.join("stat");
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    parse_stat(&text)
        .map(Some)
        .ok_or_else(|| Error::format(&path, "no state and flags fields after the command name"))
}

/// The fields of `/proc/PID/status` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    pub tgid: i32,
    pub tracer: i32,
}

pub(crate) fn parse_status(text: &str) -> Option<Status> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<i32>().ok())
    };
    Some(Status {
        tgid: field("Tgid:")?,
        tracer: field("TracerPid:")?,
    })
}

/// Thread-group id and tracer of a task; `None` when the task is gone.
pub(crate) fn status(dir: &Path) -> Result<Option<Status>> {
    let path = dir.join("status");
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    parse_status(&String::from_utf8_lossy(&bytes))
        .map(Some)
        .ok_or_else(|| Error::format(&path, "no Tgid: or TracerPid: line"))
}

/// Thread ids listed in `/proc/PID/task`, sorted; empty when the process is gone.
pub(crate) fn task_ids(pid: i32) -> Result<Vec<i32>> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(Error::proc(dir, e)),
    };
    let mut tids = Vec::new();
    for entry in entries {
        // A thread that exits while we list the directory can make one entry fail; the rest
        // of the list is still good.
        let Ok(entry) = entry else { continue };
        if let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    tids.sort_unstable();
    Ok(tids)
}

/// Signal sets of a task from its status file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SignalState {
    /// Pending for this thread (`SigPnd`).
    pub pending: u64,
    /// Pending for the process (`ShdPnd`).
    pub shared_pending: u64,
    /// Blocked (`SigBlk`).
    pub blocked: u64,
}

pub(crate) fn parse_signal_state(text: &str) -> Option<SignalState> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    Some(SignalState {
        pending: field("SigPnd:")?,
        shared_pending: field("ShdPnd:")?,
        blocked: field("SigBlk:")?,
    })
}

/// Signal sets of a task; `None` if it is gone or the file is unreadable.
pub(crate) fn signal_state(dir: &Path) -> Option<SignalState> {
    parse_signal_state(&std::fs::read_to_string(dir.join("status")).ok()?)
}

/// The syscall a blocked task is in, from `/proc/PID/task/TID/syscall`: its number, its six
/// arguments as the kernel received them, and the task's user stack pointer and program
/// counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CurrentSyscall {
    pub nr: u64,
    pub args: [u64; 6],
    pub sp: u64,
    pub pc: u64,
}

/// Parses `NR ARG0 .. ARG5 SP PC` (hex values with `0x`); `None` for `running`, for `-1 SP PC`
/// (not in a syscall) and for anything else.
pub(crate) fn parse_syscall(text: &str) -> Option<CurrentSyscall> {
    let mut words = text.split_ascii_whitespace();
    let nr: u64 = words.next()?.parse().ok()?;
    let mut hex = words.map(|w| u64::from_str_radix(w.strip_prefix("0x")?, 16).ok());
    let mut args = [0; 6];
    for a in &mut args {
        *a = hex.next()??;
    }
    Some(CurrentSyscall {
        nr,
        args,
        sp: hex.next()??,
        pc: hex.next()??,
    })
}

/// The syscall task `dir` is blocked in, if it is blocked in one and the file is readable.
pub(crate) fn current_syscall(dir: &Path) -> Option<CurrentSyscall> {
    parse_syscall(&std::fs::read_to_string(dir.join("syscall")).ok()?)
}

/// `/proc/sys/vm/mmap_min_addr`, or the usual default when it cannot be read.
pub(crate) fn mmap_min_addr() -> u64 {
    std::fs::read_to_string("/proc/sys/vm/mmap_min_addr")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65536)
}

/// Soft `RLIMIT_STACK` of a process from `/proc/PID/limits`; `None` when unlimited or unknown.
pub(crate) fn stack_limit(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max stack size"))?;
    line.trim_start_matches("Max stack size")
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_file_of_a_blocked_running_and_idle_task() {
        let blocked =
            "22 0x3 0xffffd2a0 0x8 0xffffffffffffffff 0x0 0x8 0xffffd290 0xffff8a3c5e4c\n";
        assert_eq!(
            parse_syscall(blocked),
            Some(CurrentSyscall {
                nr: 22,
                args: [3, 0xffff_d2a0, 8, u64::MAX, 0, 8],
                sp: 0xffff_d290,
                pc: 0xffff_8a3c_5e4c,
            })
        );
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0xffffd290 0xffff8a3c5e4c\n"), None);
        assert_eq!(parse_syscall("22 0x3 0x1\n"), None);
    }

    #[test]
    fn stat_with_parentheses_in_command() {
        let s = parse_stat("42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0").unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.flags, 4194560);
        let k = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0").unwrap();
        assert_ne!(k.flags & libc::PF_KTHREAD as u64, 0);
        assert_eq!(parse_stat("2 (x"), None);
        assert_eq!(parse_stat("2 (x) S 1"), None);
    }

    #[test]
    fn status_fields() {
        let s = parse_status("Name:\tcat\nTgid:\t100\nPid:\t101\nTracerPid:\t7\n").unwrap();
        assert_eq!(
            s,
            Status {
                tgid: 100,
                tracer: 7
            }
        );
        assert_eq!(parse_status("Name:\tcat\n"), None);
    }

    #[test]
    fn signal_sets() {
        let text = "SigQ:\t0/1\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000001\nSigBlk:\tfffffffe7ffbfeff\n";
        let s = parse_signal_state(text).unwrap();
        assert_eq!((s.pending, s.shared_pending), (0x100, 1));
        assert_eq!(s.blocked, 0xfffffffe7ffbfeff);
        assert_eq!(parse_signal_state("SigPnd:\t0\n"), None);
    }
}
