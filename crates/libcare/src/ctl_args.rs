//! `libcare-ctl`'s command line, parsed the way LibcarePlus's getopt loop does (global options
//! before the command, then the command's own), with usage errors reported instead of ignored.

use std::path::PathBuf;

/// Which processes a command applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(i32),
    /// Every process (but pid 1 and ourselves) to which the command applies.
    All,
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `-h` anywhere: print this text and succeed.
    Help(&'static str),
    /// `--version` before the command: print the version and git commit.
    Version,
    Patch {
        target: Target,
        path: PathBuf,
    },
    Unpatch {
        target: Target,
        id: Option<String>,
        objects: Vec<String>,
    },
    Info {
        pid: i32,
        json: bool,
    },
}

/// Top-level usage.
pub const USAGE: &str = "usage: libcare-ctl [options] <cmd> [args]

Options:
  -v          - verbose mode
  -h          - this message
  --version   - print the version and the git commit
  --keys DIR        - patches must be signed by a key of DIR (*.pub; default
                      $LIBCARE_KEYS, else /etc/libcare/keys; no keys: no signature needed)
  --no-strict-modes - as root, also trust patch files and scripts other users could write
  --audit-log FILE  - audit lines to FILE ($LIBCARE_AUDIT_LOG) instead of the system log

Commands:
  patch  - apply patch to a user-space process
  unpatch- unapply patch from a user-space process
  info   - show info on applied patches
";

const PATCH_USAGE: &str = "usage: libcare-ctl patch [options] <-p PID> <patch>

Options:
  -h          - this message
  -p <PID>    - target process, or 'all' for every process a patch applies to
  <patch>     - a .kpatch file, or a directory of <build-id>.kpatch files or
                <build-id>/latest/kpatch.bin trees (optional before/after scripts)
";

const UNPATCH_USAGE: &str =
    "usage: libcare-ctl unpatch [options] <-p PID> [-i patch_id] [buildid|objname...]

Options:
  -h               - this message
  -p <PID>         - target process, or 'all'
  -i <patch_id>    - the patch to remove (default: every patch, newest first)
  buildid|objname  - only patches of these objects
";

const INFO_USAGE: &str = "usage: libcare-ctl info -p PID [--json]

Options:
  -h          - this message
  -p <PID>    - target process
  --json      - machine-readable output
";

fn pid(s: &str) -> Result<i32, String> {
    s.parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("invalid pid '{s}'"))
}

fn target(s: &str) -> Result<Target, String> {
    if s == "all" {
        Ok(Target::All)
    } else {
        pid(s).map(Target::Pid)
    }
}

/// Splits `-p123`, `-p 123` and `--opt=value` forms: returns (option, attached value).
fn split(arg: &str) -> (&str, Option<&str>) {
    if let Some(long) = arg.strip_prefix("--") {
        return match long.split_once('=') {
            Some((k, v)) => (&arg[..2 + k.len()], Some(v)),
            None => (arg, None),
        };
    }
    if let Some(letter) = arg.strip_prefix('-').and_then(|rest| rest.chars().next()) {
        // The option is `-` and one character, however many bytes that character takes.
        let end = 1 + letter.len_utf8();
        if arg.len() > end {
            return (&arg[..end], Some(&arg[end..]));
        }
    }
    (arg, None)
}

/// A command line that cannot be run: what is wrong, and the usage text to show with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    pub msg: String,
    pub usage: &'static str,
}

impl UsageError {
    fn new(msg: impl Into<String>, usage: &'static str) -> UsageError {
        UsageError {
            msg: msg.into(),
            usage,
        }
    }
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Parses everything after the program name; returns the command and the verbose flag.
pub fn parse(args: &[String]) -> Result<(Command, bool), UsageError> {
    let mut verbose = false;
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-v" => verbose = true,
            "-h" | "--help" => return Ok((Command::Help(USAGE), verbose)),
            "--version" => return Ok((Command::Version, verbose)),
            s if s.starts_with('-') => {
                return Err(UsageError::new(format!("unknown option '{s}'"), USAGE))
            }
            _ => break,
        }
        i += 1;
    }
    let Some(cmd) = args.get(i) else {
        return Err(UsageError::new("not enough arguments.", USAGE));
    };
    let usage = match cmd.as_str() {
        "patch" | "patch-user" => PATCH_USAGE,
        "unpatch" | "unpatch-user" => UNPATCH_USAGE,
        "info" | "info-user" => INFO_USAGE,
        other => return Err(UsageError::new(format!("unknown command '{other}'"), USAGE)),
    };
    parse_command(cmd, usage, &args[i + 1..], verbose).map_err(|msg| UsageError::new(msg, usage))
}

