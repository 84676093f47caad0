//! What differs between the GNU assembler dialects gcc emits for each architecture, as data.

use std::fmt;

/// An instruction set whose gcc assembler output we read and write (its assembly dialect;
/// the machine-code facts are `kpatch_arch::Arch`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AsmArch {
    X86_64,
    Aarch64,
}

impl AsmArch {
    /// The architecture of the machine this program runs on, if it is one we know.
    pub fn host() -> Option<AsmArch> {
        if cfg!(target_arch = "x86_64") {
            Some(AsmArch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(AsmArch::Aarch64)
        } else {
            None
        }
    }
}

impl fmt::Display for AsmArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AsmArch::X86_64 => "x86_64",
            AsmArch::Aarch64 => "aarch64",
        })
    }
}

/// Lexical and spelling conventions of one assembler dialect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialect {
    pub arch: AsmArch,
    /// Starts a comment anywhere outside a string (`#` on x86_64, `//` on aarch64).
    pub comment: &'static str,
    /// Start a comment when they are the first non-blank characters of a line (gcc writes
    /// `#APP` and `# 12 "file.c" 1` markers there on every architecture).
    pub line_comments: &'static [&'static str],
    /// Separates statements on one line.
    pub separator: u8,
    /// Prefix of symbol types written in `.type` (`@function` / `%function`).
    pub type_prefix: char,
    /// Prefix of section types written in `.section` (`@progbits`).
    pub section_type_prefix: char,
    /// Whether `$` may appear inside a symbol name (in AT&T syntax it starts an immediate).
    pub dollar_in_names: bool,
    /// Prefix of assembler-local labels, which never reach the symbol table.
    pub local_prefix: &'static str,
}

impl Dialect {
    /// The x86_64 (AT&T syntax) dialect.
    pub fn x86_64() -> Dialect {
        Dialect {
            arch: AsmArch::X86_64,
            comment: "#",
            line_comments: &["#", "/"],
            separator: b';',
            type_prefix: '@',
            section_type_prefix: '@',
            dollar_in_names: false,
            local_prefix: ".L",
        }
    }

    /// The aarch64 dialect: `//` comments, `%function` type markers, `#imm` and
    /// `:lo12:sym` operands.
    pub fn aarch64() -> Dialect {
        Dialect {
            arch: AsmArch::Aarch64,
            comment: "//",
            line_comments: &["#"],
            separator: b';',
            type_prefix: '%',
            section_type_prefix: '@',
            dollar_in_names: true,
            local_prefix: ".L",
        }
    }

    /// The dialect of `arch`.
    pub fn for_arch(arch: AsmArch) -> Dialect {
        match arch {
            AsmArch::X86_64 => Dialect::x86_64(),
            AsmArch::Aarch64 => Dialect::aarch64(),
        }
    }

    /// Guesses the architecture gcc wrote `text` for, from markers only one dialect uses.
    pub fn detect(text: &str) -> Option<AsmArch> {
        for line in text.lines() {
            let t = line.trim_start();
            if t.starts_with(".type") {
                if t.contains("%function") || t.contains("%object") {
                    return Some(AsmArch::Aarch64);
                }
                if t.contains("@function") || t.contains("@object") {
                    return Some(AsmArch::X86_64);
                }
            }
            if t.starts_with(".arch ") && t.contains("armv") {
                return Some(AsmArch::Aarch64);
            }
        }
        None
    }

    /// Whether `name` is a label the compiler made up for its own use, numbered per file, so
    /// that its name means nothing across builds: an assembler-local label (`.L3`, `.LC0`,
    /// clang's `.LBB0_1`) or clang's `GCC_except_table<N>` (an exception table's label).
    pub fn is_local(&self, name: &str) -> bool {
        name.starts_with(self.local_prefix)
            || name
                .strip_prefix("GCC_except_table")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
    }

    /// `.type NAME, @KIND` in this dialect.
    pub fn type_directive(&self, name: &str, kind: &str) -> String {
        format!("\t.type\t{name}, {}{kind}", self.type_prefix)
    }

    /// A `.section`-style argument list for a patch section with `flags`.
    pub fn section_args(&self, name: &str, flags: &str) -> String {
        format!("{name},\"{flags}\",{}progbits", self.section_type_prefix)
    }

    /// The argument list of a patch section with `flags` that belongs to the COMDAT group
    /// `group`.
    pub fn group_section_args(&self, name: &str, flags: &str, group: &str) -> String {
        format!(
            "{name},\"{flags}G\",{}progbits,{group},comdat",
            self.section_type_prefix
        )
    }
}
