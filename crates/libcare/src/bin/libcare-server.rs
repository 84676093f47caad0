//! `libcare-server`: LibcarePlus's control-socket daemon. Runs `libcare-ctl` commands sent by
//! `libcare-client` (with the same code as `libcare-ctl`, the text going back to the client),
//! plus `run`, `kill`, `storage`, `update`, `stop`, and the start-up requests `execve` and
//! `startup`; with `--self-load`, patches processes at start-up with nothing asked of them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use kpatch_selfload::{Config, Context, SelfLoad};
use kpatch_server::{Access, Address, Handler, Peer, Server, StartupRequest, DEFAULT_STORAGE};
use kpatch_trust::{Event, Outcome, Requester};
use libcare::ctl::{self, Caller, Console};
use libcare::ctl_args;
use libcare::server_args::{parse_args, Args, Parsed, USAGE};
use libcare::trust::{StartupGuard, Trust};

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
    trust: Trust,
    startup: Arc<Context>,
    selfload: Option<SelfLoad>,
}

/// The client as the audit trail names it.
fn requester(peer: &Peer) -> Requester {
    Requester::process(peer.pid, peer.uid)
}

impl Ctl {
    fn caller(&self, peer: &Peer) -> Caller<'_> {
        Caller {
            trust: &self.trust,
            by: requester(peer),
        }
    }

    fn audit(&mut self, event: &Event<'_>) {
        if let Some(warning) = self.trust.record(event) {
            self.log(&format!("warning: {warning}"));
        }
    }
}

fn status(ok: bool) -> u8 {
    if ok {
        0
    } else {
        FAILURE
    }
}

/// How a start-up request that failed ends in the audit trail.
fn outcome_of(e: &kpatch_selfload::Error) -> Outcome {
    if e.is_refusal() {
        Outcome::Refused
    } else {
        Outcome::Failed
    }
}

/// Writes a line to the server's log (its stdout) at once.
fn log_line(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

impl Handler for Ctl {
    fn ctl(&mut self, peer: &Peer, argv: &[String], out: &mut dyn Write) -> u8 {
        let mut client = Client { out };
        match ctl_args::parse(argv) {
            Ok((cmd, verbose)) => status(ctl::execute(
                &cmd,
                verbose || self.verbose,
                self.caller(peer),
                &mut client,
            )),
            Err(e) => {
                client.err(&format!("err: {e}"));
                let _ = client.out.write_all(e.usage.as_bytes());
                FAILURE
            }
        }
    }

    fn update(&mut self, peer: &Peer, storage: &Path, out: &mut dyn Write) -> u8 {
        status(ctl::update(
            storage,
            self.verbose,
            self.caller(peer),
            &mut Client { out },
        ))
    }

    fn log(&mut self, line: &str) {
        if self.verbose {
            log_line(line);
        }
    }

    fn refused(&mut self, peer: &Peer, request: &str, reason: &str) {
        let detail = format!("{reason}; request: {request}");
        self.audit(&Event {
            action: "request",
            outcome: Outcome::Refused,
            by: requester(peer),
            target_pid: None,
            patch_id: None,
            file: None,
            detail: Some(&detail),
        });
    }

    fn served(&mut self, peer: &Peer, argv: &[String], result: Result<(), &str>) {
        let detail = match result {
            Ok(()) => argv.join(" "),
            Err(why) => format!("{}: {why}", argv.join(" ")),
        };
        self.audit(&Event {
            action: argv.first().map(String::as_str).unwrap_or(""),
            outcome: if result.is_ok() {
                Outcome::Done
            } else {
                Outcome::Failed
            },
            by: requester(peer),
            target_pid: None,
            patch_id: None,
            file: None,
            detail: Some(&detail),
        });
    }

    fn startup(
        &mut self,
        peer: &Peer,
        request: StartupRequest,
        storage: &Path,
        conn: &mut dyn Write,
    ) -> u8 {
        self.startup.set_storage(storage.to_owned());
        // What became of the request; the patches applied or refused are recorded by the
        // guard, with the service as their requester.
        let (action, id, result) = match request {
            StartupRequest::Execve { tid } => {
                let result = match kpatch_selfload::serve_execve(&self.startup, tid, conn) {
                    Ok(kpatch_selfload::Outcome::Left(why)) => Err((Outcome::Failed, why)),
                    Ok(_) => Ok(()),
                    Err(e) => {
                        log_line(&format!("execve: thread {tid}: refused: {e}"));
                        Err((outcome_of(&e), e.to_string()))
                    }
                };
                ("execve", tid, result)
            }
            StartupRequest::Startup { pid } => {
                let result = kpatch_selfload::serve_startup(&self.startup, pid, conn)
                    .map_err(|e| (outcome_of(&e), e.to_string()));
                ("startup", pid, result)
            }
        };
        self.audit(&Event {
            action,
            outcome: result.as_ref().map_or_else(|(o, _)| *o, |()| Outcome::Done),
            by: requester(peer),
            target_pid: Some(id),
            patch_id: None,
            file: None,
            detail: result.as_ref().err().map(|(_, why)| why.as_str()),
        });
        status(result.is_ok())
    }

    fn storage_changed(&mut self, storage: &Path) {
        match &self.selfload {
            Some(s) => s.storage_changed(storage),
            None => self.startup.set_storage(storage.to_owned()),
        }
    }
}

fn run(args: Args) -> Result<()> {
    let socket = &args.socket;
    let address = Address::parse(socket)?;
    let access = Access::new(args.group.as_deref())?;
    let trust = args.trust.load("libcare-server")?;
    let storage = args
        .storage
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE));
    // Self-load forks a guardian for every process it patches: from a small helper, forked
    // now, rather than from the server, whose copy grows with the files it has read.
    let forker = if args.self_load {
        let f = kpatch_process::GuardianForker::start().context("starting the guardian forker")?;
        Some(Arc::new(f))
    } else {
        None
    };
    // Start-up patching crosses the same boundary as `patch`: the same checks, the same trail.
    let startup = Arc::new(Context::new(
        ctl::engine(&trust, forker),
        Arc::new(StartupGuard(trust.clone())),
        storage.clone(),
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
    let mut server = Server::bind(address, storage, access)?;
    if args.verbose {
        println!(
            "libcare-server: listening on {socket}, storage {}",
            server.storage().display()
        );
    }
    server
        .serve(&mut Ctl {
            verbose: args.verbose,
            trust,
            startup,
            selfload,
        })
        .with_context(|| format!("serving {socket}"))
}

fn usage_error(msg: &str) -> ExitCode {
    libcare::errln!("err: {msg}");
    libcare::err!("{USAGE}");
    ExitCode::from(FAILURE)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Parsed::Serve(a)) => a,
        Ok(Parsed::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("{}", libcare::version_line("libcare-server"));
            return ExitCode::SUCCESS;
        }
        Err(msg) => return usage_error(&msg),
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            libcare::errln!("libcare-server: error: {e:#}");
            ExitCode::from(FAILURE)
        }
    }
}
