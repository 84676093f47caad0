//! The owned model: file header fields, program headers and sections.

use object::elf::{
    FileFlags, FileType, Machine, OsAbi, ProgramFlags, ProgramType, SectionFlags, SectionType,
    SymbolSection, SHF_INFO_LINK, SHN_XINDEX, SHT_DYNSYM, SHT_NOBITS, SHT_NULL, SHT_REL, SHT_RELA,
    SHT_STRTAB, SHT_SYMTAB,
};

use crate::error::ElfError;
use crate::strtab::StringTable;

/// One program header, as read. The writer drops program headers: it lays sections out anew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramHeader {
    pub p_type: ProgramType,
    pub flags: ProgramFlags,
    pub offset: u64,
    pub vaddr: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// One section: its header fields and, unless it occupies no file space, its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Section {
    pub name: String,
    pub sh_type: SectionType,
    pub flags: SectionFlags,
    pub addr: u64,
    /// File offset as read; [`crate::Elf::write`] computes a new one.
    pub offset: u64,
    /// `sh_size`. For a section with file data (see [`Section::has_file_data`]) the size written
    /// is `data.len()`; this field only matters for `SHT_NOBITS` and `SHT_NULL` sections.
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub addralign: u64,
    pub entsize: u64,
    /// The section's bytes; empty for `SHT_NOBITS` and `SHT_NULL`.
    pub data: Vec<u8>,
    /// Offset of the name in the section-name table as read, reused on write when it still
    /// holds `name`.
    pub name_offset: u32,
}

impl Section {
    /// A section of type `sh_type` holding `data`.
    pub fn new(name: &str, sh_type: SectionType, flags: SectionFlags, data: Vec<u8>) -> Self {
        Self {
            name: name.to_string(),
            sh_type,
            flags,
            size: data.len() as u64,
            addralign: 1,
            data,
            ..Self::default()
        }
    }

    /// Whether the section's bytes live in the file (everything but `SHT_NOBITS` and `SHT_NULL`).
    pub fn has_file_data(&self) -> bool {
        !matches!(self.sh_type, SHT_NOBITS | SHT_NULL)
    }

    /// The `sh_size` the section will be written with.
    pub fn sh_size(&self) -> u64 {
        if self.has_file_data() {
            self.data.len() as u64
        } else {
            self.size
        }
    }

    /// Replaces the bytes (and the size with them).
    pub fn set_data(&mut self, data: Vec<u8>) {
        self.size = data.len() as u64;
        self.data = data;
    }

    /// Turns the section into an `SHT_NOBITS` placeholder of the same name, address, size and
    /// flags, with no bytes in the file.
    pub fn make_nobits(&mut self) {
        self.size = self.sh_size();
        self.sh_type = SHT_NOBITS;
        self.data = Vec::new();
    }

    /// `addralign`, with 0 read as 1.
    pub fn alignment(&self) -> u64 {
        self.addralign.max(1)
    }

    /// Whether `sh_info` holds a section index (relocation sections, or `SHF_INFO_LINK`).
    pub fn info_is_section(&self) -> bool {
        matches!(self.sh_type, SHT_REL | SHT_RELA) || self.flags.contains(SHF_INFO_LINK)
    }
}

/// An ELF file: 64-bit, little-endian, of any type (`ET_REL`, `ET_EXEC`, `ET_DYN`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Elf {
    pub osabi: OsAbi,
    pub abiversion: u8,
    pub e_type: FileType,
    pub machine: Machine,
    pub version: u32,
    pub entry: u64,
    pub flags: FileFlags,
    /// As read; never written (see [`ProgramHeader`]).
    pub program_headers: Vec<ProgramHeader>,
    /// All sections, index 0 (the null section) included.
    pub sections: Vec<Section>,
    /// Index of the section-name table (`e_shstrndx`); 0 when there is none.
    pub shstrndx: usize,
}

impl Elf {
    /// An empty file of this type and machine: the null section and a `.shstrtab`.
    pub fn new(e_type: FileType, machine: Machine) -> Self {
        let mut shstrtab = Section::new(".shstrtab", SHT_STRTAB, SectionFlags(0), vec![0]);
        shstrtab.name_offset = u32::MAX;
        Self {
            e_type,
            machine,
            version: 1,
            sections: vec![Section::default(), shstrtab],
            shstrndx: 1,
            ..Self::default()
        }
    }

    /// Index of the first section called `name`.
    pub fn section_index(&self, name: &str) -> Option<usize> {
        self.sections.iter().position(|s| s.name == name)
    }

    /// The first section called `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The first section called `name`, mutably.
    pub fn section_mut(&mut self, name: &str) -> Option<&mut Section> {
        self.sections.iter_mut().find(|s| s.name == name)
    }

    /// The section at `index`, or an error naming the index.
    pub fn section_at(&self, index: usize) -> Result<&Section, ElfError> {
        self.sections.get(index).ok_or(ElfError::NoSuchIndex {
            index,
            count: self.sections.len(),
        })
    }

    /// The section at `index`, mutably, or an error naming the index.
    pub fn section_at_mut(&mut self, index: usize) -> Result<&mut Section, ElfError> {
        let count = self.sections.len();
        self.sections
            .get_mut(index)
            .ok_or(ElfError::NoSuchIndex { index, count })
    }

    /// Index of the first section of type `sh_type`.
    pub fn section_index_by_type(&self, sh_type: SectionType) -> Option<usize> {
        self.sections.iter().position(|s| s.sh_type == sh_type)
    }

