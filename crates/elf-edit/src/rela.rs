//! Relocation sections with addends (`SHT_RELA`).

use crate::consts::*;
use crate::error::ElfError;
use crate::model::Elf;
use crate::read::le_u64;

/// One `Elf64_Rela`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rela {
    /// `r_offset`: a virtual address in linked files, a section offset in `ET_REL`.
    pub offset: u64,
    /// Symbol-table index (`ELF64_R_SYM`).
    pub sym: u32,
    /// Relocation type (`ELF64_R_TYPE`).
    pub r_type: u32,
    pub addend: i64,
}

impl Rela {
    /// `r_info`.
    pub fn info(&self) -> u64 {
        ((self.sym as u64) << 32) | self.r_type as u64
    }
}

impl Elf {
    /// Decodes the `SHT_RELA` section at `index`.
    pub fn relas(&self, index: usize) -> Result<Vec<Rela>, ElfError> {
        self.check_rela(index)?;
        let sec = self.section_at(index)?;
        Ok(sec
            .data
            .chunks_exact(RELA_SIZE)
            .map(|e| {
                let info = le_u64(e, 8);
                Rela {
                    offset: le_u64(e, 0),
                    sym: (info >> 32) as u32,
                    r_type: info as u32,
                    addend: le_u64(e, 16) as i64,
                }
            })
            .collect())
    }

    /// Encodes `relas` into the `SHT_RELA` section at `index`.
    pub fn set_relas(&mut self, index: usize, relas: &[Rela]) -> Result<(), ElfError> {
        self.check_rela(index)?;
        let mut data = Vec::with_capacity(relas.len() * RELA_SIZE);
        for r in relas {
            data.extend_from_slice(&r.offset.to_le_bytes());
            data.extend_from_slice(&r.info().to_le_bytes());
            data.extend_from_slice(&r.addend.to_le_bytes());
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
