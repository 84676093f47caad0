//! `kpatch_strip` end to end: the manual build of the user guide ("手动制作") with gcc, a
//! stand-in for kpatch_gensrc that follows docs/internals.md 1.1, the three modes of our binary
//! and the real `strip --strip-unneeded`; the payload is read back with the `object` crate.

use object::elf::{SHT_NOBITS, SHT_RELA};
use object::read::elf::{ElfFile64, ElfSection64};
use object::{
    Endianness, Object, ObjectKind, ObjectSection, ObjectSymbol, RelocationTarget, SectionFlags,
    SymbolKind,
};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use libcare_test_support::gensrc_lite::build_in;
use libcare_test_support::{run_ok, strip_steps};

const FOO_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
static int counter;
int tiny(void) { return 0; }
__attribute__((noinline)) void print_hello(int n)
{
    counter += n;
    printf("Hello world %d\n", counter);
}
int main(void)
{
    for (int i = 0; i < 3; i++) {
        print_hello(i);
        sleep(1);
    }
    return tiny();
}
"#;

fn bar_c() -> String {
    FOO_C
        .replace(
            "    printf(\"Hello world %d\\n\", counter);",
            "    printf(\"Hello patched %d %d\\n\", counter, n);\n    puts(\"done\");",
        )
        .replace("return 0; }", "return 1; }")
}

fn kpatch_strip(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kpatch_strip"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run kpatch_strip")
}

/// The user guide's build: foo.s and bar.s from gcc -S, foobar.s combined for `changed`,
/// `foo` linked from foo.s and `foobar` from foobar.s with -Wl,-q. Returns the two names.
fn build(dir: &Path, cflags: &[&str], shared: bool, changed: &[&str]) -> (String, String) {
    let (orig, foobar) = build_in(dir, "gcc", FOO_C, &bar_c(), changed, cflags, shared);
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
    (name(&orig), name(&foobar))
}

fn sh_type(s: &ElfSection64<Endianness>) -> u32 {
    match s.flags() {
        SectionFlags::Elf { sh_type, .. } => sh_type.0,
        _ => unreachable!("an ELF section"),
    }
}

fn is_alloc(s: &ElfSection64<Endianness>) -> bool {
    matches!(s.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & 2 != 0)
}

fn check_payload(dir: &Path, orig_name: &str) {
    let orig_bytes = std::fs::read(dir.join(orig_name)).unwrap();
    let orig = ElfFile64::<Endianness>::parse(&*orig_bytes).unwrap();
    let bytes = std::fs::read(dir.join("foobar.stripped")).unwrap();
    let payload = ElfFile64::<Endianness>::parse(&*bytes).unwrap();

    assert_eq!(payload.kind(), ObjectKind::Relocatable);
    assert_eq!(payload.entry(), 0);
    assert_eq!(payload.segments().count(), 0);

    let mut names = Vec::new();
    for s in payload.sections() {
        let name = s.name().unwrap().to_string();
        if name.starts_with(".kpatch") || name.starts_with(".rela.kpatch") {
            assert_ne!(sh_type(&s), SHT_NOBITS.0, "{name}");
            assert_eq!(s.address(), 0, "{name}");
            names.push(name);
        } else if is_alloc(&s) {
            // A placeholder at the original's address.
            assert_eq!(sh_type(&s), SHT_NOBITS.0, "{name}");
            match orig.section_by_name(&name) {
                Some(o) => assert_eq!(s.address(), o.address(), "{name}"),
                None => assert_eq!(s.size(), 0, "{name} is not in {orig_name}"),
            }
        }
    }
    names.sort();
    assert_eq!(
        names,
        [
            ".kpatch.data",
            ".kpatch.eh_frame",
            ".kpatch.info",
            ".kpatch.strtab",
            ".kpatch.text",
            ".rela.kpatch.eh_frame",
            ".rela.kpatch.info",
            ".rela.kpatch.text"
        ]
    );
    for name in [".text", ".data", ".bss", ".rodata", ".symtab", ".strtab"] {
        assert!(payload.section_by_name(name).is_some(), "no {name}");
    }
    let data = payload.section_by_name(".kpatch.data").unwrap();
    assert_eq!(data.file_range().unwrap().0 % 4096, 0);

    // Symbols are section-relative: print_hello is at the same offset in .text as in foo.
    let orig_text = orig.section_by_name(".text").unwrap().address();
    let orig_hello = orig
        .symbols()
        .find(|s| s.name() == Ok("print_hello"))
        .unwrap();
    let hello = payload
        .symbols()
        .find(|s| s.name() == Ok("print_hello"))
        .unwrap();
    assert_eq!(hello.address(), orig_hello.address() - orig_text);
    let hello_section = payload
        .section_by_index(hello.section_index().unwrap())
        .unwrap();
    assert_eq!(hello_section.name(), Ok(".text"));
    let copy = payload
        .symbols()
        .find(|s| s.name() == Ok("print_hello.kpatch"))
        .unwrap();
    assert_eq!(copy.address(), 0);

    // Relocations: .kpatch.info's against the original function and its copy; .kpatch.text's
    // against the imports and .kpatch.data.
    let target_name = |t: RelocationTarget| -> String {
        let RelocationTarget::Symbol(i) = t else {
            return format!("{t:?}");
        };
        let s = payload.symbol_by_index(i).unwrap();
        match s.section_index() {
            Some(si) if s.kind() == SymbolKind::Section => payload
                .section_by_index(si)
                .unwrap()
                .name()
                .unwrap()
                .to_string(),
            _ => s.name().unwrap().split('@').next().unwrap().to_string(),
        }
    };
    let targets = |section: &str| -> HashMap<u64, String> {
        payload
            .section_by_name(section)
            .unwrap()
            .relocations()
            .map(|(off, r)| (off, target_name(r.target())))
            .collect()
    };
    let info = targets(".kpatch.info");
    assert_eq!(info.get(&0).map(String::as_str), Some("print_hello"));
    assert_eq!(info.get(&8).map(String::as_str), Some("print_hello.kpatch"));
    assert_eq!(info.get(&24).map(String::as_str), Some(".kpatch.strtab"));
    let text: Vec<String> = targets(".kpatch.text").into_values().collect();
    for wanted in ["printf", "puts", ".kpatch.data"] {
        assert!(
            text.iter().any(|t| t == wanted),
            "no relocation against {wanted}: {text:?}"
        );
    }
    for s in payload.sections() {
        if sh_type(&s) == SHT_RELA.0 {
            assert!(
                s.name().unwrap().starts_with(".rela.kpatch"),
                "{:?}",
                s.name()
            );
        }
    }

    // The end marker: 24 zero bytes after the 48-byte record.
    let info = payload
        .section_by_name(".kpatch.info")
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(info.len(), 48 + 24);
    assert!(info[48..].iter().all(|&b| b == 0));
    let strtab = payload
        .section_by_name(".kpatch.strtab")
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(strtab, b"print_hello.kpatch\0");
}

