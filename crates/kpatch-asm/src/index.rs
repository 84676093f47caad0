//! What a file defines: symbols and their attributes, and the split of its lines into
//! function, variable and other blocks, plus the local data labels (`.LC0`) between them.

use std::collections::HashMap;
use std::ops::Range;

use crate::error::AsmError;
use crate::lex::unquote;
use crate::parse::{AsmFile, Line, Stmt, StmtId, StmtKind};
use crate::section::SecRef;

/// What a block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// From the directives that introduce a function to its `.size` (and its `.cold` parts).
    Function,
    /// A named data object: `.type X, @object` ... its data, or `.comm`/`.lcomm`.
    Variable,
    /// Anything else: file directives, literal pools, debug sections.
    Other,
}

/// A run of consecutive lines of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: BlockKind,
    /// The function's or variable's symbol; empty for other blocks.
    pub name: String,
    /// Line indices (0-based, end exclusive).
    pub lines: Range<usize>,
    /// Every name typed `@function` in the block: the function and its `.cold` parts.
    pub parts: Vec<String>,
    /// Line of the function's own `.size NAME, ...`.
    pub size_line: Option<usize>,
    /// Whether the block carries `.kpgensrc_flags KPGENSRC_ADAPTED`.
    pub adapted: bool,
    /// A variable's label, alignment and data.
    pub object: Option<DataObject>,
    /// A variable defined by `.comm` or `.lcomm`.
    pub comm: Option<Common>,
}

/// A labelled piece of data: the alignment directives right before the label and the data
/// directives after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataObject {
    pub label: StmtId,
    pub aligns: Vec<StmtId>,
    pub data: Vec<StmtId>,
    pub section: SecRef,
}

/// A `.comm NAME, SIZE[, ALIGN]` or `.lcomm NAME, SIZE[, ALIGN]` definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub stmt: StmtId,
    pub size: String,
    pub align: Option<String>,
    /// `.lcomm`, or `.comm` of a name declared `.local`.
    pub local: bool,
}

/// Symbol binding as declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    Local,
    Global,
    Weak,
}

/// Everything [`AsmFile`] knows about the structure of its lines.
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    /// First definition of each label (and of each `.set NAME, .`-style position).
    pub labels: HashMap<String, StmtId>,
    /// `.type` of each symbol, without its `@`/`%` prefix.
    pub types: HashMap<String, String>,
    pub binding: HashMap<String, Binding>,
    /// `.hidden`, `.protected` or `.internal` of a symbol.
    pub visibility: HashMap<String, String>,
    pub blocks: Vec<Block>,
    /// Block index of each line.
    pub block_of_line: Vec<usize>,
    /// Function block of each function and `.cold` part name.
    pub functions: HashMap<String, usize>,
    /// Variable block of each variable name.
    pub variables: HashMap<String, usize>,
    /// Local labels in data sections outside functions and variables' own labels.
    pub data_labels: HashMap<String, DataObject>,
}

/// Data directives: statements that emit bytes of a data object.
pub(crate) fn is_data_directive(name: &str) -> bool {
    matches!(
        name,
        ".ascii"
            | ".asciz"
            | ".string"
            | ".string8"
            | ".string16"
            | ".string32"
            | ".string64"
            | ".byte"
            | ".2byte"
            | ".4byte"
            | ".8byte"
            | ".word"
            | ".short"
            | ".hword"
            | ".half"
            | ".int"
            | ".long"
            | ".quad"
            | ".octa"
            | ".xword"
            | ".dword"
            | ".value"
            | ".double"
            | ".float"
            | ".single"
            | ".zero"
            | ".skip"
            | ".space"
            | ".fill"
            | ".uleb128"
            | ".sleb128"
            | ".incbin"
            | ".base64"
    ) || name.starts_with(".dc.")
        || name == ".dc"
}

