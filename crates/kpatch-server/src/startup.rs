//! LibcarePlus's start-up requests (docs/internals.md section 6), and whom they may name.

use crate::access::Peer;

/// A start-up request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupRequest {
    /// `execve TID`: thread TID of the client is about to execute a program; it waits for
    /// 4 bytes, which must come once it is held.
    Execve { tid: i32 },
    /// `startup PID`: patch PID from the storage, then answer with 4 bytes.
    Startup { pid: i32 },
}

impl StartupRequest {
    /// `cmd` (`execve` or `startup`) with its argument; `Err` says what is wrong.
    pub fn parse(cmd: &str, arg: Option<&str>) -> Result<StartupRequest, String> {
        match (cmd, arg.map(|a| a.trim().parse::<i32>())) {
            ("execve", Some(Ok(tid))) if tid > 0 => Ok(StartupRequest::Execve { tid }),
            ("startup", Some(Ok(pid))) if pid > 0 => Ok(StartupRequest::Startup { pid }),
            _ => Err(format!("{cmd}: a thread or process id is needed")),
        }
    }

    /// Whether `peer` may send this request. `execve` holds the thread it names until that
    /// thread executes a program, so it must be one of the client's own threads: otherwise a
    /// client could have the server seize any thread of the machine. `startup` patches a
    /// process from the server's storage, which `update` does for every process already.
    pub fn check(&self, peer: &Peer) -> Result<(), String> {
        match *self {
            StartupRequest::Execve { tid } if !is_thread_of(peer.pid, tid) => Err(format!(
                "execve: thread {tid} is not a thread of the requesting process (pid {}): a client may only hand over its own threads (a client in another PID namespace cannot use execve)",
                peer.pid
            )),
            _ => Ok(()),
        }
    }
}

/// Whether thread `tid` belongs to process `pid` (both as this process's PID namespace
/// numbers them).
fn is_thread_of(pid: i32, tid: i32) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Peer {
        Peer {
            pid: std::process::id() as i32,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn requests_are_parsed() {
        assert_eq!(
            StartupRequest::parse("execve", Some(" 12 ")),
            Ok(StartupRequest::Execve { tid: 12 })
        );
        assert_eq!(
            StartupRequest::parse("startup", Some("7")),
            Ok(StartupRequest::Startup { pid: 7 })
        );
        for bad in [None, Some(""), Some("0"), Some("-3"), Some("x")] {
            assert!(StartupRequest::parse("execve", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn execve_names_a_thread_of_the_client() {
        let own = nix::unistd::gettid().as_raw();
        assert_eq!(StartupRequest::Execve { tid: own }.check(&me()), Ok(()));
        // Our parent is a thread of another process.
        let other = nix::unistd::getppid().as_raw();
        let err = StartupRequest::Execve { tid: other }
            .check(&me())
            .unwrap_err();
        assert!(
            err.contains("is not a thread of the requesting process"),
            "{err}"
        );
        // `startup` may name any process.
        assert_eq!(StartupRequest::Startup { pid: other }.check(&me()), Ok(()));
    }
}
