//! A patch built on top of an earlier patch of the same object (`kpatch_gensrc --earlier`).
//!
//! The process runs the original with the earlier patch applied. This patch carries what its
//! build differs in from the earlier patch's build: a function changed since (or put back as
//! the original had it), a function or variable new to both. What the earlier patch added and
//! this build keeps as it is, this patch takes from the earlier patch at run time: references
//! to it stay undefined symbols, and a placeholder in [`EARLIER_STUBS`] lets the patched build
//! link (`kpatch_strip --rel-fixup` turns references to placeholders into undefined symbols).
//! The output is still made against the original (its lines, every address of it kept).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use kpatch_file::{COPY_SUFFIX, EARLIER_STUBS};

use crate::diff::{diff, orig_function, Diff, DiffOptions, PatchKind, PatchedFunction};
use crate::emit::emit;
use crate::error::AsmError;
use crate::index::{Binding, Block};
use crate::lex::tokenize;
use crate::matching::pair_variables;
use crate::normalize::name_tokens;
use crate::parse::AsmFile;

/// A symbol of the patched build that the earlier patch defines and this patch takes from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromEarlier {
    /// Its name in the output, as the earlier patch names it.
    pub name: String,
    /// A function (else a variable).
    pub function: bool,
    /// Its visibility directive in the patched file (`.hidden`), if any.
    pub visibility: Option<String>,
}

/// What a patch built on top of an earlier one carries, and what it takes from it.
#[derive(Debug, Clone, Default)]
pub struct Layered {
    /// The patch, against the original.
    pub diff: Diff,
    /// What it takes from the earlier patch.
    pub from_earlier: Vec<FromEarlier>,
}

/// Compares `patched` with `earlier` (the earlier patch's build of the same file) to decide
/// what the patch carries, and with `orig` for everything else (what it replaces, the checks).
pub fn diff_on_earlier(
    orig: &AsmFile,
    earlier: &AsmFile,
    patched: &AsmFile,
    opts: &DiffOptions,
) -> Result<Layered, AsmError> {
    let full = diff(orig, patched, opts)?;
    // Also refuses what may not change since the earlier patch (a variable it added...).
    let since = diff(earlier, patched, opts)?;
    let changed_since: HashSet<&str> = since.functions.iter().map(|f| f.name.as_str()).collect();
    let mut out = Diff {
        functions: Vec::new(),
        new_variables: Vec::new(),
        ..full.clone()
    };
    // Names of the patched file the earlier patch defines, and whether each is a function.
    let mut taken: Vec<(String, bool)> = Vec::new();
    for f in &full.functions {
        if f.kind != PatchKind::New {
            if changed_since.contains(f.name.as_str()) {
                out.functions.push(f.clone());
            }
        } else if orig_function(earlier, &f.name).is_none() {
            out.functions.push(f.clone());
        } else if changed_since.contains(f.name.as_str()) {
            return Err(AsmError::EarlierFunctionChanged {
                file: patched.name.clone(),
                name: f.name.clone(),
            });
        } else {
            taken.push((f.name.clone(), true));
        }
    }
    // Changed by the earlier patch, and as the original has it here: the original's code goes
    // back in.
    for f in &since.functions {
        if f.kind == PatchKind::New || full.functions.iter().any(|g| g.name == f.name) {
            continue;
        }
        let Some(oi) = orig_function(orig, &f.name) else {
            continue;
        };
        out.functions.push(PatchedFunction {
            copy_name: format!("{}{COPY_SUFFIX}", f.name),
            orig_block: Some(oi),
            global: opts.force_global || orig.binding(&f.name) != Binding::Local,
            ..f.clone()
        });
    }
    out.functions.sort_by_key(|f| f.patched_block);
    let in_earlier = pair_variables(earlier, patched).pairs;
    for v in &full.new_variables {
        if in_earlier.contains_key(&v.name) {
            taken.push((v.name.clone(), false));
        } else {
            out.new_variables.push(v.clone());
        }
    }
    let from_earlier = from_earlier(earlier, patched, &out, &taken, &in_earlier)?;
    Ok(Layered {
        diff: out,
        from_earlier,
    })
}

