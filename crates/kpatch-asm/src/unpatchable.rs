//! Changed functions a patch cannot usefully replace, recognised in the original's assembly:
//! start-up functions (the process ran them before it could be patched) and functions that
//! never return (a thread is always inside them, so the patch could never be applied safely).

use crate::dialect::AsmArch;
use crate::index::Block;
use crate::lex::{tokenize, TokKind};
use crate::parse::{AsmFile, Stmt, StmtKind};

/// Sections whose entries the dynamic linker or the C runtime calls once, at start-up.
fn is_start_up_section(name: &str) -> bool {
    [".init_array", ".preinit_array", ".ctors"]
        .iter()
        .any(|p| name == *p || name.strip_prefix(p).is_some_and(|r| r.starts_with('.')))
}

/// The start-up section of `file` that lists function `name` (a constructor), if any.
pub(crate) fn start_up_section(file: &AsmFile, name: &str) -> Option<String> {
    file.stmts_in(0..file.lines.len()).find_map(|(_, s)| {
        if s.kind != StmtKind::Directive || s.is_section_switch() {
            return None;
        }
        let sec = file.section_of(s);
        if !is_start_up_section(&sec.name) {
            return None;
        }
        let named = tokenize(&s.args, &file.dialect)
            .iter()
            .any(|t| t.kind == TokKind::Ident && t.text == name);
        named.then(|| sec.name.clone())
    })
}

/// How a function runs at start-up: the start-up function that runs it (itself, or one that
/// alone calls it, directly or through other such functions) and the section listing that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartUp {
    pub root: String,
    pub section: String,
    /// The functions from the root down to the one asked about.
    pub chain: Vec<String>,
}

/// Whether function `name` of `file` runs only at start-up: it is listed in a start-up
/// section, or it is a file-local function that only such functions refer to (g++'s
/// `__static_initialization_and_destruction_0`, clang's `__cxx_global_var_init`, called by
/// `_GLOBAL__sub_I_<file>`). References from debugging information do not count.
pub(crate) fn runs_at_start_up(file: &AsmFile, name: &str) -> Option<StartUp> {
    fn walk(file: &AsmFile, name: &str, seen: &mut Vec<String>) -> Option<StartUp> {
        if let Some(section) = start_up_section(file, name) {
            return Some(StartUp {
                root: name.to_string(),
                section,
                chain: vec![name.to_string()],
            });
        }
        if seen.iter().any(|s| s == name) || file.binding(name) != crate::index::Binding::Local {
            return None;
        }
        seen.push(name.to_string());
        let own = file.function(name).map(|b| b.lines.clone());
        let mut root = None;
        for (id, s) in file.stmts_in(0..file.lines.len()) {
            if own.as_ref().is_some_and(|r| r.contains(&id.line))
                || s.kind == StmtKind::Label
                || file.section_of(s).is_debug()
            {
                continue;
            }
            let mentions = tokenize(&s.text, &file.dialect)
                .iter()
                .any(|t| t.kind == TokKind::Ident && t.text == name);
            if !mentions || (s.kind == StmtKind::Directive && is_symbol_directive(&s.name)) {
                continue;
            }
            // A user that is not a function, or not run at start-up: it may run any time.
            let user = file
                .block_of_line(id.line)
                .and_then(|b| file.blocks().get(b))
                .filter(|b| b.kind == crate::index::BlockKind::Function)?;
            let mut found = walk(file, &user.name.clone(), seen)?;
            found.chain.push(name.to_string());
            root.get_or_insert(found);
        }
        root
    }
    walk(file, name, &mut Vec::new())
}

/// Directives that name a symbol without using it (`.type`, `.size`, `.globl`..., and
/// clang's `.addrsig_sym`, which only marks its address as significant).
fn is_symbol_directive(name: &str) -> bool {
    matches!(
        name,
        ".type"
            | ".size"
            | ".globl"
            | ".global"
            | ".local"
            | ".weak"
            | ".hidden"
            | ".protected"
            | ".internal"
            | ".addrsig_sym"
    )
}

/// Whether the function in `block` of `file` never returns to its caller: it is `main`, or
/// it has no return instruction and no jump out of itself, and its code ends with a jump
/// back into itself (a loop with no way out; code ending with a call to `exit` or `abort`
/// leaves the process instead and does not count).
pub(crate) fn never_returns(file: &AsmFile, block: &Block) -> bool {
    if block.name == "main" {
        return true;
    }
    let arch = file.dialect.arch;
    let main_section = file
        .label(&block.name)
        .and_then(|id| file.stmt(id))
        .map(|s| s.section);
    let mut last = None;
    for (_, s) in file.stmts_in(block.lines.clone()) {
        if s.kind != StmtKind::Instruction || !file.section_of(s).is_code() {
            continue;
        }
        if is_return(arch, s) || leaves(file, arch, s) {
            return false;
        }
        if Some(s.section) == main_section {
            last = Some(s);
        }
    }
    last.is_some_and(|s| is_unconditional_jump(arch, &s.name))
}

fn words(s: &Stmt) -> impl Iterator<Item = &str> {
    s.text.split(|c: char| c.is_whitespace() || c == ',')
}

fn is_return(arch: AsmArch, s: &Stmt) -> bool {
    match arch {
        AsmArch::X86_64 => words(s).any(|w| matches!(w, "ret" | "retq" | "retl" | "iretq")),
        AsmArch::Aarch64 => matches!(s.name.as_str(), "ret" | "eret"),
    }
}

