//! `rel_fixup` on gcc-built patched binaries.

mod support;

use elf_edit::{Elf, Rela, Symbol};
use kpatch_strip::{rel_fixup, strip, BuildError};
use object::elf::*;
use std::process::Command;
use support::*;

fn stripped(b: &Built) -> Elf {
    strip(&read_elf(&b.patched)).unwrap()
}

fn relas_of(elf: &Elf, name: &str) -> Vec<Rela> {
    elf.relas(elf.section_index(name).unwrap()).unwrap()
}

fn symbols(elf: &Elf) -> Vec<Symbol> {
    elf.symbols(elf.symtab_index().unwrap()).unwrap()
}

#[test]
fn user_guide_program_at_o0() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    let orig = read_elf(&b.orig);
    let mut patch = stripped(&b);
    let before = relas_of(&patch, ".rela.kpatch.text");
    assert!(before.iter().any(|r| r.r_type == R_X86_64_PLT32));
    let notes = rel_fixup(&orig, &mut patch).unwrap();
    let lines: Vec<String> = notes.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        lines,
        [
            "Fixing up relocation printf@GLIBC_2.2.5+fffffffffffffffc",
            "Fixing up relocation puts@GLIBC_2.2.5+fffffffffffffffc",
            "Fixing up relocation print_hello+0",
        ]
    );
    let after = relas_of(&patch, ".rela.kpatch.text");
    assert_eq!(after.len(), before.len());
    assert!(after.iter().all(|r| r.r_type == R_X86_64_PC32), "{after:?}");
    for (a, b) in before.iter().zip(&after) {
        assert_eq!((a.offset, a.sym, a.addend), (b.offset, b.sym, b.addend));
    }
    assert_eq!(
        relas_of(&patch, ".rela.kpatch.info"),
        relas_of(&stripped(&b), ".rela.kpatch.info")
    );
}

#[test]
fn refuses_an_original_from_a_different_build_naming_the_symbols() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    // Another "original": one more function after tiny moves everything after it in .text.
    let other = FOO_C.replace(
        "static int helper",
        "int extra(int x) { return x + 1; }\nstatic int helper",
    );
    std::fs::write(b.path("other.c"), other).unwrap();
    run_ok(
        Command::new("gcc")
            .current_dir(b.dir.path())
            .args(["-O0", "-o", "other", "other.c"]),
    );
    let mut patch = stripped(&b);
    let untouched = patch.clone();
    let err = rel_fixup(&read_elf(&b.path("other")), &mut patch).unwrap_err();
    let BuildError::LayoutMismatch(ref list) = err else {
        panic!("unexpected error {err}");
    };
    let msg = err.to_string();
    assert!(
        list.iter().any(|l| l.starts_with("print_hello: at .text+")),
        "{msg}"
    );
    assert!(list.iter().any(|l| l.starts_with("main: ")), "{msg}");
    assert!(
        !list.iter().any(|l| l.starts_with("tiny: ")),
        "tiny did not move: {msg}"
    );
    assert!(list.iter().any(|l| l.starts_with("helper: ")), "{msg}");
    assert!(msg.contains("is the original binary the one the patch was built against"));
    assert_eq!(patch, untouched, "nothing may change when the check fails");
}

#[test]
fn refuses_an_original_without_symbols() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    run_ok(
        Command::new("strip")
            .arg("-o")
            .arg(b.path("foo.stripped"))
            .arg(&b.orig),
    );
    let msg = rel_fixup(&read_elf(&b.path("foo.stripped")), &mut stripped(&b))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(".symtab") && msg.contains("unstripped"),
        "{msg}"
    );
}

const GOT_ORIG: &str = r#"
	.section .rodata.str1.1,"aMS",@progbits,1
.LC0:
	.string "abc"
.LC1:
	.string "defg"
	.text
	.globl	gfunc
	.type	gfunc, @function
gfunc:
	leaq	.LC1(%rip), %rax
	movq	gvar@GOTPCREL(%rip), %rax
	ret
	.size	gfunc, .-gfunc
	.data
	.globl	gvar
	.type	gvar, @object
	.size	gvar, 4
gvar:
	.long	1
	.section .note.GNU-stack,"",@progbits
"#;

/// `GOT_ORIG` with `gfunc` and `gvar` hidden: no other object can interpose them, so the
/// patch may reach the library's own definitions directly.
fn got_orig_hidden() -> String {
    GOT_ORIG
        .replace("\t.globl\tgvar\n", "\t.globl\tgvar\n\t.hidden\tgvar\n")
        .replace("\t.globl\tgfunc\n", "\t.globl\tgfunc\n\t.hidden\tgfunc\n")
}

