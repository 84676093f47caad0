//! The 48-byte records of `.kpatch.info` (`struct kpatch_info` of LibcarePlus).

use core::fmt;
use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::InfoError;

/// Size of one record.
pub const INFO_SIZE: usize = 48;

/// Size of the end marker `kpatch_strip` appends after the last record: the zero `daddr`,
/// `saddr`, `dlen` and `slen` that the runtime's end test reads.
pub const INFO_END_MARKER_SIZE: usize = 24;

/// The end marker's bytes.
pub const INFO_END_MARKER: [u8; INFO_END_MARKER_SIZE] = [0; INFO_END_MARKER_SIZE];

/// One patched function: where the original is, where its replacement is, and their sizes.
///
/// In a file, `daddr`, `saddr` and `symstr` are 0 and filled by the relocations of
/// `.rela.kpatch.info`; in an applied patch they are absolute addresses.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InfoRecord {
    daddr: U64,
    saddr: U64,
    dlen: U32,
    slen: U32,
    symstr: U64,
    vaddr: U64,
    flags: U32,
    pad: [u8; 4],
}

const _: () = {
    assert!(size_of::<InfoRecord>() == INFO_SIZE);
    assert!(offset_of!(InfoRecord, saddr) == 8);
    assert!(offset_of!(InfoRecord, dlen) == 16);
    assert!(offset_of!(InfoRecord, slen) == 20);
    assert!(offset_of!(InfoRecord, symstr) == 24);
    assert!(offset_of!(InfoRecord, vaddr) == 32);
    assert!(offset_of!(InfoRecord, flags) == 40);
    // The end test reads exactly the fields the end marker covers.
    assert!(offset_of!(InfoRecord, symstr) == INFO_END_MARKER_SIZE);
};

impl InfoRecord {
    /// A record with `vaddr` and `flags` zero.
    pub fn new(daddr: u64, saddr: u64, dlen: u32, slen: u32, symstr: u64) -> InfoRecord {
        InfoRecord {
            daddr: U64::new(daddr),
            saddr: U64::new(saddr),
            dlen: U32::new(dlen),
            slen: U32::new(slen),
            symstr: U64::new(symstr),
            vaddr: U64::new(0),
            flags: U32::new(0),
            pad: [0; 4],
        }
    }

    /// Address of the original function (0 for a new function, and in a file).
    pub fn daddr(&self) -> u64 {
        self.daddr.get()
    }

    /// Address of the replacement (0 in a file).
    pub fn saddr(&self) -> u64 {
        self.saddr.get()
    }

    /// Size of the original function (0 for a new function).
    pub fn dlen(&self) -> u32 {
        self.dlen.get()
    }

    /// Size of the replacement.
    pub fn slen(&self) -> u32 {
        self.slen.get()
    }

    /// Address of the replacement's name in `.kpatch.strtab` (0 in a file).
    pub fn symstr(&self) -> u64 {
        self.symstr.get()
    }

    /// Unused by user-space patches (0).
    pub fn vaddr(&self) -> u64 {
        self.vaddr.get()
    }

    /// Flags (0 in a file; the runtime may mark a record applied).
    pub fn flags(&self) -> u32 {
        self.flags.get()
    }

    /// Sets `dlen`: `kpatch_strip` lengthens a short function followed by padding to the
    /// jump's length.
    pub fn set_dlen(&mut self, dlen: u32) {
        self.dlen.set(dlen);
    }

    /// The peer's end test: `daddr`, `dlen`, `saddr` and `slen` all zero.
    pub fn is_end(&self) -> bool {
        self.daddr() == 0 && self.dlen() == 0 && self.saddr() == 0 && self.slen() == 0
    }

    /// The peer's new-function test: `daddr` and `dlen` both zero (nothing to redirect).
    ///
    /// In a file `daddr` is always 0 before relocation, so there `dlen == 0` decides.
    pub fn is_new_function(&self) -> bool {
        self.daddr() == 0 && self.dlen() == 0
    }

    /// The record's 48 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        IntoBytes::as_bytes(self)
    }
}

impl fmt::Debug for InfoRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfoRecord")
            .field("daddr", &format_args!("{:#x}", self.daddr()))
            .field("saddr", &format_args!("{:#x}", self.saddr()))
            .field("dlen", &self.dlen())
            .field("slen", &self.slen())
            .field("symstr", &format_args!("{:#x}", self.symstr()))
            .field("vaddr", &format_args!("{:#x}", self.vaddr()))
            .field("flags", &format_args!("{:#x}", self.flags()))
            .finish()
    }
}

/// Reads records from `bytes` up to the end marker, the way the runtime reads the relocated
/// records of an applied patch: the marker may be just its 24 bytes at the very end.
pub fn parse_info_records(bytes: &[u8]) -> Result<Vec<InfoRecord>, InfoError> {
    let mut records = Vec::new();
    let mut rest = bytes;
    loop {
        let offset = bytes.len() - rest.len();
        if let Some(head) = rest.get(..INFO_END_MARKER_SIZE) {
            // Pad a trailing 24-byte marker to a whole record so one test decides.
            let mut probe = [0u8; INFO_SIZE];
            probe[..INFO_END_MARKER_SIZE].copy_from_slice(head);
            if let Ok(record) = InfoRecord::read_from_bytes(&probe) {
                if record.is_end() {
                    return Ok(records);
                }
            }
        }
        match InfoRecord::read_from_prefix(rest) {
            Ok((record, tail)) => {
                records.push(record);
                rest = tail;
            }
            Err(_) => return Err(InfoError::NoEndMarker { offset }),
        }
    }
}

