//! An owned, editable model of a 64-bit little-endian ELF file (`ET_REL`, `ET_EXEC`, `ET_DYN`):
//! the file header's fields, the program headers, and the sections with their bytes, plus
//! decoding and encoding of symbol tables, `SHT_RELA` relocations and string tables. Its
//! fields and records are `object`'s ([`object::elf`] constants, `FileHeader64`, `Sym64`,
//! `Rela64`...); what it adds is a writer that keeps the input's bytes.
//!
//! # Why not `object::build::elf::Builder`
//!
//! `kpatch_strip` edits the linked patched binary into the payload of a `.kpatch` file, and a
//! `.kpatch` file must be the same bytes for the same inputs (reproducible patches, files
//! compared with those the toolkit made before). `object`'s builder reads every file
//! `kpatch_strip` sees and writes a valid ELF from it, but not that ELF:
//!
//! - it builds `.shstrtab` and `.strtab` anew, in its own order, so every `sh_name` and
//!   `st_name` changes; this crate keeps the input's string tables and appends new names;
//! - it lays the symbol table, its string table, the relocation sections and `.shstrtab` out
//!   after all other sections; this crate lays every section out in section-index order;
//! - its only file alignment is `sh_addralign`; this crate also honours a minimum per named
//!   section ([`WriteOptions`]: `.kpatch.data` starts a page of the payload).
//!
//! Anything else (reading ELF files, constants, structure layouts) is `object`'s.
//!
//! [`parse`] checks every offset and size against the input and never panics; [`Elf::write`]
//! lays the sections out again from scratch, so sections can grow, shrink, appear or vanish.
//! Program headers are read but never written.
//!
//! ```
//! use elf_edit::{Elf, Section};
//! use object::elf::*;
//! let mut elf = Elf::new(ET_REL, EM_X86_64);
//! elf.add_section(Section::new(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, vec![0xc3]));
//! let again = elf_edit::parse(&elf.write()).unwrap();
//! assert_eq!(again.section(".text").unwrap().data, vec![0xc3]);
//! ```

mod error;
mod model;
mod raw;
mod read;
mod rela;
mod strtab;
mod symbol;
mod write;

pub use error::ElfError;
pub use model::{Elf, ProgramHeader, Section};
pub use read::parse;
pub use rela::Rela;
pub use strtab::StringTable;
pub use symbol::Symbol;
pub use write::WriteOptions;

impl Elf {
    /// Parses a 64-bit little-endian ELF file (see [`parse`]).
    pub fn parse(data: &[u8]) -> Result<Elf, ElfError> {
        parse(data)
    }
}
