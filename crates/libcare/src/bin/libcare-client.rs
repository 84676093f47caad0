//! `libcare-client`: sends one command to `libcare-server` and prints its reply. Exits with
//! the command's status (as `libcare-ctl` would), or 1 when the server cannot be reached.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use kpatch_server::address::DEFAULT_SOCKET;
use kpatch_server::{encode_request, Address, Reply};

const USAGE: &str = "usage: libcare-client [/SOCKET|@NAME] COMMAND [ARG]...

Arguments:
  /SOCKET|@NAME         the server's socket (default /var/run/libcare.sock, where
                        libcare.socket listens); @NAME for an abstract one

Commands:
  patch, unpatch, info  a libcare-ctl command and its options (see libcare-ctl)
  run CMD               run sh -c CMD on the server; prints the pid
  kill PID              kill a process that run started
  storage DIR           the storage update applies from now on
  update                patch -p all from the storage
  stop                  stop the server

Options:
  -h                    this message
  --version             print the version and the git commit
";

/// Sends the request and copies the reply to stdout; returns the command's status.
fn run(address: &Address, args: &[String]) -> Result<u8> {
    let request = encode_request(args, true)?;
    let mut sock = address.connect()?;
    // A server that refuses us replies and closes without reading: the request may then
    // not go out, and the reply says why.
    let sent = sock.write_all(&request);
    if let Err(e) = &sent {
        if !matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ) {
            return Err(sent.unwrap_err())
                .with_context(|| format!("sending the request to {address}"));
        }
    }
    let mut got_reply = false;
    let mut reply = Reply::default();
    let mut buf = [0u8; 4096];
    let mut stdout = std::io::stdout().lock();
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A server that refused us closes without reading what we sent: the reset comes
            // after its reply.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e).with_context(|| format!("reading the reply from {address}")),
        };
        got_reply = true;
        let text = reply.feed(buf.get(..n).unwrap_or(&[]));
        stdout.write_all(text).context("writing the reply")?;
        stdout.flush().context("writing the reply")?;
    }
    if let (Err(e), false) = (sent, got_reply) {
        return Err(e).with_context(|| format!("sending the request to {address}"));
    }
    // A LibcarePlus server sends no status: nothing went wrong that we can see.
    Ok(reply.status().unwrap_or(0))
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let explicit = args
        .first()
        .is_some_and(|a| a.starts_with('/') || a.starts_with('@'));
    let socket = if explicit {
        args.remove(0)
    } else {
        DEFAULT_SOCKET.to_owned()
    };
    if args.first().is_some_and(|a| a == "--version") {
        println!("{}", libcare::version_line("libcare-client"));
        return ExitCode::SUCCESS;
    }
    if args.is_empty() || args.first().is_some_and(|a| a == "-h" || a == "--help") {
        let help = !args.is_empty();
        if help {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        libcare::errln!("err: not enough arguments.");
        libcare::err!("{USAGE}");
        return ExitCode::FAILURE;
    }
    let address = match Address::parse(&socket) {
        Ok(a) => a,
        Err(e) => {
            libcare::errln!("libcare-client: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&address, &args) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            libcare::errln!("libcare-client: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
