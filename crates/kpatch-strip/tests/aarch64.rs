//! The architecture-generic parts on aarch64 inputs, built with elf-edit (no cross compiler
//! needed): the 4-byte hunk, relocations left alone, TLS GOT slots, undo-link.

use elf_edit::{Elf, Rela, Section, Symbol};
use kpatch_strip::{rel_fixup, strip, undo_link, BuildError};
use object::elf::*;

fn section(
    name: &str,
    sh_type: SectionType,
    flags: SectionFlags,
    addr: u64,
    data: Vec<u8>,
) -> Section {
    Section {
        addr,
        addralign: 8,
        ..Section::new(name, sh_type, flags, data)
    }
}

fn sym(
    name: &str,
    sym_type: SymbolType,
    bind: SymbolBind,
    shndx: usize,
    value: u64,
    size: u64,
) -> Symbol {
    Symbol {
        name: name.into(),
        name_offset: u32::MAX,
        sym_type,
        bind,
        shndx: SymbolSection(shndx as u16),
        value,
        size,
        ..Symbol::default()
    }
}

/// Adds `.symtab`/`.strtab` (or `.dynsym`/`.dynstr`) holding `syms`; returns the table's index.
fn add_symbols(elf: &mut Elf, dynamic: bool, syms: &[Symbol]) -> usize {
    let (t, s, ty) = if dynamic {
        (".dynsym", ".dynstr", SHT_DYNSYM)
    } else {
        (".symtab", ".strtab", SHT_SYMTAB)
    };
    let strtab = elf.add_section(Section::new(s, SHT_STRTAB, SectionFlags(0), vec![0]));
    let table = elf.add_section(Section {
        link: strtab as u32,
        entsize: 24,
        addralign: 8,
        ..Section::new(t, ty, SectionFlags(0), Vec::new())
    });
    elf.set_symbols(table, syms).unwrap();
    table
}

fn add_relas(elf: &mut Elf, name: &str, symtab: usize, target: usize, relas: &[Rela]) -> usize {
    let i = elf.add_section(Section {
        link: symtab as u32,
        info: target as u32,
        entsize: 24,
        addralign: 8,
        ..Section::new(
            name,
            SHT_RELA,
            if target == 0 {
                SHF_ALLOC
            } else {
                SHF_INFO_LINK
            },
            Vec::new(),
        )
    });
    elf.set_relas(i, relas).unwrap();
    i
}

const TLS_SLOT: u64 = 0x10fd0;

/// The original library: `f` at 0x600 in `.text`, a string in `.rodata`, a GOT slot for the
/// thread-local `tv`.
fn original() -> Elf {
    let mut elf = Elf::new(ET_DYN, EM_AARCH64);
    let text = elf.add_section(section(
        ".text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        0x600,
        [0x1f, 0x20, 0x03, 0xd5].repeat(8),
    ));
    let rodata = elf.add_section(section(
        ".rodata",
        SHT_PROGBITS,
        SHF_ALLOC,
        0x800,
        b"xxxxhello\0".to_vec(),
    ));
    let dynsym = add_symbols(
        &mut elf,
        true,
        &[Symbol::default(), sym("tv", STT_TLS, STB_GLOBAL, 0, 0, 0)],
    );
    add_relas(
        &mut elf,
        ".rela.dyn",
        dynsym,
        0,
        &[Rela {
            offset: TLS_SLOT,
            sym: 1,
            r_type: R_AARCH64_TLS_TPREL,
            addend: 0,
        }],
    );
    add_symbols(
        &mut elf,
        false,
        &[
            Symbol::default(),
            sym("msg", STT_OBJECT, STB_LOCAL, rodata, 0x804, 6),
            sym("f", STT_FUNC, STB_GLOBAL, text, 0x600, 16),
        ],
    );
    elf
}