/// Alignment directives.
pub(crate) fn is_align_directive(name: &str) -> bool {
    matches!(
        name,
        ".align" | ".p2align" | ".balign" | ".p2alignw" | ".p2alignl" | ".balignw" | ".balignl"
    )
}

/// Directives that set a symbol's binding or visibility.
pub(crate) fn is_visibility_directive(name: &str) -> bool {
    matches!(
        name,
        ".globl" | ".global" | ".local" | ".weak" | ".hidden" | ".protected" | ".internal"
    )
}

/// Statements that only feed debugging information: `.loc`, `.file N "..."`.
pub(crate) fn is_debug_directive(s: &Stmt) -> bool {
    s.kind == StmtKind::Directive
        && (s.name.starts_with(".loc")
            || (s.name == ".file"
                && s.args
                    .trim_start()
                    .starts_with(|c: char| c.is_ascii_digit())))
}

/// Whether `name` is one of `prefixes` followed by a number (`.LBB12`, not clang's basic
/// block label `.LBB0_1`).
fn has_numbered_prefix(name: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit()))
    })
}

/// Labels gcc defines only for debugging information (and, for `.LFB`/`.LFE`, exception
/// tables): code never jumps to them, and their numbers shift with unrelated changes.
pub fn is_debug_label(name: &str) -> bool {
    has_numbered_prefix(
        name,
        &[
            ".LVL", ".LBB", ".LBE", ".LBI", ".LFB", ".LFE", ".LFSB", ".LCFI", ".LVU", ".LLST",
            ".LLRL", ".LLVU",
        ],
    ) || name.starts_with(".Ltext")
        || name.starts_with(".Letext")
        || name.starts_with(".Ldebug")
}

/// Labels gcc puts around the hot and cold parts of a partitioned function.
pub fn is_hot_cold_label(name: &str) -> bool {
    has_numbered_prefix(name, &[".LCOLDB", ".LHOTB", ".LCOLDE", ".LHOTE"])
}

fn is_hot_cold_end_label(name: &str) -> bool {
    has_numbered_prefix(name, &[".LCOLDE", ".LHOTE"])
}

/// The symbol named by a single-name directive argument list.
fn first_name(s: &Stmt) -> &str {
    unquote(s.args.split(',').next().unwrap_or("").trim())
}

/// `.type NAME, KIND` → (NAME, KIND without prefix).
fn type_decl(s: &Stmt) -> Option<(&str, String)> {
    if !s.is_directive(".type") {
        return None;
    }
    let a = s.arg_list();
    let name = unquote(a.first()?);
    let kind = unquote(a.get(1)?.trim_start_matches(['@', '%', '#'])).to_ascii_lowercase();
    let kind = match kind.as_str() {
        "stt_func" => "function".to_string(),
        "stt_object" => "object".to_string(),
        "stt_tls" => "tls_object".to_string(),
        _ => kind,
    };
    Some((name, kind))
}

fn is_variable_type(kind: &str) -> bool {
    matches!(
        kind,
        "object" | "tls_object" | "gnu_unique_object" | "common"
    )
}

impl Index {
    pub fn build(f: &AsmFile) -> Result<Index, AsmError> {
        let mut ix = Index::default();
        ix.collect_symbols(f);
        ix.split_blocks(f)?;
        ix.check_unique_functions(f)?;
        ix.collect_data_labels(f);
        Ok(ix)
    }

