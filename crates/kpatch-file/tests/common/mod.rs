//! Builds small payload ELFs shaped like `kpatch_strip` output, and edits their headers.

#![allow(dead_code)]

use kpatch_file::elf::{
    FileHeader, SectionHeader, ENDIAN as LE, FILE_HEADER_SIZE, RELA_SIZE, SECTION_HEADER_SIZE,
    SYM_SIZE,
};
use kpatch_file::{InfoRecord, INFO_END_MARKER};
use object::elf::{Ident, ELFCLASS64, ELFDATA2LSB, ELFMAG, ELFOSABI_NONE, ET_REL, EV_CURRENT};
pub use object::elf::{
    SectionFlags, SectionType, SymbolSection, SHF_ALLOC, SHF_EXECINSTR, SHF_INFO_LINK, SHF_WRITE,
    SHT_NOBITS, SHT_PROGBITS, SHT_RELA, SHT_STRTAB, SHT_SYMTAB,
};
pub use object::endian::{U16, U32, U64};

/// A section to lay out; `size` overrides `data.len()` for `SHT_NOBITS`.
#[derive(Debug, Clone)]
pub struct TestSection {
    pub name: String,
    pub sh_type: SectionType,
    pub flags: SectionFlags,
    pub addr: u64,
    pub data: Vec<u8>,
    pub nobits_size: u64,
    pub link: u32,
    pub info: u32,
    pub addralign: u64,
    pub entsize: u64,
}

impl TestSection {
    pub fn new(name: &str, sh_type: SectionType, data: Vec<u8>) -> TestSection {
        TestSection {
            name: name.to_owned(),
            sh_type,
            flags: SectionFlags(0),
            addr: 0,
            data,
            nobits_size: 0,
            link: 0,
            info: 0,
            addralign: 1,
            entsize: 0,
        }
    }
}

/// An ELF to lay out: the file header fields that matter plus sections (index 0, the null
/// section, and `.shstrtab`, last, are added by `build`).
#[derive(Debug, Clone)]
pub struct TestElf {
    pub machine: u16,
    pub sections: Vec<TestSection>,
}

/// Index of `.kpatch.info` in `TestElf::kpatch`.
pub const INFO_INDEX: usize = 4;
/// Index of `.rela.kpatch.info` in `TestElf::kpatch`.
pub const RELA_INDEX: usize = 5;
/// Index of `.symtab` in `TestElf::kpatch`.
pub const SYMTAB_INDEX: usize = 6;
/// Index of `.strtab` in `TestElf::kpatch`.
pub const STRTAB_INDEX: usize = 7;
/// Index of `.shstrtab` in `TestElf::kpatch`.
pub const SHSTRTAB_INDEX: usize = 8;

impl TestElf {
    /// The shape of `kpatch_strip` output: a placeholder for the original `.text`,
    /// `.kpatch.text`, `.kpatch.strtab`, `.kpatch.info` with one record per `(dlen, slen)`
    /// and the end marker, `.rela.kpatch.info`, `.symtab`, `.strtab`.
    pub fn kpatch(text: &[u8], functions: &[(u32, u32)]) -> TestElf {
        let mut placeholder = TestSection::new(".text", SHT_NOBITS, Vec::new());
        placeholder.flags = SHF_ALLOC | SHF_EXECINSTR;
        placeholder.addr = 0x1040;
        placeholder.nobits_size = 0x200;
        placeholder.addralign = 16;

        let mut kpatch_text = TestSection::new(".kpatch.text", SHT_PROGBITS, text.to_vec());
        kpatch_text.flags = SHF_ALLOC | SHF_EXECINSTR;
        kpatch_text.addralign = 16;

        let mut strtab_data = Vec::new();
        for i in 0..functions.len() {
            strtab_data.extend_from_slice(format!("f{i}.kpatch\0").as_bytes());
        }
        let mut kpatch_strtab = TestSection::new(".kpatch.strtab", SHT_PROGBITS, strtab_data);
        kpatch_strtab.flags = SHF_ALLOC;

        let mut info_data = Vec::new();
        for &(dlen, slen) in functions {
            info_data.extend_from_slice(InfoRecord::new(0, 0, dlen, slen, 0).as_bytes());
        }
        info_data.extend_from_slice(&INFO_END_MARKER);
        let mut info = TestSection::new(".kpatch.info", SHT_PROGBITS, info_data);
        info.flags = SHF_ALLOC | SHF_WRITE;
        info.addralign = 8;

        // Symbols: null, section symbol of .text (local), f (global, in .text).
        let mut symtab_data = vec![0u8; SYM_SIZE];
        symtab_data.extend_from_slice(&sym(0, 3, 1, 0));
        symtab_data.extend_from_slice(&sym(1, 0x12, 1, 0x10));
        let mut symtab = TestSection::new(".symtab", SHT_SYMTAB, symtab_data);
        symtab.link = STRTAB_INDEX as u32;
        symtab.info = 2;
        symtab.addralign = 8;
        symtab.entsize = SYM_SIZE as u64;
        let strtab = TestSection::new(".strtab", SHT_STRTAB, b"\0f\0".to_vec());

        // daddr of each record against symbol 2 (f), saddr against symbol 1.
        let mut rela_data = Vec::new();
        for i in 0..functions.len() as u64 {
            rela_data.extend_from_slice(&rela(i * 48, 2, 1, 0));
            rela_data.extend_from_slice(&rela(i * 48 + 8, 1, 1, 0));
        }
        let mut rela_info = TestSection::new(".rela.kpatch.info", SHT_RELA, rela_data);
        rela_info.flags = SHF_INFO_LINK;
        rela_info.link = SYMTAB_INDEX as u32;
        rela_info.info = INFO_INDEX as u32;
        rela_info.addralign = 8;
        rela_info.entsize = RELA_SIZE as u64;

        TestElf {
            machine: 62,
            sections: vec![
                placeholder,
                kpatch_text,
                kpatch_strtab,
                info,
                rela_info,
                symtab,
                strtab,
            ],
        }
    }

