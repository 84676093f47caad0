//! Parse and write gcc-built files, then read the result with independent parsers.

mod common;

use elf_edit::{Elf, Rela, Section, Symbol, WriteOptions};
use object::elf::*;
use object::{Object, ObjectSection, ObjectSymbol};
use std::path::Path;

fn check_roundtrip(path: &Path, dir: &Path) {
    let input = std::fs::read(path).unwrap();
    let elf = elf_edit::parse(&input).unwrap();
    let written = elf.write();
    let out = dir.join("rewritten");
    std::fs::write(&out, &written).unwrap();
    if elf.program_headers.is_empty() {
        libcare_test_support::readelf_clean(&out);
    } else {
        // Without program headers readelf cannot map .dynamic's addresses; nothing else may
        // bother it.
        libcare_test_support::readelf_allowing(
            &out,
            &["readelf: Warning: Cannot interpret virtual addresses without program headers."],
        );
    }

    let orig = object::File::parse(&*input).unwrap();
    let new = object::File::parse(&*written).unwrap();
    assert_eq!(new.kind(), orig.kind());
    assert!(
        new.segments().next().is_none(),
        "program headers must be dropped"
    );
    let orig_sections: Vec<_> = orig.sections().collect();
    let new_sections: Vec<_> = new.sections().collect();
    assert_eq!(orig_sections.len(), new_sections.len());
    for (a, b) in orig_sections.iter().zip(&new_sections) {
        assert_eq!(a.name().unwrap(), b.name().unwrap());
        assert_eq!(a.address(), b.address());
        assert_eq!(a.size(), b.size(), "{}", a.name().unwrap());
        assert_eq!(a.kind(), b.kind());
        assert_eq!(
            a.data().unwrap(),
            b.data().unwrap(),
            "{}",
            a.name().unwrap()
        );
        assert_eq!(a.relocations().count(), b.relocations().count());
        assert_eq!(a.flags(), b.flags());
        if b.size() > 0 && b.kind() != object::SectionKind::UninitializedData {
            let (off, _) = b.file_range().unwrap();
            assert_eq!(
                off % b.align().max(1),
                0,
                "{} misaligned",
                b.name().unwrap()
            );
        }
    }
    let syms = |f: &object::File| -> Vec<(String, u64, u64)> {
        f.symbols()
            .map(|s| (s.name().unwrap().to_string(), s.address(), s.size()))
            .collect()
    };
    assert_eq!(syms(&orig), syms(&new));

    // Our own view again, field by field.
    let again = elf_edit::parse(&written).unwrap();
    assert_eq!(again.sections.len(), elf.sections.len());
    for (a, b) in elf.sections.iter().zip(&again.sections) {
        assert_eq!(
            (
                &a.name,
                a.sh_type,
                a.flags,
                a.addr,
                a.sh_size(),
                a.link,
                a.info,
                a.entsize,
                &a.data
            ),
            (
                &b.name,
                b.sh_type,
                b.flags,
                b.addr,
                b.sh_size(),
                b.link,
                b.info,
                b.entsize,
                &b.data
            )
        );
    }
    assert_eq!(
        (again.e_type, again.machine, again.entry),
        (elf.e_type, elf.machine, elf.entry)
    );
}

#[test]
fn relocatable_object_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let obj = common::gcc(dir.path(), "input.o", &["-c", "-O2", "-g"]);
    check_roundtrip(&obj, dir.path());
}

#[test]
fn pie_executable_linked_with_relocs_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let exe = common::gcc(dir.path(), "input", &["-O0", "-Wl,-q"]);
    check_roundtrip(&exe, dir.path());
}

#[test]
fn shared_library_roundtrips() {
    let dir = tempfile::tempdir().unwrap();
    let lib = common::gcc(dir.path(), "libinput.so", &["-O2", "-fPIC", "-shared"]);
    check_roundtrip(&lib, dir.path());
}

#[test]
fn symbols_and_relocations_decode_and_encode_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let obj = common::gcc(dir.path(), "input.o", &["-c", "-O2"]);
    let input = std::fs::read(&obj).unwrap();
    let mut elf = elf_edit::parse(&input).unwrap();
    let file = object::File::parse(&*input).unwrap();

    let symtab = elf.symtab_index().unwrap();
    let syms = elf.symbols(symtab).unwrap();
    let work = syms.iter().find(|s| s.name == "work").unwrap();
    let theirs = file.symbols().find(|s| s.name() == Ok("work")).unwrap();
    assert_eq!((work.value, work.size), (theirs.address(), theirs.size()));
    assert_eq!(
        (work.sym_type, work.bind, work.visibility()),
        (STT_FUNC, STB_GLOBAL, STV_DEFAULT)
    );
    let tls = syms.iter().find(|s| s.name == "tls_counter").unwrap();
    assert_eq!(tls.sym_type, STT_TLS);
    assert!(syms.iter().any(|s| s.sym_type == STT_SECTION));

    let before = elf.sections[symtab].data.clone();
    let strtab_before = elf.sections[elf.sections[symtab].link as usize]
        .data
        .clone();
    let info_before = elf.sections[symtab].info;
    elf.set_symbols(symtab, &syms).unwrap();
    assert_eq!(elf.sections[symtab].data, before);
    assert_eq!(
        elf.sections[elf.sections[symtab].link as usize].data,
        strtab_before
    );
    assert_eq!(elf.sections[symtab].info, info_before);

    let rela_text = elf.section_index(".rela.text").unwrap();
    let relas = elf.relas(rela_text).unwrap();
    let text = file.section_by_name(".text").unwrap();
    let theirs: Vec<_> = text.relocations().collect();
    assert_eq!(relas.len(), theirs.len());
    for (r, (off, t)) in relas.iter().zip(&theirs) {
        assert_eq!(r.offset, *off);
        assert_eq!(r.addend, t.addend());
        let object::RelocationFlags::Elf { r_type } = t.flags() else {
            panic!("not ELF")
        };
        assert_eq!(r.r_type, r_type);
        assert_eq!(
            object::RelocationTarget::Symbol(object::SymbolIndex(r.sym as usize)),
            t.target()
        );
    }
    let data = elf.sections[rela_text].data.clone();
    elf.set_relas(rela_text, &relas).unwrap();
    assert_eq!(elf.sections[rela_text].data, data);
}