    /// A function defined twice cannot be matched with its other build: the assembler would
    /// refuse such a file too.
    fn check_unique_functions(&self, f: &AsmFile) -> Result<(), AsmError> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for b in self.blocks.iter().filter(|b| b.kind == BlockKind::Function) {
            if let Some(first) = seen.insert(&b.name, b.lines.start) {
                return Err(AsmError::Parse {
                    file: f.name.clone(),
                    line: b.lines.start + 1,
                    msg: format!(
                        "function `{}` is defined again (first at line {})",
                        b.name,
                        first + 1
                    ),
                });
            }
        }
        Ok(())
    }

    fn collect_symbols(&mut self, f: &AsmFile) {
        for (id, s) in f.stmts_in(0..f.lines.len()) {
            match s.kind {
                StmtKind::Label => {
                    self.labels.entry(s.name.clone()).or_insert(id);
                }
                StmtKind::Assign => {
                    // `.set .LANCHOR0, . + 0` defines a position, like a label.
                    let e = s.args.trim();
                    if e == "." || e.starts_with(". ") || e.starts_with(".+") {
                        self.labels.entry(s.name.clone()).or_insert(id);
                    }
                }
                StmtKind::Directive => {
                    if let Some((name, kind)) = type_decl(s) {
                        self.types.insert(name.to_string(), kind);
                    }
                    let b = match s.name.as_str() {
                        ".globl" | ".global" => Some(Binding::Global),
                        ".weak" => Some(Binding::Weak),
                        ".local" => Some(Binding::Local),
                        _ => None,
                    };
                    let vis = matches!(s.name.as_str(), ".hidden" | ".protected" | ".internal");
                    if b.is_some() || vis {
                        for n in s.arg_list() {
                            let n = unquote(n).to_string();
                            if let Some(b) = b {
                                self.binding.insert(n, b);
                            } else {
                                self.visibility.insert(n, s.name.clone());
                            }
                        }
                    }
                }
                StmtKind::Instruction => {}
            }
        }
    }

    /// The binding a symbol ends up with: declared, or local by default.
    pub fn binding_of(&self, name: &str) -> Binding {
        self.binding.get(name).copied().unwrap_or(Binding::Local)
    }

    fn label_line(&self, name: &str) -> Option<usize> {
        self.labels.get(name).map(|id| id.line)
    }

    fn split_blocks(&mut self, f: &AsmFile) -> Result<(), AsmError> {
        let n = f.lines.len();
        let mut cur = 0;
        let mut i = 0;
        while i < n {
            let line = &f.lines[i];
            let mut found = None;
            for s in &line.stmts {
                if let Some((name, kind)) = type_decl(s) {
                    // clang types its string literals (`.type .L.str,@object`): they are
                    // local data like gcc's `.LC0`, not variables.
                    if f.dialect.is_local(name) {
                        break;
                    }
                    let defined_here_or_later = self.label_line(name).is_some_and(|l| l >= i);
                    if kind == "function" && defined_here_or_later {
                        found = Some((BlockKind::Function, name.to_string()));
                    } else if is_variable_type(&kind) && defined_here_or_later {
                        found = Some((BlockKind::Variable, name.to_string()));
                    }
                    break;
                }
                if s.is_directive(".comm") || s.is_directive(".lcomm") {
                    found = Some((BlockKind::Variable, first_name(s).to_string()));
                    break;
                }
            }
            let Some((kind, name)) = found else {
                i += 1;
                continue;
            };
            let start = walk_back(&f.lines, i, cur, &name, kind);
            let block = match kind {
                BlockKind::Function => self.function_block(f, start, i, &name)?,
                _ => self.variable_block(f, start, i, &name),
            };
            if start > cur {
                self.push_other(cur..start);
            }
            cur = block.lines.end;
            i = cur;
            self.push(block);
        }
        if cur < n {
            self.push_other(cur..n);
        }
        Ok(())
    }

    fn push_other(&mut self, lines: Range<usize>) {
        self.push(Block {
            kind: BlockKind::Other,
            name: String::new(),
            lines,
            parts: Vec::new(),
            size_line: None,
            adapted: false,
            object: None,
            comm: None,
        });
    }

    fn push(&mut self, b: Block) {
        let idx = self.blocks.len();
        self.block_of_line.resize(b.lines.end, idx);
        match b.kind {
            BlockKind::Function => {
                for p in &b.parts {
                    self.functions.entry(p.clone()).or_insert(idx);
                }
            }
            BlockKind::Variable => {
                self.variables.entry(b.name.clone()).or_insert(idx);
            }
            BlockKind::Other => {}
        }
        self.blocks.push(b);
    }

    fn function_block(
        &self,
        f: &AsmFile,
        start: usize,
        type_line: usize,
        name: &str,
    ) -> Result<Block, AsmError> {
        let mut open = vec![name.to_string()];
        let mut parts = vec![name.to_string()];
        let mut size_line = None;
        let mut adapted = false;
        let mut end = None;
        'lines: for (j, line) in f.lines.iter().enumerate().skip(type_line) {
            for s in &line.stmts {
                if let Some((g, kind)) = type_decl(s) {
                    if kind == "function" && g != name && self.labels.contains_key(g) {
                        open.push(g.to_string());
                        parts.push(g.to_string());
                    }
                }
                if s.is_directive(".kpgensrc_flags") && s.args.contains("KPGENSRC_ADAPTED") {
                    adapted = true;
                }
                if s.is_directive(".size") {
                    let sized = first_name(s);
                    if sized == name {
                        size_line = Some(j);
                    }
                    open.retain(|o| o != sized);
                    if open.is_empty() {
                        end = Some(j + 1);
                        break 'lines;
                    }
                }
            }
        }
        let Some(mut end) = end else {
            return Err(AsmError::FunctionWithoutEnd {
                file: f.name.clone(),
                line: type_line + 1,
                name: name.to_string(),
            });
        };
        // gcc closes a partitioned function with `.LCOLDE<n>:` / `.LHOTE<n>:` after the
        // last `.size`, with section switches in between.
        let mut j = end;
        while let Some(line) = f.lines.get(j) {
            let mut has_end_label = false;
            let fits = line.stmts.iter().all(|s| {
                let end_label = s.kind == StmtKind::Label && is_hot_cold_end_label(&s.name);
                has_end_label |= end_label;
                end_label || s.is_section_switch()
            });
            if !fits {
                break;
            }
            if has_end_label {
                end = j + 1;
            }
            j += 1;
        }
        let end = clang_function_tail(f, end);
        Ok(Block {
            kind: BlockKind::Function,
            name: name.to_string(),
            lines: start..end,
            parts,
            size_line,
            adapted,
            object: None,
            comm: None,
        })
    }

    fn variable_block(&self, f: &AsmFile, start: usize, decl_line: usize, name: &str) -> Block {
        let mut block = Block {
            kind: BlockKind::Variable,
            name: name.to_string(),
            lines: start..decl_line + 1,
            parts: Vec::new(),
            size_line: None,
            adapted: false,
            object: None,
            comm: None,
        };
        let decl = f.lines[decl_line]
            .stmts
            .iter()
            .enumerate()
            .find(|(_, s)| s.is_directive(".comm") || s.is_directive(".lcomm"));
        if let Some((idx, s)) = decl {
            let a = s.arg_list();
            block.comm = Some(Common {
                stmt: StmtId {
                    line: decl_line,
                    idx,
                },
                size: a.get(1).map_or("0", |v| v).to_string(),
                align: a.get(2).map(|v| v.to_string()),
                local: s.name == ".lcomm" || self.binding_of(name) != Binding::Global,
            });
            return block;
        }
        let Some(&label) = self.labels.get(name) else {
            return block;
        };
        let obj = data_object(f, label);
        let last = obj.data.last().map_or(label.line, |d| d.line);
        block.lines.end = block.lines.end.max(last + 1);
        block.object = Some(obj);
        block
    }

    fn collect_data_labels(&mut self, f: &AsmFile) {
        for (name, &id) in &self.labels {
            if !f.dialect.is_local(name) {
                continue;
            }
            let Some(s) = f.stmt(id) else { continue };
            let sec = f.section_of(s);
            if sec.is_code() || sec.is_debug() {
                continue;
            }
            self.data_labels.insert(name.clone(), data_object(f, id));
        }
    }
}

