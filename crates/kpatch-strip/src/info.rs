//! The 48-byte `.kpatch.info` records as the linker filled them in the patched binary.

use crate::error::BuildError;

/// Size of one record.
pub const INFO_SIZE: usize = 48;
/// Offset of `dlen` in a record.
pub const DLEN_OFFSET: usize = 16;
/// Size of the all-zero record that ends the list.
pub const END_MARKER_SIZE: usize = 24;

/// The fields of one record this crate checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoRecord {
    /// Address of the original function (0 for a new function).
    pub daddr: u64,
    /// Address of the replacement.
    pub saddr: u64,
    /// Length of the original function.
    pub dlen: u32,
    /// Length of the replacement.
    pub slen: u32,
    /// Address of the replacement's name in `.kpatch.strtab`.
    pub symstr: u64,
}

impl InfoRecord {
    /// A record for a function that exists only in the patch.
    pub fn is_new_function(&self) -> bool {
        self.daddr == 0 && self.dlen == 0
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

/// Decodes the records of a `.kpatch.info` section that has no end marker yet.
pub fn parse_records(data: &[u8]) -> Result<Vec<InfoRecord>, BuildError> {
    if !data.len().is_multiple_of(INFO_SIZE) {
        return Err(BuildError::BadInfo(format!(
            "its size {:#x} is not a multiple of the {INFO_SIZE}-byte record (was it already \
             stripped, or not produced by kpatch_gensrc?)",
            data.len()
        )));
    }
    Ok(data
        .chunks_exact(INFO_SIZE)
        .map(|r| InfoRecord {
            daddr: u64_at(r, 0),
            saddr: u64_at(r, 8),
            dlen: u32_at(r, 16),
            slen: u32_at(r, 20),
            symstr: u64_at(r, 24),
        })
        .collect())
}