/// The patched library as linked with -Wl,-q: the original's sections at the same addresses
/// plus the `.kpatch` ones; `dlen` is the length recorded for `f`.
fn patched(dlen: u32) -> Elf {
    let mut elf = Elf::new(ET_DYN, EM_AARCH64);
    let text = elf.add_section(section(
        ".text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        0x600,
        [0x1f, 0x20, 0x03, 0xd5].repeat(8),
    ));
    let rodata = elf.add_section(section(
        ".rodata",
        SHT_PROGBITS,
        SHF_ALLOC,
        0x800,
        b"xxxxhello\0".to_vec(),
    ));
    let ktext = elf.add_section(section(
        ".kpatch.text",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_EXECINSTR,
        0x1000,
        vec![0; 16],
    ));
    let kstr = elf.add_section(section(
        ".kpatch.strtab",
        SHT_PROGBITS,
        SHF_ALLOC,
        0x1100,
        b"f.kpatch\0".to_vec(),
    ));
    let mut info = Vec::new();
    for v in [0x600u64, 0x1000] {
        info.extend_from_slice(&v.to_le_bytes());
    }
    info.extend_from_slice(&dlen.to_le_bytes());
    info.extend_from_slice(&16u32.to_le_bytes());
    info.extend_from_slice(&0x1100u64.to_le_bytes());
    info.extend_from_slice(&[0; 16]);
    let kinfo = elf.add_section(section(
        ".kpatch.info",
        SHT_PROGBITS,
        SHF_ALLOC | SHF_WRITE,
        0x12000,
        info,
    ));
    let symtab = add_symbols(
        &mut elf,
        false,
        &[
            Symbol::default(),
            sym("", STT_SECTION, STB_LOCAL, rodata, 0x800, 0),
            sym("", STT_SECTION, STB_LOCAL, kstr, 0x1100, 0),
            sym(".LC0", STT_NOTYPE, STB_LOCAL, rodata, 0x804, 0),
            sym("msg", STT_OBJECT, STB_LOCAL, rodata, 0x804, 6),
            sym("f", STT_FUNC, STB_GLOBAL, text, 0x600, 16),
            sym("f.kpatch", STT_FUNC, STB_GLOBAL, ktext, 0x1000, 16),
            sym("puts", STT_FUNC, STB_GLOBAL, 0, 0, 0),
            sym("tv", STT_TLS, STB_GLOBAL, 0, 0, 0),
        ],
    );
    add_relas(
        &mut elf,
        ".rela.kpatch.text",
        symtab,
        ktext,
        &[
            Rela {
                offset: 0x1000,
                sym: 7,
                r_type: R_AARCH64_CALL26,
                addend: 0,
            },
            Rela {
                offset: 0x1004,
                sym: 3,
                r_type: R_AARCH64_ADR_PREL_PG_HI21,
                addend: 1,
            },
            Rela {
                offset: 0x1008,
                sym: 8,
                r_type: R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21,
                addend: 0,
            },
            Rela {
                offset: 0x100c,
                sym: 8,
                r_type: R_AARCH64_TLSIE_LD64_GOTTPREL_LO12_NC,
                addend: 0,
            },
        ],
    );
    add_relas(
        &mut elf,
        ".rela.kpatch.info",
        symtab,
        kinfo,
        &[
            Rela {
                offset: 0x12000,
                sym: 5,
                r_type: R_AARCH64_ABS64,
                addend: 0,
            },
            Rela {
                offset: 0x12008,
                sym: 6,
                r_type: R_AARCH64_ABS64,
                addend: 0,
            },
            Rela {
                offset: 0x12018,
                sym: 2,
                r_type: R_AARCH64_ABS64,
                addend: 0,
            },
        ],
    );
    // Bytes that are not the patch's: what --strip must turn into a placeholder.
    let text_rela = add_relas(
        &mut elf,
        ".rela.text",
        symtab,
        text,
        &[Rela {
            offset: 0x600,
            sym: 7,
            r_type: R_AARCH64_CALL26,
            addend: 0,
        }],
    );
    assert!(text_rela > 0);
    elf
}

#[test]
fn a_four_byte_function_is_enough_on_aarch64_but_not_on_x86_64() {
    let out = strip(&patched(4)).unwrap();
    assert_eq!(out.section(".text").unwrap().sh_type, SHT_NOBITS);
    assert!(out.section(".rela.text").is_none());
    assert_eq!(out.section(".kpatch.info").unwrap().data.len(), 48 + 24);

    let err = strip(&patched(3)).unwrap_err();
    assert!(
        matches!(err, BuildError::FunctionsTooSmall(ref f, 4) if f[0].name == "f" && f[0].dlen == 3),
        "{err}"
    );

    let mut x86 = patched(4);
    x86.machine = EM_X86_64;
    let msg = strip(&x86).unwrap_err().to_string();
    assert!(
        msg.contains("f at 0x600 is 4 bytes long") && msg.contains("5-byte"),
        "{msg}"
    );
}

#[test]
fn rel_fixup_leaves_calls_alone_and_points_tls_at_the_originals_got_slot() {
    let orig = original();
    let mut patch = strip(&patched(16)).unwrap();
    let rela = patch.section_index(".rela.kpatch.text").unwrap();
    let before = patch.relas(rela).unwrap();
    let notes: Vec<String> = rel_fixup(&orig, &mut patch)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let after = patch.relas(rela).unwrap();

    assert_eq!(after[0], before[0], "CALL26 needs no change on aarch64");
    // .LC0 (local, rodata+4) is redone against the section symbol (index 1) with addend 4 + 1.
    assert_eq!(
        (after[1].sym, after[1].r_type, after[1].addend),
        (1, R_AARCH64_ADR_PREL_PG_HI21, 5)
    );
    for r in &after[2..] {
        assert_eq!((r.sym, r.addend), (8, TLS_SLOT as i64));
    }
    assert_eq!(after[2].r_type, R_AARCH64_TLSIE_ADR_GOTTPREL_PAGE21);
    assert!(
        notes.contains(&"Fixing up relocation puts+0".to_string()),
        "{notes:?}"
    );
    assert!(
        notes.contains(&"Relocating to .rodata+5".to_string()),
        "{notes:?}"
    );
    assert!(
        notes.contains(&format!(
            "Changing TLS GOT slot of symbol tv from 0 to {TLS_SLOT:x}"
        )),
        "{notes:?}"
    );
}

