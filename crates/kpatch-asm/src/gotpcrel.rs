//! `--force-gotpcrel` (x86_64): a copied instruction that reaches a symbol the file does not
//! define PC-relatively (`stderr(%rip)`), or, in position-dependent code, by its absolute
//! address (clang's `movq stderr, %rdi`, `movl $stderr, %edi`), is rewritten to reach it
//! through a GOT slot.
//!
//! gcc writes PIE code as if every variable were in the program: another object's variable
//! gets a copy relocation at link time. The running original has no copy of a variable it
//! never used, so the patch must load the variable's address from a GOT slot instead
//! (`kpatch_strip --rel-fixup` turns the load back into a direct `lea` when the original does
//! define the symbol, and the runtime gives imports a slot in its jump table).
//!
//! - `mov`/`movz*`/`movs*` from memory into a 32- or 64-bit register and `lea` into a 64-bit
//!   one use the destination register for the address;
//! - `call *`/`jmp *` use `%r11`, which the calling convention leaves free at a call;
//! - any other instruction borrows a register it does not mention, saved below the red
//!   zone (`lea -128(%rsp), %rsp; push`), with the unwind information adjusted when the CFA
//!   is computed from `%rsp`. Neither `lea`, `push`, `pop` nor `mov` changes the flags.

use crate::lex::split_args;

/// Bytes below `%rsp` that leaf code may use without moving `%rsp` (the System V red zone).
const RED_ZONE: u32 = 128;

/// Registers a rewritten instruction may borrow, in order of preference: none is an implicit
/// operand of an instruction that can also have a memory operand.
const SCRATCH: &[&str] = &["r11", "r10", "r9", "r8", "rsi", "rdi", "rbx"];

/// Why an instruction cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(pub String);

/// The replacement of `insn` (one instruction, as written to the output) if it refers to a
/// symbol for which `external` is true through `%rip`; `cfa_on_rsp` tells whether the unwind
/// information computes the CFA from `%rsp` at this point.
pub(crate) fn rewrite(
    insn: &str,
    external: &dyn Fn(&str) -> bool,
    cfa_on_rsp: bool,
) -> Result<Option<Vec<String>>, Unsupported> {
    let text = insn.trim();
    let (head, operands) = split_mnemonic(text);
    let mnemonic = head.split_whitespace().last().unwrap_or("");
    let ops = split_args(operands);
    let direct_branch = is_branch(mnemonic) && !operands.trim_start().starts_with('*');
    let Some((at, sym, offset)) = ops
        .iter()
        .enumerate()
        .find_map(|(i, op)| symbol_operand(op, !direct_branch).map(|(s, o)| (i, s, o)))
    else {
        return Ok(None);
    };
    if !external(sym) {
        return Ok(None);
    }
    let slot = format!("{sym}@GOTPCREL(%rip)");
    // `mov $SYM, %reg`: the address itself, which the slot holds.
    if ops[at].trim().starts_with('$') {
        let dest = (at == 0 && ops.len() == 2)
            .then(|| full_register(ops[1]))
            .flatten()
            .filter(|_| is_plain_load(mnemonic));
        let Some(dest) = dest else {
            return Err(Unsupported(format!(
                "`{text}` uses the address of `{sym}` as an immediate other than in a move \
                 into a register"
            )));
        };
        let mut out = vec![format!("\tmovq\t{slot}, %{dest}")];
        if !offset.is_empty() && offset != "0" {
            out.push(format!("\tleaq\t{offset}(%{dest}), %{dest}"));
        }
        return Ok(Some(out));
    }
    let other: Vec<&str> = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, o)| *o)
        .collect();

    // Loads into a register whose old value does not survive: use it for the address.
    if at == 0 && other.len() == 1 {
        if let Some(dest) = other.first().and_then(|d| full_register(d)) {
            let load = is_plain_load(mnemonic) && !is_partial_register(other[0]);
            if load {
                return Ok(Some(vec![
                    format!("\tmovq\t{slot}, %{dest}"),
                    format!("\t{head}\t{offset}(%{dest}), {}", other[0]),
                ]));
            }
            if mnemonic == "leaq" || (mnemonic == "lea" && other[0].starts_with("%r")) {
                let mut out = vec![format!("\tmovq\t{slot}, %{dest}")];
                if !offset.is_empty() && offset != "0" {
                    out.push(format!("\tleaq\t{offset}(%{dest}), %{dest}"));
                }
                return Ok(Some(out));
            }
        }
    }

    let replaced = |reg: &str| -> String {
        let mut v: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
        let star = if v[at].starts_with('*') { "*" } else { "" };
        v[at] = format!("{star}{offset}(%{reg})");
        format!("\t{head}\t{}", v.join(", "))
    };
    if matches!(mnemonic, "call" | "callq" | "jmp" | "jmpq") {
        return Ok(Some(vec![format!("\tmovq\t{slot}, %r11"), replaced("r11")]));
    }
    if mentions(text, "sp") || mnemonic.starts_with("push") || mnemonic.starts_with("pop") {
        return Err(Unsupported(format!(
            "`{text}` uses the stack as well as `{sym}`, so no register can be borrowed for \
             the GOT address"
        )));
    }
    let Some(reg) = SCRATCH.iter().find(|r| !mentions(text, r)) else {
        return Err(Unsupported(format!(
            "`{text}` leaves no register free for the GOT address of `{sym}`"
        )));
    };
    let mut out = vec![format!("\tleaq\t-{RED_ZONE}(%rsp), %rsp")];
    if cfa_on_rsp {
        out.push(format!("\t.cfi_adjust_cfa_offset {RED_ZONE}"));
    }
    out.push(format!("\tpushq\t%{reg}"));
    if cfa_on_rsp {
        out.push("\t.cfi_adjust_cfa_offset 8".into());
    }
    out.push(format!("\tmovq\t{slot}, %{reg}"));
    out.push(replaced(reg));
    out.push(format!("\tpopq\t%{reg}"));
    if cfa_on_rsp {
        out.push("\t.cfi_adjust_cfa_offset -8".into());
    }
    out.push(format!("\tleaq\t{RED_ZONE}(%rsp), %rsp"));
    if cfa_on_rsp {
        out.push(format!("\t.cfi_adjust_cfa_offset -{RED_ZONE}"));
    }
    Ok(Some(out))
}