    /// Index of `.symtab` (the first `SHT_SYMTAB` section).
    pub fn symtab_index(&self) -> Option<usize> {
        self.section_index_by_type(SHT_SYMTAB)
    }

    /// Index of `.dynsym` (the first `SHT_DYNSYM` section).
    pub fn dynsym_index(&self) -> Option<usize> {
        self.section_index_by_type(SHT_DYNSYM)
    }

    /// `name [index]`, the way errors refer to a section.
    pub fn describe_section(&self, index: usize) -> String {
        match self.sections.get(index) {
            Some(s) if !s.name.is_empty() => format!("{} [{index}]", s.name),
            _ => format!("[{index}]"),
        }
    }

    /// Appends a section and returns its index.
    pub fn add_section(&mut self, section: Section) -> usize {
        self.sections.push(section);
        self.sections.len() - 1
    }

    /// Appends an empty symbol table, `.symtab` linked to a new `.strtab`, and returns the
    /// index of `.symtab` (fill it with [`Elf::set_symbols`]).
    pub fn add_symbol_table(&mut self) -> usize {
        let strtab = self.add_section(Section::new(
            ".strtab",
            SHT_STRTAB,
            SectionFlags(0),
            vec![0],
        ));
        self.add_section(Section {
            link: strtab as u32,
            entsize: 24,
            addralign: 8,
            ..Section::new(".symtab", SHT_SYMTAB, SectionFlags(0), Vec::new())
        })
    }

    /// Replaces the section at `index`, returning the old one.
    pub fn replace_section(&mut self, index: usize, section: Section) -> Result<Section, ElfError> {
        let slot = self.section_at_mut(index)?;
        Ok(std::mem::replace(slot, section))
    }

    /// The `SHT_STRTAB` section at `index` as an editable table.
    pub fn string_table(&self, index: usize) -> Result<StringTable, ElfError> {
        let s = self.section_at(index)?;
        if s.sh_type != SHT_STRTAB {
            return Err(ElfError::BadSection {
                section: self.describe_section(index),
                reason: format!("is not a string table (sh_type {})", s.sh_type),
            });
        }
        Ok(StringTable::from_bytes(s.data.clone()))
    }

    /// Replaces the bytes of the string table at `index`.
    pub fn set_string_table(&mut self, index: usize, table: StringTable) -> Result<(), ElfError> {
        self.section_at_mut(index)?.set_data(table.into_bytes());
        Ok(())
    }

    /// Removes the sections whose indices are in `remove`, renumbering every reference to the
    /// sections that stay: `sh_link`, section-index `sh_info`, symbols' `st_shndx` in every
    /// symbol table, and `e_shstrndx`. Fails, changing nothing, if a kept section or a symbol
    /// still refers to a removed one.
    pub fn remove_sections(&mut self, remove: &[usize]) -> Result<(), ElfError> {
        let count = self.sections.len();
        if let Some(&bad) = remove.iter().find(|&&i| i == 0 || i >= count) {
            return Err(ElfError::NoSuchIndex { index: bad, count });
        }
        let mut new_index = vec![None; count];
        let mut next = 0usize;
        for (i, slot) in new_index.iter_mut().enumerate() {
            if !remove.contains(&i) {
                *slot = Some(next);
                next += 1;
            }
        }
        let map = |old: usize, user: &str| -> Result<usize, ElfError> {
            match new_index.get(old) {
                Some(Some(n)) => Ok(*n),
                Some(None) => Err(ElfError::BadSection {
                    section: self.describe_section(old),
                    reason: format!("cannot be removed: {user} refers to it"),
                }),
                None => Ok(old),
            }
        };
        let mut edits = Vec::new();
        for (i, s) in self.sections.iter().enumerate() {
            if new_index[i].is_none() {
                continue;
            }
            let link = if s.link != 0 {
                map(
                    s.link as usize,
                    &format!("sh_link of {}", self.describe_section(i)),
                )?
            } else {
                0
            };
            let info = if s.info_is_section() && s.info != 0 {
                map(
                    s.info as usize,
                    &format!("sh_info of {}", self.describe_section(i)),
                )?
            } else {
                s.info as usize
            };
            edits.push((i, link, info));
        }
        let mut sym_edits = Vec::new();
        for (i, s) in self.sections.iter().enumerate() {
            if new_index[i].is_none() || !matches!(s.sh_type, SHT_SYMTAB | SHT_DYNSYM) {
                continue;
            }
            let mut syms = self.symbols(i)?;
            for sym in &mut syms {
                if sym.is_defined_in_section() {
                    let user = format!("symbol {} in {}", sym.name, self.describe_section(i));
                    let n = map(usize::from(sym.shndx.0), &user)?;
                    sym.shndx = SymbolSection(u16::try_from(n).unwrap_or(SHN_XINDEX.0));
                }
            }
            sym_edits.push((i, syms));
        }
        let shstrndx = if self.shstrndx != 0 {
            map(self.shstrndx, "e_shstrndx")?
        } else {
            0
        };
        for (i, syms) in sym_edits {
            self.set_symbols(i, &syms)?;
        }
        for (i, link, info) in edits {
            let s = &mut self.sections[i];
            s.link = link as u32;
            s.info = info as u32;
        }
        let mut i = 0usize;
        self.sections.retain(|_| {
            let keep = new_index[i].is_some();
            i += 1;
            keep
        });
        self.shstrndx = shstrndx;
        Ok(())
    }
}
