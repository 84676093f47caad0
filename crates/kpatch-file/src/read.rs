//! Reading a `.kpatch` file: one validation pass, then zero-copy access.

use crate::checksum::file_crc;
use crate::elf::FILE_HEADER_SIZE;
use crate::error::FormatError;
use crate::header::{escape, Header, HEADER_SIZE, MAGIC, MAGIC_PENDING};
use crate::info_record::InfoRecord;
use crate::payload::{PayloadElf, Section};

/// Alignment of the payload's length in a file (`total_size - HEADER_SIZE`).
pub const PAYLOAD_ALIGN: usize = 16;

/// A validated `.kpatch` file borrowed from its bytes.
#[derive(Debug, Clone)]
pub struct KpatchFile<'a> {
    header: &'a Header,
    patch_id: &'a str,
    build_id: &'a str,
    elf: PayloadElf<'a>,
    info_section: usize,
    info: &'a [InfoRecord],
}

impl<'a> KpatchFile<'a> {
    /// Validates the whole file: header fields, checksum (when present), the payload's ELF
    /// framing and `.kpatch.info`. Bytes past `total_size` are ignored, as the peer does.
    pub fn parse(bytes: &'a [u8]) -> Result<KpatchFile<'a>, FormatError> {
        let header = Header::from_bytes(bytes)?;
        check_magic(header)?;
        check_offset("kpatch_offset", header.kpatch_offset())?;
        check_offset("rel_offset", header.rel_offset())?;
        let file = bytes.get(..total_size(header, bytes.len())?).ok_or(
            FormatError::TotalSizeBeyondFile {
                total_size: header.total_size(),
                file_len: bytes.len(),
            },
        )?;
        let payload = file.get(HEADER_SIZE..).unwrap_or_default();
        check_checksum(header, payload)?;
        let patch_id = header.id()?;
        let build_id = header.build_id()?;
        let elf = PayloadElf::parse(payload)?;
        let (info_section, info) = elf.info().map(|(section, info)| (section.index, info))?;
        Ok(KpatchFile {
            header,
            patch_id,
            build_id,
            elf,
            info_section,
            info,
        })
    }

    /// The header.
    pub fn header(&self) -> &'a Header {
        self.header
    }

    /// The patch id (`id`).
    pub fn patch_id(&self) -> &'a str {
        self.patch_id
    }

    /// The target's build-id (`buildid`), 40 lowercase hexadecimal digits.
    pub fn build_id(&self) -> &'a str {
        self.build_id
    }

    /// Whether the file carries a CRC-32 (made by our `kpatch_make`), verified by `parse`.
    pub fn has_checksum(&self) -> bool {
        self.header.csum() != 0
    }

    /// The payload: the ELF and its padding, `total_size - 504` bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.elf.bytes()
    }

    /// The validated payload ELF.
    pub fn elf(&self) -> &PayloadElf<'a> {
        &self.elf
    }

    /// Every section of the payload, in section header table order.
    pub fn sections(&self) -> &[Section<'a>] {
        self.elf.sections()
    }

    /// The first section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section<'a>> {
        self.elf.section(name)
    }

    /// The bytes of the first section named `name` (empty for `SHT_NOBITS`).
    pub fn section_data(&self, name: &str) -> Option<&'a [u8]> {
        self.elf.section_data(name)
    }

    /// The `.kpatch.info` section.
    pub fn info_section(&self) -> Option<&Section<'a>> {
        self.elf.sections().get(self.info_section)
    }

    /// The info records as stored (before relocation: `daddr`, `saddr`, `symstr` are 0),
    /// without the end marker.
    pub fn info_records(&self) -> &'a [InfoRecord] {
        self.info
    }
}

fn check_magic(header: &Header) -> Result<(), FormatError> {
    match header.magic() {
        MAGIC => Ok(()),
        MAGIC_PENDING => Err(FormatError::PendingMagic),
        other => Err(FormatError::BadMagic {
            found: escape(&other),
        }),
    }
}

fn check_offset(field: &'static str, value: u32) -> Result<(), FormatError> {
    let expected = HEADER_SIZE as u32;
    if value != expected {
        return Err(FormatError::BadOffset {
            field,
            value,
            expected,
        });
    }
    Ok(())
}

/// `total_size` as a length, checked against the layout `kpatch_make` writes and against the
/// file's length.
pub(crate) fn total_size(header: &Header, file_len: usize) -> Result<usize, FormatError> {
    let total_size = header.total_size();
    let min = HEADER_SIZE + FILE_HEADER_SIZE;
    let len = usize::try_from(total_size).unwrap_or(usize::MAX);
    if len < min || !(len - HEADER_SIZE).is_multiple_of(PAYLOAD_ALIGN) {
        return Err(FormatError::BadTotalSize { total_size, min });
    }
    if len > file_len {
        return Err(FormatError::TotalSizeBeyondFile {
            total_size,
            file_len,
        });
    }
    Ok(len)
}

fn check_checksum(header: &Header, payload: &[u8]) -> Result<(), FormatError> {
    let stored = header.csum();
    if stored == 0 {
        // LibcarePlus writes no checksum.
        return Ok(());
    }
    let computed = file_crc(header, payload);
    if computed != stored {
        return Err(FormatError::ChecksumMismatch { stored, computed });
    }
    Ok(())
}
