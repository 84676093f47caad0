//! Writing the combined file: the original, untouched except for end-of-function labels,
//! followed by the patch (copies of changed and new functions, new variables, copied local
//! data, the `.kpatch.strtab` names and the `.kpatch.info` records), each addition inside
//! `.pushsection`/`.popsection` so the original's sections get no new bytes.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use kpatch_file::{
    is_kpatch_section, COPY_SUFFIX, KPATCH_DATA, KPATCH_DATA_ALIGN, KPATCH_INFO, KPATCH_STRTAB,
    KPATCH_TEXT,
};

use crate::diff::{Diff, PatchKind, PatchedFunction};
use crate::error::AsmError;
use crate::index::{is_visibility_directive, Binding, Block};
use crate::lex::{tokenize, unquote, TokKind};
use crate::normalize::{defined_in, is_section_neutral, name_tokens, Normalizer};
use crate::parse::{AsmFile, Stmt, StmtId, StmtKind};
use crate::section::{SecRef, SectionId};
use crate::symlist::human_name;

/// Alignment (log2) of `.kpatch.data`, so it can start a page of its own.
const DATA_ALIGN_LOG2: u32 = KPATCH_DATA_ALIGN.trailing_zeros();

/// `.Lkpatch_fe<N>`: the end of the original function `N`.
pub fn end_of_original_label(n: usize) -> String {
    format!(".Lkpatch_fe{n}")
}

/// `.Lkpatch_fs<N>`: the start of the original (weak) function `N`.
pub fn start_of_original_label(n: usize) -> String {
    format!(".Lkpatch_fs{n}")
}

/// `.Lkpatch_end<N>`: the end of the copy `N`.
pub fn end_of_copy_label(n: usize) -> String {
    format!(".Lkpatch_end{n}")
}

/// `.Lkpatch_str<N>`: the name of the copy `N` in `.kpatch.strtab`.
pub fn name_label(n: usize) -> String {
    format!(".Lkpatch_str{n}")
}

/// The original file with `diff` applied. With an empty diff this is the original text
/// (apart from `.kpgensrc_flags` markers, which no assembler accepts).
pub fn emit(orig: &AsmFile, patched: &AsmFile, diff: &Diff) -> Result<String, AsmError> {
    let mut fe: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut fs: HashMap<usize, Vec<usize>> = HashMap::new();
    for (n, f) in diff.functions.iter().enumerate() {
        if f.kind != PatchKind::Changed {
            continue;
        }
        let line = original_size_line(orig, f)?;
        fe.entry(line).or_default().push(n);
        if start_of(orig, f, n) != f.name {
            if let Some(l) = orig.label(&f.name) {
                fs.entry(l.line).or_default().push(n);
            }
        }
    }
    let mut out = String::new();
    write_original(orig, &fe, &fs, &mut out);
    if diff.is_empty() {
        if !orig.ends_with_newline() {
            out.pop();
        }
        return Ok(out);
    }
    let no_renames = HashMap::new();
    let mut e = Emitter {
        orig,
        patched,
        diff,
        norm_orig: Normalizer::new(orig, &no_renames),
        norm_patched: Normalizer::new(patched, &diff.rename),
        out,
        data_aligned: false,
        info_aligned: false,
        copies: HashMap::new(),
        queue: Vec::new(),
        numeric_count: 0,
        group: None,
    };
    e.comment("---------- kpatch_gensrc: patch ----------");
    for (n, f) in diff.functions.iter().enumerate() {
        e.function_copy(n, f)?;
    }
    for v in &diff.new_variables {
        if let Some(b) = patched.blocks().get(v.patched_block) {
            e.variable_copy(b, &v.copy_name, &v.name)?;
        }
    }
    while let Some(name) = e.queue.pop() {
        e.data_copy(&name)?;
    }
    for (n, f) in diff.functions.iter().enumerate() {
        e.records(n, f);
    }
    Ok(e.out)
}

/// The text of `file` with nothing added (`.kpgensrc_flags` markers commented out).
pub(crate) fn emit_unchanged(file: &AsmFile) -> String {
    let mut out = String::new();
    write_original(file, &HashMap::new(), &HashMap::new(), &mut out);
    if !file.ends_with_newline() {
        out.pop();
    }
    out
}

