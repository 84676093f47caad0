//! Deciding what goes into a patch: which functions changed or are new, which variables are
//! new, and which changes are refused.

use std::collections::HashMap;

use crate::debug_types::{describe_change, layouts};
use crate::error::AsmError;
use crate::index::{Binding, Block, BlockKind};
use crate::line_shift::line_shift;
use crate::matching::pair_variables;
use crate::normalize::{ignored_in_compare, Normalizer};
use crate::parse::{AsmFile, StmtKind};
use crate::symlist::{FunctionFilter, SymbolList};
use crate::unpatchable::{never_returns, runs_at_start_up, StartUp};
use crate::why::{why, Why};

/// What the user asked for besides the two files.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Functions whose changes are never patched; variables whose changes are accepted
    /// (the original definition stays in effect).
    pub ignore_changes: SymbolList,
    /// Functions that may change only if marked `KPGENSRC_ADAPTED` in the patched source.
    pub must_adapt: SymbolList,
    /// Changed functions whose copy goes into the patch without replacing the original.
    pub unlink: SymbolList,
    /// When set, only changed functions it lists are patched (new functions always are).
    pub filter: Option<FunctionFilter>,
    /// Make the copies of static functions global too (those of global functions always
    /// are). Two files with a changed static function of the same name then clash at link
    /// time, so this is off by default.
    pub force_global: bool,
    /// x86_64: copies reach symbols the file does not define through GOT slots rather than
    /// PC-relatively (see `--force-gotpcrel`).
    pub force_gotpcrel: bool,
    /// Patch a changed function that never returns rather than refuse it (with a
    /// [`Note::NeverReturnsKept`]): the runtime's safety check then refuses to apply the patch
    /// as long as a thread is inside it. For test suites that check exactly that
    /// (`--test-mode`).
    pub keep_never_returning: bool,
    /// Refuse, rather than note, changed functions whose callers in the file may depend on
    /// their old bodies (an original built with interprocedural optimisation).
    pub strict_ipa: bool,
}

/// Why a function enters the patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// It exists in both files and differs: the original is redirected to the copy.
    Changed,
    /// It exists only in the patched file.
    New,
    /// It changed, but `--unlink-symbols` asked for a copy that replaces nothing.
    Unlinked,
}

/// A function of the patched file that is copied into the patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchedFunction {
    /// Its name in the patched file.
    pub name: String,
    pub kind: PatchKind,
    /// The name of the copy in the output (`f.kpatch` for a changed function).
    pub copy_name: String,
    /// Its block in the original file (for [`PatchKind::Changed`] and `Unlinked`).
    pub orig_block: Option<usize>,
    /// Its block in the patched file.
    pub patched_block: usize,
    /// Whether the copy of a changed function is a global symbol.
    pub global: bool,
    /// Why it is in the patch.
    pub why: Why,
}

/// A variable that exists only in the patched file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVariable {
    pub name: String,
    /// Its name in the output (renamed when the original file already uses the name).
    pub copy_name: String,
    pub patched_block: usize,
}

/// Something the user may want to know about a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A changed function left out of the patch.
    Ignored { function: String, reason: String },
    /// A changed variable accepted because of `--ignore-changes`.
    VariableKept { variable: String },
    /// A function that differs only in numbers (a `__LINE__` shift, often): it is patched,
    /// but `--ignore-changes` could keep it out.
    OnlyNumbersDiffer { function: String },
    /// The original was built with interprocedural optimisation: `callers`, in the same file,
    /// may depend on the old body of changed `function` (see `--strict-ipa`).
    CallersMayDepend {
        function: String,
        callers: Vec<String>,
        producer: String,
    },
    /// A function whose only difference is that its lines moved (its `__LINE__` values): left
    /// out of the patch, it keeps the original's numbers.
    LineNumbersOnly { function: String, shift: i64 },
    /// Top-level statements outside functions and variables differ; they are not part of
    /// the patch (the original's stay in effect).
    OtherDiffers { line: usize, text: String },
    /// A type's layout changed and `--ignore-changes` accepted it.
    TypeKept { name: String, change: String },
    /// A changed function that never returns, patched because of
    /// [`DiffOptions::keep_never_returning`].
    NeverReturnsKept { function: String },
}

