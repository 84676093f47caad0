//! The normal form of a block, in which two builds of the same source compare equal:
//! local labels renumbered by first appearance, references to local data replaced by the
//! data itself, debugging-only statements dropped.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use crate::index::{
    is_debug_directive, is_debug_label, is_visibility_directive, Block, DataObject,
};
use crate::lex::{tokenize, unquote, Tok, TokKind};
use crate::parse::{AsmFile, Stmt, StmtId, StmtKind};

/// Symbols a block defines: labels and `.set NAME, .` positions.
pub(crate) fn defined_in(file: &AsmFile, block: &Block) -> HashSet<String> {
    file.stmts_in(block.lines.clone())
        .filter(|(id, s)| {
            s.kind == StmtKind::Label
                || (s.kind == StmtKind::Assign && file.label(&s.name) == Some(*id))
        })
        .map(|(_, s)| s.name.clone())
        .collect()
}

/// Whether a statement of a block is left out of comparisons.
pub(crate) fn ignored_in_compare(s: &Stmt, defined: &HashSet<String>) -> bool {
    match s.kind {
        StmtKind::Label => is_debug_label(&s.name),
        StmtKind::Directive => {
            is_debug_directive(s)
                || s.is_section_switch()
                || s.name == ".kpgensrc_flags"
                || s.name == ".ident"
                || (is_visibility_directive(&s.name)
                    && s.arg_list().iter().all(|n| defined.contains(unquote(n))))
        }
        _ => false,
    }
}

/// Whether a statement emits nothing and means the same in any section.
pub(crate) fn is_section_neutral(s: &Stmt) -> bool {
    s.kind == StmtKind::Directive
        && (is_visibility_directive(&s.name)
            || matches!(
                s.name.as_str(),
                ".type" | ".ident" | ".file" | ".kpgensrc_flags" | ".comm" | ".lcomm"
            )
            || is_debug_directive(s))
}

/// Indices of the tokens of `s` that name symbols: identifiers other than the mnemonic or
/// directive, register names (`%rax`) and relocation or type suffixes (`@PLT`, `@function`).
pub(crate) fn name_tokens(s: &Stmt, toks: &[Tok<'_>]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut seen_word = s.kind == StmtKind::Assign;
    let mut prev: Option<&str> = None;
    for (i, t) in toks.iter().enumerate() {
        if t.kind == TokKind::Space {
            continue;
        }
        if t.kind == TokKind::Ident {
            let first = !seen_word;
            seen_word = true;
            if !first && !matches!(prev, Some("%") | Some("@")) {
                out.push(i);
            }
        } else if t.kind != TokKind::Punct {
            seen_word = true;
        }
        prev = Some(t.text);
    }
    out
}

/// Normalises blocks of one file. `rename` maps names of this file to the names their
/// counterparts have in the other file (for variables matched under different names).
pub(crate) struct Normalizer<'a> {
    file: &'a AsmFile,
    rename: &'a HashMap<String, String>,
    memo: RefCell<HashMap<String, String>>,
}

