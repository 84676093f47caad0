//! `kpatch_strip`: post-processing of the linked patched binary (docs/internals.md 1.3).
//!
//! ```text
//! kpatch_strip -s|--strip IN OUT
//! kpatch_strip -r|--rel-fixup ORIG PATCH     (PATCH is rewritten in place)
//! kpatch_strip -u|--undo-link ORIG PATCH     (PATCH is rewritten in place)
//! ```

use anyhow::{Context, Result};
use clap::{ArgGroup, Parser};
use elf_edit::Elf;
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "kpatch_strip",
    version = libcare::VERSION,
    about = "Turn a patched binary linked with -Wl,-q into the payload of a .kpatch file",
    group(ArgGroup::new("mode").required(true).multiple(false).args(["strip", "rel_fixup", "undo_link"]))
)]
struct Args {
    /// Keep only the patch sections of IN (others become placeholders) and write OUT.
    #[arg(short = 's', long = "strip")]
    strip: bool,
    /// Make PATCH's relocations resolvable against the original binary ORIG (in place).
    #[arg(short = 'r', long = "rel-fixup")]
    rel_fixup: bool,
    /// Make PATCH's symbols and relocations section-relative, with ORIG's section addresses.
    #[arg(short = 'u', long = "undo-link")]
    undo_link: bool,
    /// IN for --strip, ORIG otherwise.
    #[arg(value_name = "IN|ORIG")]
    first: PathBuf,
    /// OUT for --strip, PATCH (rewritten in place) otherwise.
    #[arg(value_name = "OUT|PATCH")]
    second: PathBuf,
}

fn read_elf(path: &Path, role: &str) -> Result<Elf> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read {role} {}", path.display()))?;
    elf_edit::parse(&bytes)
        .with_context(|| format!("{role} {} is not a usable ELF file", path.display()))
}

/// Replaces `path` with `bytes` through a temporary file, so a failure never leaves half a file.
fn write_in_place(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .context("the output path has no file name")?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".kpatch_strip.tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        // Best effort: the content matters, the mode only for convenience.
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot replace {}", path.display())
    })
}

fn run(args: &Args) -> Result<()> {
    let (first, second) = (&args.first, &args.second);
    if args.strip {
        let input = read_elf(first, "IN")?;
        let out =
            kpatch_strip::strip(&input).with_context(|| format!("--strip {}", first.display()))?;
        std::fs::write(second, kpatch_strip::write_payload(&out))
            .with_context(|| format!("cannot write {}", second.display()))?;
    } else if args.rel_fixup {
        let orig = read_elf(first, "ORIG")?;
        let mut patch = read_elf(second, "PATCH")?;
        let notes = kpatch_strip::rel_fixup(&orig, &mut patch)
            .with_context(|| format!("--rel-fixup {} {}", first.display(), second.display()))?;
        for note in notes {
            println!("{note}");
        }
        write_in_place(second, &kpatch_strip::write_payload(&patch))?;
    } else {
        let orig = read_elf(first, "ORIG")?;
        let mut patch = read_elf(second, "PATCH")?;
        kpatch_strip::undo_link(&orig, &mut patch)
            .with_context(|| format!("--undo-link {} {}", first.display(), second.display()))?;
        write_in_place(second, &kpatch_strip::write_payload(&patch))?;
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        libcare::errln!("kpatch_strip: error: {e:#}");
        std::process::exit(1);
    }
}
