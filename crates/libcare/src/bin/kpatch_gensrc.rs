//! `kpatch_gensrc`: compares the assembler output of an original and a patched build of one
//! C file and writes the original with the patch added (or, with one input, filters a file).

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser, ValueEnum};
use kpatch_asm::{
    copy_through, debug_filter, gensrc, gensrc_on_earlier, AsmArch, AsmFile, Dialect, Diff,
    DiffOptions, FilterOptions, FunctionFilter, Note, PatchKind, SymbolList,
};
use kpatch_names::plain;

/// Default location of the function filter file.
const DEFAULT_FILTER: &str = "/etc/libcare.conf";
/// Environment variable overriding the function filter file's location.
const FILTER_ENV: &str = "LIBCARE_CONF";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Os {
    Rhel5,
    Rhel6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ArchArg {
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "aarch64")]
    Aarch64,
    #[value(name = "i686")]
    I686,
}

#[derive(Debug, Parser)]
#[command(
    name = "kpatch_gensrc",
    version = libcare::VERSION,
    infer_long_args = true,
    about = "Compare two assembler files and write the original with a live patch added",
    long_about = "Compare the assembler output (gcc -S) of an original and a patched build of \
one C file and write the original file, every line in place, plus the patch: copies of changed \
and new functions in .kpatch.text, new variables and copied literals in .kpatch.data, and one \
.kpatch.info record per patched function.\n\n  \
kpatch_gensrc [--os=rhel6] -i ORIG.s -i PATCHED.s -o OUT.s\n  \
kpatch_gensrc --dbg-filter [--dbg-filter-eh-frame ...] -i IN.s -o OUT.s\n\n\
With one input file the file is copied to the output, filtered when --dbg-filter (or one of \
its --dbg-filter-* refinements) is given.\n\n\
FLIST is a comma-separated list of function names, each optionally prefixed with the source \
file that defines it: [file:]fn,...\n\n\
Function filter: if the file /etc/libcare.conf (or $LIBCARE_CONF, or --filter-config) exists \
and lists any name, only changed functions whose name starts a line of it are patched (lines \
starting with # are comments); new functions are always added. --test-mode disables it, and \
makes a changed function that never returns a warning rather than an error (libcare-ctl then \
refuses the patch while a thread is inside it, as test suites check).\n\n\
The two files may name different source files in their .file lines (foo.c and bar.c): the \
original's name is kept.",
    after_help = "Exit status: 0 on success, 1 on any error (the message names the function, \
variable or line), 2 on a usage error."
)]
struct Cli {
    /// Verbosity, in hex: 1 or more lists patched functions and new variables on stderr.
    #[arg(short = 'd', long = "debug", value_name = "HEXLEVEL")]
    debug: Option<String>,

    /// Accepted for compatibility; the output is the same for both.
    #[arg(short = 'O', long = "os", value_enum)]
    os: Option<Os>,

    /// Assembler dialect of the inputs (default: detected from them, else this machine's).
    /// i686 is not supported.
    #[arg(short = 'a', long = "arch", value_enum)]
    arch: Option<ArchArg>,

    /// Input file: the original, then the patched build (or one file to filter or copy); "-"
    /// is standard input.
    #[arg(short = 'i', long = "input", value_name = "FILE", action = ArgAction::Append)]
    input: Vec<PathBuf>,

    /// The assembly of the same file in the build of an earlier patch, which the process will
    /// run when this one is applied (this patch is applied after it): only what differs from
    /// it goes into the patch, and what it added and is kept as it is stays a reference to
    /// the earlier patch's definition, resolved at run time. The inputs are still the
    /// original (whose addresses the output keeps) and the patched build.
    #[arg(long = "earlier", value_name = "EARLIER.s")]
    earlier: Option<PathBuf>,

