//! Relocation sections with addends (`SHT_RELA`).

use object::elf::{RelocationType, SHT_RELA};
use object::endian::{I64, U64};

use crate::error::ElfError;
use crate::model::Elf;
use crate::raw::{Rela as RawRela, LE, RELA_SIZE};

/// One `Elf64_Rela`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rela {
    /// `r_offset`: a virtual address in linked files, a section offset in `ET_REL`.
    pub offset: u64,
    /// Symbol-table index (`ELF64_R_SYM`).
    pub sym: u32,
    /// Relocation type (`ELF64_R_TYPE`).
    pub r_type: RelocationType,
    pub addend: i64,
}

impl Rela {
    /// `r_info`.
    pub fn info(&self) -> u64 {
        RawRela::r_info(LE, false, self.sym, self.r_type).get(LE)
    }
}

impl Elf {
    /// Decodes the `SHT_RELA` section at `index`.
    pub fn relas(&self, index: usize) -> Result<Vec<Rela>, ElfError> {
        self.check_rela(index)?;
        let sec = self.section_at(index)?;
        // check_rela made the size a whole number of entries.
        let entries: &[RawRela] = object::pod::slice_from_all_bytes(&sec.data).unwrap_or_default();
        Ok(entries
            .iter()
            .map(|e| Rela {
                offset: e.r_offset.get(LE),
                sym: e.r_sym(LE, false),
                r_type: e.r_type(LE, false),
                addend: e.r_addend.get(LE),
            })
            .collect())
    }

    /// Encodes `relas` into the `SHT_RELA` section at `index`.
    pub fn set_relas(&mut self, index: usize, relas: &[Rela]) -> Result<(), ElfError> {
        self.check_rela(index)?;
        let mut data = Vec::with_capacity(relas.len() * RELA_SIZE);
        for r in relas {
            let entry = RawRela {
                r_offset: U64::new(LE, r.offset),
                r_info: RawRela::r_info(LE, false, r.sym, r.r_type),
                r_addend: I64::new(LE, r.addend),
            };
            data.extend_from_slice(object::pod::bytes_of(&entry));
        }
        let sec = self.section_at_mut(index)?;
        sec.set_data(data);
        sec.entsize = RELA_SIZE as u64;
        Ok(())
    }

    fn check_rela(&self, index: usize) -> Result<(), ElfError> {
        let s = self.section_at(index)?;
        let section = self.describe_section(index);
        if s.sh_type != SHT_RELA {
            return Err(ElfError::BadSection {
                section,
                reason: format!("is not a RELA relocation section (sh_type {})", s.sh_type),
            });
        }
        if s.data.len() % RELA_SIZE != 0 {
            return Err(ElfError::BadSection {
                section,
                reason: format!(
                    "size {:#x} is not a multiple of the RELA entry size 24",
                    s.data.len()
                ),
            });
        }
        if s.entsize != RELA_SIZE as u64 && !(s.entsize == 0 && s.data.is_empty()) {
            return Err(ElfError::BadSection {
                section,
                reason: format!("sh_entsize is {}, a RELA entry is 24 bytes", s.entsize),
            });
        }
        Ok(())
    }
}
