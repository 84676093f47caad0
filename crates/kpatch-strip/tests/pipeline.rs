//! The whole sequence of the user guide — strip, rel-fixup, GNU `strip --strip-unneeded`,
//! undo-link — on gcc-built programs, and what the resulting payload means to the runtime
//! (docs/internals.md section 2).

mod support;

use elf_edit::Elf;
use kpatch_file::{INFO_END_MARKER_SIZE as END_MARKER_SIZE, INFO_SIZE};
use kpatch_strip::{rel_fixup, strip, undo_link, write_payload};
use object::elf::*;
use support::*;

/// Runs the four steps through files, as the user guide does; returns ORIG and the payload.
fn make_payload(b: &Built) -> (Elf, Elf) {
    let orig = read_elf(&b.orig);
    let out = b.path("foobar.stripped");
    write_elf(&out, &strip(&read_elf(&b.patched)).unwrap());
    let mut patch = read_elf(&out);
    rel_fixup(&orig, &mut patch).unwrap();
    write_elf(&out, &patch);
    gnu_strip(&out);
    let mut patch = read_elf(&out);
    undo_link(&orig, &mut patch).unwrap();
    write_elf(&out, &patch);
    readelf_clean(&out);
    (orig, read_elf(&out))
}

/// Where the runtime places a section of the payload when the original is loaded at its
/// link-time addresses and the payload image at 0: `.kpatch*` sections at their file offset,
/// others at their `sh_addr`.
fn section_address(payload: &Elf, index: usize) -> u64 {
    let s = &payload.sections[index];
    if s.name.starts_with(".kpatch") {
        s.offset
    } else {
        s.addr
    }
}

fn orig_symbol_at(orig: &Elf, addr: u64) -> Option<String> {
    orig.symbols(orig.symtab_index()?)
        .ok()?
        .into_iter()
        .find(|s| {
            s.value == addr && matches!(s.sym_type, STT_FUNC | STT_OBJECT) && !s.name.is_empty()
        })
        .map(|s| s.name)
}

