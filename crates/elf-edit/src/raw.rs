//! The on-disk records, as `object` defines them (64-bit, little-endian).

use core::mem::size_of;

use object::elf;
use object::LittleEndian;

pub(crate) const LE: LittleEndian = LittleEndian;

pub(crate) type Ehdr = elf::FileHeader64<LittleEndian>;
pub(crate) type Phdr = elf::ProgramHeader64<LittleEndian>;
pub(crate) type Shdr = elf::SectionHeader64<LittleEndian>;
pub(crate) type Sym = elf::Sym64<LittleEndian>;
pub(crate) type Rela = elf::Rela64<LittleEndian>;

pub(crate) const EHDR_SIZE: usize = size_of::<Ehdr>();
pub(crate) const PHDR_SIZE: usize = size_of::<Phdr>();
pub(crate) const SHDR_SIZE: usize = size_of::<Shdr>();
pub(crate) const SYM_SIZE: usize = size_of::<Sym>();
pub(crate) const RELA_SIZE: usize = size_of::<Rela>();