#[test]
fn new_names_sections_and_symbols_are_written() {
    let mut elf = Elf::new(ET_REL, EM_AARCH64);
    let text = elf.add_section(Section {
        addralign: 16,
        ..Section::new(
            ".text.new",
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
            vec![0xd6, 0x5f, 0x03, 0xc0],
        )
    });
    let symtab = elf.add_symbol_table();
    let syms = vec![
        Symbol::default(),
        Symbol {
            name: "f".into(),
            name_offset: u32::MAX,
            sym_type: STT_FUNC,
            bind: STB_GLOBAL,
            shndx: SymbolSection(text as u16),
            size: 4,
            ..Symbol::default()
        },
    ];
    elf.set_symbols(symtab, &syms).unwrap();
    let rela = elf.add_section(Section {
        link: symtab as u32,
        info: text as u32,
        flags: SHF_INFO_LINK,
        entsize: 24,
        addralign: 8,
        ..Section::new(".rela.text.new", SHT_RELA, SHF_INFO_LINK, Vec::new())
    });
    let relas = [Rela {
        offset: 0,
        sym: 1,
        r_type: R_AARCH64_CALL26,
        addend: -8,
    }];
    elf.set_relas(rela, &relas).unwrap();
    let bytes = elf.write();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("made.o");
    std::fs::write(&path, &bytes).unwrap();
    let dump = libcare_test_support::readelf_clean(&path);
    assert!(dump.contains("R_AARCH64_CALL26"), "{dump}");
    let again = elf_edit::parse(&bytes).unwrap();
    assert_eq!(again.symbols(symtab).unwrap()[1].name, "f");
    assert_eq!(again.sections[symtab].info, 1);
    assert_eq!(again.relas(rela).unwrap(), relas);
    assert_eq!(again.sections[text].offset % 16, 0);
}

#[test]
fn removing_sections_renumbers_references() {
    let dir = tempfile::tempdir().unwrap();
    let obj = common::gcc(dir.path(), "input.o", &["-c", "-O2"]);
    let mut elf = elf_edit::parse(&std::fs::read(&obj).unwrap()).unwrap();
    let comment = elf.section_index(".comment").unwrap();
    let text = elf.section_index(".text").unwrap();
    assert!(comment > text);
    // .text has symbols defined in it: it cannot go.
    let err = elf.remove_sections(&[text]).unwrap_err();
    assert!(err.to_string().contains(".text"), "{err}");
    let rela_eh = elf.section_index(".rela.eh_frame").unwrap();
    let eh = elf.section_index(".eh_frame").unwrap();
    assert!(eh < rela_eh);
    elf.remove_sections(&[comment, rela_eh]).unwrap();
    assert!(elf.section(".comment").is_none());
    let bytes = elf.write();
    let path = dir.path().join("removed.o");
    std::fs::write(&path, &bytes).unwrap();
    libcare_test_support::readelf_clean(&path);
    let again = elf_edit::parse(&bytes).unwrap();
    let symtab = again.symtab_index().unwrap();
    let work = again
        .symbols(symtab)
        .unwrap()
        .into_iter()
        .find(|s| s.name == "work")
        .unwrap();
    assert_eq!(
        again.sections[usize::from(work.shndx.0)].name,
        again.sections[text].name
    );
    let rt = again.section_index(".rela.text").unwrap();
    assert_eq!(
        again.sections[again.sections[rt].info as usize].name,
        ".text"
    );
    assert_eq!(again.sections[again.shstrndx].name, ".shstrtab");
}

#[test]
fn requested_file_alignment_is_honoured() {
    let mut elf = Elf::new(ET_REL, EM_X86_64);
    elf.add_section(Section::new(".a", SHT_PROGBITS, SHF_ALLOC, vec![1; 3]));
    elf.add_section(Section::new(
        ".b",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_WRITE,
        vec![2; 5],
    ));
    let bytes = elf.write_with(&WriteOptions {
        file_alignment: vec![(".b".into(), 4096)],
    });
    let again = elf_edit::parse(&bytes).unwrap();
    assert_eq!(again.section(".b").unwrap().offset, 4096);
    assert_eq!(again.section(".b").unwrap().data, vec![2; 5]);
}