/// Builds `liborig.so` from `orig` and `libpatch.so` from `orig` + `patch` (linked with
/// `-Wl,-q`, GOT loads left as the assembler wrote them) in `d`.
fn build_got_libs(d: &std::path::Path, orig: &str, patch: &str) {
    std::fs::write(d.join("orig.s"), orig).unwrap();
    std::fs::write(d.join("patch.s"), format!("{orig}{patch}")).unwrap();
    run_ok(
        Command::new("gcc")
            .current_dir(d)
            .args(["-shared", "-o", "liborig.so", "orig.s"]),
    );
    run_ok(Command::new("gcc").current_dir(d).args([
        "-shared",
        "-Wl,-q",
        "-Wl,--no-relax",
        "-o",
        "libpatch.so",
        "patch.s",
    ]));
}

const GOT_PATCH: &str = r#"
	.section .kpatch.text,"ax",@progbits
	.globl	gfunc.kpatch
	.type	gfunc.kpatch, @function
gfunc.kpatch:
	leaq	.LC1(%rip), %rdi
	movq	gvar@GOTPCREL(%rip), %rax
	call	*gfunc@GOTPCREL(%rip)
	movq	ext_var@GOTPCREL(%rip), %rax
	call	puts@PLT
	jmp	*gfunc@GOTPCREL(%rip)
	.size	gfunc.kpatch, .-gfunc.kpatch
.Lend:
	.section .kpatch.strtab,"a",@progbits
.Lstr:
	.string "gfunc.kpatch"
	.section .kpatch.info,"aw",@progbits
	.quad gfunc, gfunc.kpatch
	.long 12, .Lend - gfunc.kpatch
	.quad .Lstr, 0
	.long 0
	.byte 0,0,0,0
"#;

#[test]
fn got_references_local_symbols_and_plt_calls_in_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_got_libs(d, &got_orig_hidden(), GOT_PATCH);
    let orig = read_elf(&d.join("liborig.so"));
    let linked = read_elf(&d.join("libpatch.so"));
    let mut patch = strip(&linked).unwrap();
    let syms = symbols(&patch);
    let before = relas_of(&patch, ".rela.kpatch.text");
    let name = |r: &Rela| syms[r.sym as usize].name.clone();
    let types: Vec<(String, RelocationType)> = before.iter().map(|r| (name(r), r.r_type)).collect();
    assert_eq!(
        types,
        [
            (".LC1".to_string(), R_X86_64_PC32),
            ("gvar".into(), R_X86_64_REX_GOTPCRELX),
            ("gfunc".into(), R_X86_64_GOTPCRELX),
            ("ext_var".into(), R_X86_64_REX_GOTPCRELX),
            ("puts@GLIBC_2.2.5".into(), R_X86_64_PLT32),
            ("gfunc".into(), R_X86_64_GOTPCRELX),
        ],
        "the linker changed what this test relies on"
    );
    let text_before = patch.section(".kpatch.text").unwrap().data.clone();

    let notes: Vec<String> = rel_fixup(&orig, &mut patch)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let after = relas_of(&patch, ".rela.kpatch.text");
    let text = &patch.section(".kpatch.text").unwrap().data;
    let at = |r: &Rela| (r.offset - patch.section(".kpatch.text").unwrap().addr) as usize;

    // .LC1 lives in a merged string section: redone against .rodata's section symbol, same target.
    let lc1 = &syms[before[0].sym as usize];
    let section_sym = &syms[after[0].sym as usize];
    assert_eq!(section_sym.sym_type, STT_SECTION);
    assert_eq!(
        patch.sections[usize::from(section_sym.shndx.0)].name,
        ".rodata"
    );
    assert_eq!(
        section_sym.value.wrapping_add(after[0].addend as u64),
        lc1.value.wrapping_add(before[0].addend as u64)
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("Relocating to .rodata+")),
        "{notes:?}"
    );

    // mov gvar@GOTPCREL(%rip) -> lea gvar(%rip)
    assert_eq!(
        (
            after[1].r_type,
            text_before[at(&before[1]) - 2],
            text[at(&after[1]) - 2]
        ),
        (R_X86_64_PC32, 0x8b, 0x8d)
    );
    // call *gfunc@GOTPCREL(%rip) -> addr32 call gfunc
    assert_eq!(after[2].r_type, R_X86_64_PC32);
    assert_eq!(&text[at(&after[2]) - 2..at(&after[2])], &[0x67, 0xe8]);
    // ext_var is imported: the runtime's jump-table slot serves as its GOT entry.
    assert_eq!(after[3], before[3]);
    // call puts@PLT -> PC32 through the jump table
    assert_eq!(
        (after[4].r_type, after[4].offset),
        (R_X86_64_PC32, before[4].offset)
    );
    // jmp *gfunc@GOTPCREL(%rip) -> jmp gfunc; nop, the displacement one byte earlier
    assert_eq!(after[5].r_type, R_X86_64_PC32);
    assert_eq!(after[5].offset, before[5].offset - 1);
    assert_eq!(text[at(&after[5]) - 1], 0xe9);
    assert_eq!(text[at(&after[5]) + 4], 0x90);
    // Hidden, gfunc is a local symbol of the linked library: the relocation may be redone
    // against its section, aiming at the same place.
    let target =
        |r: &Rela, syms: &[Symbol]| syms[r.sym as usize].value.wrapping_add(r.addend as u64);
    let syms_after = symbols(&patch);
    assert_eq!(target(&after[5], &syms_after), target(&before[5], &syms));
    assert!(
        notes.contains(&"Fixing up relocation ext_var+fffffffffffffffc".to_string()),
        "{notes:?}"
    );
    assert_eq!(
        notes.iter().filter(|n| n.starts_with("changing")).count(),
        3,
        "{notes:?}"
    );
}

