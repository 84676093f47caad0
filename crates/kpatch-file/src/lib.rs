//! The `.kpatch` container of LibcarePlus: a 504-byte [`Header`] followed by a payload
//! `ET_REL` ELF (padded to 16 bytes) whose `.kpatch.info` section holds one 48-byte
//! [`InfoRecord`] per patched function, then a 24-byte end marker.
//!
//! This crate is also the toolkit's one definition of the payload: the names of its sections
//! ([`KPATCH_TEXT`], [`KPATCH_INFO`]...), its info records and the ELF structures it is made
//! of ([`elf`], `object`'s types). `kpatch_gensrc` emits those sections, `kpatch_strip`
//! keeps them, the runtime loads them, all through these definitions.
//!
//! On-disk structures are plain old data viewed in place ([`Header`], [`InfoRecord`],
//! [`elf::FileHeader`], [`elf::SectionHeader`]); a file is validated once by
//! [`KpatchFile::parse`], which then hands out borrowed views. Writing is separate:
//! [`write_kpatch`].
//!
//! # Integrity
//!
//! LibcarePlus leaves the header's `csum` field 0 and never checks it. Our writer stores
//! there the CRC-32 (IEEE) of the whole file (`total_size` bytes) computed with `csum` set to
//! 0, and the reader verifies it whenever `csum` is not 0 (files made by LibcarePlus are
//! accepted unchecked). The writer varies an unused padding byte of the header so that the
//! stored value has at least two non-zero bytes: every single-byte change to a file it made,
//! including one in `csum` itself, is reported as an error.
//!
//! # Example
//!
//! ```no_run
//! # fn demo(elf: &[u8]) -> Result<(), kpatch_file::FormatError> {
//! let bytes = kpatch_file::write_kpatch(&"ab".repeat(20), "0001", 0, elf)?;
//! let file = kpatch_file::KpatchFile::parse(&bytes)?;
//! assert_eq!(file.patch_id(), "0001");
//! for record in file.info_records() {
//!     println!("{} bytes replaced by {} bytes", record.dlen(), record.slen());
//! }
//! # Ok(())
//! # }
//! ```

mod checksum;
mod depends;
pub mod elf;
mod error;
mod header;
mod info_record;
mod livepatch;
mod payload;
mod read;
mod sections;
mod trailer;
mod write;

pub use depends::Depends;
pub use error::{ElfError, FormatError, InfoError};
pub use header::{
    build_id_hex, Header, BUILD_ID_LEN, HEADER_SIZE, MAGIC, MAGIC_PENDING, MAX_PATCH_ID_LEN,
    NR_ENTRIES,
};
pub use info_record::{
    info_section_records, linked_info_records, linked_info_records_mut, parse_info_records,
    InfoRecord, INFO_END_MARKER, INFO_END_MARKER_SIZE, INFO_SIZE,
};
pub use livepatch::{
    callback_state, registry, CallbackRecord, StateDecl, CALLBACK_RECORD_SIZE, REPLACE_MARKER,
    STATE_DECL_SIZE,
};
pub use payload::{PayloadElf, Section};
pub use read::{KpatchFile, PAYLOAD_ALIGN};
pub use sections::{
    is_kpatch_rela, is_kpatch_section, rela_section_name, COPY_SUFFIX, EARLIER_STUBS,
    KPATCH_CALLBACKS, KPATCH_DATA, KPATCH_DATA_ALIGN, KPATCH_DEPENDS, KPATCH_EH_FRAME, KPATCH_INFO,
    KPATCH_PREFIX, KPATCH_REGISTRY, KPATCH_REPLACE, KPATCH_STATES, KPATCH_STRTAB, KPATCH_TEXT,
};
pub use trailer::split_trailer;
pub use write::{normalize_build_id, validate_patch_id, write_kpatch};
