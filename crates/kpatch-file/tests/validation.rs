//! One test per validation error of the reader and the writer, plus the good paths.

mod common;

use common::*;
use kpatch_file::elf::ENDIAN as LE;
use kpatch_file::{
    write_kpatch, ElfError, FormatError, InfoError, KpatchFile, HEADER_SIZE, INFO_END_MARKER,
};
use object::elf::{DataEncoding, FileClass, FileType, FileVersion};

const TIME: u64 = 1_700_000_000;

fn peer_file(elf: &[u8]) -> Vec<u8> {
    peer_kpatch_make(&build_id(), "0001", TIME, elf)
}

fn our_file(elf: &[u8]) -> Vec<u8> {
    write_kpatch(&build_id(), "0001", TIME, elf).expect("valid input")
}

fn parse_err(file: &[u8]) -> FormatError {
    KpatchFile::parse(file).expect_err("the file must be rejected")
}

/// Both a peer-made file holding `elf` and our writer given `elf` must report `want`.
fn assert_elf_rejected(elf: &[u8], want: impl Fn(&FormatError) -> bool) {
    let from_parse = parse_err(&peer_file(elf));
    assert!(want(&from_parse), "parse: {from_parse}");
    let from_write = write_kpatch(&build_id(), "0001", TIME, elf).expect_err("writer must reject");
    assert!(want(&from_write), "write: {from_write}");
}

fn unsupported(field: &'static str) -> impl Fn(&FormatError) -> bool {
    move |e| matches!(e, FormatError::Elf(ElfError::Unsupported { field: f, .. }) if *f == field)
}

fn bad_field(field: &'static str) -> impl Fn(&FormatError) -> bool {
    move |e| matches!(e, FormatError::Elf(ElfError::BadSectionField { field: f, .. }) if *f == field)
}

#[test]
fn our_file_has_the_documented_layout_and_parses() {
    let elf = sample_elf();
    let file = our_file(&elf);
    let padded = elf.len().next_multiple_of(16);
    assert_eq!(file.len(), HEADER_SIZE + padded);

    let parsed = KpatchFile::parse(&file).expect("valid");
    let header = parsed.header();
    assert!(header.is_committed());
    assert_eq!(parsed.patch_id(), "0001");
    assert_eq!(parsed.build_id(), build_id());
    assert_eq!(header.build_time(), TIME);
    assert_eq!(header.kpatch_offset(), 504);
    assert_eq!(header.rel_offset(), 504);
    assert_eq!(header.total_size() as usize, file.len());
    assert_eq!(header.jmp_offset(), 0);
    assert_eq!(header.user_info(), 0);
    assert!(parsed.has_checksum());
    assert_eq!(&parsed.payload()[..elf.len()], &elf[..]);
    assert!(parsed.payload()[elf.len()..].iter().all(|&b| b == 0));

    let names: Vec<&str> = parsed.sections().iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "",
            ".text",
            ".kpatch.text",
            ".kpatch.strtab",
            ".kpatch.info",
            ".rela.kpatch.info",
            ".symtab",
            ".strtab",
            ".shstrtab"
        ]
    );
    assert_eq!(parsed.section_data(".kpatch.text"), Some(&[0x90u8; 37][..]));
    let text = parsed.section(".text").expect("placeholder");
    assert_eq!(
        (text.sh_type, text.addr, text.size),
        (SHT_NOBITS, 0x1040, 0x200)
    );
    assert!(text.data.is_empty() && !text.has_data());
    assert_eq!(parsed.info_section().map(|s| s.index), Some(INFO_INDEX));

    let records: Vec<(u32, u32, bool)> = parsed
        .info_records()
        .iter()
        .map(|r| (r.dlen(), r.slen(), r.is_new_function()))
        .collect();
    assert_eq!(records, [(16, 21, false), (8, 9, false), (0, 7, true)]);
    assert!(parsed.info_records().iter().all(|r| r.daddr() == 0));
    assert_eq!(parsed.elf().machine(), object::elf::Machine(62));
}