impl<'a> Normalizer<'a> {
    pub fn new(file: &'a AsmFile, rename: &'a HashMap<String, String>) -> Normalizer<'a> {
        Normalizer {
            file,
            rename,
            memo: RefCell::new(HashMap::new()),
        }
    }

    /// The normal form of `block`: one string per significant statement, with a section
    /// marker whenever the section of the following statements changes.
    pub fn block(&self, block: &Block) -> Vec<String> {
        self.block_with_ids(block)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    /// [`Normalizer::block`], each string with the statement it comes from (a section
    /// marker: the statement in the new section).
    pub fn block_with_ids(&self, block: &Block) -> Vec<(String, StmtId)> {
        let defined = defined_in(self.file, block);
        let mut numbering = HashMap::new();
        let mut out = Vec::new();
        let mut last_section = None;
        for (id, s) in self.file.stmts_in(block.lines.clone()) {
            if ignored_in_compare(s, &defined) {
                continue;
            }
            if !is_section_neutral(s) && last_section != Some(s.section) {
                last_section = Some(s.section);
                let sec = self.file.sections.get(s.section.id);
                out.push((format!("[section {} {}]", sec.name, s.section.sub), id));
            }
            out.push((self.stmt(s, &defined, &mut numbering), id));
        }
        out
    }

    /// A statement with every name replaced by its normal form.
    fn stmt(
        &self,
        s: &Stmt,
        defined: &HashSet<String>,
        numbering: &mut HashMap<String, usize>,
    ) -> String {
        if s.kind == StmtKind::Label {
            return format!("{}:", self.name(&s.name, defined, numbering));
        }
        let toks = tokenize(&s.text, &self.file.dialect);
        let names = name_tokens(s, &toks);
        let mut out = String::new();
        let mut prev_word = false;
        let mut space = false;
        for (i, t) in toks.iter().enumerate() {
            match t.kind {
                TokKind::Space => space = true,
                kind => {
                    let word = matches!(kind, TokKind::Ident | TokKind::Number | TokKind::Str);
                    if word && prev_word && space {
                        out.push(' ');
                    }
                    if names.contains(&i) {
                        out.push_str(&self.name(t.text, defined, numbering));
                    } else {
                        out.push_str(t.text);
                    }
                    prev_word = word;
                    space = false;
                }
            }
        }
        out
    }

    /// The normal form of a statement outside any block.
    pub fn top_level(&self, s: &Stmt) -> String {
        self.stmt(s, &HashSet::new(), &mut HashMap::new())
    }

    /// The normal form of the read-only local object `name` (a `static const` table or a
    /// local data label): its data, or `None` if `name` is not one.
    pub fn object_content(&self, name: &str) -> Option<String> {
        if self.file.dialect.is_local(name) {
            let obj = self.file.data_label(name)?;
            return Some(self.content(name, obj));
        }
        if !self.file.is_readonly_local_object(name) {
            return None;
        }
        let obj = self.file.variable(name)?.object.as_ref()?;
        Some(self.content(name, obj))
    }

    /// The normal form of a name used in a block defining `defined`.
    fn name(
        &self,
        name: &str,
        defined: &HashSet<String>,
        numbering: &mut HashMap<String, usize>,
    ) -> String {
        let d = &self.file.dialect;
        if defined.contains(name) {
            if d.is_local(name) {
                let n = numbering.len();
                let k = *numbering.entry(name.to_string()).or_insert(n);
                return format!(".L#{k}");
            }
            // A variable matched under another name is compared under that name.
            return self
                .rename
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.to_string());
        }
        if d.is_local(name) {
            return self.outside_local(name);
        }
        if self.file.is_readonly_local_object(name) {
            if let Some(obj) = self.file.variable(name).and_then(|b| b.object.as_ref()) {
                return self.content(name, obj);
            }
        }
        if let Some(c) = self.outlined_content(name) {
            return c;
        }
        self.rename
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// The normal form of the outlined function `name` (see [`AsmFile::is_outlined_function`]):
    /// its code, with its own name left out; `None` if `name` is not one.
    pub fn outlined_content(&self, name: &str) -> Option<String> {
        if !self.file.is_outlined_function(name) {
            return None;
        }
        let block = self.file.function(name)?;
        Some(self.memoized(format!("{name} (outlined)"), name, || {
            format!(
                "{{outlined {}}}",
                self.block(block).join("; ").replace(name, "{self}")
            )
        }))
    }

    /// The normal form memoised under `key`, made by `make` the first time. While it is being
    /// made, a reference back to `name` (a self-referencing object) normalises to a marker.
    fn memoized(&self, key: String, name: &str, make: impl FnOnce() -> String) -> String {
        if let Some(c) = self.memo.borrow().get(&key) {
            return c.clone();
        }
        self.memo
            .borrow_mut()
            .insert(key.clone(), format!("{{cycle {name}}}"));
        let c = make();
        self.memo.borrow_mut().insert(key, c.clone());
        c
    }

    /// The normal form of a local label defined outside the block being normalised.
    fn outside_local(&self, name: &str) -> String {
        match self.file.data_label(name) {
            Some(obj) if obj.data.is_empty() => self
                .anchor_content(name)
                .unwrap_or_else(|| format!("{{ext {name}}}")),
            Some(obj) => self.content(name, obj),
            None => format!("{{ext {name}}}"),
        }
    }

    /// The normal form of everything an anchor (a local label with no data of its own, like
    /// aarch64's `.set .LANCHOR0, . + 0`) stands in front of: the objects that follow it in
    /// its section, up to the next section switch. Code reaches them at fixed offsets from
    /// the anchor, so two anchors are interchangeable only when all of this is the same.
    pub fn anchor_content(&self, name: &str) -> Option<String> {
        let obj = self.file.data_label(name)?;
        if !obj.data.is_empty() {
            return None;
        }
        Some(self.memoized(format!("{name} (anchor)"), name, || {
            let sec = self.file.sections.get(obj.section.id);
            let mut parts = vec![format!("{{anchor {}", sec.name)];
            let none = HashSet::new();
            let mut numbering = HashMap::new();
            for (_, s) in self.file.stmts_after(obj.label) {
                if s.is_section_switch() {
                    break;
                }
                if is_section_neutral(s) {
                    continue;
                }
                parts.push(self.stmt(s, &none, &mut numbering));
            }
            parts.join("; ") + "}"
        }))
    }

    /// The normal form of a read-only data object: its section, alignment and data.
    fn content(&self, name: &str, obj: &DataObject) -> String {
        self.memoized(name.to_string(), name, || {
            let sec = self.file.sections.get(obj.section.id);
            let mut parts = vec![format!("{{data {}", sec.name)];
            let none = HashSet::new();
            let mut numbering = HashMap::new();
            for id in obj.aligns.iter().chain(&obj.data) {
                if let Some(s) = self.file.stmt(*id) {
                    parts.push(self.stmt(s, &none, &mut numbering));
                }
            }
            parts.join("; ") + "}"
        })
    }
}

