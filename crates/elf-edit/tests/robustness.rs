//! No input makes the parser, the accessors or the writer panic, and whatever parses can be
//! written and parsed again.

mod common;
// Shared with the fuzz target `elf` (fuzz/fuzz_targets/elf.rs).
mod exercise;

use elf_edit::{Elf, Rela, Section, Symbol};
use exercise::exercise;
use object::elf::*;
use proptest::prelude::*;
use std::sync::OnceLock;

/// A gcc-built relocatable object, compiled once.
fn gcc_object() -> &'static [u8] {
    static OBJ: OnceLock<Vec<u8>> = OnceLock::new();
    OBJ.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = common::gcc(dir.path(), "input.o", &["-c", "-O2"]);
        std::fs::read(path).unwrap()
    })
}

/// A small file built by this crate: text, symbols, relocations, a NOBITS section.
fn synthetic() -> Vec<u8> {
    let mut elf = Elf::new(ET_REL, EM_X86_64);
    let text = elf.add_section(Section::new(
        ".text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        vec![0xe8, 0, 0, 0, 0, 0xc3],
    ));
    elf.add_section(Section {
        size: 64,
        ..Section::new(".bss", SHT_NOBITS, SHF_ALLOC | SHF_WRITE, Vec::new())
    });
    let symtab = elf.add_symbol_table();
    let syms = [
        Symbol::default(),
        Symbol {
            name: "f".into(),
            sym_type: STT_FUNC,
            bind: STB_GLOBAL,
            shndx: SymbolSection(text as u16),
            size: 6,
            ..Symbol::default()
        },
        Symbol {
            name: "g".into(),
            sym_type: STT_NOTYPE,
            bind: STB_GLOBAL,
            ..Symbol::default()
        },
    ];
    elf.set_symbols(symtab, &syms).unwrap();
    let rela = elf.add_section(Section {
        link: symtab as u32,
        info: text as u32,
        entsize: 24,
        ..Section::new(".rela.text", SHT_RELA, SHF_INFO_LINK, Vec::new())
    });
    elf.set_relas(
        rela,
        &[Rela {
            offset: 1,
            sym: 2,
            r_type: R_X86_64_PLT32,
            addend: -4,
        }],
    )
    .unwrap();
    elf.write()
}

fn mutate(base: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(pos, b) in edits {
        if !bytes.is_empty() {
            let i = pos % bytes.len();
            bytes[i] = b;
        }
    }
    bytes.truncate(cut.min(bytes.len()));
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
        let mut with_magic = b"\x7fELF\x02\x01\x01".to_vec();
        with_magic.extend_from_slice(&bytes);
        exercise(&with_magic);
    }

    #[test]
    fn truncated_gcc_object_never_panics(cut in 0usize..100_000) {
        let obj = gcc_object();
        exercise(&obj[..cut % (obj.len() + 1)]);
    }

    #[test]
    fn mutated_gcc_object_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let obj = gcc_object();
        exercise(&mutate(obj, &edits, cut % (obj.len() + 1) + obj.len() / 2));
    }

    #[test]
    fn mutated_synthetic_file_never_panics(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let base = synthetic();
        exercise(&mutate(&base, &edits, cut % (base.len() + 1)));
    }

    #[test]
    fn mutated_header_fields_never_panic(field in 16usize..64, value in any::<u64>()) {
        // Whole header fields set to arbitrary (often huge) values.
        let mut bytes = synthetic();
        let end = (field + 8).min(64);
        bytes[field..end].copy_from_slice(&value.to_le_bytes()[..end - field]);
        exercise(&bytes);
    }
}

#[test]
fn every_truncation_of_a_small_file_is_an_error_naming_what_is_missing() {
    let base = synthetic();
    assert!(elf_edit::parse(&base).is_ok());
    for cut in 0..base.len() {
        match elf_edit::parse(&base[..cut]) {
            Err(e) => assert!(!e.to_string().is_empty()),
            Ok(_) => panic!("a file cut at {cut} of {} bytes parsed", base.len()),
        }
    }
    assert_eq!(
        elf_edit::parse(&[]).unwrap_err(),
        elf_edit::ElfError::BadMagic
    );
    let msg = elf_edit::parse(&base[..10]).unwrap_err().to_string();
    assert!(msg.contains("the ELF header"), "{msg}");
}

#[test]
fn a_section_0_that_is_not_null_is_refused() {
    // Found by the fuzz target `elf`: such a section's data did not survive writing.
    let mut bytes = synthetic();
    let shoff = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    bytes[shoff + 4..shoff + 8].copy_from_slice(&SHT_NOTE.0.to_le_bytes());
    let msg = elf_edit::parse(&bytes).unwrap_err().to_string();
    assert!(msg.contains("[0]") && msg.contains("SHT_NULL"), "{msg}");
}

#[test]
fn errors_name_the_field_or_section() {
    let base = synthetic();
    let mut bad_magic = base.clone();
    bad_magic[1] = b'X';
    assert_eq!(
        elf_edit::parse(&bad_magic).unwrap_err(),
        elf_edit::ElfError::BadMagic
    );

    let mut class32 = base.clone();
    class32[4] = 1;
    assert!(elf_edit::parse(&class32)
        .unwrap_err()
        .to_string()
        .contains("EI_CLASS"));

    let mut big_endian = base.clone();
    big_endian[5] = 2;
    assert!(elf_edit::parse(&big_endian)
        .unwrap_err()
        .to_string()
        .contains("EI_DATA"));

    let mut shentsize = base.clone();
    shentsize[58] = 40;
    assert!(elf_edit::parse(&shentsize)
        .unwrap_err()
        .to_string()
        .contains("e_shentsize"));

    // Point .text's data past the end of the file.
    let elf = elf_edit::parse(&base).unwrap();
    let shoff = u64::from_le_bytes(base[40..48].try_into().unwrap()) as usize;
    let text = elf.section_index(".text").unwrap();
    let mut far = base.clone();
    let at = shoff + text * 64 + 24;
    far[at..at + 8].copy_from_slice(&0xffff_0000u64.to_le_bytes());
    let msg = elf_edit::parse(&far).unwrap_err().to_string();
    assert!(msg.contains(&format!("section [{text}]")), "{msg}");

    // A symbol name past the end of its string table.
    let mut elf = elf_edit::parse(&base).unwrap();
    let symtab = elf.symtab_index().unwrap();
    elf.sections[symtab].data[24] = 0xff;
    let msg = elf.symbols(symtab).unwrap_err().to_string();
    assert!(msg.contains(".strtab") && msg.contains(".symtab"), "{msg}");
    let msg = elf.relas(symtab).unwrap_err().to_string();
    assert!(msg.contains(".symtab") && msg.contains("RELA"), "{msg}");
}