    /// Output file ("-" or none: standard output).
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "ouput",
        value_name = "FILE"
    )]
    output: Option<PathBuf>,

    /// Ignore the function filter file; patch a changed function that never returns, with a
    /// warning.
    #[arg(long = "test-mode")]
    test_mode: bool,

    /// Function filter file to use instead of /etc/libcare.conf or $LIBCARE_CONF.
    #[arg(long = "filter-config", value_name = "PATH")]
    filter_config: Option<PathBuf>,

    /// With one input: remove comments, .loc/.file N lines, debug labels and .debug_* sections.
    #[arg(short = 'f', long = "dbg-filter")]
    dbg_filter: bool,

    /// With --dbg-filter: also remove .eh_frame sections written as data.
    #[arg(long = "dbg-filter-eh-frame")]
    dbg_filter_eh_frame: bool,

    /// With --dbg-filter: also remove .gcc_except_table sections (C++ exception tables: the
    /// file's functions then cannot catch exceptions or run cleanups while unwinding).
    #[arg(long = "dbg-filter-gcc-except-table")]
    dbg_filter_gcc_except_table: bool,

    /// With --dbg-filter: also remove .cfi_* directives (no unwind tables).
    #[arg(long = "dbg-filter-cfi")]
    dbg_filter_cfi: bool,

    /// With --dbg-filter: write an empty line for each removed line (keeps line numbers).
    #[arg(long = "dbg-filter-emit-newlines")]
    dbg_filter_emit_newlines: bool,

    /// Never patch these functions, even if they changed (FLIST); for variables: accept a
    /// changed definition and keep using the original one.
    #[arg(long = "ignore-changes", value_name = "FLIST", action = ArgAction::Append)]
    ignore_changes: Vec<String>,

    /// Copy these changed functions into the patch without redirecting the originals to
    /// them (FLIST): only the other patched functions call the copies.
    #[arg(long = "unlink-symbols", value_name = "FLIST", action = ArgAction::Append)]
    unlink_symbols: Vec<String>,

    /// Fail if one of these functions changed and is not marked KPGENSRC_ADAPTED (a
    /// `.kpgensrc_flags KPGENSRC_ADAPTED` line in its body) in the patched source (FLIST).
    #[arg(long = "must-adapt", value_name = "FLIST", action = ArgAction::Append)]
    must_adapt: Vec<String>,

    /// x86_64: in the patch's code, reach variables this file does not define through GOT
    /// slots instead of PC-relatively, so that the patched link adds no copy relocation for a
    /// library variable the original program never used (`stderr`). libcare-cc passes it.
    #[arg(long = "force-gotpcrel")]
    force_gotpcrel: bool,

    /// Make the copies of static functions global symbols too (copies of global functions
    /// always are). Off by default: two files each changing a static function of the same
    /// name would clash at link time.
    #[arg(long = "force-global")]
    force_global: bool,

    /// Append one line per function in the patch to FILE: the source file, the function and
    /// why it is in the patch (new; changed; changed code inlined into it; line moved), separated by
    /// tabs. Not the peer's; libcare-cc passes it when libcare-patch-make asks.
    #[arg(long = "report", value_name = "FILE")]
    report: Option<PathBuf>,

    /// Refuse a changed function whose callers in the file may depend on its old body (the
    /// original compiled with optimisation but without -flive-patching=inline-clone, as its
    /// debugging information records), instead of warning.
    #[arg(long = "strict-ipa")]
    strict_ipa: bool,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        libcare::errln!("kpatch_gensrc: error: {e:#}");
        std::process::exit(1);
    }
}

