//! Reading an assembler file into lines of statements, each statement knowing its section.

use crate::dialect::Dialect;
use crate::error::AsmError;
use crate::index::Index;
use crate::lex::{split_args, split_statements, tokenize, TokKind};
use crate::section::{is_section_directive, SecRef, SectionInfo, Sections, Tracker};

/// What a statement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StmtKind {
    /// `name:`
    Label,
    /// `.name args`
    Directive,
    /// `mnemonic operands`
    Instruction,
    /// `name = expr`, `.set name, expr`, `.equ name, expr`
    Assign,
}

/// One statement of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub kind: StmtKind,
    /// The label or assigned symbol, the directive (lowercase, with its dot) or the mnemonic.
    pub name: String,
    /// Operands, directive arguments, or the assigned expression.
    pub args: String,
    /// The statement as written (comments removed).
    pub text: String,
    /// The section the statement assembles into (for a section directive: the one it selects).
    pub section: SecRef,
}

impl Stmt {
    /// Whether this is the directive `d`.
    pub fn is_directive(&self, d: &str) -> bool {
        self.kind == StmtKind::Directive && self.name == d
    }

    /// Whether this statement changes the current section.
    pub fn is_section_switch(&self) -> bool {
        self.kind == StmtKind::Directive && is_section_directive(&self.name)
    }

    /// The directive's arguments split at top-level commas.
    pub fn arg_list(&self) -> Vec<&str> {
        split_args(&self.args)
    }
}

/// A line of the file: its exact text and its statements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub stmts: Vec<Stmt>,
}

/// Position of a statement: line index (0-based) and index within the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StmtId {
    pub line: usize,
    pub idx: usize,
}

/// A parsed assembler file.
#[derive(Debug, Clone)]
pub struct AsmFile {
    /// The name used in messages (the path it was read from).
    pub name: String,
    pub dialect: Dialect,
    pub lines: Vec<Line>,
    pub sections: Sections,
    trailing_newline: bool,
    pub(crate) index: Index,
}

impl AsmFile {
    /// Parses `text`, written by gcc for `dialect`; `name` is used in messages.
    pub fn parse(name: &str, text: &str, dialect: Dialect) -> Result<AsmFile, AsmError> {
        let mut tracker = Tracker::new();
        let mut in_comment = false;
        let mut lines = Vec::new();
        let trailing_newline = text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        let raw_lines: Vec<&str> = if text.is_empty() {
            Vec::new()
        } else {
            body.split('\n').collect()
        };
        for (n, raw) in raw_lines.iter().enumerate() {
            let mut stmts = Vec::new();
            for seg in split_statements(raw, &dialect, &mut in_comment) {
                parse_segment(&seg, &dialect, &mut tracker, &mut stmts).map_err(|msg| {
                    AsmError::Parse {
                        file: name.to_string(),
                        line: n + 1,
                        msg,
                    }
                })?;
            }
            lines.push(Line {
                text: raw.to_string(),
                stmts,
            });
        }
        let mut file = AsmFile {
            name: name.to_string(),
            dialect,
            lines,
            sections: tracker.sections,
            trailing_newline,
            index: Index::default(),
        };
        file.index = Index::build(&file)?;
        Ok(file)
    }

    /// The statement at `id`, if it exists.
    pub fn stmt(&self, id: StmtId) -> Option<&Stmt> {
        self.lines.get(id.line)?.stmts.get(id.idx)
    }

    /// The section a statement's bytes go to.
    pub fn section_of(&self, s: &Stmt) -> &SectionInfo {
        self.sections.get(s.section.id)
    }

    /// Statements of lines `range`, with their positions.
    pub fn stmts_in(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (StmtId, &Stmt)> + '_ {
        let start = range.start.min(self.lines.len());
        let end = range.end.min(self.lines.len());
        self.lines[start..end]
            .iter()
            .enumerate()
            .flat_map(move |(i, l)| {
                l.stmts.iter().enumerate().map(move |(idx, s)| {
                    (
                        StmtId {
                            line: start + i,
                            idx,
                        },
                        s,
                    )
                })
            })
    }

    /// Every statement after `id`, in file order.
    pub(crate) fn stmts_after(&self, id: StmtId) -> impl Iterator<Item = (StmtId, &Stmt)> + '_ {
        self.stmts_in(id.line..self.lines.len())
            .filter(move |(sid, _)| *sid > id)
    }

    /// The file's text, unchanged.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(&l.text);
        }
        if self.trailing_newline {
            out.push('\n');
        }
        out
    }

    /// Whether the original text ended with a newline.
    pub(crate) fn ends_with_newline(&self) -> bool {
        self.trailing_newline
    }

    /// The source file name of the `.file "name"` directive, if any.
    pub fn source_name(&self) -> Option<&str> {
        self.lines.iter().flat_map(|l| &l.stmts).find_map(|s| {
            let a = s.args.trim();
            (s.is_directive(".file") && a.starts_with('"'))
                .then(|| crate::lex::unquote(a.split(',').next().unwrap_or(a).trim()))
        })
    }
}