/// The line of the original's `.size f, .-f` (clang: `.size f, .Lfunc_end0-f` right after
/// `.Lfunc_end0:`), where the end label of `f` goes.
fn original_size_line(orig: &AsmFile, f: &PatchedFunction) -> Result<usize, AsmError> {
    let block = f.orig_block.and_then(|i| orig.blocks().get(i));
    let line = block.and_then(|b| b.size_line);
    let ok = line
        .and_then(|l| orig.lines.get(l).map(|x| (l, x)))
        .is_some_and(|(l, x)| {
            x.stmts.iter().enumerate().any(|(idx, s)| {
                let a = s.arg_list();
                let Some(end) = a
                    .get(1)
                    .map(|e| e.replace(char::is_whitespace, ""))
                    .and_then(|e| e.strip_suffix(&format!("-{}", f.name)).map(str::to_string))
                else {
                    return false;
                };
                s.is_directive(".size")
                    && a.first().map(|n| unquote(n)) == Some(f.name.as_str())
                    && (end == "." || ends_here(orig, &end, StmtId { line: l, idx }))
            })
        });
    match (line, ok) {
        (Some(l), true) => Ok(l),
        _ => Err(AsmError::OriginalSizeUnknown {
            file: orig.name.clone(),
            line: block.map_or(0, |b| b.lines.start + 1),
            name: f.name.clone(),
        }),
    }
}

/// Whether local label `label` marks the same place as the statement `at`: only labels and
/// debug directives come between them.
fn ends_here(orig: &AsmFile, label: &str, at: StmtId) -> bool {
    let Some(def) = orig.label(label).filter(|d| *d < at) else {
        return false;
    };
    orig.dialect.is_local(label)
        && orig
            .stmts_after(def)
            .take_while(|(id, _)| *id < at)
            .all(|(_, s)| s.kind == StmtKind::Label || crate::index::is_debug_directive(s))
}

/// The original's lines, with `.Lkpatch_fe<N>:` before the `.size` lines in `fe` and
/// `.Lkpatch_fs<N>:` before the label lines in `fs`.
fn write_original(
    orig: &AsmFile,
    fe: &HashMap<usize, Vec<usize>>,
    fs: &HashMap<usize, Vec<usize>>,
    out: &mut String,
) {
    for (i, line) in orig.lines.iter().enumerate() {
        for n in fe.get(&i).into_iter().flatten() {
            let _ = writeln!(out, "{}:", end_of_original_label(*n));
        }
        for n in fs.get(&i).into_iter().flatten() {
            let _ = writeln!(out, "{}:", start_of_original_label(*n));
        }
        if line.stmts.iter().any(|s| s.is_directive(".kpgensrc_flags")) {
            let kept: Vec<&str> = line
                .stmts
                .iter()
                .filter(|s| !s.is_directive(".kpgensrc_flags"))
                .map(|s| s.text.as_str())
                .collect();
            let _ = writeln!(
                out,
                "\t{}\t{} {}",
                kept.join("; "),
                orig.dialect.comment,
                line.text.trim()
            );
        } else {
            let _ = writeln!(out, "{}", line.text);
        }
    }
}

/// Whether the function of `block` is defined in a COMDAT group (an inline function or a
/// template instantiation that every file using it emits): its copy, with its records and
/// data, then goes into a group of its own ([`group_name`]), so that when several files of
/// a program patch it the linker keeps one copy and one record.
fn comdat_group(file: &AsmFile, block: &Block) -> bool {
    file.label(&block.name)
        .and_then(|id| file.stmt(id))
        .is_some_and(|s| file.section_of(s).group.is_some())
}

/// The COMDAT group of the copy of `f`: `NAME.kpatch`, for a new function too (its copy
/// keeps its name, and a group of that name, which other files of the program may have for
/// the original function, must not replace theirs).
fn group_name(f: &PatchedFunction) -> String {
    format!("{}.kpatch", f.name)
}

/// How the `.kpatch.info` record of copy `n` names the start of the original function: by
/// its name, or, when that is a weak symbol (whose difference with a label the assembler
/// cannot resolve), by `.Lkpatch_fs<N>`, placed right after the function's label.
fn start_of(orig: &AsmFile, f: &PatchedFunction, n: usize) -> String {
    if orig.binding(&f.name) == Binding::Weak {
        start_of_original_label(n)
    } else {
        f.name.clone()
    }
}

fn is_numeric_label(name: &str) -> bool {
    name.bytes().next().is_some_and(|c| c.is_ascii_digit())
}

/// Follows the unwind directives of a copy to know whether the CFA is computed from the
/// stack pointer (then code that moves it must say so).
#[derive(Default)]
struct CfaTracker {
    on_rsp: bool,
    saved: Vec<bool>,
}

impl CfaTracker {
    fn see(&mut self, s: &Stmt) {
        if s.kind != StmtKind::Directive {
            return;
        }
        let first = s.arg_list().first().map(|a| a.trim().to_string());
        let is_sp = |a: Option<String>| a.is_some_and(|a| matches!(a.as_str(), "%rsp" | "7"));
        match s.name.as_str() {
            ".cfi_startproc" => {
                self.on_rsp = true;
                self.saved.clear();
            }
            ".cfi_def_cfa_register" | ".cfi_def_cfa" => self.on_rsp = is_sp(first),
            ".cfi_remember_state" => self.saved.push(self.on_rsp),
            ".cfi_restore_state" => {
                if let Some(v) = self.saved.pop() {
                    self.on_rsp = v;
                }
            }
            _ => {}
        }
    }

