//! Symbol tables (`SHT_SYMTAB`, `SHT_DYNSYM`): decode to [`Symbol`]s and encode them back.

use crate::consts::*;
use crate::error::ElfError;
use crate::model::Elf;
use crate::read::{le_u16, le_u32, le_u64};
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
    pub sym_type: u8,
    /// `STB_*`.
    pub bind: u8,
    /// `st_other`: the visibility in its low two bits, processor flags above.
    pub other: u8,
    /// `st_shndx` (`SHN_UNDEF`, a section index, or a reserved index such as `SHN_ABS`).
    pub shndx: u16,
}

impl Symbol {
    /// `STV_*`.
    pub fn visibility(&self) -> u8 {
        self.other & 3
    }

    /// `st_info`.
    pub fn info(&self) -> u8 {
        (self.bind << 4) | (self.sym_type & 0xf)
    }

    /// Whether the symbol is defined in a section of this file (not undefined, absolute or
    /// common).
    pub fn is_defined_in_section(&self) -> bool {
        self.shndx != SHN_UNDEF && self.shndx < SHN_LORESERVE
    }

    /// The name without a `@VERSION` or `@@VERSION` suffix.
    pub fn unversioned_name(&self) -> &str {
        self.name.split('@').next().unwrap_or(&self.name)
    }
}

impl Elf {
    fn check_table(&self, index: usize, what: &str, types: &[u32]) -> Result<(), ElfError> {
        let s = self.section_at(index)?;
        let section = self.describe_section(index);
        if !types.contains(&s.sh_type) {
            return Err(ElfError::BadSection {
                section,
                reason: format!("is not a {what} (sh_type {})", s.sh_type),
            });
        }
        if s.data.len() % 24 != 0 {
            return Err(ElfError::BadSection {
                section,
                reason: format!(
                    "size {:#x} is not a multiple of the {what} entry size 24",
                    s.data.len()
                ),
            });
        }
        if s.entsize != 24 && !(s.entsize == 0 && s.data.is_empty()) {
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
        let mut out = Vec::with_capacity(sec.data.len() / SYM_SIZE);
        for (i, e) in sec.data.chunks_exact(SYM_SIZE).enumerate() {
            let name_offset = le_u32(e, 0);
            let name =
                crate::strtab::read_cstr(&strtab.data, name_offset as u64).ok_or_else(|| {
                    ElfError::BadString {
                        table: self.describe_section(strtab_index),
                        offset: name_offset as u64,
                        user: format!("symbol {i} of {}", self.describe_section(index)),
                    }
                })?;
            let info = e[4];
            out.push(Symbol {
                name: String::from_utf8_lossy(name).into_owned(),
                name_offset,
                sym_type: info & 0xf,
                bind: info >> 4,
                other: e[5],
                shndx: le_u16(e, 6),
                value: le_u64(e, 8),
                size: le_u64(e, 16),
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
            data.extend_from_slice(&name_offset.to_le_bytes());
            data.push(s.info());
            data.push(s.other);
            data.extend_from_slice(&s.shndx.to_le_bytes());
            data.extend_from_slice(&s.value.to_le_bytes());
            data.extend_from_slice(&s.size.to_le_bytes());
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