    /// Lays the ELF out: header, section bytes (aligned), `.shstrtab`, section headers.
    pub fn build(&self) -> Vec<u8> {
        let mut shstrtab = vec![0u8];
        let mut names = Vec::new();
        for section in &self.sections {
            names.push(shstrtab.len() as u32);
            shstrtab.extend_from_slice(section.name.as_bytes());
            shstrtab.push(0);
        }
        let shstrtab_name = shstrtab.len() as u32;
        shstrtab.extend_from_slice(b".shstrtab\0");

        let mut out = vec![0u8; FILE_HEADER_SIZE];
        let mut headers = vec![null_section()];
        for (section, name) in self.sections.iter().zip(names) {
            let mut sh = null_section();
            sh.sh_name = U32::new(LE, name);
            sh.sh_type = U32::new(LE, section.sh_type);
            sh.sh_flags = U64::new(LE, section.flags);
            sh.sh_addr = U64::new(LE, section.addr);
            sh.sh_link = U32::new(LE, section.link);
            sh.sh_info = U32::new(LE, section.info);
            sh.sh_addralign = U64::new(LE, section.addralign);
            sh.sh_entsize = U64::new(LE, section.entsize);
            let align = section.addralign.max(1) as usize;
            out.resize(out.len().next_multiple_of(align), 0);
            sh.sh_offset = U64::new(LE, out.len() as u64);
            if section.sh_type == SHT_NOBITS {
                sh.sh_size = U64::new(LE, section.nobits_size);
            } else {
                sh.sh_size = U64::new(LE, section.data.len() as u64);
                out.extend_from_slice(&section.data);
            }
            headers.push(sh);
        }
        let mut sh = null_section();
        sh.sh_name = U32::new(LE, shstrtab_name);
        sh.sh_type = U32::new(LE, SHT_STRTAB);
        sh.sh_offset = U64::new(LE, out.len() as u64);
        sh.sh_size = U64::new(LE, shstrtab.len() as u64);
        sh.sh_addralign = U64::new(LE, 1);
        headers.push(sh);
        out.extend_from_slice(&shstrtab);

        out.resize(out.len().next_multiple_of(8), 0);
        let shoff = out.len();
        for sh in &headers {
            out.extend_from_slice(object::pod::bytes_of(sh));
        }

        let eh = FileHeader {
            e_ident: Ident {
                magic: ELFMAG,
                class: ELFCLASS64,
                data: ELFDATA2LSB,
                version: EV_CURRENT,
                os_abi: ELFOSABI_NONE,
                abi_version: 0,
                padding: [0; 7],
            },
            e_type: U16::new(LE, ET_REL),
            e_machine: U16::new(LE, object::elf::Machine(self.machine)),
            e_version: U32::new(LE, EV_CURRENT.0.into()),
            e_entry: U64::new(LE, 0),
            e_phoff: U64::new(LE, 0),
            e_shoff: U64::new(LE, shoff as u64),
            e_flags: U32::new(LE, object::elf::FileFlags(0)),
            e_ehsize: U16::new(LE, FILE_HEADER_SIZE as u16),
            e_phentsize: U16::new(LE, 0),
            e_phnum: U16::new(LE, 0),
            e_shentsize: U16::new(LE, SECTION_HEADER_SIZE as u16),
            e_shnum: U16::new(LE, headers.len() as u16),
            e_shstrndx: U16::new(LE, SymbolSection((headers.len() - 1) as u16)),
        };
        out[..FILE_HEADER_SIZE].copy_from_slice(object::pod::bytes_of(&eh));
        out
    }
}