/// The records of `.kpatch.info` as the linker leaves them in the patched binary, before
/// `kpatch_strip` appends the end marker: `None` unless the section is a whole number of
/// records.
pub fn linked_info_records(section: &[u8]) -> Option<&[InfoRecord]> {
    <[InfoRecord]>::ref_from_bytes(section).ok()
}

/// [`linked_info_records`], mutably.
pub fn linked_info_records_mut(section: &mut [u8]) -> Option<&mut [InfoRecord]> {
    <[InfoRecord]>::mut_from_bytes(section).ok()
}

/// The records of a `.kpatch.info` section as stored in a file: a whole number of records
/// followed by a zero end marker.
pub fn info_section_records(section: &[u8]) -> Result<&[InfoRecord], InfoError> {
    let bad_size = || InfoError::BadSize {
        size: section.len() as u64,
    };
    let count = section
        .len()
        .checked_sub(INFO_END_MARKER_SIZE)
        .filter(|body| body.is_multiple_of(INFO_SIZE))
        .ok_or_else(bad_size)?
        / INFO_SIZE;
    let (records, marker) =
        <[InfoRecord]>::ref_from_prefix_with_elems(section, count).map_err(|_| bad_size())?;
    if marker != INFO_END_MARKER {
        return Err(InfoError::BadEndMarker);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(records: &[InfoRecord], tail: &[u8]) -> Vec<u8> {
        let mut out: Vec<u8> = records.iter().flat_map(|r| r.as_bytes().to_vec()).collect();
        out.extend_from_slice(tail);
        out
    }

    #[test]
    fn record_fields_land_at_the_peer_offsets() {
        let record = InfoRecord::new(0x1111, 0x2222, 0x33, 0x44, 0x5555);
        let bytes = record.as_bytes();
        assert_eq!(&bytes[0..8], &0x1111u64.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x2222u64.to_le_bytes());
        assert_eq!(&bytes[16..20], &0x33u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &0x44u32.to_le_bytes());
        assert_eq!(&bytes[24..32], &0x5555u64.to_le_bytes());
        assert_eq!(&bytes[32..48], &[0; 16]);
    }

    #[test]
    fn end_and_new_function_tests_follow_the_peer() {
        assert!(InfoRecord::new(0, 0, 0, 0, 7).is_end());
        assert!(!InfoRecord::new(0, 0, 0, 1, 0).is_end());
        assert!(!InfoRecord::new(0, 1, 0, 0, 0).is_end());
        assert!(InfoRecord::new(0, 0x10, 0, 8, 0).is_new_function());
        assert!(!InfoRecord::new(0x10, 0x10, 0, 8, 0).is_new_function());
        assert!(!InfoRecord::new(0, 0x10, 5, 8, 0).is_new_function());
    }

    #[test]
    fn parse_stops_at_a_short_or_full_end_marker() {
        let a = InfoRecord::new(0x1000, 0x2000, 16, 32, 0x3000);
        let b = InfoRecord::new(0, 0x2100, 0, 8, 0x3010);
        let short = bytes_of(&[a, b], &INFO_END_MARKER);
        assert_eq!(parse_info_records(&short), Ok(vec![a, b]));
        let full = bytes_of(&[a, b, InfoRecord::new(0, 0, 0, 0, 0), a], &[]);
        assert_eq!(parse_info_records(&full), Ok(vec![a, b]));
        assert_eq!(parse_info_records(&INFO_END_MARKER), Ok(vec![]));
    }

    #[test]
    fn parse_without_end_marker_fails() {
        let a = InfoRecord::new(0x1000, 0x2000, 16, 32, 0x3000);
        assert_eq!(
            parse_info_records(&bytes_of(&[a], &[])),
            Err(InfoError::NoEndMarker { offset: 48 })
        );
        assert_eq!(
            parse_info_records(&bytes_of(&[a], &[0; 23])),
            Err(InfoError::NoEndMarker { offset: 48 })
        );
        assert_eq!(
            parse_info_records(&[]),
            Err(InfoError::NoEndMarker { offset: 0 })
        );
    }

    #[test]
    fn linked_records_are_whole_records_and_editable_in_place() {
        let a = InfoRecord::new(0x1000, 0x2000, 3, 32, 0x3000);
        let mut bytes = bytes_of(&[a, a], &[]);
        assert_eq!(linked_info_records(&bytes).map(<[_]>::len), Some(2));
        assert_eq!(linked_info_records(&bytes[..95]), None);
        assert_eq!(linked_info_records(&[]).map(<[_]>::len), Some(0));
        let records = linked_info_records_mut(&mut bytes).expect("two records");
        records[1].set_dlen(5);
        assert_eq!(&bytes[48 + 16..48 + 20], &5u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &3u32.to_le_bytes());
    }

    #[test]
    fn section_records_need_whole_records_and_a_zero_marker() {
        let a = InfoRecord::new(0, 0, 16, 32, 0);
        let good = bytes_of(&[a, a], &INFO_END_MARKER);
        assert_eq!(info_section_records(&good).map(<[_]>::len), Ok(2));
        assert_eq!(
            info_section_records(&good[..good.len() - 1]),
            Err(InfoError::BadSize { size: 119 })
        );
        assert_eq!(
            info_section_records(&good[..20]),
            Err(InfoError::BadSize { size: 20 })
        );
        let mut bad_marker = good.clone();
        if let Some(last) = bad_marker.last_mut() {
            *last = 1;
        }
        assert_eq!(
            info_section_records(&bad_marker),
            Err(InfoError::BadEndMarker)
        );
        assert_eq!(
            info_section_records(&INFO_END_MARKER).map(<[_]>::len),
            Ok(0)
        );
    }
}
