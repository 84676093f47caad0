//! `strip` on gcc-built patched binaries.

mod support;

use kpatch_file::{linked_info_records, INFO_END_MARKER_SIZE as END_MARKER_SIZE, KPATCH_EH_FRAME};
use kpatch_strip::{strip, write_payload, BuildError};
use object::elf::*;
use object::{Object, ObjectSection};
use std::process::Command;
use support::*;

#[test]
fn keeps_the_patch_and_leaves_placeholders_for_everything_else() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    let input = read_elf(&b.patched);
    let out = strip(&input).unwrap();

    assert!(out.program_headers.is_empty());
    assert_eq!((out.e_type, out.machine), (input.e_type, input.machine));
    let removed: Vec<&str> = input
        .sections
        .iter()
        .filter(|s| out.section(&s.name).is_none())
        .map(|s| s.name.as_str())
        .collect();
    assert!(removed.contains(&".rela.text"), "{removed:?}");
    for name in &removed {
        let s = input.section(name).unwrap();
        assert!(
            s.sh_type == SHT_RELA && !s.flags.contains(SHF_ALLOC),
            "{name} was removed"
        );
    }
    for s in out.sections.iter().skip(1) {
        let Some(before) = input.section(&s.name) else {
            // The unwind tables of the patch's code, made from `.eh_frame`.
            assert!(s.name.ends_with(KPATCH_EH_FRAME), "{}", s.name);
            continue;
        };
        assert_eq!(s.addr, before.addr, "{}", s.name);
        let kept = s.name.starts_with(".kpatch")
            || s.name.starts_with(".rela.kpatch")
            || [".symtab", ".strtab", ".shstrtab"].contains(&s.name.as_str());
        if s.name == ".kpatch.info" {
            assert_eq!(s.data.len(), before.data.len() + END_MARKER_SIZE);
            assert_eq!(&s.data[..before.data.len()], &before.data[..]);
            assert!(s.data[before.data.len()..].iter().all(|&b| b == 0));
        } else if kept {
            assert_eq!(s.sh_type, before.sh_type, "{}", s.name);
            // The symbol table's section indices were renumbered: compared symbol by symbol
            // below.
            if s.name != ".symtab" {
                assert!(s.data == before.data, "{} changed", s.name);
            }
        } else {
            assert_eq!(s.sh_type, SHT_NOBITS, "{}", s.name);
            assert_eq!(s.size, before.sh_size(), "{}", s.name);
            assert_eq!(s.flags, before.flags.without(SHF_INFO_LINK), "{}", s.name);
            assert!(s.data.is_empty());
        }
    }
    // The patch's unwind tables: CIEs and FDEs ending with a terminator, every pointer in them
    // relocated.
    let eh = out
        .section_index(KPATCH_EH_FRAME)
        .expect(".kpatch.eh_frame");
    assert!(out.sections[eh].data.ends_with(&[0; 4]));
    let rela = out
        .section_index(&format!(".rela{}", KPATCH_EH_FRAME))
        .expect(".rela.kpatch.eh_frame");
    assert_eq!(out.sections[rela].info as usize, eh);
    assert!(!out.relas(rela).unwrap().is_empty());
    // Renumbering kept every symbol in its section and every relocation section on its target.
    let syms_in = input.symbols(input.symtab_index().unwrap()).unwrap();
    let syms_out = out.symbols(out.symtab_index().unwrap()).unwrap();
    assert_eq!(syms_in.len(), syms_out.len());
    for (a, b) in syms_in.iter().zip(&syms_out) {
        assert_eq!(
            (&a.name, a.value, a.size, a.sym_type),
            (&b.name, b.value, b.size, b.sym_type)
        );
        if a.is_defined_in_section() {
            assert_eq!(
                input.sections[usize::from(a.shndx.0)].name,
                out.sections[usize::from(b.shndx.0)].name,
                "{}",
                a.name
            );
        }
    }
    for name in [".rela.kpatch.text", ".rela.kpatch.info"] {
        let r = out.section(name).unwrap();
        assert_eq!(format!(".rela{}", out.sections[r.info as usize].name), name);
        assert_eq!(r.link as usize, out.symtab_index().unwrap());
    }

    let bytes = write_payload(&out);
    let path = b.path("foobar.stripped");
    std::fs::write(&path, &bytes).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    let data = file.section_by_name(".kpatch.data").unwrap();
    assert_eq!(data.file_range().unwrap().0 % 4096, 0);
    assert_eq!(file.segments().count(), 0);
    readelf_clean(&path);
}