/// The end of a function block that ends at `end` (after its `.size`) with what clang writes
/// after the `.size`: `.cfi_endproc`, then the function's exception table (its
/// `.gcc_except_table` part, which refers to labels inside the function).
fn clang_function_tail(f: &AsmFile, end: usize) -> usize {
    let first = f.lines[end.min(f.lines.len())..]
        .iter()
        .flat_map(|l| &l.stmts)
        .next();
    if !first.is_some_and(|s| s.is_directive(".cfi_endproc")) {
        return end;
    }
    let mut new_end = end;
    let mut endproc_seen = false;
    for (j, line) in f.lines.iter().enumerate().skip(end) {
        let mut taken = false;
        for s in &line.stmts {
            if s.is_directive(".cfi_endproc") && !endproc_seen {
                endproc_seen = true;
                taken = true;
            } else if s.is_section_switch() {
                continue;
            } else if is_except_table(&f.section_of(s).name) {
                taken = true;
            } else {
                return new_end;
            }
        }
        if taken {
            new_end = j + 1;
        }
    }
    new_end
}

/// Whether a section holds exception tables (`.gcc_except_table`, or `.gcc_except_table.NAME`
/// for a function in its own section or COMDAT group).
pub(crate) fn is_except_table(name: &str) -> bool {
    name == ".gcc_except_table" || name.starts_with(".gcc_except_table.")
}