/// The mnemonic with its prefixes (`lock addl`) and the operand text.
fn split_mnemonic(text: &str) -> (&str, &str) {
    const PREFIXES: &[&str] = &[
        "lock", "rep", "repz", "repe", "repnz", "repne", "notrack", "data16", "addr32", "bnd",
    ];
    let mut end = 0;
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        let skipped = rest.len() - trimmed.len();
        let word_len = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        let word = &trimmed[..word_len];
        end += skipped + word_len;
        rest = &trimmed[word_len..];
        if !PREFIXES.contains(&word) || rest.trim().is_empty() {
            break;
        }
    }
    (text[..end].trim(), rest.trim())
}

/// Whether `m` is a jump or call (whose plain symbol operand is a target, not memory).
fn is_branch(m: &str) -> bool {
    m.starts_with('j') || m.starts_with("call") || m.starts_with("loop")
}

/// `SYM(%rip)`, `SYM+8(%rip)`, `*SYM(%rip)`, and, when `absolute` is allowed, `SYM` or `*SYM`
/// (an absolute memory operand) and `$SYM` (an absolute address): the symbol and the offset
/// text (`+8`, or empty), for a plain symbol (no `@` relocation suffix, no local label).
fn symbol_operand(op: &str, absolute: bool) -> Option<(&str, String)> {
    let op = op.trim().trim_start_matches('*');
    let inner = match op.strip_suffix("(%rip)") {
        Some(inner) => inner,
        None if absolute && !op.contains(['(', '%', ':']) => op.strip_prefix('$').unwrap_or(op),
        None => return None,
    };
    if inner.contains('@') || inner.starts_with(".L") || inner.is_empty() {
        return None;
    }
    let split = inner
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map(|(i, _)| i);
    let (sym, offset) = match split {
        Some(i) => (&inner[..i], inner[i..].to_string()),
        None => (inner, String::new()),
    };
    let ident = sym
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'))
        && !sym.starts_with(|c: char| c.is_ascii_digit());
    if !ident {
        return None;
    }
    // `SYM+8` with the offset written first (`8+SYM`) is not what gcc writes.
    let offset = offset.trim_start_matches('+').to_string();
    Some((sym, offset))
}

