//! The debug filter (`kpatch_gensrc --dbg-filter`): one file in, the same file out without
//! debugging information, so that builds compare and assemble without it.

use std::fmt::Write as _;

use crate::index::{is_debug_directive, is_debug_label, is_hot_cold_label};
use std::collections::HashSet;

use crate::lex::{tokenize, TokKind};
use crate::parse::{AsmFile, Stmt, StmtKind};
use crate::section::{SecRef, Tracker};

/// What the debug filter removes besides comments, `.loc`, `.file N` lines, debug labels
/// and `.debug_*` sections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterOptions {
    /// Remove `.eh_frame` sections written out as data.
    pub eh_frame: bool,
    /// Remove `.gcc_except_table` sections (C++ exception tables: code that throws through
    /// a filtered file then cannot run its handlers).
    pub gcc_except_table: bool,
    /// Remove `.cfi_*` directives (no unwind tables for the file).
    pub cfi: bool,
    /// Write an empty line for each removed line, so line numbers stay the same.
    pub keep_line_numbers: bool,
}

/// The filtered text of `file`.
///
/// The output's section state is followed as the assembler will see it; whenever a kept
/// statement would land in another section than in the input (because a removed switch,
/// `.previous` or `.popsection` decided it), an explicit `.section` is written before it.
pub fn debug_filter(file: &AsmFile, opts: &FilterOptions) -> String {
    let dropped = |s: &Stmt| {
        let sec = file.section_of(s);
        sec.is_debug()
            || (opts.eh_frame && sec.name == ".eh_frame")
            || (opts.gcc_except_table && sec.name == ".gcc_except_table")
            || is_debug_directive(s)
            || (opts.cfi && s.kind == StmtKind::Directive && s.name.starts_with(".cfi_"))
    };
    // Debug labels go unless code or data that stays refers to them (C++ exception tables
    // measure call sites from `.LFB<n>`).
    let mut used = HashSet::new();
    for s in file.lines.iter().flat_map(|l| &l.stmts) {
        if s.kind != StmtKind::Label && !dropped(s) {
            for t in tokenize(&s.text, &file.dialect) {
                if t.kind == TokKind::Ident {
                    used.insert(t.text);
                }
            }
        }
    }
    let mut out = String::new();
    let mut state = Tracker::new();
    for line in &file.lines {
        let mut kept = Vec::new();
        let mut changed = false;
        for s in &line.stmts {
            let drop = dropped(s)
                || (s.kind == StmtKind::Label
                    && (is_debug_label(&s.name) || is_hot_cold_label(&s.name))
                    && !used.contains(s.name.as_str()));
            if drop {
                changed = true;
                continue;
            }
            if s.is_section_switch() {
                // A switch the output's state cannot follow (a `.popsection` whose
                // `.pushsection` went with a debug section) is left out; the explicit
                // `.section` below keeps the following statements in place.
                if state.apply(&s.name, &s.args).is_ok() {
                    kept.push(format!("\t{}", s.text));
                } else {
                    changed = true;
                }
                continue;
            }
            let want = file.sections.get(s.section.id);
            let have = state.current();
            if state.sections.get(have.id).name != want.name || have.sub != s.section.sub {
                changed = true;
                let (args, sub) = explicit_section(file, s.section);
                // Arguments come from a section the input declared, so they parse.
                let _ = state.apply(".section", &args);
                kept.push(format!("\t.section\t{args}"));
                if sub != 0 {
                    let _ = state.apply(".subsection", &sub.to_string());
                    kept.push(format!("\t.subsection\t{sub}"));
                }
            }
            kept.push(if s.kind == StmtKind::Label {
                s.text.clone()
            } else {
                format!("\t{}", s.text)
            });
        }
        if kept.is_empty() {
            let blank = line.stmts.is_empty() && line.text.trim().is_empty();
            if opts.keep_line_numbers || blank {
                out.push('\n');
            }
            continue;
        }
        if !changed {
            let _ = writeln!(out, "{}", line.text);
        } else {
            let _ = writeln!(out, "{}", kept.join("\n"));
        }
    }
    out
}