/// First line of the block whose introducing `.type`/`.comm` is on line `decl`: the
/// directives gcc writes before it that concern only this symbol.
fn walk_back(lines: &[Line], decl: usize, floor: usize, name: &str, kind: BlockKind) -> usize {
    let mut start = decl;
    while start > floor {
        let Some(line) = lines.get(start - 1) else {
            break;
        };
        let ok = line.stmts.iter().all(|s| match s.kind {
            StmtKind::Directive => {
                s.is_section_switch()
                    || is_align_directive(&s.name)
                    || (is_visibility_directive(&s.name) && first_name(s) == name)
                    || (kind == BlockKind::Variable
                        && s.is_directive(".size")
                        && first_name(s) == name)
            }
            StmtKind::Label => {
                kind == BlockKind::Function
                    && (is_hot_cold_label(&s.name) || is_debug_label(&s.name))
            }
            _ => false,
        });
        if !ok {
            break;
        }
        start -= 1;
    }
    start
}

/// The data that belongs to the label at `label`: alignment directives right before it, and
/// data directives after it (through any further labels that precede the first datum) up to
/// the first other statement, a label after data, or a section change.
pub(crate) fn data_object(f: &AsmFile, label: StmtId) -> DataObject {
    let section = f
        .stmt(label)
        .map_or(SecRef { id: 0, sub: 0 }, |s| s.section);
    let mut data = Vec::new();
    for (id, s) in f.stmts_after(label) {
        if s.section != section && !s.is_section_switch() {
            break;
        }
        match s.kind {
            StmtKind::Label if data.is_empty() => continue,
            StmtKind::Directive if is_data_directive(&s.name) => data.push(id),
            _ => break,
        }
    }
    let mut aligns = Vec::new();
    let before = (0..=label.line).rev().flat_map(|l| {
        let stmts = f.lines.get(l).map_or(&[][..], |line| &line.stmts[..]);
        let end = if l == label.line {
            label.idx
        } else {
            stmts.len()
        };
        stmts
            .iter()
            .enumerate()
            .take(end)
            .rev()
            .map(move |(idx, s)| (StmtId { line: l, idx }, s))
    });
    for (id, s) in before {
        if s.kind == StmtKind::Directive && is_align_directive(&s.name) && s.section == section {
            aligns.insert(0, id);
        } else if s.kind == StmtKind::Label && s.section == section {
            continue;
        } else {
            break;
        }
    }
    DataObject {
        label,
        aligns,
        data,
        section,
    }
}