    fn on_rsp(&self) -> bool {
        self.on_rsp
    }
}

/// Which patch section a copied statement goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Text,
    Data,
    /// A `.kpatch.*` section the patched source itself puts a variable in (the records of
    /// `<libcare/livepatch.h>`, `.kpatch.callbacks`...): kept as it is, for the runtime to find.
    Own(SectionId),
}

struct Emitter<'a> {
    orig: &'a AsmFile,
    patched: &'a AsmFile,
    diff: &'a Diff,
    norm_orig: Normalizer<'a>,
    norm_patched: Normalizer<'a>,
    out: String,
    data_aligned: bool,
    info_aligned: bool,
    /// Local data of the patched file copied (or queued) into `.kpatch.data`: name → copy.
    copies: HashMap<String, String>,
    queue: Vec<String>,
    /// Numeric labels renamed so far (for unique names).
    numeric_count: usize,
    /// The COMDAT group the function being copied goes into, if any (see [`comdat_group`]).
    group: Option<String>,
}

impl Emitter<'_> {
    fn line(&mut self, s: &str) {
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn comment(&mut self, s: &str) {
        let c = self.orig.dialect.comment;
        self.line(&format!("{c} {s}"));
    }

    fn section_args(&self, t: Target) -> String {
        let d = &self.orig.dialect;
        let (name, flags) = match t {
            Target::Text => (KPATCH_TEXT, "ax"),
            Target::Data => (KPATCH_DATA, "aw"),
            // The source's own records are kept as it put them, outside any group: the
            // runtime reads every one.
            Target::Own(id) => {
                let info = self.patched.sections.get(id);
                let flags = info.effective_flags();
                return d.section_args(&info.name, if flags.is_empty() { "a" } else { flags });
            }
        };
        match &self.group {
            Some(g) => d.group_section_args(name, flags, g),
            None => d.section_args(name, flags),
        }
    }

    /// Starts a patch section with `.pushsection`.
    fn push(&mut self, t: Target) {
        let a = self.section_args(t);
        self.open_section(t, &format!("\t.pushsection\t{a}"));
    }

    /// Switches to `want` inside a pushed patch section, if `cur` is another.
    fn switch(&mut self, cur: &mut Target, want: Target) {
        if *cur != want {
            let a = self.section_args(want);
            self.open_section(want, &format!("\t.section\t{a}"));
            *cur = want;
        }
    }

    /// Writes `directive`, which enters the patch section `t`. The first use of
    /// `.kpatch.data` aligns the file's own piece of it (outside any group, which the linker
    /// may drop) to a page, so that the linked section starts one.
    fn open_section(&mut self, t: Target, directive: &str) {
        let align = t == Target::Data && !self.data_aligned;
        self.data_aligned |= align;
        if align && self.group.is_some() {
            let a = self.orig.dialect.section_args(KPATCH_DATA, "aw");
            self.line(&format!("\t.pushsection\t{a}"));
            self.line(&format!("\t.p2align\t{DATA_ALIGN_LOG2}"));
            self.line("\t.popsection");
        }
        self.line(directive);
        if align && self.group.is_none() {
            self.line(&format!("\t.p2align\t{DATA_ALIGN_LOG2}"));
        }
    }

    fn target_of(&self, s: &Stmt) -> Target {
        let info = self.patched.section_of(s);
        if is_kpatch_section(&info.name)
            && ![KPATCH_TEXT, KPATCH_DATA, KPATCH_INFO, KPATCH_STRTAB].contains(&info.name.as_str())
        {
            Target::Own(s.section.id)
        } else if info.is_code() {
            Target::Text
        } else {
            Target::Data
        }
    }

    /// Binding and visibility directives for a symbol of the patched file under a new name.
    fn declare(&mut self, name: &str, as_name: &str) {
        if let Some(d) = self.patched.binding(name).directive() {
            self.line(&format!("\t{d}\t{as_name}"));
        }
        if let Some(v) = self.patched.visibility(name) {
            self.line(&format!("\t{v}\t{as_name}"));
        }
    }

    fn function_copy(&mut self, n: usize, f: &PatchedFunction) -> Result<(), AsmError> {
        let Some(block) = self.patched.blocks().get(f.patched_block) else {
            return Ok(());
        };
        let defined = defined_in(self.patched, block);
        let mut renames = HashMap::new();
        // Numeric labels (`1:`, referred to as `1b`/`1f`) are local to their neighbourhood.
        for name in defined.iter().filter(|n| !is_numeric_label(n)) {
            let new = if self.patched.dialect.is_local(name) || f.kind != PatchKind::New {
                format!("{name}{COPY_SUFFIX}")
            } else {
                self.diff
                    .rename
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| name.clone())
            };
            renames.insert(name.clone(), new);
        }
        let what = match f.kind {
            PatchKind::Changed => "changed",
            PatchKind::New => "new",
            PatchKind::Unlinked => "unlinked",
        };
        self.comment(&format!("{what} function {}", f.name));
        self.group = comdat_group(self.patched, block).then(|| group_name(f));
        self.push(Target::Text);
        let mut cur = Target::Text;
        match f.kind {
            PatchKind::New => self.declare(&f.name, &f.copy_name),
            _ if f.global => self.line(&format!("\t.globl\t{}", f.copy_name)),
            _ => {}
        }
        self.copy_statements(block, &defined, &renames, &f.name, &mut cur)?;
        self.switch(&mut cur, Target::Text);
        self.line(&format!("{}:", end_of_copy_label(n)));
        self.line("\t.popsection");
        self.group = None;
        Ok(())
    }

    /// Copies a block's statements except section switches, debug lines and the block's own
    /// binding. Code goes to `.kpatch.text`, one original section after the other, starting
    /// with the section of the block's own label: code that inline assembly put into
    /// another section (`.pushsection .text.unlikely`) must not end up where the code before
    /// it falls through. gcc's cold parts are never fallen into, and they follow the hot
    /// part, so `.Lkpatch_end` after the copy covers both. Everything else goes to
    /// `.kpatch.data`, in order.
    fn copy_statements(
        &mut self,
        block: &Block,
        defined: &HashSet<String>,
        renames: &HashMap<String, String>,
        user: &str,
        cur: &mut Target,
    ) -> Result<(), AsmError> {
        let patched = self.patched;
        let kept: Vec<&Stmt> = patched
            .stmts_in(block.lines.clone())
            .map(|(_, s)| s)
            .filter(|s| {
                !(s.is_section_switch()
                    || crate::index::is_debug_directive(s)
                    || s.is_directive(".kpgensrc_flags")
                    || (is_visibility_directive(&s.name)
                        && s.kind == StmtKind::Directive
                        && s.arg_list().iter().all(|a| defined.contains(unquote(a)))))
            })
            .collect();
        let is_code = |s: &Stmt| patched.section_of(s).is_code();
        let mut groups: Vec<SecRef> = patched
            .label(&block.name)
            .and_then(|id| patched.stmt(id))
            .filter(|s| is_code(s))
            .map(|s| s.section)
            .into_iter()
            .collect();
        for s in kept.iter().filter(|s| is_code(s)) {
            if !groups.contains(&s.section) {
                groups.push(s.section);
            }
        }
        let code = groups.iter().flat_map(|g| {
            kept.iter()
                .enumerate()
                .filter(move |(_, s)| s.section == *g)
                .map(|(i, _)| i)
        });
        let data = kept
            .iter()
            .enumerate()
            .filter(|(_, s)| !is_code(s))
            .map(|(i, _)| i);
        let order: Vec<usize> = code.chain(data).collect();
        let numeric = self.numeric_labels(&kept);
        let none = HashMap::new();
        let mut cfa = CfaTracker::default();
        for i in order {
            let (Some(s), numeric) = (kept.get(i).copied(), numeric.get(i).unwrap_or(&none)) else {
                continue;
            };
            if s.is_directive(".comm") || s.is_directive(".lcomm") {
                self.common(block, renames)?;
                continue;
            }
            if !is_section_neutral(s) {
                let t = self.target_of(s);
                self.switch(cur, t);
            }
            cfa.see(s);
            let text = self.render(s, renames, user, numeric)?;
            match self.through_got(s, &text, user, cfa.on_rsp())? {
                Some(lines) => lines.iter().for_each(|l| self.line(l)),
                None => self.line(&text),
            }
        }
        Ok(())
    }

    /// With `--force-gotpcrel`, the instructions replacing a copied instruction `text` that
    /// reaches a symbol the file does not define PC-relatively.
    fn through_got(
        &self,
        s: &Stmt,
        text: &str,
        user: &str,
        cfa_on_rsp: bool,
    ) -> Result<Option<Vec<String>>, AsmError> {
        let p = self.patched;
        if !self.diff.force_gotpcrel
            || s.kind != StmtKind::Instruction
            || p.dialect.arch != crate::dialect::AsmArch::X86_64
            || !p.section_of(s).is_code()
        {
            return Ok(None);
        }
        let external = |name: &str| {
            !p.dialect.is_local(name)
                && p.label(name).is_none()
                && p.variable(name).is_none()
                && p.function(name).is_none()
        };
        crate::gotpcrel::rewrite(text, &external, cfa_on_rsp).map_err(|e| AsmError::ForceGotpcrel {
            file: p.name.clone(),
            function: user.to_string(),
            reason: e.0,
        })
    }

    /// A `.comm`/`.lcomm` variable as zero bytes in `.kpatch.data`.
    fn common(&mut self, block: &Block, renames: &HashMap<String, String>) -> Result<(), AsmError> {
        let Some(c) = &block.comm else { return Ok(()) };
        let name = renames
            .get(&block.name)
            .cloned()
            .unwrap_or_else(|| block.name.clone());
        if let Some(a) = &c.align {
            self.line(&format!("\t.balign\t{a}"));
        }
        let ty = self.orig.dialect.type_directive(&name, "object");
        self.line(&ty);
        self.line(&format!("\t.size\t{name}, {}", c.size));
        self.line(&format!("{name}:"));
        self.line(&format!("\t.zero\t{}", c.size));
        Ok(())
    }

    fn variable_copy(&mut self, block: &Block, copy: &str, name: &str) -> Result<(), AsmError> {
        let defined = defined_in(self.patched, block);
        let mut renames: HashMap<String, String> = defined
            .iter()
            .filter(|n| !is_numeric_label(n))
            .map(|d| (d.clone(), format!("{d}{COPY_SUFFIX}")))
            .collect();
        renames.insert(name.to_string(), copy.to_string());
        self.comment(&format!("new variable {name}"));
        let target = self
            .patched
            .label(&block.name)
            .and_then(|id| self.patched.stmt(id))
            .map(|s| self.target_of(s))
            .filter(|t| matches!(t, Target::Own(_)))
            .unwrap_or(Target::Data);
        self.push(target);
        let mut cur = target;
        let binding = match &block.comm {
            Some(c) if !c.local => Binding::Global,
            _ => self.patched.binding(name),
        };
        if let Some(d) = binding.directive() {
            self.line(&format!("\t{d}\t{copy}"));
        }
        if let Some(v) = self.patched.visibility(name) {
            self.line(&format!("\t{v}\t{copy}"));
        }
        self.copy_statements(block, &defined, &renames, name, &mut cur)?;
        self.line("\t.popsection");
        Ok(())
    }

    /// Copies queued local data (`.LC0`, a `static const` table) into `.kpatch.data`.
    fn data_copy(&mut self, name: &str) -> Result<(), AsmError> {
        let Some(copy) = self.copies.get(name).cloned() else {
            return Ok(());
        };
        if let Some(b) = self.patched.variable(name) {
            return self.variable_copy(b, &copy, name);
        }
        let Some(obj) = self.patched.data_label(name).cloned() else {
            return Ok(());
        };
        let renames = HashMap::from([(name.to_string(), copy.clone())]);
        self.push(Target::Data);
        for id in &obj.aligns {
            if let Some(s) = self.patched.stmt(*id) {
                let t = self.render(s, &renames, name, &HashMap::new())?;
                self.line(&t);
            }
        }
        self.line(&format!("{copy}:"));
        for id in &obj.data {
            if let Some(s) = self.patched.stmt(*id) {
                let t = self.render(s, &renames, name, &HashMap::new())?;
                self.line(&t);
            }
        }
        self.line("\t.popsection");
        Ok(())
    }

    /// A statement of the patched file as the copy spells it.
    /// `numeric` names the numeric labels the statement defines or refers to (`1:`, `1b`).
    fn render(
        &mut self,
        s: &Stmt,
        renames: &HashMap<String, String>,
        user: &str,
        numeric: &HashMap<String, String>,
    ) -> Result<String, AsmError> {
        if s.kind == StmtKind::Label {
            if let Some(n) = numeric.get(&s.name) {
                return Ok(format!("{n}:"));
            }
            return Ok(format!("{}:", self.out_name(&s.name, renames, user)?));
        }
        let d = self.patched.dialect.clone();
        let toks = tokenize(&s.text, &d);
        let names = name_tokens(s, &toks);
        let mut out = String::from("\t");
        for (i, t) in toks.iter().enumerate() {
            if names.contains(&i) {
                out.push_str(&self.out_name(t.text, renames, user)?);
            } else if let Some(n) = numeric.get(t.text).filter(|_| t.kind == TokKind::Number) {
                out.push_str(n);
            } else {
                out.push_str(t.text);
            }
        }
        Ok(out)
    }

    /// Unique names for the numeric labels of a copy, per statement: the copy may reorder
    /// code, and `1f`/`1b` only mean "the next/previous `1:`" in the original order.
    fn numeric_labels(&mut self, kept: &[&Stmt]) -> Vec<HashMap<String, String>> {
        let mut defs: HashMap<&str, Vec<(usize, String)>> = HashMap::new();
        for (i, s) in kept.iter().enumerate() {
            if s.kind == StmtKind::Label && is_numeric_label(&s.name) {
                let unique = format!(".Lkpatch_num{}", self.numeric_count);
                self.numeric_count += 1;
                defs.entry(s.name.as_str()).or_default().push((i, unique));
            }
        }
        let mut out = vec![HashMap::new(); kept.len()];
        if defs.is_empty() {
            return out;
        }
        for (i, s) in kept.iter().enumerate() {
            let names = &mut out[i];
            if s.kind == StmtKind::Label {
                if let Some(list) = defs.get(s.name.as_str()) {
                    if let Some((_, u)) = list.iter().find(|(j, _)| *j == i) {
                        names.insert(s.name.clone(), u.clone());
                    }
                }
                continue;
            }
            for t in tokenize(&s.text, &self.patched.dialect) {
                let Some(n) = t.text.strip_suffix(['b', 'f']) else {
                    continue;
                };
                if t.kind != TokKind::Number || !n.bytes().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                let Some(list) = defs.get(n) else { continue };
                let found = if t.text.ends_with('b') {
                    list.iter().rev().find(|(j, _)| *j < i)
                } else {
                    list.iter().find(|(j, _)| *j > i)
                };
                if let Some((_, u)) = found {
                    names.insert(t.text.to_string(), u.clone());
                }
            }
        }
        out
    }

    /// The name the output uses for `name` of the patched file, referred to by `user`.
    fn out_name(
        &mut self,
        name: &str,
        renames: &HashMap<String, String>,
        user: &str,
    ) -> Result<String, AsmError> {
        if let Some(r) = renames.get(name) {
            return Ok(r.clone());
        }
        let p = self.patched;
        if p.dialect.is_local(name) {
            let Some(obj) = p.data_label(name) else {
                if p.label(name).is_some() {
                    return Err(AsmError::ForeignCodeLabel {
                        file: p.name.clone(),
                        function: user.to_string(),
                        label: name.to_string(),
                    });
                }
                // Not defined in this file (an assembler-made symbol): leave it alone.
                return Ok(name.to_string());
            };
            if obj.data.is_empty() {
                return self.same_anchor_in_original(name, user);
            }
            return Ok(self.queue_copy(name));
        }
        if p.is_readonly_local_object(name) {
            if let Some(o) = self.equal_original_object(name) {
                return Ok(o);
            }
            return Ok(self.queue_copy(name));
        }
        // Other copies call the copy of an unlinked function: it exists for them.
        if let Some(f) = self
            .diff
            .functions
            .iter()
            .find(|f| f.kind == PatchKind::Unlinked && f.name == name)
        {
            return Ok(f.copy_name.clone());
        }
        Ok(self
            .diff
            .rename
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string()))
    }

    fn queue_copy(&mut self, name: &str) -> String {
        if let Some(c) = self.copies.get(name) {
            return c.clone();
        }
        let c = format!("{name}{COPY_SUFFIX}");
        self.copies.insert(name.to_string(), c.clone());
        self.queue.push(name.to_string());
        c
    }

    /// The original's name for the read-only object `name` of the patched file, if the
    /// original has one with the same content (shared, so its address stays the same).
    fn equal_original_object(&self, name: &str) -> Option<String> {
        let want = self.norm_patched.object_content(name)?;
        let same = |o: &str| self.norm_orig.object_content(o).as_deref() == Some(want.as_str());
        if same(name) {
            return Some(name.to_string());
        }
        let base = human_name(name);
        let mut candidates: Vec<&String> = self
            .orig
            .index
            .variables
            .keys()
            .filter(|o| human_name(o) == base && same(o))
            .collect();
        candidates.sort();
        candidates.first().map(|s| (*s).clone())
    }

    /// The original's anchor standing in front of the same objects as anchor `name`.
    fn same_anchor_in_original(&self, name: &str, user: &str) -> Result<String, AsmError> {
        let p = self.patched;
        let want = self.norm_patched.anchor_content(name);
        let mut found: Vec<&String> = self
            .orig
            .index
            .data_labels
            .iter()
            .filter(|(o, obj)| {
                obj.data.is_empty() && want.is_some() && self.norm_orig.anchor_content(o) == want
            })
            .map(|(n, _)| n)
            .collect();
        found.sort();
        found.first().map(|s| (*s).clone()).ok_or_else(|| {
            let section = p
                .data_label(name)
                .map_or(String::new(), |o| p.sections.get(o.section.id).name.clone());
            AsmError::AnchorLayoutChanged {
                file: p.name.clone(),
                user: user.to_string(),
                label: name.to_string(),
                section,
            }
        })
    }

    /// The `.kpatch.strtab` string and `.kpatch.info` record of copy `n`.
    fn records(&mut self, n: usize, f: &PatchedFunction) {
        let d = self.orig.dialect.clone();
        let grouped = self
            .patched
            .blocks()
            .get(f.patched_block)
            .is_some_and(|b| comdat_group(self.patched, b));
        let args = |name: &str, flags: &str| {
            if grouped {
                d.group_section_args(name, flags, &group_name(f))
            } else {
                d.section_args(name, flags)
            }
        };
        self.line(&format!("\t.pushsection\t{}", args(KPATCH_STRTAB, "a")));
        self.line(&format!("{}:", name_label(n)));
        self.line(&format!("\t.string\t\"{}\"", f.copy_name));
        self.line("\t.popsection");
        self.line(&format!("\t.pushsection\t{}", args(KPATCH_INFO, "aw")));
        if !self.info_aligned || grouped {
            self.info_aligned |= !grouped;
            self.line("\t.p2align\t3");
        }
        let (daddr, dlen) = match f.kind {
            PatchKind::Changed => (
                f.name.clone(),
                format!(
                    "{} - {}",
                    end_of_original_label(n),
                    start_of(self.orig, f, n)
                ),
            ),
            PatchKind::New | PatchKind::Unlinked => ("0".to_string(), "0".to_string()),
        };
        let copy = &f.copy_name;
        self.line(&format!("\t.quad\t{daddr}"));
        self.line(&format!("\t.quad\t{copy}"));
        self.line(&format!("\t.long\t{dlen}"));
        self.line(&format!("\t.long\t{} - {copy}", end_of_copy_label(n)));
        self.line(&format!("\t.quad\t{}", name_label(n)));
        self.line("\t.quad\t0");
        self.line("\t.long\t0");
        self.line("\t.byte\t0, 0, 0, 0");
        self.line("\t.popsection");
    }
}