/// The 64-bit register of a 32- or 64-bit general register operand (`%eax` → `rax`).
fn full_register(op: &str) -> Option<String> {
    let r = op.trim().strip_prefix('%')?;
    const LEGACY: &[(&str, &str)] = &[
        ("rax", "rax"),
        ("eax", "rax"),
        ("rbx", "rbx"),
        ("ebx", "rbx"),
        ("rcx", "rcx"),
        ("ecx", "rcx"),
        ("rdx", "rdx"),
        ("edx", "rdx"),
        ("rsi", "rsi"),
        ("esi", "rsi"),
        ("rdi", "rdi"),
        ("edi", "rdi"),
        ("rbp", "rbp"),
        ("ebp", "rbp"),
    ];
    if let Some((_, full)) = LEGACY.iter().find(|(n, _)| *n == r) {
        return Some(full.to_string());
    }
    let n = r.strip_prefix('r')?;
    let digits = n.strip_suffix('d').unwrap_or(n);
    let num: u8 = digits.parse().ok()?;
    (8..=15).contains(&num).then(|| format!("r{num}"))
}

/// Whether a register operand is narrower than 32 bits (writing it keeps the other bits).
fn is_partial_register(op: &str) -> bool {
    full_register(op).is_none()
}

/// Loads whose destination register is entirely overwritten.
fn is_plain_load(mnemonic: &str) -> bool {
    matches!(
        mnemonic,
        "mov"
            | "movq"
            | "movl"
            | "movzbl"
            | "movzwl"
            | "movsbl"
            | "movswl"
            | "movslq"
            | "movsbq"
            | "movswq"
            | "movzbq"
            | "movzwq"
            | "movabsq"
    )
}

