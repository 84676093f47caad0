//! An owned, editable model of a 64-bit little-endian ELF file (`ET_REL`, `ET_EXEC`, `ET_DYN`):
//! the file header's fields, the program headers, and the sections with their bytes, plus
//! decoding and encoding of symbol tables, `SHT_RELA` relocations and string tables.
//!
//! [`parse`] checks every offset and size against the input and never panics; [`Elf::write`]
//! lays the sections out again from scratch, so sections can grow, shrink, appear or vanish.
//!
//! ```
//! use elf_edit::{consts::*, Elf, Section};
//! let mut elf = Elf::new(ET_REL, EM_X86_64);
//! elf.add_section(Section::new(".text", SHT_PROGBITS, SHF_ALLOC | SHF_EXECINSTR, vec![0xc3]));
//! let again = elf_edit::parse(&elf.write()).unwrap();
//! assert_eq!(again.section(".text").unwrap().data, vec![0xc3]);
//! ```

pub mod consts;
mod error;
mod model;
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