/// Arguments of a `.section` directive selecting `at` again, and its subsection. The name
/// is enough: the input declared the section, with its flags, before using it.
fn explicit_section(file: &AsmFile, at: SecRef) -> (String, i64) {
    (file.sections.get(at.id).name.clone(), at.sub)
}

/// The text of `file` as it must be assembled: `.kpgensrc_flags` markers (which only
/// kpatch_gensrc understands) commented out, everything else unchanged.
pub fn copy_through(file: &AsmFile) -> String {
    crate::emit::emit_unchanged(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    fn filter(text: &str, opts: FilterOptions) -> String {
        debug_filter(
            &AsmFile::parse("t.s", text, Dialect::x86_64()).unwrap(),
            &opts,
        )
    }

    const DBG: &str = "\t.file\t\"a.c\"\n\t.text\n.Ltext0:\n\t.file 0 \"/tmp\" \"a.c\"\n\t.globl\tf\n\t.type\tf, @function\nf:\n.LFB0:\n\t.file 1 \"a.c\"\n\t.loc 1 2 1 view -0\n\t.cfi_startproc\n.LVL0:\n\tret\n\t.cfi_endproc\n.LFE0:\n\t.size\tf, .-f\n.Letext0:\n\t.section\t.debug_info,\"\",@progbits\n.Ldebug_info0:\n\t.long\t0x4a\n\t.section\t.debug_line,\"\",@progbits\n.Ldebug_line0:\n\t.section\t.note.GNU-stack,\"\",@progbits\n";

    #[test]
    fn removes_debug_information_only() {
        let out = filter(DBG, FilterOptions::default());
        assert_eq!(
            out,
            "\t.file\t\"a.c\"\n\t.text\n\t.globl\tf\n\t.type\tf, @function\nf:\n\t.cfi_startproc\n\tret\n\t.cfi_endproc\n\t.size\tf, .-f\n\t.section\t.note.GNU-stack,\"\",@progbits\n"
        );
    }

    #[test]
    fn options_remove_cfi_and_keep_line_numbers() {
        let out = filter(
            DBG,
            FilterOptions {
                cfi: true,
                keep_line_numbers: true,
                ..Default::default()
            },
        );
        assert!(!out.contains(".cfi_"));
        assert_eq!(out.lines().count(), DBG.lines().count());
    }

    #[test]
    fn statements_stay_in_their_sections_when_switches_go() {
        // The push into a debug section goes; the pop still returns to .data for `x`.
        let text = "\t.data\n\t.pushsection\t.debug_x,\"\",@progbits\n\t.long 1\n\t.popsection\nx:\n\t.long 2\n\t.section\t.debug_y,\"\",@progbits\n\t.previous\ny:\n\t.long 3\n";
        let out = filter(text, FilterOptions::default());
        let f = AsmFile::parse("o.s", &out, Dialect::x86_64()).unwrap();
        for name in ["x", "y"] {
            let s = f.stmt(f.label(name).unwrap()).unwrap();
            assert_eq!(f.section_of(s).name, ".data", "{name} in {out}");
        }
        assert!(!out.contains("debug"));
    }

    #[test]
    fn exception_tables_go_on_request() {
        let text = "\t.text\nf:\n\tret\n\t.section\t.gcc_except_table,\"a\",@progbits\n.LLSDA0:\n\t.byte\t0xff\n\t.text\n\t.size\tf, .-f\n";
        let out = filter(
            text,
            FilterOptions {
                gcc_except_table: true,
                ..Default::default()
            },
        );
        assert!(!out.contains("LLSDA") && !out.contains("0xff"), "{out}");
        assert!(filter(text, FilterOptions::default()).contains("LLSDA"));
    }

    #[test]
    fn debug_labels_that_stay_referenced_are_kept() {
        let text = "\t.text\nf:\n.LFB0:\n\tnop\n.LEHB0:\n\tcall\tg\n.LEHE0:\n\tret\n.LFE0:\n\t.section\t.gcc_except_table,\"a\",@progbits\n\t.uleb128 .LEHB0-.LFB0\n\t.text\n";
        let out = filter(text, FilterOptions::default());
        assert!(out.contains(".LFB0:"), "{out}");
        assert!(!out.contains(".LFE0:"), "{out}");
    }
}
