//! `kpatch_make`: puts the `.kpatch` header in front of a patch ELF (the output of
//! `kpatch_strip --undo-link`), making the file `libcare-ctl patch` applies.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use kpatch_file::{write_kpatch, KpatchFile};
use kpatch_trust::{sign, SigningKey};

/// Make a .kpatch file: the header (magic, patch id, target build-id, build time), then the
/// patch ELF padded to 16 bytes.
#[derive(Debug, Parser)]
#[command(name = "kpatch_make", version = libcare::VERSION)]
struct Args {
    /// Print what is written to standard error.
    #[arg(short = 'd', long = "debug")]
    debug: bool,

    /// Build-id of the object to patch: 40 hex digits, the "Build ID" of `readelf -n`.
    #[arg(short = 'b', long = "buildid", value_name = "BUILDID")]
    build_id: String,

    /// Patch id: 1 to 7 printable characters, unique among the patches of one object.
    #[arg(short = 'i', long = "id", value_name = "ID")]
    patch_id: String,

    /// Make a cumulative patch: applied, it replaces every earlier patch of its object in one
    /// stop (their functions not changed again go back to the original), and their unpatch
    /// callbacks do not run. Marked by a `.kpatch.replace` section, which LibcarePlus ignores.
    #[arg(long)]
    replace: bool,

    /// The patch is built on top of patch ID of the same object (kpatch_gensrc --earlier): it
    /// is applied only after it, takes what it added from it, and keeps it from being removed
    /// first. Recorded in a `.kpatch.depends` section, which LibcarePlus ignores. May be given
    /// several times.
    #[arg(long = "after", value_name = "ID")]
    after: Vec<String>,

    /// Sign the patch with this OpenSSH Ed25519 private key (`ssh-keygen -t ed25519`): an
    /// `ssh-keygen -Y sign -n libcare` signature of the file, appended after its contents.
    #[arg(long = "sign", value_name = "KEY")]
    sign: Option<PathBuf>,

    /// Output file [default: standard output].
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    output: Option<PathBuf>,

    /// The patch ELF (ET_REL with a .kpatch.info section).
    #[arg(value_name = "ELF")]
    input: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            libcare::errln!("kpatch_make: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    // The key is read first: a key that cannot sign stops the run before any output.
    let key = args.sign.as_deref().map(SigningKey::load).transpose()?;
    let mut elf = std::fs::read(&args.input)
        .with_context(|| format!("cannot read input file '{}'", args.input.display()))?;
    for id in &args.after {
        kpatch_file::validate_patch_id(id).with_context(|| format!("--after {id}"))?;
        if *id == args.patch_id {
            bail!("--after {id}: a patch cannot be applied after itself");
        }
    }
    elf = kpatch_strip::mark_after(&elf, &args.after)
        .with_context(|| format!("cannot make a patch from '{}'", args.input.display()))?;
    if args.replace {
        let needs = kpatch_strip::depends_of(&elf)?.patches;
        if !needs.is_empty() {
            bail!(
                "--replace: a cumulative patch replaces every earlier patch of its object, so it cannot be built on top of one (--after {})",
                needs.join(", ")
            );
        }
        elf = kpatch_strip::mark_replace(&elf)
            .with_context(|| format!("cannot mark '{}' as cumulative", args.input.display()))?;
    }
    let build_time = build_time()?;
    let file = write_kpatch(&args.build_id, &args.patch_id, build_time, &elf)
        .with_context(|| format!("cannot make a patch from '{}'", args.input.display()))?;
    let file = match &key {
        Some(key) => sign(&file, key)?,
        None => file,
    };
    match &args.output {
        Some(path) => write_file(path, &file)?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&file)
                .and_then(|()| stdout.flush())
                .context("cannot write the patch to standard output")?;
        }
    }
    if args.debug {
        describe(args, &file)?;
    }
    Ok(())
}

/// Seconds since the epoch; `SOURCE_DATE_EPOCH` overrides the clock for reproducible builds.
fn build_time() -> Result<u64> {
    if let Some(value) = std::env::var_os("SOURCE_DATE_EPOCH") {
        let text = value.to_string_lossy();
        return text
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH is \"{text}\", not a number of seconds"));
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs())
        .context("the system clock is before 1970")
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o660)
        .open(path)
        .with_context(|| format!("cannot create output file '{}'", path.display()))?;
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .with_context(|| format!("cannot write output file '{}'", path.display()))
}

fn describe(args: &Args, file: &[u8]) -> Result<()> {
    let parsed = KpatchFile::parse(file).context("the file just made does not parse back")?;
    let header = parsed.header();
    let output = args
        .output
        .as_ref()
        .map_or_else(|| "<stdout>".to_owned(), |p| p.display().to_string());
    libcare::errln!(
        "kpatch_make: {} -> {output}: {} bytes, patch id {}, build-id {}, build_time {}, \
         csum {:#010x}",
        args.input.display(),
        header.total_size(),
        parsed.patch_id(),
        parsed.build_id(),
        header.build_time(),
        header.csum(),
    );
    libcare::errln!(
        "kpatch_make: {} sections, {} patched functions in .kpatch.info",
        parsed.sections().len(),
        parsed.info_records().len()
    );
    let signature = file.len() - header.total_size() as usize;
    if signature > 0 {
        libcare::errln!("kpatch_make: signed: {signature} bytes of signature after the contents");
    }
    Ok(())
}