fn verbosity(cli: &Cli) -> Result<u32> {
    match &cli.debug {
        None => Ok(0),
        Some(v) => {
            let t = v.trim_start_matches("0x");
            u32::from_str_radix(t, 16).with_context(|| format!("-d {v}: not a hex number"))
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let verbose = verbosity(cli)?;
    let texts: Vec<String> = cli
        .input
        .iter()
        .map(|p| {
            // "-" is standard input, as LibcarePlus's test makefiles use it (gcc -S -o - | ...).
            if p == Path::new("-") {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read standard input")?;
                return Ok(text);
            }
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read input file {}", p.display()))
        })
        .collect::<Result<_>>()?;
    let arch = match cli.arch {
        Some(ArchArg::X86_64) => AsmArch::X86_64,
        Some(ArchArg::Aarch64) => AsmArch::Aarch64,
        Some(ArchArg::I686) => bail!("--arch=i686: 32-bit x86 is not supported"),
        None => texts
            .iter()
            .find_map(|t| Dialect::detect(t))
            .or_else(AsmArch::host)
            .context("cannot tell the inputs' architecture; pass --arch")?,
    };
    let dialect = Dialect::for_arch(arch);
    let parse = |i: usize| -> Result<AsmFile> {
        let name = cli.input[i].display().to_string();
        AsmFile::parse(&name, &texts[i], dialect.clone()).map_err(anyhow::Error::from)
    };
    let filter_opts = FilterOptions {
        eh_frame: cli.dbg_filter_eh_frame,
        gcc_except_table: cli.dbg_filter_gcc_except_table,
        cfi: cli.dbg_filter_cfi,
        keep_line_numbers: cli.dbg_filter_emit_newlines,
    };
    let filtering = cli.dbg_filter || filter_opts != FilterOptions::default();
    let text = match cli.input.len() {
        0 => bail!("no input file; give -i FILE (twice to compare two files)"),
        1 if cli.earlier.is_some() => {
            bail!("--earlier needs the original and the patched file (-i twice)")
        }
        1 => {
            let f = parse(0)?;
            if filtering {
                debug_filter(&f, &filter_opts)
            } else {
                copy_through(&f)
            }
        }
        2 => {
            if cli.dbg_filter {
                bail!(
                    "--dbg-filter works on one input file; filter each file on its own, \
                     then compare the filtered files"
                );
            }
            let (orig, patched) = (parse(0)?, parse(1)?);
            let opts = diff_options(cli)?;
            let (text, diff) = match &cli.earlier {
                None => gensrc(&orig, &patched, &opts)?,
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read --earlier {}", path.display()))?;
                    let earlier = AsmFile::parse(&path.display().to_string(), &text, dialect)?;
                    let (text, layered) = gensrc_on_earlier(&orig, &earlier, &patched, &opts)?;
                    if verbose > 0 {
                        for f in &layered.from_earlier {
                            libcare::errln!(
                                "kpatch_gensrc: {} is taken from the earlier patch",
                                f.name
                            );
                        }
                    }
                    (text, layered.diff)
                }
            };
            report(&diff, verbose);
            if let Some(file) = &cli.report {
                append_report(file, orig.source_name().unwrap_or(&orig.name), &diff)?;
            }
            text
        }
        n => bail!("{n} input files given; give one (to filter) or two (to compare)"),
    };
    write_output(cli.output.as_deref(), &text)
}

fn diff_options(cli: &Cli) -> Result<DiffOptions> {
    let list = |values: &[String]| {
        let mut l = SymbolList::default();
        for v in values {
            l.add(v);
        }
        l
    };
    let filter = if cli.test_mode {
        None
    } else {
        let path = cli
            .filter_config
            .clone()
            .or_else(|| std::env::var_os(FILTER_ENV).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FILTER));
        match std::fs::read_to_string(&path) {
            Ok(t) => FunctionFilter::from_text(&t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the function filter file {}", path.display())
                })
            }
        }
    };
    Ok(DiffOptions {
        ignore_changes: list(&cli.ignore_changes),
        must_adapt: list(&cli.must_adapt),
        unlink: list(&cli.unlink_symbols),
        filter,
        force_global: cli.force_global,
        force_gotpcrel: cli.force_gotpcrel,
        keep_never_returning: cli.test_mode,
        strict_ipa: cli.strict_ipa,
    })
}