fn is_branch(arch: AsmArch, m: &str) -> bool {
    match arch {
        AsmArch::X86_64 => m.starts_with('j') || m == "loop" || m.starts_with("loop"),
        AsmArch::Aarch64 => {
            m == "b"
                || m == "br"
                || m.starts_with("b.")
                || matches!(m, "cbz" | "cbnz" | "tbz" | "tbnz")
        }
    }
}

fn is_unconditional_jump(arch: AsmArch, m: &str) -> bool {
    match arch {
        AsmArch::X86_64 => matches!(m, "jmp" | "jmpq"),
        AsmArch::Aarch64 => m == "b",
    }
}

/// Whether branch `s` may go somewhere else than a label of this function: a named symbol
/// (a tail call) or a computed address.
fn leaves(file: &AsmFile, arch: AsmArch, s: &Stmt) -> bool {
    // `notrack jmp *%rax` (-fcf-protection), `bnd jmp`: the branch follows its prefix.
    let (mnemonic, operands) = match s.name.as_str() {
        "notrack" | "bnd" => {
            let rest = s.args.trim();
            let (m, o) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            (m, o.trim())
        }
        m => (m, s.args.as_str()),
    };
    if !is_branch(arch, mnemonic) {
        return false;
    }
    let target = crate::lex::split_args(operands)
        .last()
        .map(|t| t.trim().to_string());
    let Some(target) = target else { return true };
    if target.starts_with('*') || (arch == AsmArch::Aarch64 && mnemonic == "br") {
        return true;
    }
    let local = file.dialect.is_local(&target)
        || target
            .strip_suffix(['b', 'f'])
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()));
    !local
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::Dialect;

    fn file(text: &str) -> AsmFile {
        AsmFile::parse("t.s", text, Dialect::x86_64()).unwrap()
    }

    fn func(name: &str, body: &str) -> String {
        format!("\t.text\n\t.globl\t{name}\n\t.type\t{name}, @function\n{name}:\n{body}\t.size\t{name}, .-{name}\n")
    }

    fn never(body: &str) -> bool {
        let f = file(&func("f", body));
        never_returns(&f, f.function("f").unwrap())
    }

    #[test]
    fn loops_without_exit_never_return() {
        assert!(never(".L2:\n\tcall\twork@PLT\n\tjmp\t.L2\n"));
        assert!(!never(
            ".L2:\n\tcall\twork@PLT\n\ttestl\t%eax, %eax\n\tjne\t.L2\n\tret\n"
        ));
        // A tail call leaves the function.
        assert!(!never(
            ".L2:\n\tcall\twork@PLT\n\tjne\t.L2\n\tjmp\tdone@PLT\n"
        ));
        // Ending in a call to exit() leaves the process, not the function: patchable.
        assert!(!never(
            "\tcall\tputs@PLT\n\tmovl\t$1, %edi\n\tcall\texit@PLT\n"
        ));
        // A switch through a jump table may go anywhere.
        assert!(!never(".L2:\n\tjmp\t*%rax\n\tjmp\t.L2\n"));
        assert!(!never(".L2:\n\tnotrack jmp\t*%rax\n\tjmp\t.L2\n"));
        let m = file(&func("main", "\tret\n"));
        assert!(never_returns(&m, m.function("main").unwrap()));
    }

    #[test]
    fn constructors_are_found_in_start_up_sections() {
        let text = func("setup", "\tret\n")
            + &func("other", "\tret\n")
            + "\t.section\t.init_array,\"aw\"\n\t.align 8\n\t.quad\tsetup\n";
        let f = file(&text);
        assert_eq!(
            start_up_section(&f, "setup").as_deref(),
            Some(".init_array")
        );
        assert_eq!(start_up_section(&f, "other"), None);
        let prio =
            func("early", "\tret\n") + "\t.section\t.init_array.00101,\"aw\"\n\t.quad\tearly\n";
        assert!(start_up_section(&file(&prio), "early").is_some());
    }

    #[test]
    fn functions_only_start_up_functions_call_run_at_start_up() {
        let local = |name: &str, body: &str| {
            format!(
                "\t.text\n\t.type\t{name}, @function\n{name}:\n{body}\t.size\t{name}, .-{name}\n"
            )
        };
        let text = local("init_objects", "\tleaq\tobj(%rip), %rdi\n\tret\n")
            + &local("_GLOBAL__sub_I_m.cpp", "\tjmp\tinit_objects\n")
            + &local("helper", "\tret\n")
            + &local("tick", "\tcall\thelper\n\tret\n")
            + &local("both", "\tret\n")
            + &local("also", "\tcall\tboth\n\tret\n")
            + "\t.section\t.init_array,\"aw\"\n\t.quad\t_GLOBAL__sub_I_m.cpp\n\t.quad\talso\n"
            + "\t.section\t.debug_info,\"\",@progbits\n\t.quad\tinit_objects\n";
        let f = file(&text);
        let s = runs_at_start_up(&f, "init_objects").unwrap();
        assert_eq!(s.root, "_GLOBAL__sub_I_m.cpp");
        assert_eq!(s.section, ".init_array");
        assert_eq!(runs_at_start_up(&f, "helper"), None);
        assert_eq!(runs_at_start_up(&f, "both").unwrap().root, "also");
        // A global function may be called from elsewhere.
        let g = file(&("\t.globl\tinit_objects\n".to_string() + &text));
        assert_eq!(runs_at_start_up(&g, "init_objects"), None);
    }
}