#[test]
fn an_unconvertible_got_reference_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let patch_s = GOT_PATCH.replace(
        "movq\tgvar@GOTPCREL(%rip), %rax",
        "addq\tgvar@GOTPCREL(%rip), %rax",
    );
    build_got_libs(d, &got_orig_hidden(), &patch_s);
    let mut patch = strip(&read_elf(&d.join("libpatch.so"))).unwrap();
    let msg = rel_fixup(&read_elf(&d.join("liborig.so")), &mut patch)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("gvar") && msg.contains("cannot be made direct"),
        "{msg}"
    );
}

/// A library's GOT references to the symbols it exports stay GOT references, against new
/// undefined symbols: the live definition may be another object's (a program's copy of
/// `gvar`), which the runtime finds as the dynamic linker did.
#[test]
fn got_references_to_exported_symbols_of_a_library_stay_indirect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    build_got_libs(d, GOT_ORIG, GOT_PATCH);
    let orig = read_elf(&d.join("liborig.so"));
    let mut patch = strip(&read_elf(&d.join("libpatch.so"))).unwrap();
    let before = relas_of(&patch, ".rela.kpatch.text");
    let text_before = patch.section(".kpatch.text").unwrap().data.clone();
    let notes: Vec<String> = rel_fixup(&orig, &mut patch)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let syms = symbols(&patch);
    let after = relas_of(&patch, ".rela.kpatch.text");
    for i in [1, 2, 5] {
        let s = &syms[after[i].sym as usize];
        assert_eq!(
            (s.shndx, after[i].r_type, after[i].offset),
            (SHN_UNDEF, before[i].r_type, before[i].offset),
            "{}",
            s.name
        );
    }
    assert_eq!(syms[after[1].sym as usize].name, "gvar");
    assert_eq!(syms[after[2].sym as usize].name, "gfunc");
    assert_eq!(after[2].sym, after[5].sym, "one import per name");
    assert_eq!(&patch.section(".kpatch.text").unwrap().data, &text_before);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("Keeping GOT reference to gvar")),
        "{notes:?}"
    );
}

const TLS_LIB: &str = r#"
__thread int tls_local __attribute__((tls_model("initial-exec"))) = 5;
static __thread int tls_static __attribute__((tls_model("initial-exec")));
extern __thread int tls_ext __attribute__((tls_model("initial-exec")));
int lib_use(int x) { tls_static += x; return tls_local + tls_static + tls_ext; }
"#;