/// `--report`: one line per function, appended in one write (several compilers may append to
/// the file at once).
fn append_report(file: &Path, source: &str, diff: &Diff) -> Result<()> {
    let mut lines = String::new();
    for f in &diff.functions {
        lines.push_str(&format!("{source}\t{}\t{}\n", f.name, f.why));
    }
    if lines.is_empty() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .with_context(|| format!("cannot append to the report {}", file.display()))
}

/// Tells the user what the patch holds (verbose) and what it leaves out (always).
fn report(diff: &Diff, verbose: u32) {
    if verbose > 0 {
        for f in &diff.functions {
            let what = match f.kind {
                PatchKind::Changed => "patched function",
                PatchKind::New => "new function",
                PatchKind::Unlinked => "unlinked copy of function",
            };
            libcare::errln!(
                "kpatch_gensrc: {what} {} (as {}): {}",
                plain(&f.name),
                f.copy_name,
                f.why
            );
        }
        for v in &diff.new_variables {
            libcare::errln!(
                "kpatch_gensrc: new variable {} (as {})",
                plain(&v.name),
                v.copy_name
            );
        }
    }
    let left_out: Vec<String> = diff
        .notes
        .iter()
        .filter_map(|n| match n {
            Note::Ignored { function, .. } => Some(plain(function)),
            _ => None,
        })
        .collect();
    if diff.is_empty() && !left_out.is_empty() && verbose == 0 {
        libcare::errln!(
            "kpatch_gensrc: warning: the patch is empty: the changed function(s) {} were left \
             out (--ignore-changes or the function filter file; -d 1 says which)",
            left_out.join(", ")
        );
    }
    for n in &diff.notes {
        match n {
            Note::OtherDiffers { line, text } => libcare::errln!(
                "kpatch_gensrc: warning: patched file line {line} (`{text}`) differs from the \
                 original outside any function or variable; it is not part of the patch"
            ),
            Note::Ignored { function, reason } if verbose > 0 => {
                libcare::errln!(
                    "kpatch_gensrc: changed function {} not patched: {reason}",
                    plain(function)
                )
            }
            Note::VariableKept { variable } if verbose > 0 => libcare::errln!(
                "kpatch_gensrc: variable {} changed; the original definition stays \
                 (--ignore-changes)",
                plain(variable)
            ),
            Note::TypeKept { name, change } => libcare::errln!(
                "kpatch_gensrc: warning: type {name} changed layout ({change}); accepted \
                 (--ignore-changes)"
            ),
            Note::NeverReturnsKept { function } => libcare::errln!(
                "kpatch_gensrc: warning: {} changed and never returns; patched anyway \
                 (--test-mode): libcare-ctl will refuse the patch while a thread is inside it",
                plain(function)
            ),
            Note::CallersMayDepend {
                function,
                callers,
                producer,
            } => libcare::errln!(
                "kpatch_gensrc: warning: `{function}` changed, and the original was compiled by \
                 `{producer}` without -flive-patching=inline-clone: its callers {} may depend on \
                 its old body (a const/pure call hoisted or dropped, values kept in registers \
                 across it) and keep doing the old thing; build with libcare-cc, or pass \
                 --strict-ipa to refuse",
                callers.join(", ")
            ),
            Note::LineNumbersOnly { function, shift } if verbose > 0 => libcare::errln!(
                "kpatch_gensrc: function {function} differs only in line numbers (its lines \
                 moved by {shift}): left out of the patch, it keeps printing the old numbers"
            ),
            Note::OnlyNumbersDiffer { function } if verbose > 0 => libcare::errln!(
                "kpatch_gensrc: {} differs only in numbers (a __LINE__ shift?); \
                 --ignore-changes={function} would keep it out of the patch",
                plain(function)
            ),
            _ => {}
        }
    }
}

fn write_output(path: Option<&Path>, text: &str) -> Result<()> {
    match path {
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write to standard output"),
        Some(p) if p == Path::new("-") => std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write to standard output"),
        Some(p) => std::fs::write(p, text)
            .with_context(|| format!("cannot write output file {}", p.display())),
    }
}
