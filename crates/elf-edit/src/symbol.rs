//! Symbol tables (`SHT_SYMTAB`, `SHT_DYNSYM`): decode to [`Symbol`]s and encode them back.

use object::elf::{
    SectionType, SymbolBind, SymbolInfo, SymbolOther, SymbolSection, SymbolType, SymbolVisibility,
    SHT_DYNSYM, SHT_STRTAB, SHT_SYMTAB, STB_LOCAL,
};
use object::endian::{U16, U32, U64};

use crate::error::ElfError;
use crate::model::Elf;
use crate::raw::{Sym, LE, SYM_SIZE};
use crate::strtab::StringTable;

/// One `Elf64_Sym`, its name resolved through the linked string table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Symbol {
    /// The name (invalid UTF-8 replaced); `name_offset` keeps the exact bytes on write.
    pub name: String,
    /// `st_name` as read; reused on write while it still holds `name`.
    pub name_offset: u32,
    pub value: u64,
    pub size: u64,
    /// `STT_*`.
    pub sym_type: SymbolType,
    /// `STB_*`.
    pub bind: SymbolBind,
    /// `st_other`: the visibility in its low two bits, processor flags above.
    pub other: SymbolOther,
    /// `st_shndx` (`SHN_UNDEF`, a section index, or a reserved index such as `SHN_ABS`).
    pub shndx: SymbolSection,
}

impl Symbol {
    /// `STV_*`.
    pub fn visibility(&self) -> SymbolVisibility {
        self.other.visibility()
    }

    /// `st_info`.
    pub fn info(&self) -> SymbolInfo {
        SymbolInfo::new(self.bind, self.sym_type)
    }

    /// Whether the symbol is defined in a section of this file (not undefined, absolute or
    /// common).
    pub fn is_defined_in_section(&self) -> bool {
        !self.shndx.is_special()
    }

    /// The index of the section defining the symbol, if it is defined in one.
    pub fn section_index(&self) -> Option<usize> {
        self.shndx.index().map(usize::from)
    }

    /// The name without a `@VERSION` or `@@VERSION` suffix.
    pub fn unversioned_name(&self) -> &str {
        self.name.split('@').next().unwrap_or(&self.name)
    }
}

impl Elf {
    fn check_table(&self, index: usize, what: &str, types: &[SectionType]) -> Result<(), ElfError> {
        let s = self.section_at(index)?;
        let section = self.describe_section(index);
        if !types.contains(&s.sh_type) {
            return Err(ElfError::BadSection {
                section,
                reason: format!("is not a {what} (sh_type {})", s.sh_type),
            });
        }
        if s.data.len() % SYM_SIZE != 0 {
            return Err(ElfError::BadSection {
                section,
                reason: format!(
                    "size {:#x} is not a multiple of the {what} entry size 24",
                    s.data.len()
                ),
            });
        }
        if s.entsize != SYM_SIZE as u64 && !(s.entsize == 0 && s.data.is_empty()) {
            return Err(ElfError::BadSection {
                section,
                reason: format!("sh_entsize is {}, a {what} entry is 24 bytes", s.entsize),
            });
        }
        Ok(())
    }

    /// Decodes the symbol table at `index` (`SHT_SYMTAB` or `SHT_DYNSYM`).
    pub fn symbols(&self, index: usize) -> Result<Vec<Symbol>, ElfError> {
        self.check_table(index, "symbol table", &[SHT_SYMTAB, SHT_DYNSYM])?;
        let sec = self.section_at(index)?;
        let strtab_index = sec.link as usize;
        let strtab = match self.sections.get(strtab_index) {
            Some(s) if s.sh_type == SHT_STRTAB => s,
            _ => {
                return Err(ElfError::BadSection {
                    section: self.describe_section(index),
                    reason: format!("sh_link {} is not a string table", sec.link),
                })
            }
        };
        // check_table made the size a whole number of entries.
        let entries: &[Sym] = object::pod::slice_from_all_bytes(&sec.data).unwrap_or_default();
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let name_offset = e.st_name.get(LE);
            let name =
                crate::strtab::read_cstr(&strtab.data, name_offset as u64).ok_or_else(|| {
                    ElfError::BadString {
                        table: self.describe_section(strtab_index),
                        offset: name_offset as u64,
                        user: format!("symbol {i} of {}", self.describe_section(index)),
                    }
                })?;
            out.push(Symbol {
                name: String::from_utf8_lossy(name).into_owned(),
                name_offset,
                sym_type: e.st_info.st_type(),
                bind: e.st_info.st_bind(),
                other: e.st_other,
                shndx: e.st_shndx.get(LE),
                value: e.st_value.get(LE),
                size: e.st_size.get(LE),
            });
        }
        Ok(out)
    }

    /// Encodes `symbols` into the symbol table at `index`, adding names missing from its linked
    /// string table. `sh_info` becomes one past the last local symbol.
    pub fn set_symbols(&mut self, index: usize, symbols: &[Symbol]) -> Result<(), ElfError> {
        self.check_table(index, "symbol table", &[SHT_SYMTAB, SHT_DYNSYM])?;
        let strtab_index = self.section_at(index)?.link as usize;
        let mut strtab = self.string_table(strtab_index)?;
        let mut data = Vec::with_capacity(symbols.len() * SYM_SIZE);
        let mut first_global = symbols.len();
        for (i, s) in symbols.iter().enumerate() {
            let name_offset =
                name_offset_for(&mut strtab, s.name_offset, &s.name).ok_or_else(|| {
                    ElfError::BadSection {
                        section: self.describe_section(strtab_index),
                        reason: format!("cannot hold symbol name {:?}", s.name),
                    }
                })?;
            if s.bind != STB_LOCAL && first_global == symbols.len() {
                first_global = i;
            }
            let entry = Sym {
                st_name: U32::new(LE, name_offset),
                st_info: s.info(),
                st_other: s.other,
                st_shndx: U16::new(LE, s.shndx),
                st_value: U64::new(LE, s.value),
                st_size: U64::new(LE, s.size),
            };
            data.extend_from_slice(object::pod::bytes_of(&entry));
        }
        self.set_string_table(strtab_index, strtab)?;
        let sec = self.section_at_mut(index)?;
        sec.set_data(data);
        sec.entsize = SYM_SIZE as u64;
        sec.info = u32::try_from(first_global).unwrap_or(u32::MAX);
        Ok(())
    }
}

/// Keeps `old` when it still names `name` (preserving suffix sharing and non-UTF-8 bytes),
/// otherwise finds or adds `name`.
pub(crate) fn name_offset_for(table: &mut StringTable, old: u32, name: &str) -> Option<u32> {
    if let Some(bytes) = table.get(old) {
        if String::from_utf8_lossy(bytes) == name {
            return Some(old);
        }
    }
    table.add(name.as_bytes())
}