#[test]
fn symbols_and_relocations_are_read_through_the_payload_layer() {
    use object::read::elf::{Rela as _, Sym as _};
    let elf = sample_elf();
    let file = our_file(&elf);
    let parsed = KpatchFile::parse(&file).expect("valid");
    let payload = parsed.elf();
    let symbols = payload.symbols().expect("a symbol table");
    let described: Vec<(&[u8], u8, u16, u64)> = symbols
        .iter()
        .map(|s| {
            (
                symbols.symbol_name(LE, s).expect("a name"),
                s.st_info.0,
                s.st_shndx(LE).0,
                s.st_value(LE),
            )
        })
        .collect();
    assert_eq!(
        described,
        [(&b""[..], 0, 0, 0), (b"", 3, 1, 0), (b"f", 0x12, 1, 0x10)]
    );

    let rela = &parsed.sections()[RELA_INDEX];
    let relas: Vec<(u64, u32)> = payload
        .relas(rela)
        .iter()
        .map(|r| (r.r_offset(LE), r.r_sym(LE, false)))
        .collect();
    assert_eq!(relas, [(0, 2), (8, 1), (48, 2), (56, 1), (96, 2), (104, 1)]);
    // Only relocation sections have relocations.
    assert!(payload.relas(&parsed.sections()[INFO_INDEX]).is_empty());
}

#[test]
fn our_header_matches_the_peer_layout_except_the_checksum() {
    let elf = sample_elf();
    let ours = our_file(&elf);
    let peer = peer_file(&elf);
    assert_eq!(ours.len(), peer.len());
    let differing: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != peer[i]).collect();
    // csum (144..148) and the salt byte in the padding at 172.
    assert!(
        differing
            .iter()
            .all(|&i| (144..148).contains(&i) || i == 172),
        "{differing:?}"
    );
}

#[test]
fn peer_file_without_checksum_parses() {
    let file = peer_file(&sample_elf());
    let parsed = KpatchFile::parse(&file).expect("peer file");
    assert!(!parsed.has_checksum());
    assert_eq!(parsed.info_records().len(), 3);
}

#[test]
fn bytes_after_total_size_are_ignored() {
    let mut file = our_file(&sample_elf());
    file.extend_from_slice(b"trailing");
    assert!(KpatchFile::parse(&file).is_ok());
}

#[test]
fn short_file_is_rejected() {
    let file = our_file(&sample_elf());
    assert_eq!(
        parse_err(&file[..100]),
        FormatError::TruncatedHeader {
            len: 100,
            need: 504
        }
    );
}

#[test]
fn wrong_magic_is_rejected() {
    let mut file = peer_file(&sample_elf());
    file[offsets::MAGIC..8].copy_from_slice(b"KPATCH2\0");
    let err = parse_err(&file);
    assert_eq!(
        err,
        FormatError::BadMagic {
            found: "KPATCH2\\x00".into()
        }
    );
    assert!(err.to_string().contains("magic"));
}

#[test]
fn pending_magic_is_rejected() {
    let mut file = peer_file(&sample_elf());
    file[offsets::MAGIC..8].copy_from_slice(b"KPATCH0\0");
    assert_eq!(parse_err(&file), FormatError::PendingMagic);
}

#[test]
fn offsets_other_than_504_are_rejected() {
    for (offset, field) in [
        (offsets::KPATCH_OFFSET, "kpatch_offset"),
        (offsets::REL_OFFSET, "rel_offset"),
    ] {
        let mut file = peer_file(&sample_elf());
        put_u32(&mut file, offset, 512);
        assert_eq!(
            parse_err(&file),
            FormatError::BadOffset {
                field,
                value: 512,
                expected: 504
            }
        );
    }
}

#[test]
fn total_size_too_small_or_misaligned_is_rejected() {
    for total_size in [0, 504, 504 + 48, 504 + 65, 504 + 72] {
        let mut file = peer_file(&sample_elf());
        put_u32(&mut file, offsets::TOTAL_SIZE, total_size);
        assert_eq!(
            parse_err(&file),
            FormatError::BadTotalSize {
                total_size,
                min: 568
            },
            "total_size {total_size}"
        );
    }
}