#[cfg(test)]
mod tests {
    use crate::{gensrc, AsmFile, Dialect, DiffOptions};

    const ORIG: &str = r#"	.file	"foo.c"
	.text
	.section	.rodata.str1.1,"aMS",@progbits,1
.LC0:
	.string	"Hello world!"
	.text
	.p2align 4
	.globl	print_hello
	.type	print_hello, @function
print_hello:
.LFB11:
	.cfi_startproc
	leaq	.LC0(%rip), %rdi
	jmp	puts@PLT
	.cfi_endproc
.LFE11:
	.size	print_hello, .-print_hello
	.ident	"GCC"
	.section	.note.GNU-stack,"",@progbits
"#;

    fn run(orig: &str, patched: &str) -> String {
        let o = AsmFile::parse("foo.s", orig, Dialect::x86_64()).unwrap();
        let p = AsmFile::parse("bar.s", patched, Dialect::x86_64()).unwrap();
        gensrc(&o, &p, &DiffOptions::default()).unwrap().0
    }

    #[test]
    fn changed_function_output_is_exactly_as_documented() {
        let patched = ORIG
            .replace("foo.c", "bar.c")
            .replace(".LC0", ".LC3")
            .replace("Hello world!", "Hello world being patched!")
            .replace(".LFB11", ".LFB12")
            .replace(".LFE11", ".LFE12");
        let expected = ORIG.replace(
            "\t.size\tprint_hello, .-print_hello\n",
            ".Lkpatch_fe0:\n\t.size\tprint_hello, .-print_hello\n",
        ) + r#"# ---------- kpatch_gensrc: patch ----------
# changed function print_hello
	.pushsection	.kpatch.text,"ax",@progbits
	.globl	print_hello.kpatch
	.p2align 4
	.type	print_hello.kpatch, @function
print_hello.kpatch:
.LFB12.kpatch:
	.cfi_startproc
	leaq	.LC3.kpatch(%rip), %rdi
	jmp	puts@PLT
	.cfi_endproc
.LFE12.kpatch:
	.size	print_hello.kpatch, .-print_hello.kpatch
.Lkpatch_end0:
	.popsection
	.pushsection	.kpatch.data,"aw",@progbits
	.p2align	12
.LC3.kpatch:
	.string	"Hello world being patched!"
	.popsection
	.pushsection	.kpatch.strtab,"a",@progbits
.Lkpatch_str0:
	.string	"print_hello.kpatch"
	.popsection
	.pushsection	.kpatch.info,"aw",@progbits
	.p2align	3
	.quad	print_hello
	.quad	print_hello.kpatch
	.long	.Lkpatch_fe0 - print_hello
	.long	.Lkpatch_end0 - print_hello.kpatch
	.quad	.Lkpatch_str0
	.quad	0
	.long	0
	.byte	0, 0, 0, 0
	.popsection
"#;
        assert_eq!(run(ORIG, &patched), expected);
    }

