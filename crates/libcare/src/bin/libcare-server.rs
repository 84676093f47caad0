//! `libcare-server`: LibcarePlus's control-socket daemon. Runs `libcare-ctl` commands sent by
//! `libcare-client` (with the same code as `libcare-ctl`, the text going back to the client),
//! plus `run`, `kill`, `storage`, `update` and `stop`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use kpatch_server::{Address, Handler, Server, DEFAULT_STORAGE};
use libcare::ctl::{self, Console};
use libcare::ctl_args;

const USAGE: &str = "usage: libcare-server [-v] <UNIX socket> [STORAGE ROOT]

Arguments:
  <UNIX socket>   a path, @NAME for an abstract socket, or &FD for an inherited
                  listening socket (libcare.service passes systemd's socket as &3)
  STORAGE ROOT    patches for the update command (default /var/lib/libcare)

Options:
  -v              print each request and its status
  -h              this message
  --version       print the version and the git commit
";

/// Exit status of every failure.
const FAILURE: u8 = 255;

/// A client's socket as a console: stdout and stderr lines both go to it.
struct Client<'a> {
    out: &'a mut dyn Write,
}

impl Console for Client<'_> {
    fn out(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }
    fn err(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }
}

/// Runs forwarded commands with `libcare-ctl`'s code.
struct Ctl {
    verbose: bool,
}

fn status(ok: bool) -> u8 {
    if ok {
        0
    } else {
        FAILURE
    }
}

impl Handler for Ctl {
    fn ctl(&mut self, argv: &[String], out: &mut dyn Write) -> u8 {
        let mut client = Client { out };
        match ctl_args::parse(argv) {
            Ok((cmd, verbose)) => status(ctl::execute(&cmd, verbose || self.verbose, &mut client)),
            Err(e) => {
                client.err(&format!("err: {e}"));
                let _ = client.out.write_all(e.usage.as_bytes());
                FAILURE
            }
        }
    }

    fn update(&mut self, storage: &Path, out: &mut dyn Write) -> u8 {
        status(ctl::update(storage, self.verbose, &mut Client { out }))
    }

    fn log(&mut self, line: &str) {
        if self.verbose {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    }
}

fn run(socket: &str, storage: PathBuf, verbose: bool) -> Result<()> {
    let address = Address::parse(socket)?;
    let mut server = Server::bind(address, storage)?;
    if verbose {
        println!(
            "libcare-server: listening on {socket}, storage {}",
            server.storage().display()
        );
    }
    server
        .serve(&mut Ctl { verbose })
        .with_context(|| format!("serving {socket}"))
}

fn usage_error(msg: &str) -> ExitCode {
    libcare::errln!("err: {msg}");
    libcare::err!("{USAGE}");
    ExitCode::from(FAILURE)
}

fn main() -> ExitCode {
    let mut verbose = false;
    let mut positional = Vec::new();
    for a in std::env::args().skip(1) {
        if !positional.is_empty() || !a.starts_with('-') || a == "-" {
            positional.push(a);
            continue;
        }
        match a.as_str() {
            "-v" => verbose = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("{}", libcare::version_line("libcare-server"));
                return ExitCode::SUCCESS;
            }
            other => return usage_error(&format!("unknown option '{other}'")),
        }
    }
    let (socket, storage) = match positional.as_slice() {
        [socket] => (socket, PathBuf::from(DEFAULT_STORAGE)),
        [socket, storage] => (socket, PathBuf::from(storage)),
        [] => return usage_error("not enough arguments."),
        _ => return usage_error("too many arguments."),
    };
    match run(socket, storage, verbose) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            libcare::errln!("libcare-server: error: {e:#}");
            ExitCode::from(FAILURE)
        }
    }
}