#[test]
fn refuses_a_function_shorter_than_the_jump_naming_it() {
    // At -O2 `tiny` is `xor %eax,%eax; ret` (3 bytes in the original, 6 in the patch), and
    // without function alignment the next function follows it at once.
    let b = build(
        FOO_C,
        BAR_C,
        &["tiny", "print_hello"],
        &["-O2", "-fcf-protection=none", "-fno-align-functions"],
        false,
    );
    let err = strip(&read_elf(&b.patched)).unwrap_err();
    let BuildError::FunctionsTooSmall(ref small, hunk) = err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(hunk, 5);
    assert_eq!(small.len(), 1, "{small:?}");
    assert_eq!(small[0].name, "tiny");
    assert!(small[0].dlen < 5);
    let msg = err.to_string();
    assert!(
        msg.contains("tiny") && msg.contains("5-byte jump") && !msg.contains("print_hello"),
        "{msg}"
    );
}

#[test]
fn a_short_function_followed_by_alignment_padding_gets_the_jump_length() {
    let b = build(
        FOO_C,
        BAR_C,
        &["tiny", "print_hello"],
        &["-O2", "-fcf-protection=none"],
        false,
    );
    let input = read_elf(&b.patched);
    let before = linked_info_records(&input.section(".kpatch.info").unwrap().data).unwrap();
    let out = strip(&input).unwrap();
    let info = &out.section(".kpatch.info").unwrap().data;
    let after = linked_info_records(&info[..info.len() - END_MARKER_SIZE]).unwrap();
    let (short, long): (Vec<_>, Vec<_>) = before.iter().zip(after).partition(|(b, _)| b.dlen() < 5);
    assert_eq!(short.len(), 1, "{before:?}");
    assert_eq!(short[0].1.dlen(), 5, "lengthened into the padding");
    assert!(long.iter().all(|(b, a)| b == a), "others untouched");
}

#[test]
fn a_new_function_is_not_too_small() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    let mut input = read_elf(&b.patched);
    let info = input.section_mut(".kpatch.info").unwrap();
    // daddr = 0 and dlen = 0 mark a function that exists only in the patch.
    info.data[0..8].fill(0);
    info.data[16..20].fill(0);
    let out = strip(&input).unwrap();
    assert_eq!(
        out.section(".kpatch.info").unwrap().data.len(),
        48 + END_MARKER_SIZE
    );
}

#[test]
fn refuses_inputs_that_are_not_linked_patched_binaries() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    run_ok(
        Command::new("gcc")
            .current_dir(b.dir.path())
            .args(["-c", "foobar.s", "-o", "foobar.o"]),
    );
    let msg = strip(&read_elf(&b.path("foobar.o")))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("-Wl,-q") && msg.contains("linked"), "{msg}");

    run_ok(
        Command::new("gcc")
            .current_dir(b.dir.path())
            .args(["foobar.s", "-o", "no_q"]),
    );
    let msg = strip(&read_elf(&b.path("no_q"))).unwrap_err().to_string();
    assert!(
        msg.contains(".rela.kpatch.info") && msg.contains("-Wl,-q"),
        "{msg}"
    );

    let msg = strip(&read_elf(&b.orig)).unwrap_err().to_string();
    assert!(
        msg.contains(".kpatch.info") && msg.contains("kpatch_gensrc"),
        "{msg}"
    );
}

#[test]
fn shared_library_placeholders_keep_their_addresses() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O2", "-fPIC"], true);
    let input = read_elf(&b.patched);
    let out = strip(&input).unwrap();
    assert_eq!(out.e_type, ET_DYN);
    let text = out.section(".text").unwrap();
    assert_eq!(text.sh_type, SHT_NOBITS);
    assert_eq!(text.addr, input.section(".text").unwrap().addr);
    // .rela.dyn stays as a placeholder (the linker gave it a section symbol) that relocates
    // nothing.
    let rela_dyn = out.section(".rela.dyn").unwrap();
    assert_eq!(
        (rela_dyn.sh_type, rela_dyn.link, rela_dyn.info),
        (SHT_NOBITS, 0, 0)
    );
}
