//! `libcare-ctl`: apply, remove and list live patches, with LibcarePlus's command line and
//! output lines.

use std::process::ExitCode;

use libcare::ctl::{execute, StdConsole};
use libcare::ctl_args::parse;

/// Exit status of every failure (LibcarePlus and libvirt's hotpatch code use 255).
const FAILURE: u8 = 255;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok((cmd, verbose)) => {
            if execute(&cmd, verbose, &mut StdConsole) {
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
