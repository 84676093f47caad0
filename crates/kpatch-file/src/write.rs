//! Writing a `.kpatch` file: the header in front of a validated payload ELF.

use crate::checksum::{file_crc, is_fragile};
use crate::error::FormatError;
use crate::header::{check_patch_id, escape, is_build_id, Header, HEADER_SIZE, MAGIC};
use crate::payload::PayloadElf;
use crate::read::PAYLOAD_ALIGN;

/// Checks a build-id given by a user and returns it in the form stored in files: 40
/// hexadecimal digits, upper case accepted and lowered (the runtime prints build-ids in lower
/// case and compares them exactly).
pub fn normalize_build_id(build_id: &str) -> Result<String, FormatError> {
    let lowered = build_id.to_ascii_lowercase();
    if !is_build_id(&lowered) {
        return Err(FormatError::InvalidBuildId {
            value: escape(build_id.as_bytes()),
        });
    }
    Ok(lowered)
}

/// Checks a patch id given by a user: 1 to 7 bytes of printable ASCII, no space.
pub fn validate_patch_id(patch_id: &str) -> Result<(), FormatError> {
    check_patch_id(patch_id).map_err(|reason| FormatError::InvalidPatchId {
        value: escape(patch_id.as_bytes()),
        reason,
    })
}

/// Makes a `.kpatch` file: the header (magic `KPATCH1`, `patch_id`, `build_id`,
/// `build_time`, `kpatch_offset = rel_offset = 504`, `total_size = 504 + ALIGN(len, 16)`,
/// `csum` = CRC-32 of the file) followed by `elf` zero-padded to 16 bytes.
///
/// `elf` must pass the same framing checks as a payload read by [`crate::KpatchFile::parse`],
/// including a `.kpatch.info` section ending with the end marker.
pub fn write_kpatch(
    build_id: &str,
    patch_id: &str,
    build_time: u64,
    elf: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let build_id = normalize_build_id(build_id)?;
    validate_patch_id(patch_id)?;
    PayloadElf::parse(elf)?.info()?;

    let padded_len = elf
        .len()
        .checked_next_multiple_of(PAYLOAD_ALIGN)
        .ok_or(FormatError::TooLarge { len: elf.len() })?;
    let total_size = padded_len
        .checked_add(HEADER_SIZE)
        .and_then(|total| u32::try_from(total).ok())
        .ok_or(FormatError::TooLarge { len: elf.len() })?;
    let mut payload = Vec::with_capacity(padded_len);
    payload.extend_from_slice(elf);
    payload.resize(padded_len, 0);

    let mut header = Header::zeroed();
    header.set_magic(MAGIC);
    header.set_id(patch_id);
    header.set_build_id(&build_id);
    header.set_build_time(build_time);
    header.set_kpatch_offset(HEADER_SIZE as u32);
    header.set_rel_offset(HEADER_SIZE as u32);
    header.set_total_size(total_size);
    let csum = sturdy_checksum(&mut header, &payload);
    header.set_csum(csum);

    let mut file = Vec::with_capacity(HEADER_SIZE + padded_len);
    file.extend_from_slice(header.as_bytes());
    file.extend_from_slice(&payload);
    Ok(file)
}

/// The file's CRC-32, after choosing the header's salt byte so that no single byte flip of
/// the stored value can make it 0 (which would switch the check off). One salt in about four
/// million needs a second try.
fn sturdy_checksum(header: &mut Header, payload: &[u8]) -> u32 {
    let mut crc = 0;
    for salt in 0..=u8::MAX {
        header.set_checksum_salt(salt);
        crc = file_crc(header, payload);
        if !is_fragile(crc) {
            break;
        }
    }
    crc
}
