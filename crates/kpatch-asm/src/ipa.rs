//! Callers that may depend on a changed function's old body.
//!
//! At -O1 and above gcc's interprocedural passes let a caller rely on what they proved about a
//! callee in the same file: a `const`/`pure` callee's calls are hoisted out of loops, merged
//! or dropped; a leaf's register use lets callers keep values in call-clobbered registers
//! (IPA-RA); value ranges and bits flow into callees; `noreturn`/`nothrow` are discovered.
//! None of it shows in the caller's assembly when only the callee changes, so the patch would
//! replace the callee while such callers keep doing the old thing. `-flive-patching=
//! inline-clone` (which `libcare-cc` adds) turns those passes off; the producer string of the
//! debugging information (`DW_AT_producer`) records whether the original was built with it.
//! Without it, the callers found in the file (without LTO the only ones these passes reach)
//! are named in a warning, or the change is refused with `--strict-ipa`.
//!
//! Identical code folding is checked whatever the build: a function folded into a changed
//! one (`.set g, f`) would be changed with it, although its own source did not change.

use std::collections::HashSet;

use crate::debug_types::producers;
use crate::diff::{Diff, Note, PatchKind};
use crate::error::AsmError;
use crate::index::BlockKind;
use crate::parse::{AsmFile, StmtKind};

/// How the original file was compiled, as far as callers' assumptions go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Build {
    /// With `-flive-patching`, or without optimisation: callers assume nothing.
    Safe,
    /// With interprocedural optimisation: the producer string.
    Optimised(String),
    /// No producer recorded (no `-g`).
    Unknown,
}

/// Whether the options of a gcc producer string leave interprocedural optimisation on.
fn gcc_optimises(producer: &str) -> bool {
    let mut level = "0";
    let mut safe = false;
    for w in producer.split_whitespace() {
        if let Some(l) = w.strip_prefix("-O") {
            level = if l.is_empty() { "1" } else { l };
        }
        if w.starts_with("-flive-patching") {
            safe = true;
        }
    }
    level != "0" && !safe
}

/// How `file` was compiled, from its debugging information.
pub(crate) fn build_of(file: &AsmFile) -> Build {
    let ps = producers(file);
    if ps.is_empty() {
        return Build::Unknown;
    }
    for p in ps {
        // clang records no options (unless -grecord-command-line), and has no way to turn
        // its interprocedural inference off.
        let clang = p.contains("clang");
        if clang || (p.starts_with("GNU ") && gcc_optimises(&p)) {
            return Build::Optimised(p);
        }
    }
    Build::Safe
}

/// Whether `args` (an instruction's operands) name `symbol` as a whole token.
fn mentions(args: &str, symbol: &str) -> bool {
    args.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$')))
        .any(|t| t == symbol)
}

/// The functions of `file` whose code calls or jumps to (or takes the address of) `name`.
pub(crate) fn callers(file: &AsmFile, name: &str) -> Vec<String> {
    file.blocks()
        .iter()
        .filter(|b| b.kind == BlockKind::Function && b.name != name)
        .filter(|b| {
            file.stmts_in(b.lines.clone())
                .any(|(_, s)| s.kind == StmtKind::Instruction && mentions(&s.args, name))
        })
        .map(|b| b.name.clone())
        .collect()
}

/// The symbols `file` defines as aliases of function `target` (`.set g, target`), as gcc's
/// identical code folding makes them; gcc's own `.localalias` names excepted.
pub(crate) fn aliases(file: &AsmFile, target: &str) -> Vec<String> {
    file.stmts_in(0..file.lines.len())
        .filter(|(_, s)| s.kind == StmtKind::Assign && s.args.trim() == target)
        .map(|(_, s)| s.name.clone())
        .filter(|n| !n.ends_with(".localalias") && !file.dialect.is_local(n))
        .collect()
}

/// Refuses a change that would also change a function folded into the changed one, and
/// warns about (or, `strict`, refuses) changed functions whose callers in the file may
/// depend on their old bodies.
pub(crate) fn check(
    orig: &AsmFile,
    patched: &AsmFile,
    strict: bool,
    d: &mut Diff,
) -> Result<(), AsmError> {
    let changed: Vec<String> = d
        .functions
        .iter()
        .filter(|f| f.kind == PatchKind::Changed)
        .map(|f| f.name.clone())
        .collect();
    for f in &changed {
        let still = aliases(patched, f);
        if let Some(g) = aliases(orig, f).into_iter().find(|g| !still.contains(g)) {
            return Err(AsmError::FoldedFunction {
                file: orig.name.clone(),
                name: f.clone(),
                folded: g,
            });
        }
    }
    let build = build_of(orig);
    if build == Build::Safe {
        return Ok(());
    }
    let in_patch: HashSet<&str> = d.functions.iter().map(|f| f.name.as_str()).collect();
    let mut found = Vec::new();
    for f in &changed {
        let who: Vec<String> = callers(orig, f)
            .into_iter()
            .filter(|c| !in_patch.contains(c.as_str()))
            .collect();
        if !who.is_empty() {
            found.push((f.clone(), who));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let described = found
        .iter()
        .map(|(f, who)| format!("`{f}` (called by {})", who.join(", ")))
        .collect::<Vec<_>>()
        .join(", ");
    let producer = match &build {
        Build::Optimised(p) => p.clone(),
        _ => "an unknown compiler and options (no debugging information: build with -g to tell)"
            .to_string(),
    };
    if strict {
        return Err(AsmError::CallersMayDepend {
            file: orig.name.clone(),
            producer,
            functions: described,
        });
    }
    if let Build::Optimised(_) = build {
        for (function, callers) in found {
            d.notes.push(Note::CallersMayDepend {
                function,
                callers,
                producer: producer.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_options() {
        assert!(gcc_optimises(
            "GNU C17 12.2.0 -mtune=generic -march=x86-64 -O2 -g"
        ));
        assert!(gcc_optimises("GNU C17 12.2.0 -O"));
        assert!(!gcc_optimises("GNU C17 12.2.0 -O2 -O0 -g"));
        assert!(!gcc_optimises("GNU C17 12.2.0 -g"));
        assert!(!gcc_optimises(
            "GNU C17 12.2.0 -O2 -g -flive-patching=inline-clone"
        ));
    }

    #[test]
    fn whole_tokens_only() {
        assert!(mentions("scale", "scale"));
        assert!(mentions("scale@PLT", "scale"));
        assert!(mentions("*scale(%rip)", "scale"));
        assert!(!mentions("scale.constprop.0", "scale"));
        assert!(!mentions("rescale", "scale"));
    }
}