/// The placeholders for `taken`; a static one that the patch uses is refused (the earlier
/// patch's `.symtab` keeps only symbols with external linkage).
fn from_earlier(
    earlier: &AsmFile,
    patched: &AsmFile,
    d: &Diff,
    taken: &[(String, bool)],
    earlier_names: &HashMap<String, String>,
) -> Result<Vec<FromEarlier>, AsmError> {
    let mut statics = HashSet::new();
    let mut out = Vec::new();
    for (name, function) in taken {
        let theirs = earlier_names.get(name).unwrap_or(name);
        if earlier.binding(theirs) == Binding::Local {
            statics.insert(name.as_str());
            continue;
        }
        out.push(FromEarlier {
            name: d.rename.get(name).cloned().unwrap_or_else(|| name.clone()),
            function: *function,
            visibility: patched.visibility(name).map(str::to_owned),
        });
    }
    if statics.is_empty() {
        return Ok(out);
    }
    let blocks = d
        .functions
        .iter()
        .map(|f| f.patched_block)
        .chain(d.new_variables.iter().map(|v| v.patched_block));
    for b in blocks.filter_map(|i| patched.blocks().get(i)) {
        if let Some(name) = referenced(patched, b).find(|n| statics.contains(n.as_str())) {
            return Err(AsmError::EarlierStaticUsed {
                file: patched.name.clone(),
                user: b.name.clone(),
                name,
            });
        }
    }
    Ok(out)
}

/// The names the statements of `block` refer to.
fn referenced<'a>(file: &'a AsmFile, block: &Block) -> impl Iterator<Item = String> + 'a {
    file.stmts_in(block.lines.clone()).flat_map(move |(_, s)| {
        let toks = tokenize(&s.text, &file.dialect);
        name_tokens(s, &toks)
            .into_iter()
            .map(|i| toks[i].text.to_string())
            .collect::<Vec<_>>()
    })
}

/// [`diff_on_earlier`], then the combined file: [`emit`]'s, followed by the placeholders of
/// what the patch takes from the earlier one (even when it carries nothing itself: another
/// file of the program may refer to them).
pub fn gensrc_on_earlier(
    orig: &AsmFile,
    earlier: &AsmFile,
    patched: &AsmFile,
    opts: &DiffOptions,
) -> Result<(String, Layered), AsmError> {
    let layered = diff_on_earlier(orig, earlier, patched, opts)?;
    let mut text = emit(orig, patched, &layered.diff)?;
    if !layered.from_earlier.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&placeholders(orig, &layered.from_earlier));
    }
    Ok((text, layered))
}

