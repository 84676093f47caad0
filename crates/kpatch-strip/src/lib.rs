//! Post-processing of the linked patched binary into the payload of a `.kpatch` file: the three
//! modes of `kpatch_strip` ([`strip`], [`rel_fixup`], [`undo_link`]) over [`elf_edit::Elf`].
//! The payload's section names and info records are `kpatch_file`'s, the ELF constants
//! `object::elf`'s, the instruction rewrites `kpatch_arch`'s. See docs/internals.md sections
//! 1.3 and 2 for the contract.

mod depends;
mod eh_frame;
mod error;
mod fixup;
mod layout_contract;
mod padding;
mod replace;
mod section_map;
mod strip;
mod tls;
mod undo;

pub use depends::{depends_of, mark_after};
pub use error::{BuildError, SmallFunction};
pub use fixup::{rel_fixup, FixupNote};
pub use layout_contract::check_layout;
pub use replace::mark_replace;
pub use strip::strip;
pub use undo::undo_link;

use elf_edit::{Elf, WriteOptions};
use kpatch_file::{KPATCH_DATA, KPATCH_DATA_ALIGN};

/// Serialises a payload (or an intermediate `kpatch_strip` result): sections in order, no
/// program headers, `.kpatch.data` at a page-aligned file offset.
pub fn write_payload(elf: &Elf) -> Vec<u8> {
    elf.write_with(&WriteOptions {
        file_alignment: vec![(KPATCH_DATA.to_string(), KPATCH_DATA_ALIGN)],
    })
}
