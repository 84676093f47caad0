//! The ELF64 little-endian on-disk structures the payload's framing is made of.

use core::mem::size_of;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `\x7fELF`.
pub const ELFMAG: [u8; 4] = *b"\x7fELF";
/// Index of the class byte in `e_ident`.
pub const EI_CLASS: usize = 4;
/// Index of the data-encoding byte in `e_ident`.
pub const EI_DATA: usize = 5;
/// Index of the version byte in `e_ident`.
pub const EI_VERSION: usize = 6;
/// 64-bit objects.
pub const ELFCLASS64: u8 = 2;
/// Little-endian objects.
pub const ELFDATA2LSB: u8 = 1;
/// The only ELF version.
pub const EV_CURRENT: u8 = 1;
/// Relocatable file.
pub const ET_REL: u16 = 1;

/// Inactive section header.
pub const SHT_NULL: u32 = 0;
/// Program-defined bytes.
pub const SHT_PROGBITS: u32 = 1;
/// Symbol table.
pub const SHT_SYMTAB: u32 = 2;
/// String table.
pub const SHT_STRTAB: u32 = 3;
/// Relocations with addends.
pub const SHT_RELA: u32 = 4;
/// Occupies no bytes in the file.
pub const SHT_NOBITS: u32 = 8;

/// Size of [`FileHeader64`].
pub const FILE_HEADER_SIZE: usize = 64;
/// Size of [`SectionHeader64`].
pub const SECTION_HEADER_SIZE: usize = 64;
/// Size of an `Elf64_Sym`.
pub const SYM_SIZE: usize = 24;
/// Size of an `Elf64_Rela`.
pub const RELA_SIZE: usize = 24;

/// `Elf64_Ehdr`, little-endian.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct FileHeader64 {
    pub e_ident: [u8; 16],
    pub e_type: U16,
    pub e_machine: U16,
    pub e_version: U32,
    pub e_entry: U64,
    pub e_phoff: U64,
    pub e_shoff: U64,
    pub e_flags: U32,
    pub e_ehsize: U16,
    pub e_phentsize: U16,
    pub e_phnum: U16,
    pub e_shentsize: U16,
    pub e_shnum: U16,
    pub e_shstrndx: U16,
}

/// `Elf64_Shdr`, little-endian.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
#[allow(missing_docs)]
pub struct SectionHeader64 {
    pub sh_name: U32,
    pub sh_type: U32,
    pub sh_flags: U64,
    pub sh_addr: U64,
    pub sh_offset: U64,
    pub sh_size: U64,
    pub sh_link: U32,
    pub sh_info: U32,
    pub sh_addralign: U64,
    pub sh_entsize: U64,
}

const _: () = {
    assert!(size_of::<FileHeader64>() == FILE_HEADER_SIZE);
    assert!(size_of::<SectionHeader64>() == SECTION_HEADER_SIZE);
};
