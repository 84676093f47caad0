//! `libcare-ctl`: apply, remove and list live patches, with LibcarePlus's command line and
//! output lines.

use std::process::ExitCode;

use kpatch_trust::Requester;
use libcare::ctl::{execute, Caller, StdConsole};
use libcare::ctl_args::parse;
use libcare::trust::TrustArgs;

/// Exit status of every failure (LibcarePlus and libvirt's hotpatch code use 255).
const FAILURE: u8 = 255;

/// Takes the trust options from among the global options (before the command).
fn trust_options(args: &mut Vec<String>) -> Result<TrustArgs, String> {
    let mut trust = TrustArgs::default();
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        match trust.take(args, i)? {
            0 => i += 1,
            used => {
                args.drain(i..i + used);
            }
        }
    }
    Ok(trust)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let trust = match trust_options(&mut args) {
        Ok(t) => t,
        Err(msg) => {
            libcare::errln!("err: {msg}");
            libcare::err!("{}", libcare::ctl_args::USAGE);
            return ExitCode::from(FAILURE);
        }
    };
    match parse(&args) {
        Ok((cmd, verbose)) => {
            let trust = match trust.load("libcare-ctl") {
                Ok(t) => t,
                Err(e) => {
                    libcare::errln!("libcare-ctl: error: {e}");
                    return ExitCode::from(FAILURE);
                }
            };
            let caller = Caller {
                trust: &trust,
                by: Requester::this_process(),
            };
            if execute(&cmd, verbose, caller, &mut StdConsole) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(FAILURE)
            }
        }
        Err(msg) => {
            libcare::errln!("err: {msg}");
            libcare::err!("{}", msg.usage);
            ExitCode::from(FAILURE)
        }
    }
}