#[test]
fn total_size_past_the_end_is_rejected() {
    let file = peer_file(&sample_elf());
    let err = parse_err(&file[..file.len() - 16]);
    assert_eq!(
        err,
        FormatError::TotalSizeBeyondFile {
            total_size: file.len() as u32,
            file_len: file.len() - 16
        }
    );
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn corrupted_byte_fails_the_checksum() {
    let mut file = our_file(&sample_elf());
    let last = file.len() - 1;
    file[last] ^= 0x40;
    let err = parse_err(&file);
    assert!(matches!(err, FormatError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("corrupt"));
}

#[test]
fn corrupted_checksum_field_fails_the_checksum() {
    let mut file = our_file(&sample_elf());
    file[offsets::CSUM] ^= 1;
    assert!(matches!(
        parse_err(&file),
        FormatError::ChecksumMismatch { .. }
    ));
}

#[test]
fn bad_patch_id_in_file_is_rejected() {
    for id in [&b"\0\0\0\0\0\0\0\0"[..], b"12345678", b"a b\0\0\0\0\0"] {
        let mut file = peer_file(&sample_elf());
        file[offsets::ID..offsets::ID + 8].copy_from_slice(id);
        let err = parse_err(&file);
        assert!(
            matches!(err, FormatError::BadHeaderString { field: "id", .. }),
            "{err}"
        );
    }
}

#[test]
fn bad_build_id_in_file_is_rejected() {
    let upper = build_id().to_uppercase();
    let short = &build_id()[..32];
    for bid in [upper.as_str(), short] {
        let file = peer_kpatch_make(bid, "0001", TIME, &sample_elf());
        let err = parse_err(&file);
        assert!(
            matches!(
                err,
                FormatError::BadHeaderString {
                    field: "buildid",
                    ..
                }
            ),
            "{err}"
        );
    }
    let mut file = peer_file(&sample_elf());
    file[offsets::BUILDID + 40] = b'a';
    assert!(matches!(
        parse_err(&file),
        FormatError::BadHeaderString {
            field: "buildid",
            ..
        }
    ));
}

#[test]
fn short_payload_is_rejected_by_the_writer() {
    let err = write_kpatch(&build_id(), "0001", TIME, &sample_elf()[..40]).expect_err("short");
    assert_eq!(err, FormatError::Elf(ElfError::TooShort { len: 40 }));
}

#[test]
fn non_elf_payload_is_rejected() {
    let mut elf = sample_elf();
    elf[0] = b'X';
    assert_elf_rejected(&elf, |e| *e == FormatError::Elf(ElfError::BadMagic));
}

#[test]
fn elf_identification_is_checked() {
    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_ident.class = FileClass(1);
    assert_elf_rejected(&elf, unsupported("e_ident[EI_CLASS]"));

    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_ident.data = DataEncoding(2);
    assert_elf_rejected(&elf, unsupported("e_ident[EI_DATA]"));

    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_ident.version = FileVersion(0);
    assert_elf_rejected(&elf, unsupported("e_ident[EI_VERSION]"));

    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_version = U32::new(LE, 2);
    assert_elf_rejected(&elf, unsupported("e_version"));
}

#[test]
fn non_relocatable_elf_is_rejected() {
    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_type = U16::new(LE, FileType(2));
    let err = parse_err(&peer_file(&elf));
    assert!(unsupported("e_type")(&err), "{err}");
    assert!(err.to_string().contains("ET_REL"), "{err}");
}

#[test]
fn section_header_size_is_checked() {
    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_shentsize = U16::new(LE, 40);
    assert_elf_rejected(&elf, unsupported("e_shentsize"));
}

#[test]
fn empty_or_misplaced_section_table_is_rejected() {
    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_shnum = U16::new(LE, 0);
    assert_elf_rejected(&elf, unsupported("e_shnum"));

    let mut elf = sample_elf();
    elf_header_mut(&mut elf).e_shoff = U64::new(LE, 8);
    assert_elf_rejected(&elf, unsupported("e_shoff"));
}

#[test]
fn section_table_past_the_end_is_rejected() {
    for (shoff, shnum) in [(None, 200), (Some(1 << 40), 9), (Some(u64::MAX), 9)] {
        let mut elf = sample_elf();
        let eh = elf_header_mut(&mut elf);
        if let Some(shoff) = shoff {
            eh.e_shoff = U64::new(LE, shoff);
        }
        eh.e_shnum = U16::new(LE, shnum);
        assert_elf_rejected(&elf, |e| {
            matches!(
                e,
                FormatError::Elf(ElfError::SectionTableOutOfBounds { .. })
            )
        });
    }
}

#[test]
fn bad_shstrndx_is_rejected() {
    for shstrndx in [0u16, 9, 0xffff, 1, SYMTAB_INDEX as u16] {
        let mut elf = sample_elf();
        elf_header_mut(&mut elf).e_shstrndx = U16::new(LE, SymbolSection(shstrndx));
        assert_elf_rejected(
            &elf,
            |e| matches!(e, FormatError::Elf(ElfError::BadShstrndx { shstrndx: s, .. }) if *s == shstrndx),
        );
    }
}

#[test]
fn section_bytes_past_the_end_are_rejected() {
    for index in [2, SHSTRTAB_INDEX] {
        let mut elf = sample_elf();
        section_header_mut(&mut elf, index).sh_size = U64::new(LE, 1 << 20);
        assert_elf_rejected(&elf, |e| {
            matches!(e, FormatError::Elf(ElfError::SectionOutOfBounds { .. }))
        });
        let mut elf = sample_elf();
        section_header_mut(&mut elf, index).sh_offset = U64::new(LE, u64::MAX - 2);
        assert_elf_rejected(&elf, |e| {
            matches!(e, FormatError::Elf(ElfError::SectionOutOfBounds { .. }))
        });
    }
}

#[test]
fn nobits_section_may_point_anywhere() {
    let mut elf = sample_elf();
    let sh = section_header_mut(&mut elf, 1);
    sh.sh_offset = U64::new(LE, u64::MAX);
    sh.sh_size = U64::new(LE, u64::MAX);
    assert!(KpatchFile::parse(&peer_file(&elf)).is_ok());
    assert!(write_kpatch(&build_id(), "0001", TIME, &elf).is_ok());
}

#[test]
fn bad_section_name_is_rejected() {
    let mut elf = sample_elf();
    section_header_mut(&mut elf, 3).sh_name = U32::new(LE, 10_000);
    assert_elf_rejected(&elf, |e| {
        matches!(
            e,
            FormatError::Elf(ElfError::BadSectionName { index: 3, .. })
        )
    });

    // A name that runs to the end of .shstrtab without a NUL.
    let mut elf = sample_elf();
    let shstrtab_size = section_header_mut(&mut elf, SHSTRTAB_INDEX).sh_size.get(LE);
    section_header_mut(&mut elf, SHSTRTAB_INDEX).sh_size = U64::new(LE, shstrtab_size - 1);
    assert_elf_rejected(&elf, |e| {
        matches!(e, FormatError::Elf(ElfError::BadSectionName { .. }))
    });
}

#[test]
fn symtab_and_rela_entry_sizes_are_checked() {
    for index in [SYMTAB_INDEX, RELA_INDEX] {
        let mut elf = sample_elf();
        section_header_mut(&mut elf, index).sh_entsize = U64::new(LE, 16);
        assert_elf_rejected(&elf, bad_field("sh_entsize"));

        let mut elf = sample_elf();
        let sh = section_header_mut(&mut elf, index);
        sh.sh_size = U64::new(LE, sh.sh_size.get(LE) - 8);
        assert_elf_rejected(&elf, bad_field("sh_size"));
    }
}

#[test]
fn symtab_and_rela_links_are_checked() {
    for index in [SYMTAB_INDEX, RELA_INDEX] {
        for link in [0, 9, 1000] {
            let mut elf = sample_elf();
            section_header_mut(&mut elf, index).sh_link = U32::new(LE, link);
            assert_elf_rejected(&elf, bad_field("sh_link"));
        }
    }
    // Wrong kinds: a symtab linked to a non-string table, a rela linked to a non-symtab.
    let mut elf = sample_elf();
    section_header_mut(&mut elf, SYMTAB_INDEX).sh_link = U32::new(LE, INFO_INDEX as u32);
    assert_elf_rejected(&elf, bad_field("sh_link"));
    let mut elf = sample_elf();
    section_header_mut(&mut elf, RELA_INDEX).sh_link = U32::new(LE, STRTAB_INDEX as u32);
    assert_elf_rejected(&elf, bad_field("sh_link"));
}

#[test]
fn symtab_and_rela_info_are_checked() {
    let mut elf = sample_elf();
    section_header_mut(&mut elf, SYMTAB_INDEX).sh_info = U32::new(LE, 4);
    assert_elf_rejected(&elf, bad_field("sh_info"));
    for info in [0, 9, 70_000] {
        let mut elf = sample_elf();
        section_header_mut(&mut elf, RELA_INDEX).sh_info = U32::new(LE, info);
        assert_elf_rejected(&elf, bad_field("sh_info"));
    }
}

#[test]
fn missing_kpatch_info_is_rejected() {
    let mut spec = TestElf::kpatch(&[0xc3], &[(8, 1)]);
    spec.sections[INFO_INDEX - 1].name = ".kpatch.inf0".into();
    let elf = spec.build();
    assert_elf_rejected(&elf, |e| *e == FormatError::Info(InfoError::Missing));
    let err = parse_err(&peer_file(&elf));
    assert!(err.to_string().contains(".kpatch.info"), "{err}");
}

#[test]
fn duplicate_kpatch_info_is_rejected() {
    let mut spec = TestElf::kpatch(&[0xc3], &[(8, 1)]);
    spec.sections[1].name = ".kpatch.info".into();
    assert_elf_rejected(&spec.build(), |e| {
        *e == FormatError::Info(InfoError::Duplicate {
            first: 2,
            second: INFO_INDEX,
        })
    });
}

#[test]
fn nobits_kpatch_info_is_rejected() {
    let mut elf = sample_elf();
    section_header_mut(&mut elf, INFO_INDEX).sh_type = U32::new(LE, SHT_NOBITS);
    assert_elf_rejected(&elf, |e| *e == FormatError::Info(InfoError::NoBits));
}

#[test]
fn kpatch_info_size_is_checked() {
    // Records without the marker, and a record cut short.
    for delta in [24u64, 1] {
        let mut elf = sample_elf();
        let sh = section_header_mut(&mut elf, INFO_INDEX);
        let size = sh.sh_size.get(LE) - delta;
        sh.sh_size = U64::new(LE, size);
        assert_elf_rejected(&elf, |e| {
            *e == FormatError::Info(InfoError::BadSize { size })
        });
    }
}

#[test]
fn nonzero_end_marker_is_rejected() {
    let mut spec = TestElf::kpatch(&[0xc3], &[(8, 1)]);
    let info = &mut spec.sections[INFO_INDEX - 1].data;
    let len = info.len();
    info[len - INFO_END_MARKER.len() + 5] = 1;
    assert_elf_rejected(&spec.build(), |e| {
        *e == FormatError::Info(InfoError::BadEndMarker)
    });
}

#[test]
fn empty_kpatch_info_is_accepted() {
    let elf = TestElf::kpatch(&[], &[]).build();
    let file = our_file(&elf);
    let parsed = KpatchFile::parse(&file).expect("valid");
    assert!(parsed.info_records().is_empty());
}

#[test]
fn writer_checks_the_build_id() {
    for bid in ["", "abc", &"g".repeat(40), &"a".repeat(41), &"a".repeat(39)] {
        let err = write_kpatch(bid, "0001", TIME, &sample_elf()).expect_err(bid);
        assert!(matches!(err, FormatError::InvalidBuildId { .. }), "{err}");
    }
    let file = write_kpatch(&build_id().to_uppercase(), "0001", TIME, &sample_elf())
        .expect("upper case is accepted");
    let parsed = KpatchFile::parse(&file).expect("valid");
    assert_eq!(parsed.build_id(), build_id());
}

#[test]
fn writer_checks_the_patch_id() {
    for id in ["", "12345678", "a b", "tab\t", "é", "nul\0"] {
        let err = write_kpatch(&build_id(), id, TIME, &sample_elf()).expect_err(id);
        assert!(
            matches!(err, FormatError::InvalidPatchId { .. }),
            "{id:?}: {err}"
        );
    }
    for id in ["1", "0001", "1234567", "v1.2-r3"] {
        let file = write_kpatch(&build_id(), id, TIME, &sample_elf()).expect(id);
        assert_eq!(KpatchFile::parse(&file).map(|f| f.patch_id()), Ok(id));
    }
}

#[test]
fn other_section_types_are_not_constrained() {
    let mut spec = TestElf::kpatch(&[0xc3], &[(8, 1)]);
    let mut extra = TestSection::new(".note.extra", SectionType(7), vec![1, 2, 3]);
    extra.link = 999;
    spec.sections.push(extra);
    let mut data = TestSection::new(".kpatch.data", SHT_PROGBITS, vec![0; 10]);
    data.addralign = 4096;
    spec.sections.push(data);
    let file = our_file(&spec.build());
    let parsed = KpatchFile::parse(&file).expect("valid");
    let data = parsed.section(".kpatch.data").expect("present");
    assert_eq!(data.offset % 4096, 0);
    assert_eq!(
        parsed.section(".strtab").map(|s| s.sh_type),
        Some(SHT_STRTAB)
    );
    assert_eq!(
        parsed.section(".symtab").map(|s| s.sh_type),
        Some(SHT_SYMTAB)
    );
}
