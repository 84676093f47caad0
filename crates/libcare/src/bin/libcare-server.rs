//! `libcare-server`: LibcarePlus's control-socket daemon. Runs `libcare-ctl` commands sent by
//! `libcare-client` (with the same code as `libcare-ctl`, the text going back to the client),
//! plus `run`, `kill`, `storage`, `update`, `stop`, and the start-up requests `execve` and
//! `startup`; with `--self-load`, patches processes at start-up with nothing asked of them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use kpatch_selfload::{Config, Context, Outcome, SelfLoad};
use kpatch_server::{Address, Handler, Server, StartupRequest, DEFAULT_STORAGE};
use libcare::ctl::{self, Console};
use libcare::ctl_args;

const USAGE: &str =
    "usage: libcare-server [-v] [--self-load [--search DIR]...] <UNIX socket> [STORAGE ROOT]

Arguments:
  <UNIX socket>   a path, @NAME for an abstract socket, or &FD for an inherited
                  listening socket (libcare.service passes systemd's socket as &3)
  STORAGE ROOT    patches for the update, execve and startup commands
                  (default /var/lib/libcare)

Options:
  -v              print each request and its status
  --self-load     patch every process that executes a program, or loads a library,
                  with a patch in the storage before that code runs (needs root)
  --search DIR    where to look for the files that have patches (repeatable; default
                  the usual program and library directories); files mapped by running
                  processes are found anyway
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

/// Runs forwarded commands with `libcare-ctl`'s code, start-up requests with the self-load
/// crate.
struct Ctl {
    verbose: bool,
    startup: Arc<Context>,
    selfload: Option<SelfLoad>,
}

fn status(ok: bool) -> u8 {
    if ok {
        0
    } else {
        FAILURE
    }
}

/// Writes a line to the server's log (its stdout) at once.
fn log_line(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
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
            log_line(line);
        }
    }

    fn startup(&mut self, request: StartupRequest, storage: &Path, conn: &mut dyn Write) -> u8 {
        self.startup.set_storage(storage.to_owned());
        match request {
            StartupRequest::Execve { tid } => {
                match kpatch_selfload::serve_execve(&self.startup, tid, conn) {
                    Ok(
                        Outcome::Patched { .. }
                        | Outcome::Nothing { .. }
                        | Outcome::Unloaded { .. },
                    ) => 0,
                    Ok(Outcome::Left(_)) => FAILURE,
                    Err(e) => {
                        log_line(&format!("execve: thread {tid}: refused: {e}"));
                        FAILURE
                    }
                }
            }
            StartupRequest::Startup { pid } => {
                status(kpatch_selfload::serve_startup(&self.startup, pid, conn).is_ok())
            }
        }
    }

    fn storage_changed(&mut self, storage: &Path) {
        match &self.selfload {
            Some(s) => s.storage_changed(storage),
            None => self.startup.set_storage(storage.to_owned()),
        }
    }
}

/// What the command line asks for.
struct Args {
    verbose: bool,
    self_load: bool,
    search: Vec<PathBuf>,
    socket: String,
    storage: PathBuf,
}

fn run(args: Args) -> Result<()> {
    // Self-load forks a guardian for every process it patches: from a small helper, forked
    // now, rather than from the server, whose copy grows with the files it has read.
    let forker = if args.self_load {
        let f = kpatch_process::GuardianForker::start().context("starting the guardian forker")?;
        Some(Arc::new(f))
    } else {
        None
    };
    let address = Address::parse(&args.socket)?;
    let startup = Arc::new(Context::new(
        ctl::engine(forker),
        args.storage.clone(),
        Arc::new(log_line),
    ));
    // Before the socket exists: a client that sees it can count on the files being watched.
    let selfload = if args.self_load {
        Some(SelfLoad::start(
            startup.clone(),
            Config {
                search: args.search,
            },
        )?)
    } else {
        None
    };
    let mut server = Server::bind(address, args.storage)?;
    if args.verbose {
        println!(
            "libcare-server: listening on {}, storage {}",
            args.socket,
            server.storage().display()
        );
    }
    server
        .serve(&mut Ctl {
            verbose: args.verbose,
            startup,
            selfload,
        })
        .with_context(|| format!("serving {}", args.socket))
}

fn usage_error(msg: &str) -> ExitCode {
    libcare::errln!("err: {msg}");
    libcare::err!("{USAGE}");
    ExitCode::from(FAILURE)
}

fn main() -> ExitCode {
    let mut verbose = false;
    let mut self_load = false;
    let mut search = Vec::new();
    let mut positional = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if !positional.is_empty() || !a.starts_with('-') || a == "-" {
            positional.push(a);
            continue;
        }
        match a.as_str() {
            "-v" => verbose = true,
            "--self-load" => self_load = true,
            "--search" => match it.next() {
                Some(dir) => search.push(PathBuf::from(dir)),
                None => return usage_error("option --search needs a directory"),
            },
            "-h" | "--help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--version" => {
                println!("{}", libcare::version_line("libcare-server"));
                return ExitCode::SUCCESS;
            }
            other => match other.strip_prefix("--search=") {
                Some(dir) => search.push(PathBuf::from(dir)),
                None => return usage_error(&format!("unknown option '{other}'")),
            },
        }
    }
    if !search.is_empty() && !self_load {
        return usage_error("--search only makes sense with --self-load");
    }
    let (socket, storage) = match positional.as_slice() {
        [socket] => (socket.clone(), PathBuf::from(DEFAULT_STORAGE)),
        [socket, storage] => (socket.clone(), PathBuf::from(storage)),
        [] => return usage_error("not enough arguments."),
        _ => return usage_error("too many arguments."),
    };
    let args = Args {
        verbose,
        self_load,
        search,
        socket,
        storage,
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            libcare::errln!("libcare-server: error: {e:#}");
            ExitCode::from(FAILURE)
        }
    }
}
