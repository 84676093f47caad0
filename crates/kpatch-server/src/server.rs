//! The server loop: one client at a time, one request per connection, as in LibcarePlus.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::address::Address;
use crate::child::{terminate_pid, RunChild};
use crate::conn::Listener;
use crate::error::Result;
use crate::protocol::{read_request, status_trailer};

/// The storage used by `update` until a `storage` command changes it.
pub const DEFAULT_STORAGE: &str = "/var/lib/libcare";

/// Exit status reported for a failed request (the one `libcare-ctl` uses).
pub const FAILURE: u8 = 255;

/// LibcarePlus's start-up requests (docs/internals.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupRequest {
    /// `execve TID`: thread TID (of the client) is about to execute a program; it waits for
    /// 4 bytes, which must come once it is held.
    Execve { tid: i32 },
    /// `startup PID`: patch PID from the storage, then answer with 4 bytes.
    Startup { pid: i32 },
}

/// Runs what the server does not do itself.
pub trait Handler {
    /// Runs a `libcare-ctl` command line, writing its text to `out`; returns its exit status.
    fn ctl(&mut self, argv: &[String], out: &mut dyn Write) -> u8;
    /// Patches every process that `storage` has a patch for, writing the text to `out`;
    /// returns the exit status.
    fn update(&mut self, storage: &Path, out: &mut dyn Write) -> u8;
    /// A line for the server's own log.
    fn log(&mut self, line: &str);
    /// Serves a start-up request with the patches of `storage`, answering on `conn`; returns
    /// the exit status.
    fn startup(&mut self, request: StartupRequest, storage: &Path, conn: &mut dyn Write) -> u8;
    /// `storage` is the storage from now on.
    fn storage_changed(&mut self, _storage: &Path) {}
}

/// Whether to go on serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// A listening server.
#[derive(Debug)]
pub struct Server {
    address: Address,
    listener: Listener,
    storage: PathBuf,
    child: RunChild,
}

fn fail(out: &mut dyn Write, msg: impl std::fmt::Display) -> u8 {
    let _ = writeln!(out, "libcare-server: error: {msg}");
    FAILURE
}

impl Server {
    /// Starts listening at `address`, with `storage` for `update`.
    pub fn bind(address: Address, storage: PathBuf) -> Result<Server> {
        let listener = address.listen()?;
        Ok(Server {
            address,
            listener,
            storage,
            child: RunChild::default(),
        })
    }

    /// The storage `update` uses now.
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// Serves clients until a `stop` request or SIGTERM/SIGINT; the `run` child is ended
    /// either way (on a signal the process exits with 128 + the signal number).
    pub fn serve(&mut self, handler: &mut dyn Handler) -> Result<()> {
        self.exit_on_signals()?;
        loop {
            let mut conn = self.listener.accept()?;
            let flow = self.handle(&mut conn, handler);
            drop(conn);
            if flow == Flow::Stop {
                break;
            }
        }
        self.child.stop();
        self.remove_socket_file();
        Ok(())
    }

    fn remove_socket_file(&self) {
        if let Address::Path(p) = &self.address {
            let _ = std::fs::remove_file(p);
        }
    }

    fn exit_on_signals(&self) -> Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let cell = self.child.pid_cell();
        let socket = match &self.address {
            Address::Path(p) => Some(p.clone()),
            _ => None,
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                terminate_pid(&cell);
                if let Some(p) = socket {
                    let _ = std::fs::remove_file(p);
                }
                std::process::exit(0x80 | sig);
            }
        });
        Ok(())
    }

    fn handle(&mut self, conn: &mut crate::conn::Conn, handler: &mut dyn Handler) -> Flow {
        let req = match read_request(conn) {
            Ok(Some(r)) => r,
            Ok(None) => return Flow::Continue,
            Err(e) => {
                handler.log(&format!("bad request: {e}"));
                fail(conn, e);
                return Flow::Continue;
            }
        };
        handler.log(&format!("request: {}", req.argv.join(" ")));
        let (status, flow) = self.dispatch(&req.argv, conn, handler);
        handler.log(&format!("done: {} (status {status})", req.argv.join(" ")));
        if req.wants_status {
            let _ = conn.write_all(&status_trailer(status));
        }
        flow
    }

    fn dispatch(
        &mut self,
        argv: &[String],
        out: &mut dyn Write,
        handler: &mut dyn Handler,
    ) -> (u8, Flow) {
        let arg = argv.get(1).map(String::as_str);
        let status = match argv.first().map(String::as_str).unwrap_or("") {
            "stop" => return (0, Flow::Stop),
            "run" => match arg {
                Some(cmd) => match self.child.start(cmd) {
                    Ok(pid) => {
                        let _ = writeln!(out, "{pid}");
                        0
                    }
                    Err(e) => fail(out, format_args!("run: cannot start /bin/sh: {e}")),
                },
                None => fail(out, "run: a shell command is needed"),
            },
            "kill" => match arg.map(|a| a.trim().parse::<i32>()) {
                Some(Ok(pid)) if self.child.kill(pid) => 0,
                Some(Ok(pid)) => fail(
                    out,
                    format_args!("kill: pid {pid} was not started by this server's run command"),
                ),
                _ => fail(out, "kill: a pid is needed"),
            },
            "storage" => match arg {
                Some(dir) if Path::new(dir).exists() => {
                    self.storage = dir.into();
                    handler.storage_changed(&self.storage);
                    0
                }
                Some(dir) => fail(
                    out,
                    format_args!(
                        "storage: {dir} does not exist; the storage stays {}",
                        self.storage.display()
                    ),
                ),
                None => fail(out, "storage: a patch file or directory is needed"),
            },
            "update" => {
                let storage = self.storage.clone();
                handler.update(&storage, out)
            }
            cmd @ ("execve" | "startup") => match arg.map(|a| a.trim().parse::<i32>()) {
                Some(Ok(id)) if id > 0 => {
                    let request = if cmd == "execve" {
                        StartupRequest::Execve { tid: id }
                    } else {
                        StartupRequest::Startup { pid: id }
                    };
                    let storage = self.storage.clone();
                    handler.startup(request, &storage, out)
                }
                _ => fail(out, format_args!("{cmd}: a thread or process id is needed")),
            },
            _ => handler.ctl(argv, out),
        };
        (status, Flow::Continue)
    }
}