impl AsmFile {
    /// The blocks the file's lines are split into, in order.
    pub fn blocks(&self) -> &[Block] {
        &self.index.blocks
    }

    /// The function block defining `name` (a function or one of its `.cold` parts).
    pub fn function(&self, name: &str) -> Option<&Block> {
        self.index
            .functions
            .get(name)
            .and_then(|&i| self.index.blocks.get(i))
    }

    /// The variable block defining `name`.
    pub fn variable(&self, name: &str) -> Option<&Block> {
        self.index
            .variables
            .get(name)
            .and_then(|&i| self.index.blocks.get(i))
    }

    /// The local data label `name` (`.LC0`) and its data.
    pub fn data_label(&self, name: &str) -> Option<&DataObject> {
        self.index.data_labels.get(name)
    }

    /// The declared binding of `name` (local if undeclared).
    pub fn binding(&self, name: &str) -> Binding {
        self.index.binding_of(name)
    }

    /// The `.type` of `name` without its prefix (`function`, `object`).
    pub fn symbol_type(&self, name: &str) -> Option<&str> {
        self.index.types.get(name).map(String::as_str)
    }

    /// The `.hidden`/`.protected`/`.internal` directive naming `name`, if any.
    pub fn visibility(&self, name: &str) -> Option<&str> {
        self.index.visibility.get(name).map(String::as_str)
    }

    /// Where `name` is defined by a label (or `.set NAME, .`).
    pub fn label(&self, name: &str) -> Option<StmtId> {
        self.index.labels.get(name).copied()
    }