    #[test]
    fn unchanged_file_is_returned_as_is_even_without_final_newline() {
        let o = ORIG.trim_end();
        assert_eq!(run(o, o), o);
    }

    #[test]
    fn adapted_marker_never_reaches_the_assembler() {
        let marked = ORIG.replace(
            "\tleaq\t.LC0(%rip), %rdi\n",
            "\t.kpgensrc_flags KPGENSRC_ADAPTED\n\tleaq\t.LC0(%rip), %rdi\n\tnop\n",
        );
        let out = run(&marked, &marked.replace("\tnop\n", "\tnop\n\tnop\n"));
        for l in out.lines() {
            let code = l.split('#').next().unwrap_or("");
            assert!(!code.contains(".kpgensrc_flags"), "{l}");
        }
        assert!(out.contains("print_hello.kpatch:"));
    }

    #[test]
    fn readonly_local_tables_are_shared_when_equal_and_copied_when_changed() {
        let with_table = |v: u32, extra: &str| {
            ORIG.replace(
                "\tjmp\tputs@PLT\n",
                &format!("\tleaq\ttab(%rip), %rax\n{extra}\tjmp\tputs@PLT\n"),
            ) + &format!(
                "\t.section\t.rodata\n\t.align 8\n\t.type\ttab, @object\n\t.size\ttab, 8\ntab:\n\t.long\t1\n\t.long\t{v}\n"
            )
        };
        let same = run(&with_table(2, ""), &with_table(2, "\tnop\n"));
        assert!(
            same.contains("\tleaq\ttab(%rip), %rax\n\tnop"),
            "shared: {same}"
        );
        assert!(!same.contains("tab.kpatch"));
        let changed = run(&with_table(2, ""), &with_table(3, ""));
        assert!(
            changed.contains("\tleaq\ttab.kpatch(%rip), %rax"),
            "{changed}"
        );
        assert!(
            changed.contains("tab.kpatch:\n\t.long\t1\n\t.long\t3\n"),
            "{changed}"
        );
        assert!(changed.contains(".type\ttab.kpatch, @object"));
    }

