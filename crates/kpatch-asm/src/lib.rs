//! GNU assembler text as gcc writes it (x86_64 and aarch64 dialects): parse a file into
//! function, variable and other blocks with every statement's section known, compare an
//! original and a patched build of one source file, and write the combined file from which
//! a patch is linked (see docs/internals.md, section 1.1, for the output contract).
//!
//! ```no_run
//! use kpatch_asm::{gensrc, AsmFile, Dialect, DiffOptions};
//! # fn main() -> Result<(), kpatch_asm::AsmError> {
//! let orig = AsmFile::parse("foo.s", &std::fs::read_to_string("foo.s").unwrap(), Dialect::x86_64())?;
//! let patched = AsmFile::parse("bar.s", &std::fs::read_to_string("bar.s").unwrap(), Dialect::x86_64())?;
//! let (text, diff) = gensrc(&orig, &patched, &DiffOptions::default())?;
//! # Ok(()) }
//! ```

mod debug_types;
mod dialect;
mod diff;
mod earlier;
mod emit;
mod error;
mod filter;
mod gotpcrel;
mod index;
mod ipa;
mod lex;
mod line_shift;
mod matching;
mod normalize;
mod parse;
mod section;
mod symlist;
#[cfg(test)]
mod test_asm;
mod unpatchable;
mod why;

pub use dialect::{AsmArch, Dialect};
pub use diff::{diff, Diff, DiffOptions, NewVariable, Note, PatchKind, PatchedFunction};
pub use earlier::{diff_on_earlier, gensrc_on_earlier, FromEarlier, Layered};
pub use emit::{emit, end_of_copy_label, end_of_original_label, name_label};
pub use error::AsmError;
pub use filter::{copy_through, debug_filter, FilterOptions};
pub use index::{is_debug_label, is_hot_cold_label, Binding, Block, BlockKind, Common, DataObject};
pub use matching::{pair_variables, VariablePairs};
pub use parse::{AsmFile, Line, Stmt, StmtId, StmtKind};
pub use section::{SecRef, SectionId, SectionInfo, Sections};
pub use symlist::{human_name, FunctionFilter, SymbolEntry, SymbolList};
pub use why::Why;

/// Compares `orig` with `patched` and writes the combined file: [`diff`] then [`emit`].
pub fn gensrc(
    orig: &AsmFile,
    patched: &AsmFile,
    opts: &DiffOptions,
) -> Result<(String, Diff), AsmError> {
    let d = diff(orig, patched, opts)?;
    let text = emit(orig, patched, &d)?;
    Ok((text, d))
}
