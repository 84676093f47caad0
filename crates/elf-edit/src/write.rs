//! Serialising the model back to bytes.

use object::elf::{
    Ident, SymbolSection, ELFCLASS64, ELFDATA2LSB, ELFMAG, EV_CURRENT, SHN_LORESERVE, SHN_XINDEX,
};
use object::endian::{U16, U32, U64};

use crate::model::{Elf, Section};
use crate::raw::{Ehdr, Shdr, EHDR_SIZE, LE, SHDR_SIZE};
use crate::strtab::StringTable;
use crate::symbol::name_offset_for;

/// File alignment larger than this is not honoured: no consumer of these files needs more
/// than a page, and a bogus `sh_addralign` must not blow the file up.
const MAX_FILE_ALIGN: u64 = 1 << 16;

/// How [`Elf::write_with`] lays the file out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Minimum file-offset alignment of the named sections, on top of their `sh_addralign`.
    pub file_alignment: Vec<(String, u64)>,
}

impl Elf {
    /// Writes the file with sections laid out one after another in index order, each at a file
    /// offset that is a multiple of its `sh_addralign` (`SHT_NOBITS` sections take no space),
    /// followed by the section header table; program headers are dropped.
    ///
    /// Section names come from `.shstrtab` (names missing from it are appended; a name is cut at
    /// an embedded NUL, and names are dropped when there is no section-name table).
    pub fn write(&self) -> Vec<u8> {
        self.write_with(&WriteOptions::default())
    }

    /// Writes the file as [`Elf::write`] does, with the file alignments of `options`.
    pub fn write_with(&self, options: &WriteOptions) -> Vec<u8> {
        let (names, name_offsets) = self.section_names();
        sequential(self, &names, &name_offsets, &options.file_alignment)
    }

    /// The section-name table's new bytes (if any) and each section's `sh_name`.
    fn section_names(&self) -> (Option<Vec<u8>>, Vec<u32>) {
        let table = match self.sections.get(self.shstrndx) {
            Some(s) if self.shstrndx != 0 && s.has_file_data() => s,
            _ => return (None, vec![0; self.sections.len()]),
        };
        let mut strtab = StringTable::from_bytes(table.data.clone());
        let offsets = self
            .sections
            .iter()
            .map(|s| {
                let name = s.name.split('\0').next().unwrap_or_default();
                name_offset_for(&mut strtab, s.name_offset, name).unwrap_or(0)
            })
            .collect();
        (Some(strtab.into_bytes()), offsets)
    }

    fn data_of<'a>(&'a self, index: usize, s: &'a Section, names: &'a Option<Vec<u8>>) -> &'a [u8] {
        match names {
            Some(n) if index == self.shstrndx => n,
            _ => &s.data,
        }
    }
}

fn align_up(off: u64, align: u64) -> u64 {
    let align = align.clamp(1, MAX_FILE_ALIGN);
    off.div_ceil(align).saturating_mul(align)
}

fn sequential(
    elf: &Elf,
    names: &Option<Vec<u8>>,
    name_offsets: &[u32],
    extra: &[(String, u64)],
) -> Vec<u8> {
    let mut out = vec![0u8; EHDR_SIZE];
    let mut offsets = Vec::with_capacity(elf.sections.len());
    for (i, s) in elf.sections.iter().enumerate() {
        if i == 0 {
            offsets.push(0);
            continue;
        }
        let pos = out.len() as u64;
        if !s.has_file_data() {
            offsets.push(pos);
            continue;
        }
        let mut align = s.alignment();
        for (name, a) in extra {
            if *name == s.name {
                align = align.max(*a);
            }
        }
        let start = align_up(pos, align);
        out.resize(start as usize, 0);
        out.extend_from_slice(elf.data_of(i, s, names));
        offsets.push(start);
    }
    let shoff = align_up(out.len() as u64, 8);
    out.resize(shoff as usize, 0);

    let count = elf.sections.len();
    let big_count = count >= usize::from(SHN_LORESERVE);
    let big_names = elf.shstrndx >= usize::from(SHN_LORESERVE);
    let header = Ehdr {
        e_ident: Ident {
            magic: ELFMAG,
            class: ELFCLASS64,
            data: ELFDATA2LSB,
            version: EV_CURRENT,
            os_abi: elf.osabi,
            abi_version: elf.abiversion,
            padding: [0; 7],
        },
        e_type: U16::new(LE, elf.e_type),
        e_machine: U16::new(LE, elf.machine),
        e_version: U32::new(LE, elf.version),
        e_entry: U64::new(LE, elf.entry),
        e_phoff: U64::new(LE, 0),
        e_shoff: U64::new(LE, if count > 0 { shoff } else { 0 }),
        e_flags: U32::new(LE, elf.flags),
        e_ehsize: U16::new(LE, EHDR_SIZE as u16),
        e_phentsize: U16::new(LE, 0),
        e_phnum: U16::new(LE, 0),
        e_shentsize: U16::new(LE, if count > 0 { SHDR_SIZE as u16 } else { 0 }),
        e_shnum: U16::new(LE, if big_count { 0 } else { count as u16 }),
        e_shstrndx: U16::new(
            LE,
            if big_names {
                SHN_XINDEX
            } else {
                SymbolSection(elf.shstrndx as u16)
            },
        ),
    };
    out[..EHDR_SIZE].copy_from_slice(object::pod::bytes_of(&header));

    for (i, s) in elf.sections.iter().enumerate() {
        let mut size = match names {
            Some(n) if i == elf.shstrndx => n.len() as u64,
            _ => s.sh_size(),
        };
        let mut link = s.link;
        if i == 0 {
            if big_count {
                size = count as u64;
            }
            if big_names {
                link = elf.shstrndx as u32;
            }
        }
        let sh = Shdr {
            sh_name: U32::new(LE, name_offsets.get(i).copied().unwrap_or(0)),
            sh_type: U32::new(LE, s.sh_type),
            sh_flags: U64::new(LE, s.flags),
            sh_addr: U64::new(LE, s.addr),
            sh_offset: U64::new(LE, offsets.get(i).copied().unwrap_or(0)),
            sh_size: U64::new(LE, size),
            sh_link: U32::new(LE, link),
            sh_info: U32::new(LE, s.info),
            sh_addralign: U64::new(LE, s.addralign),
            sh_entsize: U64::new(LE, s.entsize),
        };
        out.extend_from_slice(object::pod::bytes_of(&sh));
    }
    out
}