    #[test]
    fn records_of_livepatch_h_stay_in_their_own_sections() {
        // `LIBCARE_CALLBACKS` and `LIBCARE_STATE` put a variable nothing refers to in a
        // `.kpatch.*` section; the runtime finds them there.
        let patched = ORIG.to_string()
            + "\t.section\t.kpatch.callbacks,\"aw\"\n\t.align 8\n\t.type\tcb, @object\n\t.size\tcb, 8\ncb:\n\t.quad\tgreet\n"
            + "\t.section\t.kpatch.states,\"a\"\n\t.align 8\n\t.type\tst, @object\n\t.size\tst, 16\nst:\n\t.quad\t1\n\t.long\t2\n\t.long\t0\n";
        let out = run(ORIG, &patched);
        assert!(
            out.contains("\t.pushsection\t.kpatch.callbacks,\"aw\",@progbits\n\t.align 8\n\t.type\tcb, @object"),
            "{out}"
        );
        assert!(
            out.contains(
                "\t.pushsection\t.kpatch.states,\"a\",@progbits\n\t.align 8\n\t.type\tst, @object"
            ),
            "{out}"
        );
        assert!(!out.contains(".kpatch.data"), "{out}");
    }

    #[test]
    fn out_of_line_code_goes_after_the_function_body() {
        let body = |msg: &str| {
            ORIG.replace(
                "\tjmp\tputs@PLT\n",
                &format!(
                    "\ttestl\t%edi, %edi\n\tjne\t2f\n\t.pushsection\t.text.unlikely\n2:\tmovl\t${msg}, %eax\n\tjmp\t3f\n\t.popsection\n3:\tjmp\tputs@PLT\n"
                ),
            )
        };
        let out = run(&body("1"), &body("2"));
        let copy = &out[out.find("print_hello.kpatch:").unwrap()..];
        let pos = |t: &str| copy.find(t).unwrap_or_else(|| panic!("{t} in {copy}"));
        // In the copy, `3:` follows the `jne` as in the original section, and the
        // out-of-line piece comes after the body, not in the way of its fall-through.
        // Numeric labels get unique names, so `2f`/`3f` still find their targets.
        assert!(pos("\tjne\t.Lkpatch_num0\n") < pos(".Lkpatch_num1:\n\tjmp\tputs"));
        assert!(pos(".Lkpatch_num1:\n\tjmp\tputs") < pos(".Lkpatch_num0:\n\tmovl\t$2"));
        assert!(pos("\tjmp\t.Lkpatch_num1\n") < pos(".Lkpatch_end0:"));
    }
}