    /// Index of the block containing line `line`.
    pub fn block_of_line(&self, line: usize) -> Option<usize> {
        self.index.block_of_line.get(line).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    fn parse(text: &str) -> AsmFile {
        AsmFile::parse("t.s", text, Dialect::x86_64()).unwrap()
    }

    fn summary(f: &AsmFile) -> Vec<(BlockKind, String, usize, usize)> {
        f.blocks()
            .iter()
            .map(|b| (b.kind, b.name.clone(), b.lines.start + 1, b.lines.end))
            .collect()
    }

    #[test]
    fn a_function_defined_twice_is_an_error() {
        // Found by the fuzz target `asm_diff`: the second definition was compared with the
        // first, so a file differed from itself.
        let one = "\t.text\n\t.globl\tf\n\t.type\tf, @function\nf:\n\tret\n\t.size\tf, .-f\n";
        assert!(AsmFile::parse("t.s", one, Dialect::x86_64()).is_ok());
        // The first `.type f` ... `.size f` has no `f:` (a label mistyped), the second has.
        let twice = format!("{}{one}", one.replace("f:", "fO:"));
        let err = AsmFile::parse("t.s", &twice, Dialect::x86_64()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.s:7: function `f` is defined again (first at line 1)"
        );
    }

    const COLD: &str = r#"	.file	"c.c"
	.text
	.section	.rodata.str1.1,"aMS",@progbits,1
.LC0:
	.string	"neg"
	.section	.text.unlikely,"ax",@progbits
.LCOLDB2:
	.text
.LHOTB2:
	.p2align 4
	.globl	work
	.type	work, @function
work:
.LFB22:
	.cfi_startproc
	testl	%esi, %esi
	js	.L7
	ret
	.cfi_endproc
	.section	.text.unlikely
	.cfi_startproc
	.type	work.cold, @function
work.cold:
.LFSB22:
.L7:
	call	abort@PLT
	.cfi_endproc
.LFE22:
	.text
	.size	work, .-work
	.section	.text.unlikely
	.size	work.cold, .-work.cold
.LCOLDE2:
	.text
.LHOTE2:
	.globl	g
	.bss
	.align 4
	.type	g, @object
	.size	g, 4
g:
	.zero	4
	.local	h
	.comm	h,4,4
	.ident	"GCC"
	.section	.note.GNU-stack,"",@progbits
"#;

    #[test]
    fn function_with_cold_part_is_one_block() {
        let f = parse(COLD);
        assert_eq!(
            summary(&f),
            [
                (BlockKind::Other, String::new(), 1, 5),
                (BlockKind::Function, "work".into(), 6, 35),
                (BlockKind::Variable, "g".into(), 36, 42),
                (BlockKind::Variable, "h".into(), 43, 44),
                (BlockKind::Other, String::new(), 45, 46),
            ]
        );
        let w = f.function("work").unwrap();
        assert_eq!(w.parts, ["work", "work.cold"]);
        assert_eq!(w.size_line.map(|l| l + 1), Some(30));
        assert_eq!(f.function("work.cold").unwrap().name, "work");
        let h = f.variable("h").unwrap().comm.clone().unwrap();
        assert_eq!(
            (h.size.as_str(), h.align.as_deref(), h.local),
            ("4", Some("4"), true)
        );
        assert_eq!(f.binding("g"), Binding::Global);
        let lc0 = f.data_label(".LC0").unwrap();
        assert_eq!(lc0.data.len(), 1);
        assert!(f.data_label(".L7").is_none(), "code labels are not data");
    }

    #[test]
    fn jump_table_in_rodata_stays_inside_the_function() {
        let f = parse(
            "\t.text\n\t.globl\tjt\n\t.type\tjt, @function\njt:\n\tjmp\t*%rax\n\t.section\t.rodata\n\t.align 4\n.L4:\n\t.long\t.L2-.L4\n\t.text\n.L2:\n\tret\n\t.size\tjt, .-jt\n",
        );
        assert_eq!(summary(&f), [(BlockKind::Function, "jt".into(), 1, 13)]);
    }

    #[test]
    fn data_label_alignment_and_aliases() {
        let f = parse(
            "\t.section\t.rodata.cst8,\"aM\",@progbits,8\n\t.align 8\n.LC1:\n\t.long\t0\n\t.long\t1074397184\n.LC2:\n.LC3:\n\t.string \"x\"\n\t.text\n",
        );
        let lc1 = f.data_label(".LC1").unwrap();
        assert_eq!((lc1.aligns.len(), lc1.data.len()), (1, 2));
        let lc2 = f.data_label(".LC2").unwrap();
        assert_eq!(lc2.data, f.data_label(".LC3").unwrap().data);
    }

    #[test]
    fn missing_size_is_an_error_naming_the_function() {
        let e = AsmFile::parse(
            "t.s",
            "\t.type\tf, @function\nf:\n\tret\n",
            Dialect::x86_64(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`f`"), "{e}");
    }

    #[test]
    fn aarch64_blocks_and_anchor() {
        let text = "\t.arch armv8-a\n\t.file\t\"m.c\"\n\t.text\n\t.data\n\t.align\t2\n\t.set\t.LANCHOR0,. + 0\n\t.type\tcounter, %object\n\t.size\tcounter, 4\ncounter:\n\t.word\t5\n\t.text\n\t.align\t2\n\t.global\tf\n\t.type\tf, %function\nf:\n\tadrp\tx0, .LANCHOR0\n\tldr\tw0, [x0, #:lo12:.LANCHOR0]\n\tret\n\t.size\tf, .-f\n";
        let f = AsmFile::parse("a.s", text, Dialect::aarch64()).unwrap();
        assert_eq!(
            summary(&f),
            [
                (BlockKind::Other, String::new(), 1, 6),
                (BlockKind::Variable, "counter".into(), 7, 10),
                (BlockKind::Function, "f".into(), 11, 19),
            ]
        );
        assert!(f.data_label(".LANCHOR0").is_some());
        assert_eq!(f.symbol_type("f"), Some("function"));
    }
}