/// The outcome of comparing two files.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    /// Functions copied into the patch, in the order of the patched file.
    pub functions: Vec<PatchedFunction>,
    /// Variables that exist only in the patched file.
    pub new_variables: Vec<NewVariable>,
    pub notes: Vec<Note>,
    /// Names of the patched file that the output spells differently.
    pub(crate) rename: HashMap<String, String>,
    /// Copies reach undefined symbols through GOT slots.
    pub(crate) force_gotpcrel: bool,
}

impl Diff {
    /// Whether the patch is empty: nothing to add to the original.
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty() && self.new_variables.is_empty()
    }
}

/// Compares `orig` and `patched` (two builds of one source file, before and after a change).
pub fn diff(orig: &AsmFile, patched: &AsmFile, opts: &DiffOptions) -> Result<Diff, AsmError> {
    let mut d = Diff {
        force_gotpcrel: opts.force_gotpcrel,
        ..Diff::default()
    };
    let files: Vec<&str> = [
        patched.source_name(),
        orig.source_name(),
        Some(patched.name.as_str()),
        Some(orig.name.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();

    check_type_layouts(orig, patched, opts, &files, &mut d)?;

    let pairs = pair_variables(orig, patched);
    d.rename = pairs.renames();

    // New variables and functions keep their names unless the original uses them already.
    let fresh = |name: &str| {
        if orig.label(name).is_some() {
            format!("{name}.kpatch")
        } else {
            name.to_string()
        }
    };
    for (i, b) in patched.blocks().iter().enumerate() {
        let new_var = b.kind == BlockKind::Variable
            && !pairs.pairs.contains_key(&b.name)
            && (!patched.is_readonly_local_object(&b.name) || in_own_kpatch_section(patched, b));
        let new_fn = b.kind == BlockKind::Function && orig_function(orig, &b.name).is_none();
        if new_var || new_fn {
            let copy = fresh(&b.name);
            if copy != b.name {
                d.rename.insert(b.name.clone(), copy.clone());
            }
            if new_var {
                if is_tls(patched, i) {
                    return Err(AsmError::NewTlsVariable {
                        file: patched.name.clone(),
                        line: b.lines.start + 1,
                        name: b.name.clone(),
                    });
                }
                d.new_variables.push(NewVariable {
                    name: b.name.clone(),
                    copy_name: copy,
                    patched_block: i,
                });
            }
        }
    }

    let empty = HashMap::new();
    let norm_orig = Normalizer::new(orig, &empty);
    let norm_patched = Normalizer::new(patched, &d.rename);

    for (p, o) in &pairs.pairs {
        let (Some(pb), Some(ob)) = (patched.variable(p), orig.variable(o)) else {
            continue;
        };
        if norm_orig.block(ob) == norm_patched.block(pb) {
            continue;
        }
        if opts.ignore_changes.contains(p, &files) || opts.ignore_changes.contains(o, &files) {
            d.notes.push(Note::VariableKept {
                variable: p.clone(),
            });
            continue;
        }
        if let Some(class) = kpatch_names::demangle(p)
            .as_deref()
            .and_then(|d| d.strip_prefix("vtable for "))
        {
            return Err(AsmError::VtableChanged {
                file: patched.name.clone(),
                class: class.to_string(),
                vtable: p.clone(),
            });
        }
        return Err(AsmError::VariableChanged {
            name: p.clone(),
            orig_file: orig.name.clone(),
            orig_line: ob.lines.start + 1,
            patched_file: patched.name.clone(),
            patched_line: pb.lines.start + 1,
        });
    }

    let mut not_adapted = Vec::new();
    for (i, b) in patched.blocks().iter().enumerate() {
        if b.kind != BlockKind::Function || patched.is_outlined_function(&b.name) {
            continue;
        }
        let Some(oi) = orig_function(orig, &b.name) else {
            d.functions.push(PatchedFunction {
                name: b.name.clone(),
                kind: PatchKind::New,
                copy_name: d
                    .rename
                    .get(&b.name)
                    .cloned()
                    .unwrap_or_else(|| b.name.clone()),
                orig_block: None,
                patched_block: i,
                global: patched.binding(&b.name) != Binding::Local,
                why: Why::New,
            });
            continue;
        };
        let ob = &orig.blocks()[oi];
        let with_ids = norm_patched.block_with_ids(b);
        let c: Vec<String> = with_ids.iter().map(|(s, _)| s.clone()).collect();
        let a = norm_orig.block(ob);
        if a == c {
            continue;
        }
        if let Some(shift) = line_shift(orig, ob, patched, b, &a, &c) {
            d.notes.push(Note::LineNumbersOnly {
                function: b.name.clone(),
                shift,
            });
            continue;
        }
        if opts.ignore_changes.contains(&b.name, &files) {
            d.notes.push(Note::Ignored {
                function: b.name.clone(),
                reason: "listed in --ignore-changes".into(),
            });
            continue;
        }
        if let Some(f) = &opts.filter {
            if !f.allows(&b.name) {
                d.notes.push(Note::Ignored {
                    function: b.name.clone(),
                    reason: "not listed in the function filter file".into(),
                });
                continue;
            }
        }
        if opts.must_adapt.contains(&b.name, &files) && !b.adapted {
            not_adapted.push(b.name.clone());
        }
        if only_numbers_differ(&a, &c) {
            d.notes.push(Note::OnlyNumbersDiffer {
                function: b.name.clone(),
            });
        }
        let unlinked = opts.unlink.contains(&b.name, &files);
        if !unlinked {
            if let Some(start) = runs_at_start_up(orig, &b.name) {
                return Err(start_up_error(orig, patched, b, start));
            }
            if never_returns(orig, ob) {
                if !opts.keep_never_returning {
                    return Err(AsmError::NeverReturns {
                        file: orig.name.clone(),
                        name: b.name.clone(),
                    });
                }
                d.notes.push(Note::NeverReturnsKept {
                    function: b.name.clone(),
                });
            }
        }
        d.functions.push(PatchedFunction {
            name: b.name.clone(),
            kind: if unlinked {
                PatchKind::Unlinked
            } else {
                PatchKind::Changed
            },
            copy_name: format!("{}.kpatch", b.name),
            orig_block: Some(oi),
            patched_block: i,
            global: opts.force_global || orig.binding(&b.name) != Binding::Local,
            why: why(orig, ob, patched, b, &a, &with_ids),
        });
    }
    if !not_adapted.is_empty() {
        return Err(AsmError::NotAdapted {
            names: not_adapted.join(", "),
        });
    }
    let outlined = outlined_pieces(orig, patched, &d, &norm_orig, &norm_patched);
    let other = other_difference(orig, patched, &norm_orig, &norm_patched);
    for (name, to) in outlined {
        match to {
            Some(o) => {
                if o != name {
                    d.rename.insert(name, o);
                }
            }
            None => {
                let copy = format!("{name}.kpatch");
                d.rename.insert(name.clone(), copy.clone());
                if let Some(&block) = patched.index.functions.get(&name) {
                    d.functions.push(PatchedFunction {
                        name,
                        kind: PatchKind::New,
                        copy_name: copy,
                        orig_block: None,
                        patched_block: block,
                        global: false,
                        why: Why::New,
                    });
                }
            }
        }
    }
    if let Some(n) = other {
        d.notes.push(n);
    }
    crate::ipa::check(orig, patched, opts.strict_ipa, &mut d)?;
    Ok(d)
}

/// The outlined functions (clang's `OUTLINED_FUNCTION_<N>`) the patched functions use, each
/// with the original's outlined function of the same content, or `None` when the original has
/// none and the patch needs a copy.
fn outlined_pieces(
    orig: &AsmFile,
    patched: &AsmFile,
    d: &Diff,
    norm_orig: &Normalizer<'_>,
    norm_patched: &Normalizer<'_>,
) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut users: Vec<usize> = d.functions.iter().map(|f| f.patched_block).collect();
    while let Some(bi) = users.pop() {
        let Some(b) = patched.blocks().get(bi) else {
            continue;
        };
        for (_, s) in patched.stmts_in(b.lines.clone()) {
            for t in crate::lex::tokenize(&s.text, &patched.dialect) {
                let name = t.text;
                if !patched.is_outlined_function(name) || out.iter().any(|(n, _)| n == name) {
                    continue;
                }
                let want = norm_patched.outlined_content(name);
                let mut same: Vec<&String> = orig
                    .index
                    .functions
                    .keys()
                    .filter(|o| orig.is_outlined_function(o))
                    .filter(|o| norm_orig.outlined_content(o) == want)
                    .collect();
                same.sort();
                let to = same.first().map(|s| (*s).clone());
                if to.is_none() {
                    if let Some(&nb) = patched.index.functions.get(name) {
                        users.push(nb);
                    }
                }
                out.push((name.to_string(), to));
            }
        }
    }
    out
}

/// The refusal of a changed function `b` (of `patched`) that runs only at start-up: a C++
/// global object's initialisation (run from `_GLOBAL__sub_I_<file>`) names the objects it
/// constructs; any other is a start-up function (a constructor function of C).
fn start_up_error(orig: &AsmFile, patched: &AsmFile, b: &Block, start: StartUp) -> AsmError {
    let mut objects: Vec<String> = Vec::new();
    // The compilers' initialisation functions on the way; a helper they call (g++'s
    // `measure.constprop.0`) only reads what it is given.
    let is_init = |n: &str| {
        n.starts_with("_GLOBAL__sub_I_")
            || n.contains("__static_initialization_and_destruction_")
            || n.starts_with("__cxx_global_var_init")
    };
    let blocks = start
        .chain
        .iter()
        .filter(|n| is_init(n))
        .filter_map(|n| patched.function(n));
    for block in start
        .root
        .starts_with("_GLOBAL__sub_I_")
        .then_some(blocks)
        .into_iter()
        .flatten()
    {
        for (_, s) in patched.stmts_in(block.lines.clone()) {
            for t in crate::lex::tokenize(&s.text, &patched.dialect) {
                let known = patched.variable(t.text).is_some()
                    && !patched.is_readonly_local_object(t.text)
                    && !t.text.starts_with("_ZGV");
                let shown = kpatch_names::display(t.text);
                if known && !objects.contains(&shown) {
                    objects.push(shown);
                }
            }
        }
    }
    if objects.is_empty() {
        return AsmError::StartUpFunction {
            file: orig.name.clone(),
            name: b.name.clone(),
            section: start.section,
        };
    }
    AsmError::GlobalInitChanged {
        file: orig.name.clone(),
        function: b.name.clone(),
        objects: objects.join(", "),
        section: start.section,
    }
}

/// Refuses a structure or union type that the patched build lays out differently (when both
/// files carry debugging information describing it).
fn check_type_layouts(
    orig: &AsmFile,
    patched: &AsmFile,
    opts: &DiffOptions,
    files: &[&str],
    d: &mut Diff,
) -> Result<(), AsmError> {
    let (Some(old), Some(new)) = (layouts(orig), layouts(patched)) else {
        return Ok(());
    };
    for (name, o) in &old {
        let Some(n) = new.get(name) else { continue };
        let Some(change) = describe_change(o, n) else {
            continue;
        };
        if opts.ignore_changes.contains(name, files) {
            d.notes.push(Note::TypeKept {
                name: name.clone(),
                change,
            });
            continue;
        }
        return Err(AsmError::TypeLayoutChanged {
            file: patched.name.clone(),
            kind: n.kind.to_string(),
            name: name.clone(),
            change,
        });
    }
    Ok(())
}

/// The original's block for function `name`, if `name` is a function there (not a part).
pub(crate) fn orig_function(orig: &AsmFile, name: &str) -> Option<usize> {
    let i = *orig.index.functions.get(name)?;
    (orig.blocks().get(i)?.name == name).then_some(i)
}

fn is_tls(f: &AsmFile, block: usize) -> bool {
    let Some(b) = f.blocks().get(block) else {
        return false;
    };
    if f.symbol_type(&b.name) == Some("tls_object") {
        return true;
    }
    b.object
        .as_ref()
        .is_some_and(|o| f.sections.get(o.section.id).is_tls())
}

/// Whether two normal forms differ only in numeric tokens, as when `__LINE__` moved.
fn only_numbers_differ(a: &[String], b: &[String]) -> bool {
    let strip = |s: &String| -> String {
        s.chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect()
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| strip(x) == strip(y))
}

/// The first top-level statement outside functions, variables and local data that differs
/// between the files (allocated, non-debug sections only).
fn other_difference(
    orig: &AsmFile,
    patched: &AsmFile,
    no: &Normalizer<'_>,
    np: &Normalizer<'_>,
) -> Option<Note> {
    let collect = |f: &AsmFile, n: &Normalizer<'_>| -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for b in f.blocks().iter().filter(|b| b.kind == BlockKind::Other) {
            let mut in_data = false;
            for (id, s) in f.stmts_in(b.lines.clone()) {
                let sec = f.section_of(s);
                if s.is_section_switch() {
                    in_data = false;
                }
                if s.kind == StmtKind::Label {
                    // Local data labels are compared where they are used.
                    in_data = f.dialect.is_local(&s.name);
                    continue;
                }
                let relevant = sec.is_alloc()
                    && !sec.is_debug()
                    && !in_data
                    && !ignored_in_compare(s, &Default::default())
                    && !crate::index::is_align_directive(&s.name)
                    && !crate::index::is_visibility_directive(&s.name)
                    && !s.is_directive(".file")
                    && !s.is_directive(".size")
                    && !s.is_directive(".type");
                if relevant {
                    out.push((id.line, n.top_level(s)));
                }
            }
        }
        out
    };
    let (a, b) = (collect(orig, no), collect(patched, np));
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some((_, x)), Some((_, y))) if x == y => continue,
            (_, Some((line, _))) => {
                let text = patched
                    .lines
                    .get(*line)
                    .map_or("", |l| l.text.trim())
                    .to_string();
                return Some(Note::OtherDiffers {
                    line: line + 1,
                    text,
                });
            }
            (Some((line, _)), None) => {
                let text = orig
                    .lines
                    .get(*line)
                    .map_or("", |l| l.text.trim())
                    .to_string();
                return Some(Note::OtherDiffers {
                    line: line + 1,
                    text: format!("(missing from the patched file) {text}"),
                });
            }
            (None, None) => break,
        }
    }
    None
}

