//! The server loop: one client at a time, one request per connection, as in LibcarePlus.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::access::{Access, Peer};
use crate::address::Address;
use crate::child::{terminate_pid, RunChild};
use crate::conn::Listener;
use crate::error::Result;
use crate::protocol::{read_request, status_trailer};

/// The storage used by `update` until a `storage` command changes it.
pub const DEFAULT_STORAGE: &str = "/var/lib/libcare";

/// Exit status reported for a failed request (the one `libcare-ctl` uses).
pub const FAILURE: u8 = 255;

/// Runs what the server does not do itself.
pub trait Handler {
    /// Runs a `libcare-ctl` command line for `peer`, writing its text to `out`; returns its
    /// exit status.
    fn ctl(&mut self, peer: &Peer, argv: &[String], out: &mut dyn Write) -> u8;
    /// Patches every process that `storage` has a patch for, writing the text to `out`;
    /// returns the exit status.
    fn update(&mut self, peer: &Peer, storage: &Path, out: &mut dyn Write) -> u8;
    /// A line for the server's own log.
    fn log(&mut self, line: &str);
    /// A client or a request refused (`request`: what was asked, as far as it is known).
    fn refused(&mut self, peer: &Peer, request: &str, reason: &str);
    /// A command the server ran itself (`run`, `kill`, `storage`, `stop`), and how it ended.
    fn served(&mut self, peer: &Peer, argv: &[String], result: Result<(), &str>);
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
    access: Access,
    storage: PathBuf,
    child: RunChild,
}

fn fail(out: &mut dyn Write, msg: impl std::fmt::Display) -> u8 {
    let _ = writeln!(out, "libcare-server: error: {msg}");
    FAILURE
}

impl Server {
    /// Starts listening at `address`, with `storage` for `update`, serving the clients
    /// `access` admits.
    pub fn bind(address: Address, storage: PathBuf, access: Access) -> Result<Server> {
        let gid = access.group().map(|g| g.gid);
        let listener = address.listen_as(access.socket_mode(), gid)?;
        Ok(Server {
            address,
            listener,
            access,
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
        // Who connected is checked before anything they sent is read.
        let peer = match conn.peer() {
            Ok(p) => p,
            Err(e) => {
                handler.log(&format!("cannot read a client's credentials: {e}"));
                return Flow::Continue;
            }
        };
        if let Err(why) = self.access.admit(&peer) {
            let asked = peer.command_line();
            handler.log(&format!(
                "refused: {} pid {} ({asked}): {why}",
                peer.who(),
                peer.pid
            ));
            handler.refused(&peer, &asked, &why);
            // Its request is not read, so whether it wants the status is not known: our
            // client always does.
            fail(conn, &why);
            let _ = conn.write_all(&status_trailer(FAILURE));
            conn.finish();
            return Flow::Continue;
        }
        let req = match read_request(conn) {
            Ok(Some(r)) => r,
            Ok(None) => return Flow::Continue,
            Err(e) => {
                handler.log(&format!("bad request: {e}"));
                fail(conn, e);
                return Flow::Continue;
            }
        };
        let asked = req.argv.join(" ");
        handler.log(&format!(
            "request: {asked} (from {} pid {})",
            peer.who(),
            peer.pid
        ));
        let command = req.argv.first().map(String::as_str).unwrap_or("");
        let (status, flow) = match self.access.allow_command(&peer, command) {
            Ok(()) => self.dispatch(&peer, &req.argv, conn, handler),
            Err(why) => {
                handler.log(&format!("refused: {asked}: {why}"));
                handler.refused(&peer, &asked, &why);
                (fail(conn, why), Flow::Continue)
            }
        };
        handler.log(&format!("done: {asked} (status {status})"));
        if req.wants_status {
            let _ = conn.write_all(&status_trailer(status));
        }
        flow
    }

    fn dispatch(
        &mut self,
        peer: &Peer,
        argv: &[String],
        out: &mut dyn Write,
        handler: &mut dyn Handler,
    ) -> (u8, Flow) {
        let arg = argv.get(1).map(String::as_str);
        let own = |result: Result<(), String>, out: &mut dyn Write, h: &mut dyn Handler| {
            h.served(
                peer,
                argv,
                result.as_ref().map(|_| ()).map_err(String::as_str),
            );
            match result {
                Ok(()) => 0,
                Err(msg) => fail(out, msg),
            }
        };
        let status = match argv.first().map(String::as_str).unwrap_or("") {
            "stop" => {
                own(Ok(()), out, handler);
                return (0, Flow::Stop);
            }
            "run" => {
                let result = match arg {
                    Some(cmd) => self
                        .child
                        .start(cmd)
                        .map(|pid| {
                            let _ = writeln!(out, "{pid}");
                        })
                        .map_err(|e| format!("run: cannot start /bin/sh: {e}")),
                    None => Err("run: a shell command is needed".to_owned()),
                };
                own(result, out, handler)
            }
            "kill" => {
                let result = match arg.map(|a| a.trim().parse::<i32>()) {
                    Some(Ok(pid)) if self.child.kill(pid) => Ok(()),
                    Some(Ok(pid)) => Err(format!(
                        "kill: pid {pid} was not started by this server's run command"
                    )),
                    _ => Err("kill: a pid is needed".to_owned()),
                };
                own(result, out, handler)
            }
            "storage" => {
                let result = match arg {
                    Some(dir) if Path::new(dir).exists() => {
                        self.storage = dir.into();
                        Ok(())
                    }
                    Some(dir) => Err(format!(
                        "storage: {dir} does not exist; the storage stays {}",
                        self.storage.display()
                    )),
                    None => Err("storage: a patch file or directory is needed".to_owned()),
                };
                own(result, out, handler)
            }
            "update" => {
                let storage = self.storage.clone();
                handler.update(peer, &storage, out)
            }
            "execve" | "startup" => fail(
                out,
                "startup patching (execve/startup) is not supported by this server",
            ),
            _ => handler.ctl(peer, argv, out),
        };
        (status, Flow::Continue)
    }
}