/// Whether `text` names the register family of `reg` (`r11` matches `%r11d`; `sp` matches
/// `%rsp`, `%esp`, `%sp`, `%spl`; `rsi` matches `%esi`, `%si`, `%sil`).
fn mentions(text: &str, reg: &str) -> bool {
    let names: Vec<String> = match reg {
        "sp" => vec!["rsp", "esp", "sp", "spl"]
            .into_iter()
            .map(String::from)
            .collect(),
        r if r.starts_with('r') && r[1..].parse::<u8>().is_ok() => {
            vec![r.to_string()]
        }
        r => {
            let base = &r[1..];
            vec![
                r.to_string(),
                format!("e{base}"),
                base.to_string(),
                format!("{}l", &base[..1]),
                format!("{base}l"),
            ]
        }
    };
    text.split(|c: char| !c.is_ascii_alphanumeric() && c != '%')
        .filter_map(|w| w.strip_prefix('%'))
        .any(|w| {
            names.iter().any(|n| {
                w == n
                    || (n.starts_with('r')
                        && n[1..].parse::<u8>().is_ok()
                        && w.strip_prefix(n.as_str())
                            .is_some_and(|s| matches!(s, "d" | "w" | "b")))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(name: &str) -> bool {
        matches!(name, "stderr" | "optind" | "environ" | "hook")
    }

    fn rw(insn: &str, rsp: bool) -> Vec<String> {
        rewrite(insn, &ext, rsp).unwrap().unwrap_or_default()
    }

    #[test]
    fn loads_use_their_destination() {
        assert_eq!(
            rw("\tmovq\tstderr(%rip), %rdi", false),
            [
                "\tmovq\tstderr@GOTPCREL(%rip), %rdi",
                "\tmovq\t(%rdi), %rdi"
            ]
        );
        assert_eq!(
            rw("\tmovl\toptind+4(%rip), %r9d", false),
            ["\tmovq\toptind@GOTPCREL(%rip), %r9", "\tmovl\t4(%r9), %r9d"]
        );
        assert_eq!(
            rw("\tleaq\tenviron+8(%rip), %rax", false),
            [
                "\tmovq\tenviron@GOTPCREL(%rip), %rax",
                "\tleaq\t8(%rax), %rax"
            ]
        );
        assert_eq!(
            rw("\tleaq\tenviron(%rip), %rax", false),
            ["\tmovq\tenviron@GOTPCREL(%rip), %rax"]
        );
    }

    #[test]
    fn other_symbols_and_forms_are_left_alone() {
        for insn in [
            "\tmovq\tlocal_var(%rip), %rax",
            "\tmovq\tstderr@GOTPCREL(%rip), %rax",
            "\tleaq\t.LC0(%rip), %rdi",
            "\tmovl\t%fs:optind@tpoff, %eax",
            "\tcall\tputs@PLT",
        ] {
            assert_eq!(rewrite(insn, &ext, false).unwrap(), None, "{insn}");
        }
    }

    #[test]
    fn absolute_operands_of_position_dependent_code() {
        assert_eq!(
            rw("\tmovq\tstderr, %rdi", false),
            [
                "\tmovq\tstderr@GOTPCREL(%rip), %rdi",
                "\tmovq\t(%rdi), %rdi"
            ]
        );
        assert_eq!(
            rw("\tmovl\t$optind, %esi", false),
            ["\tmovq\toptind@GOTPCREL(%rip), %rsi"]
        );
        assert_eq!(
            rw("\tmovabsq\t$environ+8, %rax", false),
            [
                "\tmovq\tenviron@GOTPCREL(%rip), %rax",
                "\tleaq\t8(%rax), %rax"
            ]
        );
        assert_eq!(
            rw("\tcall\t*hook", false),
            ["\tmovq\thook@GOTPCREL(%rip), %r11", "\tcall\t*(%r11)"]
        );
        // A direct call is not a memory operand; numbers and registers are no symbols.
        for insn in [
            "\tcallq\tstrtol",
            "\tjmp\tstderr",
            "\tmovl\t$5, %eax",
            "\tmovq\t%rax, %rdi",
        ] {
            assert_eq!(rewrite(insn, &ext, false).unwrap(), None, "{insn}");
        }
        assert!(rewrite("\taddl\t$optind, %eax", &ext, false).is_err());
    }

    #[test]
    fn indirect_branches_use_r11() {
        assert_eq!(
            rw("\tcall\t*hook(%rip)", false),
            ["\tmovq\thook@GOTPCREL(%rip), %r11", "\tcall\t*(%r11)"]
        );
    }

    #[test]
    fn other_instructions_borrow_a_register_below_the_red_zone() {
        assert_eq!(
            rw("\tmovb\t$1, optind(%rip)", true),
            [
                "\tleaq\t-128(%rsp), %rsp",
                "\t.cfi_adjust_cfa_offset 128",
                "\tpushq\t%r11",
                "\t.cfi_adjust_cfa_offset 8",
                "\tmovq\toptind@GOTPCREL(%rip), %r11",
                "\tmovb\t$1, (%r11)",
                "\tpopq\t%r11",
                "\t.cfi_adjust_cfa_offset -8",
                "\tleaq\t128(%rsp), %rsp",
                "\t.cfi_adjust_cfa_offset -128",
            ]
        );
        let v = rw("\tlock addl\t%r11d, optind(%rip)", false);
        assert_eq!(v[1], "\tpushq\t%r10");
        assert_eq!(v[3], "\tlock addl\t%r11d, (%r10)");
        assert!(!v.iter().any(|l| l.contains("cfi")));
        // A narrow destination keeps its other bits: not a plain load.
        let v = rw("\tmovw\toptind(%rip), %ax", false);
        assert_eq!(v[3], "\tmovw\t(%r11), %ax");
    }

    #[test]
    fn stack_operands_are_refused() {
        assert!(rewrite("\tpushq\toptind(%rip)", &ext, false).is_err());
    }

    #[test]
    fn register_mentions() {
        assert!(mentions("movl %r11d, x", "r11"));
        assert!(!mentions("movl %r1, x", "r11"));
        assert!(mentions("movb %sil, x", "rsi"));
        assert!(mentions("movq 8(%rsp), %rax", "sp"));
        assert!(!mentions("movq %rax, %rbx", "sp"));
    }
}
