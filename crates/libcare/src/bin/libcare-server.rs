//! `libcare-server`: LibcarePlus's control-socket daemon. Runs `libcare-ctl` commands sent by
//! `libcare-client` (with the same code as `libcare-ctl`, the text going back to the client),
//! plus `run`, `kill`, `storage`, `update` and `stop`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use kpatch_server::{Access, Address, Handler, Peer, Server, DEFAULT_STORAGE};
use kpatch_trust::{Event, Outcome, Requester};
use libcare::ctl::{self, Caller, Console};
use libcare::ctl_args;
use libcare::server_args::{parse_args, Args, Parsed, USAGE};
use libcare::trust::Trust;

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
    trust: Trust,
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
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
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
}

fn run(args: Args) -> Result<()> {
    let socket = &args.socket;
    let address = Address::parse(socket)?;
    let access = Access::new(args.group.as_deref())?;
    let trust = args.trust.load("libcare-server")?;
    let storage = args
        .storage
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE));
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