/// Parses one statement text (possibly preceded by labels) into `out`.
fn parse_segment(
    seg: &str,
    d: &Dialect,
    tracker: &mut Tracker,
    out: &mut Vec<Stmt>,
) -> Result<(), String> {
    let mut rest = seg.trim();
    // Labels first: `name:` possibly followed by a statement on the same line.
    loop {
        let toks = tokenize(rest, d);
        let is_label = matches!(
            toks.as_slice(),
            [first, colon, ..] if matches!(first.kind, TokKind::Ident | TokKind::Number | TokKind::Str)
                && colon.text == ":"
                && toks.get(2).is_none_or(|t| t.text != ":")
        );
        if !is_label {
            break;
        }
        let name = toks[0].text;
        let len = name.len() + 1;
        out.push(Stmt {
            kind: StmtKind::Label,
            name: name.to_string(),
            args: String::new(),
            text: format!("{name}:"),
            section: tracker.current(),
        });
        rest = rest[len..].trim_start();
        if rest.is_empty() {
            return Ok(());
        }
    }
    let (word, args) = match rest.find(|c: char| c.is_ascii_whitespace()) {
        Some(p) => (&rest[..p], rest[p..].trim()),
        None => (rest, ""),
    };
    // `name = expr`, but not `==`.
    if let Some(eq) = assignment_split(rest, d) {
        out.push(Stmt {
            kind: StmtKind::Assign,
            name: rest[..eq].trim().to_string(),
            args: rest[eq + 1..].trim().to_string(),
            text: rest.to_string(),
            section: tracker.current(),
        });
        return Ok(());
    }
    if word.starts_with('.') {
        let lname = word.to_ascii_lowercase();
        if matches!(lname.as_str(), ".set" | ".equ" | ".equiv" | ".eqv") {
            let a = split_args(args);
            if let [sym, expr, ..] = a.as_slice() {
                out.push(Stmt {
                    kind: StmtKind::Assign,
                    name: sym.to_string(),
                    args: expr.to_string(),
                    text: rest.to_string(),
                    section: tracker.current(),
                });
                return Ok(());
            }
        }
        if is_section_directive(&lname) {
            tracker.apply(&lname, args)?;
        }
        out.push(Stmt {
            kind: StmtKind::Directive,
            name: lname,
            args: args.to_string(),
            text: rest.to_string(),
            section: tracker.current(),
        });
    } else {
        out.push(Stmt {
            kind: StmtKind::Instruction,
            name: word.to_string(),
            args: args.to_string(),
            text: rest.to_string(),
            section: tracker.current(),
        });
    }
    Ok(())
}

/// Byte index of the `=` of `name = expr`, if `s` is such an assignment.
fn assignment_split(s: &str, d: &Dialect) -> Option<usize> {
    let toks = tokenize(s, d);
    let mut it = toks.iter().filter(|t| t.kind != TokKind::Space);
    let first = it.next()?;
    let eq = it.next()?;
    let after = it.next();
    if first.kind != TokKind::Ident || eq.text != "=" || after.is_some_and(|t| t.text == "=") {
        return None;
    }
    let off = first.text.as_ptr() as usize - s.as_ptr() as usize;
    let skip = s[off + first.text.len()..].find('=')?;
    Some(off + first.text.len() + skip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AsmFile {
        AsmFile::parse("t.s", text, Dialect::x86_64()).unwrap()
    }

    #[test]
    fn statements_and_kinds() {
        let f = parse("foo:\tret\n1: .long 1b\n\tx = 3\n\t.set y, x+1\n.L2:\n\tmovl $1, %eax\n");
        let kinds: Vec<_> = f
            .lines
            .iter()
            .flat_map(|l| l.stmts.iter().map(|s| (s.kind, s.name.as_str())))
            .collect();
        assert_eq!(
            kinds,
            [
                (StmtKind::Label, "foo"),
                (StmtKind::Instruction, "ret"),
                (StmtKind::Label, "1"),
                (StmtKind::Directive, ".long"),
                (StmtKind::Assign, "x"),
                (StmtKind::Assign, "y"),
                (StmtKind::Label, ".L2"),
                (StmtKind::Instruction, "movl"),
            ]
        );
        assert_eq!(
            f.text(),
            "foo:\tret\n1: .long 1b\n\tx = 3\n\t.set y, x+1\n.L2:\n\tmovl $1, %eax\n"
        );
    }

    #[test]
    fn every_statement_knows_its_section() {
        let f = parse(
            "\t.text\nf:\n\tnop\n\t.pushsection .note.x,\"a\"; .long 1; .popsection\n\tret\n\t.section .rodata\n.LC0:\n\t.string \"x\"\n",
        );
        let sec = |line: usize, idx: usize| {
            let s = f.stmt(StmtId { line, idx }).unwrap();
            f.section_of(s).name.clone()
        };
        assert_eq!(sec(2, 0), ".text");
        assert_eq!(sec(3, 1), ".note.x");
        assert_eq!(sec(4, 0), ".text");
        assert_eq!(sec(7, 0), ".rodata");
    }

    #[test]
    fn unbalanced_popsection_names_the_line() {
        let e = AsmFile::parse("x.s", "\tnop\n\t.popsection\n", Dialect::x86_64()).unwrap_err();
        assert!(e.to_string().contains("x.s:2"), "{e}");
    }

    #[test]
    fn aarch64_operands_are_not_labels() {
        let f = AsmFile::parse(
            "a.s",
            "\tadrp\tx0, .LC0\n\tadd\tx0, x0, :lo12:.LC0\n\tldr\tw1, [x0, #:lo12:counter]\n",
            Dialect::aarch64(),
        )
        .unwrap();
        assert!(f
            .lines
            .iter()
            .flat_map(|l| &l.stmts)
            .all(|s| s.kind == StmtKind::Instruction));
    }

    #[test]
    fn source_name_and_empty_file() {
        assert_eq!(parse("\t.file\t\"foo.c\"\n").source_name(), Some("foo.c"));
        let e = parse("");
        assert!(e.lines.is_empty());
        assert_eq!(e.text(), "");
    }
}
