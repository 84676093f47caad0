//! Why a changed function differs between the builds, for the user who must judge the patch:
//! its own code changed, code inlined into it changed, or only its line numbers moved (a
//! `__LINE__` it uses). Read from the `.loc` lines gcc writes with `-g`: the first difference
//! is attributed to the source line of the patched build's statement there.

use std::collections::HashMap;
use std::fmt;

use crate::index::Block;
use crate::lex::unquote;
use crate::parse::{AsmFile, StmtId};

/// Why a function is in the patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It exists only in the patched build.
    New,
    /// Its own code differs (or no line information says otherwise).
    Changed,
    /// The first difference is in code from another place, inlined into it: `from` is the
    /// source `file:line` of that code in the patched build.
    Inlined { from: String },
    /// Only numbers differ, each by as much as the function's first line moved: line numbers
    /// (`__LINE__`, `assert`).
    LineMoved { by: i64 },
    /// Only numbers differ, and no line information says they are line numbers.
    NumbersDiffer,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::New => write!(f, "new"),
            Why::Changed => write!(f, "changed"),
            Why::Inlined { from } => write!(f, "changed code inlined into it, from {from}"),
            Why::LineMoved { by } => write!(f, "line moved ({by:+}; it uses __LINE__)"),
            Why::NumbersDiffer => write!(f, "only numbers differ"),
        }
    }
}

/// A source position from `.loc`: (file number, line).
type Loc = (u64, i64);

/// The `.loc` in effect at each statement of `block`, and the block's first one.
struct Lines {
    at: HashMap<StmtId, Loc>,
    entry: Option<Loc>,
}

fn lines(file: &AsmFile, block: &Block) -> Lines {
    let mut at = HashMap::new();
    let mut cur = None;
    let mut entry = None;
    for (id, s) in file.stmts_in(block.lines.clone()) {
        if s.is_directive(".loc") {
            let mut a = s.args.split_whitespace().map(str::parse::<i64>);
            if let (Some(Ok(f)), Some(Ok(l))) = (a.next(), a.next()) {
                cur = Some((f as u64, l));
                entry = entry.or(cur);
            }
        }
        if let Some(c) = cur {
            at.insert(id, c);
        }
    }
    Lines { at, entry }
}

/// The names of the `.file N "name"` (or `.file N "dir" "name"`) directives.
fn file_names(file: &AsmFile) -> HashMap<u64, String> {
    let mut names = HashMap::new();
    for s in file.lines.iter().flat_map(|l| &l.stmts) {
        if !s.is_directive(".file") {
            continue;
        }
        let mut words = s.args.split_whitespace();
        let Some(Ok(n)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        if let Some(name) = s.args.rsplit('"').nth(1) {
            names.insert(n, unquote(name).to_string());
        }
    }
    names
}

/// The digit runs of a normalized statement, as numbers.
fn numbers(s: &str) -> Vec<i64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap_or(i64::MAX))
        .collect()
}

