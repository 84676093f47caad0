//! The ELF structures of a payload: `object`'s 64-bit little-endian [`object::elf`] types,
//! which the whole toolkit reads and writes ELF with, and the few facts `object` does not name.

use core::mem::size_of;

use object::elf;
use object::LittleEndian;

/// The byte order of every payload (and of every architecture the toolkit supports).
pub const ENDIAN: LittleEndian = LittleEndian;

/// `Elf64_Ehdr`, little-endian.
pub type FileHeader = elf::FileHeader64<LittleEndian>;
/// `Elf64_Shdr`, little-endian.
pub type SectionHeader = elf::SectionHeader64<LittleEndian>;
/// `Elf64_Sym`, little-endian.
pub type Sym = elf::Sym64<LittleEndian>;
/// `Elf64_Rela`, little-endian.
pub type Rela = elf::Rela64<LittleEndian>;

/// Size of [`FileHeader`].
pub const FILE_HEADER_SIZE: usize = size_of::<FileHeader>();
/// Size of [`SectionHeader`].
pub const SECTION_HEADER_SIZE: usize = size_of::<SectionHeader>();
/// Size of [`Sym`].
pub const SYM_SIZE: usize = size_of::<Sym>();
/// Size of [`Rela`].
pub const RELA_SIZE: usize = size_of::<Rela>();

/// Relocation type 0, "no relocation" in every psABI (`R_X86_64_NONE`, `R_AARCH64_NONE`).
/// `kpatch_strip --rel-fixup` (ours and LibcarePlus's) turns a checked local-exec TLS
/// reference into one, with no symbol.
pub const R_NONE: elf::RelocationType = elf::RelocationType(0);

const _: () = {
    assert!(FILE_HEADER_SIZE == 64);
    assert!(SECTION_HEADER_SIZE == 64);
    assert!(SYM_SIZE == 24);
    assert!(RELA_SIZE == 24);
};