fn scenario(cflags: &[&str], shared: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (orig, foobar) = build(dir.path(), cflags, shared, &["print_hello"]);
    let printed = strip_steps(dir.path(), &orig, &foobar, "foobar.stripped");
    assert!(
        printed.contains("Fixing up relocation printf@GLIBC_2.2.5+fffffffffffffffc\n"),
        "{printed}"
    );
    assert!(
        printed.contains("Fixing up relocation print_hello+0\n"),
        "{printed}"
    );
    check_payload(dir.path(), &orig);
}

#[test]
fn o0_pie_executable() {
    scenario(&["-O0"], false);
}

#[test]
fn o2_pie_executable() {
    scenario(&["-O2"], false);
}

#[test]
fn fpic_shared_library() {
    scenario(&["-O2", "-fPIC"], true);
}

#[test]
fn a_function_shorter_than_the_jump_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["-O2", "-fcf-protection=none", "-fno-align-functions"];
    let (_, foobar) = build(dir.path(), &flags, false, &["tiny", "print_hello"]);
    let out = kpatch_strip(dir.path(), &["--strip", &foobar, "foobar.stripped"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("tiny") && stderr.contains("too small"),
        "{stderr}"
    );
    assert!(!dir.path().join("foobar.stripped").exists());
}

#[test]
fn an_original_from_another_build_is_refused_naming_the_symbol() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, foobar) = build(d, &["-O0"], false, &["print_hello"]);
    let other = FOO_C.replace(
        "int tiny(void)",
        "int extra(int x) { return x * 7; }\nint tiny(void)",
    );
    std::fs::write(d.join("other.c"), other).unwrap();
    run_ok(
        Command::new("gcc")
            .current_dir(d)
            .args(["-O0", "-o", "other", "other.c"]),
    );
    let out = kpatch_strip(d, &["-s", &foobar, "foobar.stripped"]);
    assert!(out.status.success());
    let before = std::fs::read(d.join("foobar.stripped")).unwrap();
    let out = kpatch_strip(d, &["-r", "other", "foobar.stripped"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("print_hello: at .text+") && stderr.contains("foobar.stripped"),
        "{stderr}"
    );
    let after = std::fs::read(d.join("foobar.stripped")).unwrap();
    assert!(after == before, "PATCH must be left alone");
}

#[test]
fn usage_and_input_errors_exit_non_zero_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("text.txt"), "not an ELF file\n").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&[], "--strip"),
        (&["--strip", "a"], "OUT|PATCH"),
        (&["--strip", "a", "b", "c"], "unexpected argument"),
        (&["--strip", "--undo-link", "a", "b"], "cannot be used with"),
        (&["a", "b"], "required"),
        (&["--strip", "missing", "out"], "cannot read IN missing"),
        (&["--rel-fixup", "text.txt", "text.txt"], "not an ELF file"),
        (&["-u", "missing", "text.txt"], "cannot read ORIG missing"),
    ];
    for (args, wanted) in cases {
        let out = kpatch_strip(d, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}
