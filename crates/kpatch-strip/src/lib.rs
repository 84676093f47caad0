//! Post-processing of the linked patched binary into the payload of a `.kpatch` file: the three
//! modes of `kpatch_strip` ([`strip`], [`rel_fixup`], [`undo_link`]) over [`elf_edit::Elf`].
//! See docs/internals.md sections 1.3 and 2 for the contract.

mod eh_frame;
mod error;
mod fixup;
mod info;
mod layout;
mod padding;
pub mod reloc_types;
mod sections;
mod strip;
mod tls;
mod undo;

pub use eh_frame::KPATCH_EH_FRAME;
pub use error::{BuildError, SmallFunction};
pub use fixup::{rel_fixup, FixupNote};
pub use info::{parse_records, InfoRecord, END_MARKER_SIZE, INFO_SIZE};
pub use layout::check_layout;
pub use sections::{is_kpatch_rela, is_kpatch_section, KPATCH_DATA, KPATCH_INFO, KPATCH_STRTAB};
pub use strip::strip;
pub use undo::undo_link;

use elf_edit::{Elf, WriteOptions};

/// File-offset alignment of `.kpatch.data`: the runtime maps the payload up to it
/// read-execute and from it read-write, so it must start a page.
pub const KPATCH_DATA_ALIGN: u64 = 4096;

/// Serialises a payload (or an intermediate `kpatch_strip` result): sections in order, no
/// program headers, `.kpatch.data` at a page-aligned file offset.
pub fn write_payload(elf: &Elf) -> Vec<u8> {
    let options = WriteOptions {
        keep_program_headers: false,
        file_alignment: vec![(KPATCH_DATA.to_string(), KPATCH_DATA_ALIGN)],
    };
    // The sequential layout cannot fail; fall back to the plain writer all the same.
    elf.write_with(&options).unwrap_or_else(|_| elf.write())
}
