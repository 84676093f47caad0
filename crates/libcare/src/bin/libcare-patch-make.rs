//! `libcare-patch-make`: makes `.kpatch` files for the make-based project in the current
//! directory (see `kpatch_builder::patch_make`).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use kpatch_builder::patch_make::{self, Event, Options, PatchId, Paths};
use kpatch_trust::{sign, SigningKey};

/// Makes `kpatch'es for the make system in the current directory.
///
/// Run from inside the directory with make-able software; its Makefile must build C with
/// $(CC) (or cc/gcc) and support `make install` with a destination directory variable.
#[derive(Parser)]
#[command(name = "libcare-patch-make", version = libcare::VERSION, infer_long_args = true)]
struct Args {
    /// Do a clean build: `make clean` first, and remove the install trees.
    #[arg(short, long, conflicts_with = "update")]
    clean: bool,
    /// Only remake the patches from the existing install trees, without building.
    #[arg(short, long)]
    update: bool,
    /// Directory the patches apply to (default: the current directory).
    #[arg(short, long, value_name = "SRCDIR")]
    srcdir: Option<PathBuf>,
    /// Make variable the Makefile uses for the installation root.
    #[arg(short, long, value_name = "DESTDIRVAR", default_value = "DESTDIR")]
    destdir: String,
    /// Patch id, unique per process (1 to 7 characters).
    #[arg(short, long, value_name = "PATCH-ID")]
    id: Option<String>,
    /// Build-id written into the patches instead of the original binary's.
    #[arg(short, long, value_name = "BUILD-ID")]
    buildid: Option<String>,
    /// Number of make jobs (`make -j N`).
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    jobs: Option<u32>,
    /// Say which line numbers were kept and what kpatch_gensrc patches and leaves out.
    #[arg(short, long)]
    verbose: bool,
    /// Refuse, rather than warn about, a changed function whose callers may depend on its old
    /// body (the original was compiled without -flive-patching=inline-clone).
    #[arg(long)]
    strict_ipa: bool,
    /// Build without the live-patching options libcare-cc adds (-flive-patching=inline-clone),
    /// to rebuild exactly a binary that was built without them.
    #[arg(long)]
    no_live_patching_flags: bool,
    /// Make cumulative patches: each replaces, when applied, every earlier patch of its object
    /// (their functions not changed again go back to the original) in one stop.
    #[arg(long, conflicts_with = "after")]
    replace: bool,
    /// Build on top of the earlier patch ID, made from the patch file PATCH, that the process
    /// runs: PATCH is applied first (the PATCH arguments are then changes to the sources as it
    /// leaves them), what it added is taken from it at run time, and the new patches are
    /// applied only after it and keep it from being removed first. Repeat for several
    /// earlier patches, in the order they were made.
    #[arg(long, value_name = "ID=PATCH", value_parser = parse_after)]
    after: Vec<(PatchId, PathBuf)>,
    /// Sign the patches with this OpenSSH Ed25519 private key (see kpatch_make --sign).
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
    /// Patch files (unified diffs), applied in order.
    #[arg(value_name = "PATCH")]
    patches: Vec<PathBuf>,
}

/// `ID=PATCH`.
fn parse_after(value: &str) -> Result<(PatchId, PathBuf), String> {
    let (id, patch) = value
        .split_once('=')
        .filter(|(_, p)| !p.is_empty())
        .ok_or_else(|| {
            "expected ID=PATCH: the earlier patch's id and its patch file".to_string()
        })?;
    let id =
        PatchId::new(id).map_err(|_| format!("{id:?} is not a patch id (1 to 7 characters)"))?;
    Ok((id, PathBuf::from(patch)))
}

struct Colors {
    green: &'static str,
    red: &'static str,
    reset: &'static str,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(id) = args.id.as_deref().and_then(|i| PatchId::new(i).ok()) else {
        libcare::errln!("Invalid patch-id!");
        libcare::errln!("Give an id of 1 to 7 characters with -i/--id (see --help).");
        return ExitCode::FAILURE;
    };
    match run(args, id) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            libcare::errln!("libcare-patch-make: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping causes whose text the message already includes (our
/// library errors spell out their causes).
fn describe(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn run(args: Args, id: PatchId) -> anyhow::Result<()> {
    if args.patches.is_empty() && !args.update {
        anyhow::bail!("no patch file given (see --help)");
    }
    let key = args.sign.as_deref().map(SigningKey::load).transpose()?;
    let workdir = std::env::current_dir().context("cannot read the current directory")?;
    let tools_dir = match std::env::var_os("KPATCH_PATH").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .context("cannot locate the running executable")?
            .parent()
            .map(PathBuf::from)
            .context("the running executable has no directory")?,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let paths = Paths::new(&workdir, args.srcdir.as_deref(), &tools_dir, &env);
    let opts = Options {
        clean: args.clean,
        update: args.update,
        destdir_var: args.destdir,
        id,
        build_id: args.buildid,
        jobs: args.jobs,
        replace: args.replace,
        after: args.after,
        patches: args.patches,
        verbose: args.verbose,
        strict_ipa: args.strict_ipa,
        no_live_patching_flags: args.no_live_patching_flags,
    };
    let c = if std::io::stdout().is_terminal() {
        Colors {
            green: "\x1b[32m",
            red: "\x1b[31m",
            reset: "\x1b[0m",
        }
    } else {
        Colors {
            green: "",
            red: "",
            reset: "",
        }
    };
    let interrupted =
        patch_make::install_interrupt_flag().context("cannot install signal handlers")?;
    let mut print = |ev: Event<'_>| match ev {
        Event::Stage(line) => println!("{}{line}{}", c.green, c.reset),
        Event::Applying(p) => println!("{}applying {}...{}", c.red, p.display(), c.reset),
        Event::PatchOutput(text) => print!("{text}"),
        // The relocations kpatch_strip fixed up say little to a user; what the patch
        // replaces does.
        Event::Note(_) => {}
        Event::Detail(line) => println!("{line}"),
        Event::Functions(entries) => {
            for e in entries {
                let verb = if e.new { "adds" } else { "replaces" };
                println!("  {verb} {}: {}", kpatch_names::plain(&e.function), e.why);
            }
        }
        Event::LeftoversRestored(files) => {
            for f in files {
                libcare::errln!(
                    "libcare-patch-make: restored {} from a backup left by an earlier run",
                    f.display()
                );
            }
        }
        Event::Warning(w) => libcare::errln!("libcare-patch-make: warning: {w}"),
        Event::PatchWritten { original, patch } => {
            println!("patch for {} is in {}", original.display(), patch.display())
        }
    };
    let made = patch_make::run(&opts, &paths, &interrupted, &mut print)?;
    if let Some(key) = &key {
        for m in &made {
            sign_in_place(&m.patch, key)?;
            println!(
                "{} is signed with key {}",
                m.patch.display(),
                key.public_key().fingerprint(Default::default())
            );
        }
    }
    Ok(())
}

/// Appends the signature to a patch, replacing the file in one rename.
fn sign_in_place(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let signed = sign(&bytes, key).with_context(|| format!("cannot sign {}", path.display()))?;
    let tmp = path.with_extension("kpatch.signing");
    std::fs::write(&tmp, signed)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}