/// An all-zero section header.
fn null_section() -> SectionHeader {
    SectionHeader {
        sh_name: U32::new(LE, 0),
        sh_type: U32::new(LE, SectionType(0)),
        sh_flags: U64::new(LE, SectionFlags(0)),
        sh_addr: U64::new(LE, 0),
        sh_offset: U64::new(LE, 0),
        sh_size: U64::new(LE, 0),
        sh_link: U32::new(LE, 0),
        sh_info: U32::new(LE, 0),
        sh_addralign: U64::new(LE, 0),
        sh_entsize: U64::new(LE, 0),
    }
}

fn sym(name: u32, info: u8, shndx: u16, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&name.to_le_bytes());
    out.push(info);
    out.push(0);
    out.extend_from_slice(&shndx.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out
}

fn rela(offset: u64, sym: u32, r_type: u32, addend: i64) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&((u64::from(sym) << 32) | u64::from(r_type)).to_le_bytes());
    out.extend_from_slice(&addend.to_le_bytes());
    out
}

/// The ELF header of an ELF being edited by a test.
pub fn elf_header_mut(elf: &mut [u8]) -> &mut FileHeader {
    object::pod::from_bytes_mut::<FileHeader>(elf)
        .expect("test ELF has a header")
        .0
}

/// Section header `index` of an ELF being edited by a test.
pub fn section_header_mut(elf: &mut [u8], index: usize) -> &mut SectionHeader {
    let shoff = elf_header_mut(elf).e_shoff.get(LE) as usize;
    let start = shoff + index * SECTION_HEADER_SIZE;
    object::pod::from_bytes_mut::<SectionHeader>(&mut elf[start..])
        .expect("test ELF has this section header")
        .0
}

/// A typical build-id.
pub fn build_id() -> String {
    "6d1f3b8c0a9e2f47b5c6d7e8f9a0b1c2d3e4f5a6".to_owned()
}

/// A valid payload with two patched functions and one new function.
pub fn sample_elf() -> Vec<u8> {
    TestElf::kpatch(&[0x90; 37], &[(16, 21), (8, 9), (0, 7)]).build()
}

/// What LibcarePlus's kpatch_make writes, laid out byte by byte at the offsets of its
/// `struct kpatch_file` (independently of our `Header`): no checksum.
pub fn peer_kpatch_make(build_id: &str, patch_id: &str, build_time: u64, elf: &[u8]) -> Vec<u8> {
    let padded = elf.len().next_multiple_of(16);
    let mut out = vec![0u8; 504];
    out[0..8].copy_from_slice(b"KPATCH1\0");
    out[8..8 + patch_id.len()].copy_from_slice(patch_id.as_bytes());
    out[88..88 + build_id.len()].copy_from_slice(build_id.as_bytes());
    out[136..144].copy_from_slice(&build_time.to_le_bytes());
    out[152..156].copy_from_slice(&504u32.to_le_bytes());
    out[156..160].copy_from_slice(&504u32.to_le_bytes());
    out[160..164].copy_from_slice(&((504 + padded) as u32).to_le_bytes());
    out.extend_from_slice(elf);
    out.resize(504 + padded, 0);
    out
}

/// Offsets of header fields, for tests that corrupt them.
pub mod offsets {
    pub const MAGIC: usize = 0;
    pub const ID: usize = 8;
    pub const BUILDID: usize = 88;
    pub const CSUM: usize = 144;
    pub const KPATCH_OFFSET: usize = 152;
    pub const REL_OFFSET: usize = 156;
    pub const TOTAL_SIZE: usize = 160;
}

/// Overwrites a little-endian u32 header field.
pub fn put_u32(file: &mut [u8], offset: usize, value: u32) {
    file[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}