/// One label per symbol in [`EARLIER_STUBS`], typed and with the visibility the patched build
/// gave it, so that its references are assembled as they would be to the real one.
fn placeholders(orig: &AsmFile, from: &[FromEarlier]) -> String {
    let d = &orig.dialect;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ---------- kpatch_gensrc: defined by the earlier patch ----------",
        d.comment
    );
    let _ = writeln!(s, "\t.pushsection\t{}", d.section_args(EARLIER_STUBS, "a"));
    for f in from {
        let _ = writeln!(s, "\t.globl\t{}", f.name);
        if let Some(v) = &f.visibility {
            let _ = writeln!(s, "\t{v}\t{}", f.name);
        }
        let kind = if f.function { "function" } else { "object" };
        let _ = writeln!(s, "{}", d.type_directive(&f.name, kind));
        let _ = writeln!(s, "{}:", f.name);
    }
    // Not empty: the linker drops an empty section and moves its symbols elsewhere.
    let _ = writeln!(s, "\t.byte\t0");
    let _ = writeln!(s, "\t.popsection");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_asm::{file, func};

    fn static_func(name: &str, body: &str) -> String {
        format!("\t.text\n\t.type\t{name}, @function\n{name}:\n{body}\tret\n\t.size\t{name}, .-{name}\n")
    }

    fn var(name: &str) -> String {
        format!("\t.globl\t{name}\n\t.bss\n\t.align 8\n\t.type\t{name}, @object\n\t.size\t{name}, 8\n{name}:\n\t.zero\t8\n")
    }

    fn run(o: &str, e: &str, p: &str) -> Result<(String, Layered), AsmError> {
        gensrc_on_earlier(
            &file("o.s", o),
            &file("e.s", e),
            &file("p.s", p),
            &DiffOptions::default(),
        )
    }

    fn names(l: &Layered) -> Vec<(&str, PatchKind)> {
        l.diff
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.kind))
            .collect()
    }

    /// The layered fixture in small: the earlier patch adds `count` and `next()` and changes
    /// `tick`; the later one changes `tick` again and keeps the rest.
    fn layered() -> (String, String, String) {
        let orig = func("tick", "\tnop\n") + &func("other", "\tnop\n");
        let next = func("next", "\tincq\tcount(%rip)\n");
        let earlier =
            var("count") + &next + &func("tick", "\tcall\tnext\n") + &func("other", "\tnop\n");
        let patched = var("count")
            + &next
            + &func("tick", "\tcall\tnext\n\tnop\n")
            + &func("other", "\tnop\n");
        (orig, earlier, patched)
    }

    #[test]
    fn what_the_earlier_patch_added_is_taken_from_it() {
        let (o, e, p) = layered();
        let (text, l) = run(&o, &e, &p).unwrap();
        assert_eq!(names(&l), [("tick", PatchKind::Changed)]);
        assert!(l.diff.new_variables.is_empty());
        let taken: Vec<(&str, bool)> = l
            .from_earlier
            .iter()
            .map(|f| (f.name.as_str(), f.function))
            .collect();
        assert_eq!(taken, [("next", true), ("count", false)]);
        // The copy calls `next`, defined only by its placeholder, outside the patch sections.
        assert!(
            text.contains("tick.kpatch:\n\tcall\tnext\n\tnop\n"),
            "{text}"
        );
        assert!(!text.contains("\nnext:\n\tincq"), "{text}");
        let stubs = &text[text.find(".libcare.earlier").unwrap()..];
        assert!(
            stubs.starts_with(".libcare.earlier,\"a\",@progbits\n\t.globl\tnext\n\t.type\tnext, @function\nnext:\n"),
            "{stubs}"
        );
        assert!(stubs.contains("\t.type\tcount, @object\ncount:\n\t.byte\t0\n\t.popsection\n"));
    }

    #[test]
    fn unchanged_since_the_earlier_patch_is_left_out_and_put_back_goes_in() {
        let (o, e, _) = layered();
        // The same as the earlier patch: nothing to carry, but the placeholders stay for the
        // other files of the program.
        let (text, l) = run(&o, &e, &e).unwrap();
        assert!(l.diff.is_empty());
        assert_eq!(l.from_earlier.len(), 2);
        assert!(text.contains(".libcare.earlier"));
        // `tick` as the original has it, undoing the earlier patch's change.
        let back = var("count") + &func("next", "\tincq\tcount(%rip)\n") + &o;
        let (_, l) = run(&o, &e, &back).unwrap();
        assert_eq!(names(&l), [("tick", PatchKind::Changed)]);
        assert_eq!(l.diff.functions[0].copy_name, "tick.kpatch");
        // Without --earlier's placeholders when nothing comes from the earlier patch.
        let (text, l) = run(&o, &o, &o).unwrap();
        assert!(l.from_earlier.is_empty() && !text.contains(".libcare.earlier"));
    }

    #[test]
    fn what_the_earlier_patch_added_cannot_change_or_be_used_when_static() {
        let (o, e, p) = layered();
        let changed = p.replace("\tincq\tcount(%rip)\n", "\taddq\t$2, count(%rip)\n");
        assert_eq!(
            run(&o, &e, &changed).unwrap_err(),
            AsmError::EarlierFunctionChanged {
                file: "p.s".into(),
                name: "next".into()
            }
        );
        let helper = static_func("helper", "\tnop\n");
        let e2 = e.clone() + &helper;
        let uses = p.replace("\tcall\tnext\n\tnop\n", "\tcall\thelper\n") + &helper;
        assert_eq!(
            run(&o, &e2, &uses).unwrap_err(),
            AsmError::EarlierStaticUsed {
                file: "p.s".into(),
                user: "tick".into(),
                name: "helper".into()
            }
        );
        // Unused, a static of the earlier patch is no matter.
        let (_, l) = run(&o, &e2, &(p.clone() + &helper)).unwrap();
        assert_eq!(names(&l), [("tick", PatchKind::Changed)]);
        // A variable the earlier patch added cannot change either.
        let var_changed = p.replace("count:\n\t.zero\t8\n", "count:\n\t.quad\t5\n");
        assert!(matches!(
            run(&o, &e, &var_changed),
            Err(AsmError::VariableChanged { name, .. }) if name == "count"
        ));
    }
}
