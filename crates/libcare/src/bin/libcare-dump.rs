//! `libcare-dump`: shows the header of a `.kpatch` file (`-H`) or extracts its payload ELF
//! (`-c -o OUT`).

use std::fmt::{self, Write as _};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use kpatch_file::{Header, KpatchFile};
use object::elf::{
    SectionType, SHT_NOBITS, SHT_NULL, SHT_PROGBITS, SHT_RELA, SHT_STRTAB, SHT_SYMTAB,
};

/// Display patch information and dump elf-format patch.
#[derive(Debug, Parser)]
#[command(
    name = "libcare-dump",
    version = libcare::VERSION,
    after_help = "Examples:\n  libcare-dump -H -i <input>\n  libcare-dump -c -i <input> -o <output>"
)]
struct Args {
    /// Display the kpatch header.
    #[arg(short = 'H', long = "header")]
    header: bool,

    /// Convert to ELF: write the patch ELF, without the header, to the -o file.
    #[arg(short = 'c', long = "convert", requires = "output")]
    convert: bool,

    /// Input .kpatch file.
    #[arg(short = 'i', long = "input", value_name = "INPUT")]
    input: PathBuf,

    /// Output ELF file (for -c).
    #[arg(short = 'o', long = "output", value_name = "OUTPUT")]
    output: Option<PathBuf>,

    /// With -H, also show the other header fields, the sections and the info records.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            libcare::errln!("libcare-dump: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if !args.header && !args.convert {
        bail!("nothing to do: give -H to display the header, or -c -o OUTPUT to extract the ELF");
    }
    let bytes = std::fs::read(&args.input)
        .with_context(|| format!("cannot read kpatch file '{}'", args.input.display()))?;
    let invalid = || format!("'{}' is not a valid kpatch file", args.input.display());
    let mut text = String::new();
    if args.header {
        // Show the header of a damaged patch too, before judging the rest: that is what one
        // inspects a patch for.
        let header = Header::from_bytes(&bytes).with_context(invalid)?;
        if header.is_committed() || header.is_pending() {
            describe_header(&mut text, &args.input, header);
        }
    }
    let parsed = KpatchFile::parse(&bytes).with_context(invalid);
    if let (true, Ok(file)) = (args.header && args.verbose, &parsed) {
        describe_details(&mut text, file);
    }
    print(&text)?;
    let file = parsed?;
    if let (true, Some(output)) = (args.convert, &args.output) {
        write_elf(output, file.payload())?;
    }
    Ok(())
}

/// Writes `text` to standard output; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

fn line(out: &mut String, label: &str, value: impl fmt::Display) {
    let _ = writeln!(out, "{label:<25} {value}");
}

fn describe_header(out: &mut String, input: &Path, header: &Header) {
    let magic = header.magic();
    let magic = magic.split(|&b| b == 0).next().unwrap_or_default();
    line(out, "Patch Name:", input.display());
    line(out, "Magic:", magic.escape_ascii());
    line(out, "Patch id:", header.id_bytes().escape_ascii());
    line(out, "buildid:", header.build_id_bytes().escape_ascii());
}

fn describe_details(out: &mut String, file: &KpatchFile<'_>) {
    let header = file.header();
    line(out, "Build time:", header.build_time());
    line(out, "Total size:", header.total_size());
    let csum = match header.csum() {
        0 => "none".to_owned(),
        csum => format!("{csum:#010x} (verified)"),
    };
    line(out, "Checksum:", csum);
    line(out, "ELF machine:", file.elf().machine());
    line(out, "Sections:", file.sections().len());
    for section in file.sections().iter().skip(1) {
        let _ = writeln!(
            out,
            "  [{:>2}] {:<24} {:<8} addr {:#010x} offset {:#08x} size {:#08x}",
            section.index,
            section.name,
            type_name(section.sh_type),
            section.addr,
            section.offset,
            section.size
        );
    }
    line(out, "Info records:", file.info_records().len());
    for (index, record) in file.info_records().iter().enumerate() {
        let kind = if record.is_new_function() {
            "new function"
        } else {
            "replaced function"
        };
        let _ = writeln!(
            out,
            "  [{index:>2}] dlen {:<8} slen {:<8} {kind}",
            record.dlen(),
            record.slen()
        );
    }
}

fn type_name(sh_type: SectionType) -> String {
    match sh_type {
        SHT_NULL => "NULL".into(),
        SHT_PROGBITS => "PROGBITS".into(),
        SHT_SYMTAB => "SYMTAB".into(),
        SHT_STRTAB => "STRTAB".into(),
        SHT_RELA => "RELA".into(),
        SHT_NOBITS => "NOBITS".into(),
        other => format!("{other:#x}"),
    }
}

fn write_elf(path: &Path, elf: &[u8]) -> Result<()> {
    std::fs::write(path, elf)
        .with_context(|| format!("cannot write output file '{}'", path.display()))
}