#[test]
fn initial_exec_tls_in_a_shared_library_points_at_the_originals_got_slots() {
    let patched = TLS_LIB.replace("tls_static += x;", "tls_static += 2 * x;");
    let b = build(TLS_LIB, &patched, &["lib_use"], &["-O2", "-fPIC"], true);
    let orig = read_elf(&b.orig);
    let mut patch = stripped(&b);
    let notes: Vec<String> = rel_fixup(&orig, &mut patch)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();

    // The slots, read with an independent parser.
    let orig_bytes = std::fs::read(&b.orig).unwrap();
    let file = object::File::parse(&*orig_bytes).unwrap();
    use object::{Object, ObjectSymbol, ObjectSymbolTable};
    let mut slots = std::collections::HashMap::new();
    for (offset, r) in file.dynamic_relocations().unwrap() {
        let object::RelocationFlags::Elf { r_type } = r.flags() else {
            continue;
        };
        if r_type != R_X86_64_TPOFF64 {
            continue;
        }
        let key = match r.target() {
            object::RelocationTarget::Symbol(i) => file
                .dynamic_symbol_table()
                .unwrap()
                .symbol_by_index(i)
                .unwrap()
                .name()
                .unwrap()
                .to_string(),
            _ => format!("offset {}", r.addend()),
        };
        slots.insert(key, offset);
    }
    let syms = symbols(&patch);
    let tls_static = syms.iter().find(|s| s.name == "tls_static").unwrap();
    let expected = |name: &str| -> u64 {
        if name == "tls_static" {
            slots[&format!("offset {}", tls_static.value)]
        } else {
            slots[name]
        }
    };
    let relas = relas_of(&patch, ".rela.kpatch.text");
    let gottpoff: Vec<&Rela> = relas
        .iter()
        .filter(|r| r.r_type == R_X86_64_GOTTPOFF)
        .collect();
    assert_eq!(gottpoff.len(), 3);
    for r in gottpoff {
        let name = &syms[r.sym as usize].name;
        assert_eq!(r.addend as u64, expected(name), "{name}");
        assert!(
            notes.contains(&format!(
                "Changing GOTTPOFF symbol {name} from fffffffffffffffc to {:x}",
                r.addend
            )),
            "{notes:?}"
        );
    }
}

#[test]
fn tls_the_original_never_reaches_through_its_got_is_refused() {
    let orig_src = TLS_LIB.replace(" + tls_ext;", ";");
    let b = build(&orig_src, TLS_LIB, &["lib_use"], &["-O2", "-fPIC"], true);
    let mut patch = stripped(&b);
    let msg = rel_fixup(&read_elf(&b.orig), &mut patch)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tls_ext") && msg.contains("R_X86_64_TPOFF64"),
        "{msg}"
    );
    // The relocations fixed before the refused one were not kept either.
    assert!(
        patch == stripped(&b),
        "a refused rel-fixup must change nothing"
    );
}

#[test]
fn general_dynamic_tls_is_refused() {
    let src = "extern __thread int tls_gd;\nint lib_use(int x) { return tls_gd + x; }\n";
    let b = build(
        src,
        &src.replace("+ x", "- x"),
        &["lib_use"],
        &["-O2", "-fPIC"],
        true,
    );
    let msg = rel_fixup(&read_elf(&b.orig), &mut stripped(&b))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("tls_gd") && msg.contains("R_X86_64_TLSGD") && msg.contains("initial-exec"),
        "{msg}"
    );
}

#[test]
fn local_exec_tls_in_an_executable_keeps_its_linked_offsets() {
    let src = r#"
__thread int tls_var = 5;
static __thread int tls_static;
__attribute__((noinline)) int use(int x) { tls_static += x; return tls_var + tls_static; }
int main(void) { return use(1); }
"#;
    let b = build(
        src,
        &src.replace("tls_static += x", "tls_static += 2 * x"),
        &["use"],
        &["-O0"],
        false,
    );
    let orig = read_elf(&b.orig);
    let mut patch = stripped(&b);
    let before = relas_of(&patch, ".rela.kpatch.text");
    assert!(
        before.iter().all(|r| r.r_type == R_X86_64_TPOFF32),
        "{before:?}"
    );
    let text = patch.section(".kpatch.text").unwrap().data.clone();
    let notes: Vec<String> = rel_fixup(&orig, &mut patch)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let after = relas_of(&patch, ".rela.kpatch.text");
    assert!(
        after
            .iter()
            .all(|r| r.r_type == R_X86_64_NONE && r.sym == 0),
        "{after:?}"
    );
    assert_eq!(patch.section(".kpatch.text").unwrap().data, text);
    assert!(notes
        .iter()
        .any(|n| n.starts_with("TLS symbol tls_var has the same offset")));

    // An original whose TLS block is laid out differently is refused.
    let other = src.replace(
        "__thread int tls_var = 5;",
        "__thread long pad = 1;\n__thread int tls_var = 5;",
    );
    std::fs::write(b.path("other.c"), other).unwrap();
    run_ok(
        Command::new("gcc")
            .current_dir(b.dir.path())
            .args(["-O0", "-o", "other", "other.c"]),
    );
    let msg = rel_fixup(&read_elf(&b.path("other")), &mut stripped(&b))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tls_var"), "{msg}");
}
