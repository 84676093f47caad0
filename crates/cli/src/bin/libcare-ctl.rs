//! `libcare-ctl`: apply, remove and list live patches, with LibcarePlus's command line and
//! output lines.

use std::process::ExitCode;

use kpatch_patch::{Options, Report, Storage};
use libcare::ctl_args::{parse, Command, Target, USAGE};

/// Exit status of every failure (LibcarePlus and libvirt's hotpatch code use 255).
const FAILURE: u8 = 255;

/// Prints engine progress: steps with `-v`, nothing otherwise.
struct Printer {
    verbose: bool,
}

impl Report for Printer {
    fn info(&mut self, msg: &str) {
        println!("{msg}");
    }
    fn detail(&mut self, msg: &str) {
        if self.verbose {
            println!("{msg}");
        }
    }
}

fn error(msg: impl std::fmt::Display) {
    eprintln!("libcare-ctl: error: {msg}");
}

fn patch_one(pid: i32, storage: &Storage, opts: &Options, out: &mut Printer) -> bool {
    out.detail(&format!(
        "Applying patch for {pid} with {}",
        storage.path().display()
    ));
    match kpatch_patch::patch(pid, storage, opts, out) {
        Ok(o) if o.applied.is_empty() => {
            println!("No patch(es) applicable to PID '{pid}' have been found");
            true
        }
        Ok(o) => {
            if let Some(f) = o.frozen {
                println!(
                    "PID '{pid}' process patch frozen_time is {} microsecond",
                    f.as_micros()
                );
            }
            println!(
                "{} patch hunk(s) have been successfully applied to PID '{pid}'",
                o.applied.len()
            );
            true
        }
        Err(e) => {
            println!("Failed to apply patch '{}'", storage.path().display());
            error(format_args!("pid {pid}: {e}"));
            false
        }
    }
}

fn unpatch_one(
    pid: i32,
    id: Option<&str>,
    targets: &[String],
    opts: &Options,
    out: &mut Printer,
) -> bool {
    out.detail(&format!(
        "Unpplying patch for {pid} with patch id '{}'",
        id.unwrap_or("(all)")
    ));
    match kpatch_patch::unpatch(pid, id, targets, opts, out) {
        Ok(o) if o.removed.is_empty() => {
            println!("No patch(es) cancellable from PID '{pid}' were found");
            true
        }
        Ok(o) => {
            if let Some(f) = o.frozen {
                println!(
                    "PID '{pid}' process unpatch frozen_time is {} microsecond",
                    f.as_micros()
                );
            }
            println!(
                "{} patch hunk(s) were successfully cancelled from PID '{pid}'",
                o.removed.len()
            );
            true
        }
        Err(kpatch_patch::Error::PatchNotFound { id, .. }) => {
            println!("Failed to find target patch with patch_id={id}!");
            println!("Failed to cancel patches for {pid}");
            error(format_args!(
                "pid {pid}: no patch with patch-id {id} is applied"
            ));
            false
        }
        Err(e) => {
            println!("Failed to cancel patches for {pid}");
            error(format_args!("pid {pid}: {e}"));
            false
        }
    }
}

fn info(pid: i32, json: bool) -> bool {
    match kpatch_patch::info(pid) {
        Ok(objects) if json => match serde_json::to_string_pretty(&objects) {
            Ok(s) => {
                println!("{s}");
                true
            }
            Err(e) => {
                error(e);
                false
            }
        },
        Ok(objects) => {
            for o in objects {
                println!("{:<25} {}", "Pid:", o.pid);
                println!("{:<25} {}", "Target:", o.target);
                println!("{:<25} {}", "Build id:", o.build_id);
                println!("{:<25} {}", "Applied patch number:", o.patches.len());
                for p in &o.patches {
                    println!("{:<25} {}", "Patch id:", p.id);
                }
                println!();
            }
            true
        }
        Err(e) => {
            error(format_args!("pid {pid}: {e}"));
            false
        }
    }
}

fn run(cmd: Command, verbose: bool) -> bool {
    let opts = Options::default();
    let mut out = Printer { verbose };
    match cmd {
        Command::Help(text) => {
            print!("{text}");
            true
        }
        Command::Patch { target, path } => {
            let storage = match Storage::open(&path) {
                Ok(s) => s,
                Err(e) => {
                    println!("Failed to apply patch '{}'", path.display());
                    error(e);
                    return false;
                }
            };
            match target {
                Target::Pid(pid) => patch_one(pid, &storage, &opts, &mut out),
                Target::All => match kpatch_patch::select::applicable_pids(&storage) {
                    Ok(pids) => {
                        let mut ok = true;
                        for pid in pids {
                            ok &= patch_one(pid, &storage, &opts, &mut out);
                        }
                        ok
                    }
                    Err(e) => {
                        error(e);
                        false
                    }
                },
            }
        }
        Command::Unpatch {
            target,
            id,
            objects,
        } => match target {
            Target::Pid(pid) => unpatch_one(pid, id.as_deref(), &objects, &opts, &mut out),
            Target::All => match kpatch_patch::select::patched_pids() {
                Ok(pids) => {
                    let mut ok = true;
                    for pid in pids {
                        ok &= unpatch_one(pid, id.as_deref(), &objects, &opts, &mut out);
                    }
                    ok
                }
                Err(e) => {
                    error(e);
                    false
                }
            },
        },
        Command::Info { pid, json } => info(pid, json),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse(&args) {
        Ok((cmd, verbose)) => {
            if run(cmd, verbose) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(FAILURE)
            }
        }
        Err(msg) => {
            eprintln!("err: {msg}");
            eprint!("{USAGE}");
            ExitCode::from(FAILURE)
        }
    }
}
