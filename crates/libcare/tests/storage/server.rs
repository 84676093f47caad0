//! A `libcare-server` under test, run as pid 1 of a PID namespace of its own (so that its
//! `update` and `-p all` only see what the test starts), and the output files of the programs
//! it starts with `run`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use libcare_test_support::{audit_log, bin, lock_dir, no_keys_dir, DEADLINE};

/// A running server; killed with everything it started when dropped.
pub struct Server {
    child: Child,
    /// The socket argument given to the server and client.
    pub socket: String,
    pub log: PathBuf,
    dir: PathBuf,
}

impl Server {
    /// Starts `libcare-server -v SOCKET STORAGE` in `dir` and waits until it accepts clients.
    pub fn start(dir: &Path, socket: &str, storage: &Path) -> Server {
        Server::start_with(dir, socket, storage, &[], &[])
    }

    /// Starts `libcare-server -v OPTIONS SOCKET STORAGE` with `env` added to its environment
    /// (after the test defaults: an empty key directory, the test process's audit log).
    pub fn start_with(
        dir: &Path,
        socket: &str,
        storage: &Path,
        options: &[&str],
        env: &[(&str, &Path)],
    ) -> Server {
        let log = dir.join("server.log");
        let logf = std::fs::File::create(&log).expect("create server log");
        let child = Command::new("unshare")
            .args(["--fork", "--pid", "--mount-proc", "--kill-child"])
            .arg(bin("libcare-server"))
            .arg("-v")
            .args(options)
            .arg(socket)
            .arg(storage)
            .current_dir(dir)
            .env("LIBCARE_LOCK_DIR", lock_dir())
            .env("LIBCARE_KEYS", no_keys_dir())
            .env("LIBCARE_AUDIT_LOG", audit_log())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().expect("dup log")))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("start unshare libcare-server");
        let mut server = Server {
            child,
            socket: socket.to_owned(),
            log,
            dir: dir.to_owned(),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let ready = match self.socket.strip_prefix('@') {
                Some(_) => self.client(&["info", "-h"]).status.success(),
                None => Path::new(&self.socket).exists(),
            };
            if ready {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("libcare-server exited ({status}): {}", self.log_text());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "libcare-server did not start listening: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the server printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `libcare-client SOCKET ARGS...` in the test directory.
    pub fn client(&self, args: &[&str]) -> Output {
        Command::new(bin("libcare-client"))
            .arg(&self.socket)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run libcare-client")
    }

    /// `run CMD`: starts a program in the server's namespace; returns its pid there.
    pub fn run(&self, cmd: &str) -> String {
        let out = self.client(&["run", cmd]);
        assert!(out.status.success(), "run {cmd:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let pid = text.trim_end_matches('\n');
        assert!(
            !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
            "run replies with the pid and a newline, not {text:?}"
        );
        pid.to_owned()
    }

    /// Sends SIGTERM to the server (the child of `unshare`).
    pub fn terminate(&self) {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let server = children
            .split_whitespace()
            .next()
            .expect("unshare has the server as its child");
        let status = Command::new("kill")
            .args(["-TERM", server])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the server to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "libcare-server did not exit: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // unshare --kill-child takes the server, and the namespace with it, along.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output file of a program started with `run`, read as it grows.
pub struct OutFile {
    path: PathBuf,
    seen: usize,
}

impl OutFile {
    pub fn new(path: PathBuf) -> OutFile {
        OutFile { path, seen: 0 }
    }

    /// Waits until a line equal to `want` appears after what was read so far.
    pub fn wait_line(&mut self, want: &str) {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let new = text.get(self.seen..).unwrap_or("");
            // Only complete lines count.
            let complete = new.rfind('\n').map_or("", |i| &new[..=i]);
            if let Some(pos) = complete.lines().position(|l| l == want) {
                let consumed: usize = complete
                    .split_inclusive('\n')
                    .take(pos + 1)
                    .map(str::len)
                    .sum();
                self.seen += consumed;
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} did not get {want:?}; it ends with {:?}",
                self.path.display(),
                text.lines().rev().take(3).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Skips what the program printed so far.
    pub fn drain(&mut self) {
        self.seen = std::fs::read_to_string(&self.path)
            .map(|t| t.rfind('\n').map_or(0, |i| i + 1))
            .unwrap_or(0);
    }
}
