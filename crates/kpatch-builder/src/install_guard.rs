//! Keeping `make install` inside the work tree.
//!
//! A project whose install target ignores `DESTDIR` (redis honours `PREFIX` only) would
//! install both stages over the system's files. So the install steps run in a private mount
//! namespace (`unshare --mount`, private propagation) where every file system is remounted
//! read-only except the work tree, the install trees and the patch root, which are bind-mounted
//! writable: a write anywhere else fails with `EROFS` before anything is overwritten, and the
//! driver, which watches the output for it, refuses and says which option the project needs.
//! Where no mount namespace can be made (not root), the steps run as they are and only the
//! checks after them apply: an install tree left empty is refused, as is a patch holding
//! functions this run did not patch.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

/// The shell script run inside the namespace: bind the writable directories onto themselves,
/// remount everything else read-only, then run the command with its errors on its output.
/// The working directory is entered again by its path: the one inherited still refers to the
/// mount beneath the bind, which is read-only by then, so `make -C build` (relative to it)
/// would fail where the same path written in full succeeds.
const SCRIPT: &str = r#"n=$1; shift
while [ "$n" -gt 0 ]; do mount --bind "$1" "$1" || exit 125; shift; n=$((n-1)); done
while [ "$1" != "--" ]; do mount -o remount,bind,ro "$1" 2>/dev/null; shift; done
shift
cd "$(pwd -P)" || exit 125
exec "$@" 2>&1"#;

/// Whether a private mount namespace can be made here (root, util-linux `unshare`).
pub(crate) fn sandbox_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Decodes the octal escapes of a mountinfo path (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of `mountinfo` to make read-only: all but the kernel's own file systems
/// (`/proc`, `/sys`, `/dev`) and those inside a writable directory.
fn read_only_mounts(mountinfo: &str, writable: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| {
            !["/proc", "/sys", "/dev"].iter().any(|k| m.starts_with(k))
                && !writable.iter().any(|w| m.starts_with(w))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The directories that stay writable, canonical, without those inside another.
fn outermost(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| d.canonicalize().ok())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let all = c.clone();
    c.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
    c
}

/// `program args` as a command that can write only under `writable` (see the module
/// documentation), or unchanged when no mount namespace can be made. Its standard error goes
/// to its standard output.
pub(crate) fn confined(program: &str, args: &[String], writable: &[PathBuf]) -> Command {
    if !sandbox_available() {
        let mut c = Command::new(program);
        c.args(args);
        return c;
    }
    let keep = outermost(writable);
    let ro = read_only_mounts(
        &fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
        &keep,
    );
    let mut c = Command::new("unshare");
    c.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        SCRIPT,
        "sh",
    ]);
    c.arg(keep.len().to_string()).args(&keep);
    c.args(&ro).arg("--").arg(program).args(args);
    c
}

/// What a watched command did.
pub(crate) struct Watched {
    pub status: ExitStatus,
    /// Its output lines that report a read-only file system: writes outside the work tree.
    pub outside: Vec<String>,
}

/// Runs `cmd` with its output (standard error included) copied to our standard output,
/// collecting the lines that report a write to a read-only file system.
pub(crate) fn run_watched(cmd: &mut Command) -> io::Result<Watched> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let err = child.stderr.take();
    // The unconfined command keeps a separate standard error: copied as it comes.
    let err_thread = err.map(|e| {
        std::thread::spawn(move || {
            let mut found = Vec::new();
            for line in BufReader::new(e).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if line.contains("Read-only file system") {
                    found.push(line);
                }
            }
            found
        })
    });
    let mut outside = Vec::new();
    if let Some(out) = child.stdout.take() {
        let stdout = io::stdout();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = writeln!(stdout.lock(), "{line}");
            if line.contains("Read-only file system") {
                outside.push(line);
            }
        }
    }
    if let Some(t) = err_thread {
        outside.extend(t.join().unwrap_or_default());
    }
    Ok(Watched {
        status: child.wait()?,
        outside,
    })
}

/// Whether `dir` holds no file (directories do not count).
pub(crate) fn holds_no_file(dir: &Path) -> bool {
    fn any_file(dir: &Path) -> bool {
        let Ok(rd) = fs::read_dir(dir) else {
            return false;
        };
        rd.filter_map(Result::ok).any(|e| match e.file_type() {
            Ok(t) if t.is_dir() => any_file(&e.path()),
            Ok(_) => true,
            Err(_) => false,
        })
    }
    !any_file(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_left_writable_and_escapes() {
        let info = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    23 22 0:5 / /proc rw - proc proc rw\n\
                    24 22 0:6 / /dev/pts rw - devpts devpts rw\n\
                    25 22 0:7 / /tmp rw - tmpfs tmpfs rw\n\
                    26 25 0:8 / /tmp/w/sub rw - tmpfs tmpfs rw\n\
                    27 22 0:9 / /mnt/my\\040disk rw - ext4 /dev/sdb rw\n";
        let w = [PathBuf::from("/tmp/w")];
        assert_eq!(
            read_only_mounts(info, &w),
            ["/", "/mnt/my disk", "/tmp"].map(PathBuf::from)
        );
    }

    #[test]
    fn the_working_directory_is_writable_by_relative_paths() {
        if !sandbox_available() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("build")).unwrap();
        let mut cmd = confined(
            "sh",
            &[
                "-c".into(),
                "echo x > build/log && echo x > ../outside".into(),
            ],
            &[d.path().to_path_buf()],
        );
        cmd.current_dir(d.path());
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(d.path().join("build/log").is_file(), "{text}");
        assert!(text.contains("Read-only file system"), "{text}");
        assert!(!d.path().join("../outside").exists());
    }

    #[test]
    fn nested_writable_directories_are_bound_once() {
        let d = tempfile::tempdir().unwrap();
        let inner = d.path().join("lpmake");
        fs::create_dir_all(&inner).unwrap();
        let got = outermost(&[inner.clone(), d.path().to_path_buf(), inner]);
        assert_eq!(got, [d.path().canonicalize().unwrap()]);
        assert!(holds_no_file(d.path()));
        fs::write(d.path().join("lpmake/x"), "").unwrap();
        assert!(!holds_no_file(d.path()));
    }
}
