//! `libcare-server`'s command line.

use std::path::PathBuf;

use crate::trust::TrustArgs;

/// The usage text.
pub const USAGE: &str = "usage: libcare-server [-v] [OPTIONS] <UNIX socket> [STORAGE ROOT]

Arguments:
  <UNIX socket>      a path, @NAME for an abstract socket, or &FD for an inherited
                     listening socket (libcare.service passes systemd's socket as &3)
  STORAGE ROOT       patches for the update command (default /var/lib/libcare)

Options:
  -v                 print each request and its status
  -h                 this message
  --version          print the version and the git commit
  --group GROUP      also serve the members of GROUP
  --keys DIR         patches must be signed by a key of DIR (*.pub; default
                     $LIBCARE_KEYS, else /etc/libcare/keys; no keys: no signature needed)
  --no-strict-modes  as root, also trust patch files and scripts other users could write
  --audit-log FILE   audit lines to FILE ($LIBCARE_AUDIT_LOG) instead of the system log

Clients are served when they run as root, as the server's user, or (with
--group) as a member of GROUP; run, kill and stop are root's alone. A path
socket is made with mode 0600 (0660 and group GROUP with --group); an abstract
socket has no file permissions, only that check; an inherited socket has the
mode its creator gave it (libcare.socket: SocketMode=, SocketGroup=).
";

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Serve, with these arguments.
    Serve(Args),
    /// `-h`, `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The command line after the program name.
#[derive(Debug, Default)]
pub struct Args {
    pub verbose: bool,
    pub group: Option<String>,
    pub trust: TrustArgs,
    pub socket: String,
    pub storage: Option<PathBuf>,
}

/// Parses everything after the program name.
pub fn parse_args(argv: &[String]) -> Result<Parsed, String> {
    let mut args = Args::default();
    let mut positional = Vec::new();
    let mut i = 0;
    while let Some(a) = argv.get(i) {
        if !positional.is_empty() || !a.starts_with('-') || a == "-" {
            positional.push(a.clone());
            i += 1;
            continue;
        }
        let used = args.trust.take(argv, i)?;
        if used > 0 {
            i += used;
            continue;
        }
        match a.as_str() {
            "-v" => args.verbose = true,
            "-h" | "--help" => return Ok(Parsed::Help),
            "--version" => return Ok(Parsed::Version),
            "--group" => {
                i += 1;
                let g = argv.get(i).filter(|g| !g.is_empty());
                args.group = Some(g.ok_or("option --group needs a value")?.clone());
            }
            other => match other.strip_prefix("--group=") {
                Some(g) if !g.is_empty() => args.group = Some(g.to_owned()),
                _ => return Err(format!("unknown option '{other}'")),
            },
        }
        i += 1;
    }
    match positional.as_slice() {
        [socket] => args.socket = socket.clone(),
        [socket, storage] => {
            args.socket = socket.clone();
            args.storage = Some(storage.into());
        }
        [] => return Err("not enough arguments.".into()),
        _ => return Err("too many arguments.".into()),
    }
    Ok(Parsed::Serve(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Parsed, String> {
        parse_args(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options_come_before_the_socket() {
        let a = p(&[
            "-v",
            "--group",
            "wheel",
            "--keys=/k",
            "--no-strict-modes",
            "@s",
            "/st",
        ])
        .unwrap();
        let Parsed::Serve(a) = a else { panic!("{a:?}") };
        assert!(a.verbose);
        assert_eq!(a.group.as_deref(), Some("wheel"));
        assert_eq!(a.trust.keys, Some("/k".into()));
        assert!(a.trust.no_strict_modes);
        assert_eq!(a.socket, "@s");
        assert_eq!(a.storage, Some("/st".into()));
        assert!(matches!(p(&["-h"]), Ok(Parsed::Help)));
        assert!(matches!(p(&["-v", "--version", "@s"]), Ok(Parsed::Version)));
        for bad in [
            &[][..],
            &["--group"],
            &["--keys"],
            &["-x", "s"],
            &["a", "b", "c"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }
}