fn check_payload(orig: &Elf, payload: &Elf, function: &str) {
    assert_eq!((payload.e_type, payload.entry), (ET_REL, 0));
    assert!(payload.program_headers.is_empty());
    for s in payload.sections.iter().skip(1) {
        if s.name.starts_with(".kpatch") {
            assert_eq!(s.addr, 0, "{}", s.name);
            assert!(s.has_file_data(), "{}", s.name);
        } else if s.flags.contains(SHF_ALLOC) {
            assert_eq!(s.sh_type, SHT_NOBITS, "{}", s.name);
            match orig.section(&s.name) {
                Some(o) => assert_eq!(s.addr, o.addr, "{}", s.name),
                // Only an empty section the linker kept next to a .kpatch one may be missing.
                None => assert_eq!(s.size, 0, "{} is not in the original", s.name),
            }
        }
    }
    assert_eq!(payload.section(".kpatch.data").unwrap().offset % 4096, 0);

    let info = &payload.section(".kpatch.info").unwrap().data;
    assert_eq!(info.len() % INFO_SIZE, END_MARKER_SIZE);
    assert!(info[info.len() - END_MARKER_SIZE..].iter().all(|&b| b == 0));

    let symtab = payload.symtab_index().unwrap();
    let syms = payload.symbols(symtab).unwrap();
    for s in syms
        .iter()
        .filter(|s| s.is_defined_in_section() && s.sym_type != STT_TLS)
    {
        assert!(
            s.value <= payload.sections[usize::from(s.shndx.0)].sh_size(),
            "{} is not section-relative",
            s.name
        );
    }
    let resolve = |sym: u32, addend: i64| -> Option<u64> {
        let s = &syms[sym as usize];
        s.is_defined_in_section().then(|| {
            section_address(payload, usize::from(s.shndx.0))
                .wrapping_add(s.value)
                .wrapping_add(addend as u64)
        })
    };

    // .kpatch.info: daddr on the original function, saddr on its copy, symstr on its name.
    let info_relas = payload
        .relas(payload.section_index(".rela.kpatch.info").unwrap())
        .unwrap();
    let at = |off: u64| info_relas.iter().find(|r| r.offset == off).unwrap();
    let daddr = resolve(at(0).sym, at(0).addend).unwrap();
    assert_eq!(orig_symbol_at(orig, daddr).as_deref(), Some(function));
    let saddr = resolve(at(8).sym, at(8).addend).unwrap();
    let text = payload.section(".kpatch.text").unwrap();
    assert!((text.offset..text.offset + text.data.len() as u64).contains(&saddr));
    let symstr = resolve(at(24).sym, at(24).addend).unwrap();
    let image = write_payload(payload);
    let name = format!("{function}.kpatch\0");
    assert_eq!(
        &image[symstr as usize..symstr as usize + name.len()],
        name.as_bytes()
    );

    // .kpatch.text: every PC-relative reference lands on an original variable or function, or
    // on the patch's copy of a string; imports stay undefined for the runtime to resolve.
    let text_index = payload.section_index(".kpatch.text").unwrap();
    let relas = payload
        .relas(payload.section_index(".rela.kpatch.text").unwrap())
        .unwrap();
    let mut imports = Vec::new();
    let (mut to_data, mut to_orig) = (0, 0);
    for r in &relas {
        assert!(r.offset + 4 <= text.data.len() as u64);
        assert_ne!(r.r_type, R_X86_64_PLT32);
        let sym = &syms[r.sym as usize];
        let Some(target) = resolve(r.sym, r.addend + 4) else {
            imports.push(sym.unversioned_name().to_string());
            continue;
        };
        let section = &payload.sections[usize::from(sym.shndx.0)].name;
        if section == ".kpatch.data" {
            let s = &image[target as usize..];
            assert!(
                s.starts_with(b"Hello patched") || s.starts_with(b"done"),
                "{:?}",
                &s[..16]
            );
            to_data += 1;
        } else if usize::from(sym.shndx.0) != text_index {
            to_orig += 1;
            let found = orig_symbol_at(orig, target);
            assert!(
                matches!(found.as_deref(), Some("counter" | "helper")),
                "{section}+{:#x} -> {found:?}",
                r.addend
            );
        }
    }
    assert!(
        to_data >= 2 && to_orig >= 1,
        "{to_data} references to .kpatch.data, {to_orig} to the original"
    );
    imports.sort();
    imports.dedup();
    assert!(imports.contains(&"printf".to_string()), "{imports:?}");
}

#[test]
fn o0_pie_executable() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    let (orig, payload) = make_payload(&b);
    check_payload(&orig, &payload, "print_hello");
}

#[test]
fn o2_pie_executable() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O2"], false);
    let (orig, payload) = make_payload(&b);
    check_payload(&orig, &payload, "print_hello");
}

#[test]
fn fpic_shared_library() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O2", "-fPIC"], true);
    let (orig, payload) = make_payload(&b);
    check_payload(&orig, &payload, "print_hello");
}

#[test]
fn undo_link_refuses_an_original_lacking_a_section_the_patch_uses() {
    let b = build(FOO_C, BAR_C, &["print_hello"], &["-O0"], false);
    let mut orig = read_elf(&b.orig);
    let mut patch = strip(&read_elf(&b.patched)).unwrap();
    rel_fixup(&orig, &mut patch).unwrap();
    let bss = orig.section_index(".bss").unwrap();
    orig.sections[bss].name = ".bsx".into();
    let untouched = patch.clone();
    let msg = undo_link(&orig, &mut patch).unwrap_err().to_string();
    assert!(msg.contains(".bss") && msg.contains("original"), "{msg}");
    assert!(
        patch == untouched,
        "a refused undo-link must change nothing"
    );

    let orig = read_elf(&b.orig);
    undo_link(&orig, &mut patch).unwrap();
    let msg = undo_link(&orig, &mut patch).unwrap_err().to_string();
    assert!(msg.contains("already"), "{msg}");
}