impl AsmFile {
    /// Whether `name` is a function clang's machine outliner made
    /// (`OUTLINED_FUNCTION_<N>`, local): a piece of code shared by several functions and
    /// numbered over the file, so compared by content wherever it is used. It is never
    /// replaced in place (its other callers expect its code): a patched function whose
    /// outlined piece changed gets a copy of the new one.
    pub fn is_outlined_function(&self, name: &str) -> bool {
        name.strip_prefix("OUTLINED_FUNCTION_")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            && self.binding(name) == crate::index::Binding::Local
            && self.function(name).is_some_and(|b| b.name == name)
    }

    /// Whether `name` is a named, file-local, read-only data object (a `static const`
    /// table, `CSWTCH.N`, `__func__.N`): it has no state, so it is compared by content and
    /// copied into a patch like a string literal when its content changes.
    pub fn is_readonly_local_object(&self, name: &str) -> bool {
        let Some(b) = self.variable(name) else {
            return false;
        };
        let Some(obj) = &b.object else { return false };
        let sec = self.sections.get(obj.section.id);
        self.binding(name) == crate::index::Binding::Local
            && sec.is_alloc()
            && !sec.is_writable()
            && !sec.is_nobits()
            && !sec.is_tls()
            && !sec.is_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    fn norm(text: &str, func: &str) -> Vec<String> {
        let f = AsmFile::parse("t.s", text, Dialect::x86_64()).unwrap();
        let empty = HashMap::new();
        let n = Normalizer::new(&f, &empty);
        n.block(f.function(func).unwrap())
    }

    fn func(body: &str) -> String {
        format!("\t.text\n\t.globl\tf\n\t.type\tf, @function\nf:\n{body}\t.size\tf, .-f\n")
    }

    #[test]
    fn local_labels_are_renumbered_by_first_appearance() {
        let a = norm(&func("\tjmp\t.L5\n.L5:\n\tjne\t.L9\n.L9:\n\tret\n"), "f");
        let b = norm(&func("\tjmp\t.L12\n.L12:\n\tjne\t.L3\n.L3:\n\tret\n"), "f");
        assert_eq!(a, b);
        assert!(a.contains(&"jmp .L#0".to_string()), "{a:?}");
        let c = norm(&func("\tjmp\t.L12\n.L12:\n\tjne\t.L12\n.L3:\n\tret\n"), "f");
        assert_ne!(a, c);
    }

    #[test]
    fn string_literals_compare_by_content() {
        let pool = |n: u32, s: &str| {
            format!("\t.section\t.rodata.str1.1,\"aMS\",@progbits,1\n.LC{n}:\n\t.string\t\"{s}\"\n")
        };
        let body = |n: u32| func(&format!("\tleaq\t.LC{n}(%rip), %rdi\n\tret\n"));
        let a = norm(&(pool(3, "hi") + &body(3)), "f");
        let b = norm(&(pool(0, "x") + &pool(4, "hi") + &body(4)), "f");
        let c = norm(&(pool(3, "bye") + &body(3)), "f");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn floating_constants_compare_by_content_with_alignment() {
        let k = |name: &str, hi: u32| {
            format!(
                "\t.section\t.rodata.cst8,\"aM\",@progbits,8\n\t.align 8\n{name}:\n\t.long\t0\n\t.long\t{hi}\n"
            )
        };
        let body = |name: &str| func(&format!("\tmulsd\t{name}(%rip), %xmm0\n\tret\n"));
        let a = norm(&(k(".LC1", 1074397184) + &body(".LC1")), "f");
        let b = norm(&(k(".LC7", 1074397184) + &body(".LC7")), "f");
        let c = norm(&(k(".LC1", 1074397185) + &body(".LC1")), "f");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn nested_data_references_resolve_recursively() {
        let data = |a: &str, b: &str| {
            format!(
                "\t.section\t.rodata\n.LC{a}:\n\t.string\t\"s\"\n\t.section\t.data.rel.ro.local,\"aw\"\n\t.align 8\n.LC{b}:\n\t.quad\t.LC{a}\n"
            )
        };
        let body = |b: &str| func(&format!("\tmovq\t.LC{b}(%rip), %rax\n\tret\n"));
        assert_eq!(
            norm(&(data("1", "2") + &body("2")), "f"),
            norm(&(data("5", "9") + &body("9")), "f")
        );
    }

    #[test]
    fn debug_lines_are_ignored() {
        let plain = norm(
            &func("\t.cfi_startproc\n\tmovl\t$1, %eax\n\tret\n\t.cfi_endproc\n"),
            "f",
        );
        let dbg = norm(
            &func(
                ".LFB7:\n\t.file 1 \"a.c\"\n\t.loc 1 8 15 view -0\n\t.cfi_startproc\n.LVL0:\n\t.loc 1 9 3 view .LVU1\n\tmovl\t$1, %eax\n.LBB2:\n\tret\n.LBE2:\n\t.cfi_endproc\n.LFE7:\n",
            ),
            "f",
        );
        assert_eq!(plain, dbg);
    }

    #[test]
    fn whitespace_and_comments_do_not_matter() {
        assert_eq!(
            norm(&func("\tmovl\t$1, %eax\n\tret\n"), "f"),
            norm(
                &func("  movl $1,%eax   # one\n#APP\n# 5 \"t.c\" 1\n#NO_APP\n\tret\n"),
                "f"
            )
        );
    }

    #[test]
    fn section_of_statements_is_part_of_the_form() {
        let a = norm(
            &func(
                "\tjmp\t*%rax\n\t.section\t.rodata\n.L4:\n\t.long\t.L2-.L4\n\t.text\n.L2:\n\tret\n",
            ),
            "f",
        );
        let b = norm(
            &func("\tjmp\t*%rax\n\t.section\t.data.rel.ro\n.L4:\n\t.long\t.L2-.L4\n\t.text\n.L2:\n\tret\n"),
            "f",
        );
        assert_ne!(a, b);
    }

    #[test]
    fn readonly_local_objects_compare_by_content() {
        let tab = |name: &str, v: u32| {
            format!("\t.section\t.rodata\n\t.align 16\n\t.type\t{name}, @object\n\t.size\t{name}, 8\n{name}:\n\t.long\t11\n\t.long\t{v}\n")
        };
        let body = |name: &str| func(&format!("\tleaq\t{name}(%rip), %rax\n\tret\n"));
        let a = norm(&(body("CSWTCH.8") + &tab("CSWTCH.8", 22)), "f");
        let b = norm(&(body("CSWTCH.9") + &tab("CSWTCH.9", 22)), "f");
        let c = norm(&(body("CSWTCH.8") + &tab("CSWTCH.8", 23)), "f");
        assert_eq!(a, b);
        assert_ne!(a, c);
        // A global constant is referenced by name: its content is checked as a variable.
        let g = |v: u32| norm(&(body("tab") + "\t.globl\ttab\n" + &tab("tab", v)), "f");
        assert_eq!(g(1), g(2));
    }
}