#[test]
fn rel_fixup_refuses_a_moved_symbol_and_a_foreign_machine() {
    let mut orig = original();
    let symtab = orig.symtab_index().unwrap();
    let mut syms = orig.symbols(symtab).unwrap();
    syms[2].value += 4;
    orig.set_symbols(symtab, &syms).unwrap();
    let msg = rel_fixup(&orig, &mut strip(&patched(16)).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("f: at .text+0x0 in the patched build, at .text+0x4 (0x604) in the original"),
        "{msg}"
    );

    let mut x86 = original();
    x86.machine = EM_X86_64;
    assert!(matches!(
        rel_fixup(&x86, &mut strip(&patched(16)).unwrap()),
        Err(BuildError::MachineMismatch { .. })
    ));
}

#[test]
fn undo_link_makes_everything_section_relative() {
    let orig = original();
    let mut patch = strip(&patched(16)).unwrap();
    rel_fixup(&orig, &mut patch).unwrap();
    undo_link(&orig, &mut patch).unwrap();
    assert_eq!(patch.e_type, ET_REL);
    assert_eq!(patch.section(".text").unwrap().addr, 0x600);
    assert_eq!(patch.section(".kpatch.text").unwrap().addr, 0);
    let syms = patch.symbols(patch.symtab_index().unwrap()).unwrap();
    let value = |n: &str| syms.iter().find(|s| s.name == n).unwrap().value;
    assert_eq!((value("f"), value("f.kpatch"), value("msg")), (0, 0, 4));
    let text = patch
        .relas(patch.section_index(".rela.kpatch.text").unwrap())
        .unwrap();
    assert_eq!(
        text.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 4, 8, 12]
    );
    let info = patch
        .relas(patch.section_index(".rela.kpatch.info").unwrap())
        .unwrap();
    assert_eq!(
        info.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 8, 24]
    );
    let bytes = kpatch_strip::write_payload(&patch);
    let again = elf_edit::parse(&bytes).unwrap();
    assert_eq!(again.machine, EM_AARCH64);
}

mod support;

/// The user guide's program built by the aarch64 cross compiler, through all four steps.
fn cross_pipeline(cflags: &[&str], shared: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (orig, patched) = support::build_in(
        dir.path(),
        "aarch64-linux-gnu-gcc",
        support::FOO_C,
        support::BAR_C,
        &["print_hello"],
        cflags,
        shared,
    );
    let orig = support::read_elf(&orig);
    assert_eq!(orig.machine, EM_AARCH64);
    let out = dir.path().join("foobar.stripped");
    support::write_elf(&out, &strip(&support::read_elf(&patched)).unwrap());
    let mut patch = support::read_elf(&out);
    let before = patch
        .relas(patch.section_index(".rela.kpatch.text").unwrap())
        .unwrap();
    let notes: Vec<String> = rel_fixup(&orig, &mut patch)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("Fixing up relocation printf")),
        "{notes:?}"
    );
    let after = patch
        .relas(patch.section_index(".rela.kpatch.text").unwrap())
        .unwrap();
    let syms = patch.symbols(patch.symtab_index().unwrap()).unwrap();
    for (a, b) in before.iter().zip(&after) {
        if a.r_type == R_AARCH64_CALL26 || a.r_type == R_AARCH64_JUMP26 {
            // Calls to imports reach the jump table: nothing to change.
            if syms[a.sym as usize].shndx == SHN_UNDEF {
                assert_eq!(a, b);
            }
        }
    }
    support::write_elf(&out, &patch);
    support::gnu_strip_with("aarch64-linux-gnu-strip", &out);
    let mut patch = support::read_elf(&out);
    undo_link(&orig, &mut patch).unwrap();
    support::write_elf(&out, &patch);
    let payload = support::read_elf(&out);
    assert_eq!((payload.e_type, payload.machine), (ET_REL, EM_AARCH64));
    assert_eq!(payload.section(".kpatch.data").unwrap().offset % 4096, 0);
    assert_eq!(
        payload.section(".text").unwrap().addr,
        orig.section(".text").unwrap().addr
    );
    // .kpatch.info's daddr resolves to the original print_hello.
    let syms = payload.symbols(payload.symtab_index().unwrap()).unwrap();
    let info = payload
        .relas(payload.section_index(".rela.kpatch.info").unwrap())
        .unwrap();
    let daddr = info.iter().find(|r| r.offset == 0).unwrap();
    let s = &syms[daddr.sym as usize];
    let resolved = payload.sections[usize::from(s.shndx.0)].addr + s.value + daddr.addend as u64;
    let orig_syms = orig.symbols(orig.symtab_index().unwrap()).unwrap();
    let hello = orig_syms.iter().find(|s| s.name == "print_hello").unwrap();
    assert_eq!(resolved, hello.value);
}

#[test]
fn cross_compiled_o0_executable() {
    cross_pipeline(&["-O0"], false);
}

#[test]
fn cross_compiled_o2_shared_library() {
    // Section anchors (.LANCHOR0) are beyond the test stand-in for kpatch_gensrc.
    cross_pipeline(&["-O2", "-fPIC", "-fno-section-anchors"], true);
}
