use thiserror::Error;

/// Why a `kpatch_strip` step refused its input. Messages name the section, symbol or function
/// involved and, where there is one, what to do about it; the caller adds the file name.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error(transparent)]
    Elf(#[from] elf_edit::ElfError),
    #[error("unsupported machine (e_machine {0}): only x86_64 and aarch64 are supported")]
    UnsupportedMachine(u16),
    #[error("the original binary is for e_machine {orig}, the patched one for {patch}")]
    MachineMismatch { orig: u16, patch: u16 },
    #[error("{0}")]
    Input(String),
    #[error("{what} has no {section} section{hint}")]
    MissingSection {
        what: &'static str,
        section: String,
        hint: &'static str,
    },
    #[error("malformed .kpatch.info: {0}")]
    BadInfo(String),
    #[error("{}", too_small(.0, .1))]
    FunctionsTooSmall(Vec<SmallFunction>, usize),
    #[error("{}", mismatches(.0))]
    LayoutMismatch(Vec<String>),
    #[error("relocation {index} of {section} against {symbol}: {reason}")]
    Relocation {
        section: String,
        index: usize,
        symbol: String,
        reason: String,
    },
    #[error("symbol {symbol} (index {index} of .symtab): {reason}")]
    Symbol {
        symbol: String,
        index: usize,
        reason: String,
    },
}

/// A patched function whose original is too short to hold the jump to its replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmallFunction {
    /// The original function's name.
    pub name: String,
    /// Its address in the linked patched binary.
    pub daddr: u64,
    /// Its length in bytes.
    pub dlen: u32,
}

fn too_small(functions: &[SmallFunction], hunk: &usize) -> String {
    let list: Vec<String> = functions
        .iter()
        .map(|f| {
            format!(
                "{} at {:#x} is {} bytes long",
                kpatch_names::plain(&f.name),
                f.daddr,
                f.dlen
            )
        })
        .collect();
    format!(
        "too small function to patch: {}; the {hunk}-byte jump to the new version would overwrite \
         the code after it. Patch the callers instead, or make the function longer.",
        list.join(", ")
    )
}

fn mismatches(list: &[String]) -> String {
    format!(
        "the patched binary's layout differs from the original's in {} symbol(s) (is the \
         original binary the one the patch was built against, with the same compiler and \
         flags?):\n  {}",
        list.len(),
        list.join("\n  ")
    )
}