/// Why the changed function with blocks `ob` (original) and `pb` (patched) differs, their
/// normal forms being `a` and `c` (with the patched statements' ids).
pub(crate) fn why(
    orig: &AsmFile,
    ob: &Block,
    patched: &AsmFile,
    pb: &Block,
    a: &[String],
    c: &[(String, StmtId)],
) -> Why {
    let (lo, lp) = (lines(orig, ob), lines(patched, pb));
    let moved = match (lo.entry, lp.entry) {
        (Some((_, x)), Some((_, y))) => y - x,
        _ => 0,
    };
    let same_shape = a.len() == c.len()
        && a.iter().zip(c).all(|(x, (y, _))| {
            let (nx, ny) = (numbers(x), numbers(y));
            let strip = |s: &str| s.replace(|ch: char| ch.is_ascii_digit(), "");
            nx.len() == ny.len() && strip(x) == strip(y)
        });
    if same_shape {
        let line_shift = moved != 0
            && a.iter().zip(c).all(|(x, (y, _))| {
                numbers(x)
                    .iter()
                    .zip(numbers(y))
                    .all(|(p, q)| *p == q || q - p == moved)
            });
        return if line_shift {
            Why::LineMoved { by: moved }
        } else {
            Why::NumbersDiffer
        };
    }
    let Some((fno, entry)) = lp.entry else {
        return Why::Changed;
    };
    let first = a
        .iter()
        .zip(c)
        .position(|(x, (y, _))| x != y)
        .unwrap_or(a.len().min(c.len()));
    let Some((_, id)) = c.get(first.min(c.len().saturating_sub(1))) else {
        return Why::Changed;
    };
    match lp.at.get(id) {
        Some(&(f, l)) if f != fno || l < entry => {
            let name = file_names(patched)
                .remove(&f)
                .unwrap_or_else(|| format!("file {f}"));
            Why::Inlined {
                from: format!("{name}:{l}"),
            }
        }
        _ => Why::Changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;
    use crate::diff::{diff, DiffOptions};

    /// A file defining `f` at line `at`, its body `body` (lines of `.loc`s and instructions).
    fn file(at: i64, body: &str) -> AsmFile {
        let text = format!(
            "\t.file\t\"a.c\"\n\t.text\n\t.file 1 \"a.c\"\n\t.file 2 \"a.h\"\n\t.globl\tf\n\t.type\tf, @function\nf:\n\t.loc 1 {at} 1\n{body}\tret\n\t.size\tf, .-f\n"
        );
        AsmFile::parse("a.s", &text, Dialect::x86_64()).unwrap()
    }

    fn why_of(o: &AsmFile, p: &AsmFile) -> Why {
        let d = diff(o, p, &DiffOptions::default()).unwrap();
        assert_eq!(d.functions.len(), 1);
        d.functions[0].why.clone()
    }

    #[test]
    fn own_code() {
        let o = file(10, "\t.loc 1 11 3\n\taddl\t%esi, %eax\n");
        let p = file(10, "\t.loc 1 11 3\n\tsubl\t%esi, %eax\n");
        assert_eq!(why_of(&o, &p), Why::Changed);
    }

    #[test]
    fn code_of_another_file_or_an_earlier_line_is_inlined() {
        let o = file(10, "\t.loc 2 3 3\n\taddl\t%esi, %eax\n");
        let p = file(10, "\t.loc 2 3 3\n\tsubl\t%esi, %eax\n");
        assert_eq!(
            why_of(&o, &p),
            Why::Inlined {
                from: "a.h:3".into()
            }
        );
        let o = file(10, "\t.loc 1 4 3\n\taddl\t%esi, %eax\n");
        let p = file(10, "\t.loc 1 4 3\n\tsubl\t%esi, %eax\n");
        assert_eq!(
            why_of(&o, &p),
            Why::Inlined {
                from: "a.c:4".into()
            }
        );
    }

    #[test]
    fn line_numbers_that_moved_with_the_function() {
        // Only line numbers differ: the function is left out of the patch (it keeps printing
        // the old numbers), with a note saying so.
        let o = file(10, "\t.loc 1 12 3\n\tmovl\t$12, %esi\n");
        let p = file(13, "\t.loc 1 15 3\n\tmovl\t$15, %esi\n");
        let d = diff(&o, &p, &DiffOptions::default()).unwrap();
        assert!(d.functions.is_empty());
        assert!(d.notes.iter().any(|n| matches!(
            n,
            crate::diff::Note::LineNumbersOnly { function, shift: 3 } if function == "f"
        )));
    }

    #[test]
    fn other_numbers() {
        let o = file(10, "\t.loc 1 12 3\n\tmovl\t$1, %esi\n");
        let p = file(10, "\t.loc 1 12 3\n\tmovl\t$2, %esi\n");
        assert_eq!(why_of(&o, &p), Why::NumbersDiffer);
        let o = file(10, "\t.loc 1 12 3\n\tmovl\t$1, %esi\n");
        let p = file(13, "\t.loc 1 15 3\n\tmovl\t$2, %esi\n");
        assert_eq!(why_of(&o, &p), Why::NumbersDiffer);
    }

    #[test]
    fn without_line_information() {
        let text = |insn: &str| {
            format!("\t.text\n\t.globl\tf\n\t.type\tf, @function\nf:\n\t{insn}\n\tret\n\t.size\tf, .-f\n")
        };
        let o = AsmFile::parse("o.s", &text("addl %esi, %eax"), Dialect::x86_64()).unwrap();
        let p = AsmFile::parse("p.s", &text("subl %esi, %eax"), Dialect::x86_64()).unwrap();
        assert_eq!(why_of(&o, &p), Why::Changed);
    }
}