/// Parses a command's own options (`usage` tells which command it is).
fn parse_command(
    cmd: &str,
    usage: &'static str,
    rest: &[String],
    mut verbose: bool,
) -> Result<(Command, bool), String> {
    let mut p: Option<String> = None;
    let mut id: Option<String> = None;
    let mut json = false;
    let mut positional = Vec::new();
    let mut j = 0;
    while let Some(a) = rest.get(j) {
        j += 1;
        if !a.starts_with('-') || a == "-" {
            positional.push(a.clone());
            continue;
        }
        let (opt, attached) = split(a);
        let mut value = |name: &str| -> Result<String, String> {
            if let Some(v) = attached {
                return Ok(v.to_owned());
            }
            let v = rest
                .get(j)
                .cloned()
                .ok_or_else(|| format!("option {name} needs a value"))?;
            j += 1;
            Ok(v)
        };
        match opt {
            "-h" | "--help" => return Ok((Command::Help(usage), verbose)),
            "-v" => verbose = true,
            "-p" | "--pid" => p = Some(value("-p")?),
            "-i" | "--id" if usage == UNPATCH_USAGE => id = Some(value("-i")?),
            "--json" if usage == INFO_USAGE => json = true,
            other => return Err(format!("unknown option '{other}' for {cmd}")),
        }
    }
    let Some(p) = p else {
        return Err(format!("{cmd}: PID argument is mandatory (-p PID)"));
    };
    let command = match usage {
        PATCH_USAGE => {
            let [path] = positional.as_slice() else {
                return Err(format!(
                    "{cmd}: exactly one patch file or directory is needed"
                ));
            };
            Command::Patch {
                target: target(&p)?,
                path: PathBuf::from(path),
            }
        }
        UNPATCH_USAGE => Command::Unpatch {
            target: target(&p)?,
            id,
            objects: positional,
        },
        _ => {
            if let Some(extra) = positional.first() {
                return Err(format!("info: unexpected argument '{extra}'"));
            }
            Command::Info {
                pid: pid(&p)?,
                json,
            }
        }
    };
    Ok((command, verbose))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<(Command, bool), UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn the_guides_forms_parse() {
        assert_eq!(
            p(&["-v", "patch", "-p", "10999", "./foo.kpatch"]).unwrap(),
            (
                Command::Patch {
                    target: Target::Pid(10999),
                    path: "./foo.kpatch".into()
                },
                true
            )
        );
        assert_eq!(
            p(&["info", "-p", "551763"]).unwrap().0,
            Command::Info {
                pid: 551763,
                json: false
            }
        );
        assert_eq!(
            p(&["unpatch", "-p", "7"]).unwrap().0,
            Command::Unpatch {
                target: Target::Pid(7),
                id: None,
                objects: vec![]
            }
        );
        assert_eq!(
            p(&["unpatch-user", "-p7", "-i", "0001", "foo"]).unwrap().0,
            Command::Unpatch {
                target: Target::Pid(7),
                id: Some("0001".into()),
                objects: vec!["foo".into()]
            }
        );
        assert_eq!(
            p(&["patch-user", "-p", "all", "dir"]).unwrap().0,
            Command::Patch {
                target: Target::All,
                path: "dir".into()
            }
        );
        assert_eq!(
            p(&["info", "--json", "-p", "3"]).unwrap().0,
            Command::Info { pid: 3, json: true }
        );
        assert_eq!(
            p(&["info-user", "-p", "3"]).unwrap().0,
            Command::Info {
                pid: 3,
                json: false
            }
        );
    }

    #[test]
    fn usage_errors_are_errors() {
        assert!(p(&[]).is_err());
        assert!(p(&["-x", "info"]).is_err());
        assert!(p(&["bogus"]).is_err());
        assert!(p(&["patch", "file"]).is_err());
        assert!(p(&["patch", "-p", "1"]).is_err());
        assert!(p(&["patch", "-p", "x", "f"]).is_err());
        assert!(p(&["info", "-p", "all"]).is_err());
        assert!(p(&["info"]).is_err());
        assert!(p(&["unpatch", "-p", "3", "-i"]).is_err());
        assert!(p(&["patch", "-p", "3", "-i", "1", "f"]).is_err());
        assert!(matches!(p(&["-h"]).unwrap().0, Command::Help(_)));
        assert!(matches!(p(&["patch", "-h"]).unwrap().0, Command::Help(_)));
        assert_eq!(p(&["--version"]).unwrap().0, Command::Version);
        assert_eq!(p(&["info"]).unwrap_err().usage, INFO_USAGE);
        assert_eq!(p(&["bogus"]).unwrap_err().usage, USAGE);
        // An option letter of several bytes (found by fuzzing: the split cut it in two).
        let e = p(&["patch", "-\u{e9}1", "f"]).unwrap_err();
        assert!(e.msg.contains("-\u{e9}"), "{e}");
        assert!(p(&["patch", "-\u{e9}", "f"]).is_err());
    }
}