impl Binding {
    /// The directive declaring this binding, if it is not the default.
    pub fn directive(self) -> Option<&'static str> {
        match self {
            Binding::Local => None,
            Binding::Global => Some(".globl"),
            Binding::Weak => Some(".weak"),
        }
    }
}

/// Whether a block lies in a `.kpatch.*` section the patched source names itself (a record of
/// `<libcare/livepatch.h>`): such a variable is part of the patch even when nothing refers
/// to it.
fn in_own_kpatch_section(file: &AsmFile, b: &Block) -> bool {
    file.label(&b.name)
        .and_then(|id| file.stmt(id))
        .is_some_and(|s| kpatch_file::is_kpatch_section(&file.section_of(s).name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_asm::{file, func};

    fn var(name: &str, section: &str, data: &str) -> String {
        format!("\t{section}\n\t.align 4\n\t.type\t{name}, @object\n\t.size\t{name}, 4\n{name}:\n\t{data}\n")
    }

    fn run(o: &str, p: &str, opts: &DiffOptions) -> Result<Diff, AsmError> {
        diff(&file("o.s", o), &file("p.s", p), opts)
    }

    fn names(d: &Diff) -> Vec<(String, PatchKind)> {
        d.functions
            .iter()
            .map(|f| (f.name.clone(), f.kind))
            .collect()
    }

    #[test]
    fn changed_new_and_removed_functions() {
        let o = func("a", "\tnop\n") + &func("b", "\tnop\n") + &func("gone", "");
        let p = func("a", "\tnop\n") + &func("b", "\tnop\n\tnop\n") + &func("c", "");
        let d = run(&o, &p, &DiffOptions::default()).unwrap();
        assert_eq!(
            names(&d),
            [
                ("b".into(), PatchKind::Changed),
                ("c".into(), PatchKind::New)
            ]
        );
        assert_eq!(d.functions[0].copy_name, "b.kpatch");
        assert_eq!(d.functions[1].copy_name, "c");
    }

    #[test]
    fn outlined_functions_are_matched_by_content_and_copied_never_replaced() {
        let outlined = |name: &str, body: &str| {
            format!("\t.text\n\t.type\t{name}, @function\n{name}:\n{body}\tret\n\t.size\t{name}, .-{name}\n")
        };
        let shared = "\tmovl\t(%rdi), %eax\n\taddl\t4(%rdi), %eax\n";
        let o = func("a", "\tcall\tOUTLINED_FUNCTION_0\n")
            + &func(
                "b",
                "\tcall\tOUTLINED_FUNCTION_0\n\tcall\tOUTLINED_FUNCTION_1\n",
            )
            + &outlined("OUTLINED_FUNCTION_0", shared)
            + &outlined("OUTLINED_FUNCTION_1", "\tnop\n");
        // Renumbered: the same pieces under other numbers change nothing.
        let renumbered = func("a", "\tcall\tOUTLINED_FUNCTION_1\n")
            + &func(
                "b",
                "\tcall\tOUTLINED_FUNCTION_1\n\tcall\tOUTLINED_FUNCTION_0\n",
            )
            + &outlined("OUTLINED_FUNCTION_1", shared)
            + &outlined("OUTLINED_FUNCTION_0", "\tnop\n");
        let d = run(&o, &renumbered, &DiffOptions::default()).unwrap();
        assert!(d.functions.is_empty(), "{:?}", names(&d));
        // a's piece changes: a gets a copy of the new piece; b keeps the original one.
        let p = func("a", "\tcall\tOUTLINED_FUNCTION_2\n")
            + &func(
                "b",
                "\tcall\tOUTLINED_FUNCTION_1\n\tcall\tOUTLINED_FUNCTION_0\n",
            )
            + &outlined("OUTLINED_FUNCTION_1", shared)
            + &outlined("OUTLINED_FUNCTION_0", "\tnop\n")
            + &outlined("OUTLINED_FUNCTION_2", "\tmovl\t(%rdi), %eax\n");
        let d = run(&o, &p, &DiffOptions::default()).unwrap();
        assert_eq!(
            names(&d),
            [
                ("a".into(), PatchKind::Changed),
                ("OUTLINED_FUNCTION_2".into(), PatchKind::New)
            ]
        );
        assert_eq!(d.functions[1].copy_name, "OUTLINED_FUNCTION_2.kpatch");
    }

    #[test]
    fn options_keep_functions_out_or_refuse_them() {
        let o = func("a", "\tnop\n") + &func("b", "\tnop\n");
        let p = func("a", "\tnop\n\tnop\n") + &func("b", "\tnop\n\tnop\n");
        let opts = DiffOptions {
            ignore_changes: SymbolList::parse("a"),
            filter: FunctionFilter::from_text("a\n"),
            ..Default::default()
        };
        let d = run(&o, &p, &opts).unwrap();
        assert!(d.functions.is_empty());
        assert_eq!(d.notes.len(), 2, "{:?}", d.notes);

        let opts = DiffOptions {
            must_adapt: SymbolList::parse("a,b"),
            ..Default::default()
        };
        let e = run(&o, &p, &opts).unwrap_err();
        assert_eq!(
            e,
            AsmError::NotAdapted {
                names: "a, b".into()
            }
        );
        let adapted = p.replace("a:\n", "a:\n\t.kpgensrc_flags KPGENSRC_ADAPTED\n");
        let e = run(&o, &adapted, &opts).unwrap_err();
        assert_eq!(e, AsmError::NotAdapted { names: "b".into() });
    }

    #[test]
    fn numbers_only_difference_is_noted() {
        let o = func("f", "\tmovl\t$12, %esi\n");
        let p = func("f", "\tmovl\t$13, %esi\n");
        let d = run(&o, &p, &DiffOptions::default()).unwrap();
        assert_eq!(names(&d), [("f".into(), PatchKind::Changed)]);
        assert!(d.notes.contains(&Note::OnlyNumbersDiffer {
            function: "f".into()
        }));
    }

    #[test]
    fn top_level_differences_are_noted() {
        let o = func("ctor", "");
        let p = func("ctor", "") + "\t.section\t.init_array,\"aw\"\n\t.align 8\n\t.quad\tctor\n";
        let d = run(&o, &p, &DiffOptions::default()).unwrap();
        assert!(d.is_empty());
        assert!(matches!(&d.notes[..], [Note::OtherDiffers { text, .. }] if text.contains("ctor")));
        // A different source file name is not a difference.
        let named = |n: &str| format!("\t.file\t\"{n}\"\n") + &func("f", "");
        let d = run(&named("foo.c"), &named("bar.c"), &DiffOptions::default()).unwrap();
        assert!(d.is_empty() && d.notes.is_empty(), "{:?}", d.notes);
    }

    #[test]
    fn variables_new_changed_and_kept() {
        let o = var("x", ".data", ".long 1") + &func("f", "\tmovl\tx(%rip), %eax\n");
        let changed = var("x", ".data", ".long 2") + &func("f", "\tmovl\tx(%rip), %eax\n");
        match run(&o, &changed, &DiffOptions::default()) {
            Err(AsmError::VariableChanged { name, .. }) => assert_eq!(name, "x"),
            other => panic!("{other:?}"),
        }
        let opts = DiffOptions {
            ignore_changes: SymbolList::parse("x"),
            ..Default::default()
        };
        let d = run(&o, &changed, &opts).unwrap();
        assert_eq!(
            d.notes,
            [Note::VariableKept {
                variable: "x".into()
            }]
        );

        // A new variable named like an original symbol (here a function) is renamed.
        let p = o.clone() + &var("f2", ".data", ".long 3") + &var("g", ".bss", ".zero 4");
        let o2 = o.clone() + &func("f2", "");
        let d = run(&o2, &p, &DiffOptions::default()).unwrap();
        let new: Vec<_> = d
            .new_variables
            .iter()
            .map(|v| (v.name.as_str(), v.copy_name.as_str()))
            .collect();
        assert_eq!(new, [("f2", "f2.kpatch"), ("g", "g")]);

        let tls = o.clone() + "\t.section\t.tbss,\"awT\",@nobits\n\t.type\tt, @object\n\t.size\tt, 4\nt:\n\t.zero\t4\n";
        assert!(matches!(
            run(&o, &tls, &DiffOptions::default()),
            Err(AsmError::NewTlsVariable { name, .. }) if name == "t"
        ));
    }

    #[test]
    fn readonly_local_change_makes_users_changed_not_an_error() {
        let table = |v: &str| var("tab", ".section\t.rodata", &format!(".long {v}"));
        let user = func("f", "\tleaq\ttab(%rip), %rax\n");
        let d = run(
            &(table("1") + &user),
            &(table("2") + &user),
            &DiffOptions::default(),
        )
        .unwrap();
        assert_eq!(names(&d), [("f".into(), PatchKind::Changed)]);
        let d = run(
            &(table("1") + &user),
            &(table("1") + &user),
            &DiffOptions::default(),
        )
        .unwrap();
        assert!(d.is_empty());
    }
}
