//! Turning one installed patched executable into its `.kpatch` file: the peer's sequence
//! `kpatch_strip --strip`, `kpatch_strip --rel-fixup`, `strip --strip-unneeded`,
//! `kpatch_strip --undo-link`, `kpatch_make`. The kpatch steps run in this process, through
//! the libraries the `kpatch_strip` and `kpatch_make` binaries are thin layers over, with the
//! same files between the steps (`<patched>.stripped`, `<patched>.kpatch`), so the result is
//! byte for byte what the binaries make; binutils' `strip` runs as a program. A process per
//! step cost more than the steps themselves.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use elf_edit::{Elf, ElfError};
use kpatch_file::FormatError;
use kpatch_strip::BuildError;

use crate::tools;

/// Why no patch could be made from an executable.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// A file could not be read or written.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A file is not an ELF file the tools can read.
    #[error("{path} is not a usable ELF file: {source}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ElfError,
    },
    /// A `kpatch_strip` step refused the file.
    #[error("kpatch_strip {step} {path}: {source}")]
    Strip {
        /// `--strip`, `--rel-fixup` or `--undo-link`.
        step: &'static str,
        /// The file being processed.
        path: PathBuf,
        /// Why.
        source: BuildError,
    },
    /// `kpatch_make` refused its input.
    #[error("kpatch_make {path}: {source}")]
    Make {
        /// The input.
        path: PathBuf,
        /// Why.
        source: FormatError,
    },
    /// `SOURCE_DATE_EPOCH` is not a number, or the clock is before 1970.
    #[error("{0}")]
    BuildTime(String),
    /// `strip` could not be run.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `strip` failed; its messages precede this one.
    #[error("`{command}` failed ({status})")]
    Failed {
        /// The command line.
        command: String,
        /// Its status.
        status: ExitStatus,
    },
}

/// What to put in the header.
#[derive(Clone, Copy, Debug)]
pub struct Header<'a> {
    /// The build-id of the original executable (or `-b`).
    pub build_id: &'a str,
    /// The patch id (`-i`).
    pub patch_id: &'a str,
    /// A cumulative patch (`--replace`): it replaces every earlier patch of its object.
    pub replace: bool,
    /// The patch-ids of the earlier patches it is built on top of (`--after`).
    pub after: &'a [String],
}

/// Makes `<patched>.kpatch` from the installed `original` and `patched` executables; returns
/// its path. The notes `kpatch_strip --rel-fixup` prints go to `notes`.
pub fn make_kpatch(
    original: &Path,
    patched: &Path,
    header: Header<'_>,
    notes: &mut dyn FnMut(String),
) -> Result<PathBuf, PostError> {
    let stripped = with_suffix(patched, ".stripped");
    let kpatch = with_suffix(patched, ".kpatch");
    let orig = read_elf(original)?;

    // kpatch_strip --strip PATCHED STRIPPED
    let input = read_elf(patched)?;
    let out = kpatch_strip::strip(&input).map_err(strip_error("--strip", patched))?;
    write(&stripped, &kpatch_strip::write_payload(&out))?;

    // kpatch_strip --rel-fixup ORIGINAL STRIPPED (read back, as the tool does)
    let mut patch = read_elf(&stripped)?;
    for note in
        kpatch_strip::rel_fixup(&orig, &mut patch).map_err(strip_error("--rel-fixup", &stripped))?
    {
        notes(note.to_string());
    }
    write(&stripped, &kpatch_strip::write_payload(&patch))?;

    strip_unneeded(&stripped)?;

    // kpatch_strip --undo-link ORIGINAL STRIPPED
    let mut patch = read_elf(&stripped)?;
    kpatch_strip::undo_link(&orig, &mut patch).map_err(strip_error("--undo-link", &stripped))?;
    let mut payload = kpatch_strip::write_payload(&patch);
    write(&stripped, &payload)?;

    // kpatch_make -b BUILD_ID -i ID [--after ID...] [--replace] -o KPATCH STRIPPED
    payload = kpatch_strip::mark_after(&payload, header.after)
        .map_err(strip_error("--after", &stripped))?;
    if header.replace {
        payload =
            kpatch_strip::mark_replace(&payload).map_err(strip_error("--replace", &stripped))?;
    }
    let file = kpatch_file::write_kpatch(header.build_id, header.patch_id, build_time()?, &payload)
        .map_err(|source| PostError::Make {
            path: stripped.clone(),
            source,
        })?;
    write_new(&kpatch, &file)?;
    Ok(kpatch)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn strip_error(step: &'static str, path: &Path) -> impl FnOnce(BuildError) -> PostError {
    let path = path.to_path_buf();
    move |source| PostError::Strip { step, path, source }
}

fn read_elf(path: &Path) -> Result<Elf, PostError> {
    let bytes = fs::read(path).map_err(|source| PostError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    })?;
    elf_edit::parse(&bytes).map_err(|source| PostError::Elf {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces `path` through a temporary file beside it, so a failure never leaves half a file.
fn write(path: &Path, bytes: &[u8]) -> Result<(), PostError> {
    let tmp = with_suffix(path, ".tmp");
    let err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| PostError::Io { what, path, source }
    };
    fs::write(&tmp, bytes).map_err(err("write", &tmp))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err("replace", path)(e)
    })
}

/// Writes the patch as `kpatch_make -o` does: mode 0660 for a new file.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), PostError> {
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o660)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| PostError::Io {
            what: "write",
            path: path.to_path_buf(),
            source,
        })
}

/// `strip --strip-unneeded FILE` with binutils' strip from `PATH`; `STRIP` names the strip of
/// a cross toolchain, as for make (the host's strip does not know other architectures'
/// objects).
fn strip_unneeded(file: &Path) -> Result<(), PostError> {
    let name = std::env::var("STRIP")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "strip".into());
    let program = tools::find_on_path(&name, std::env::var_os("PATH").as_deref(), None)
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(&name));
    let status = Command::new(&program)
        .arg("--strip-unneeded")
        .arg(file)
        .stdin(Stdio::null())
        .status()
        .map_err(|source| PostError::Spawn {
            program: program.clone(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(PostError::Failed {
            command: format!("{} --strip-unneeded {}", program.display(), file.display()),
            status,
        })
    }
}

/// Seconds since the epoch for the header, as `kpatch_make` takes them: `SOURCE_DATE_EPOCH`
/// overrides the clock for reproducible builds.
fn build_time() -> Result<u64, PostError> {
    if let Some(value) = std::env::var_os("SOURCE_DATE_EPOCH") {
        let text = value.to_string_lossy();
        return text.trim().parse().map_err(|_| {
            PostError::BuildTime(format!(
                "SOURCE_DATE_EPOCH is \"{text}\", not a number of seconds"
            ))
        });
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| PostError::BuildTime("the system clock is before 1970".into()))
}
