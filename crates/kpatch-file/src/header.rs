//! The 504-byte header (`struct kpatch_file` of LibcarePlus), viewed in place.

use core::fmt;
use core::mem::{offset_of, size_of};

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::FormatError;

/// Size of the header; the payload ELF starts right after it in a file.
pub const HEADER_SIZE: usize = 504;

/// Magic of a patch file and of a committed patch in a process.
pub const MAGIC: [u8; 8] = *b"KPATCH1\0";

/// Magic of a patch image in a process while it is being applied (not yet committed).
pub const MAGIC_PENDING: [u8; 8] = *b"KPATCH0\0";

/// Longest patch id: `id[8]` holds it and its terminating NUL.
pub const MAX_PATCH_ID_LEN: usize = 7;

/// Length of a build-id in hexadecimal (a 20-byte `NT_GNU_BUILD_ID`).
pub const BUILD_ID_LEN: usize = 40;

/// Number of `entries[]` slots in the header.
pub const NR_ENTRIES: usize = 16;

/// Slots of `entries[]` used by user-space patches.
const USER_UNDO: usize = 0;
const USER_INFO: usize = 1;
const USER_LEVEL: usize = 2;

/// The `.kpatch` header, byte-compatible with LibcarePlus's `struct kpatch_file`.
///
/// Multi-byte fields are little-endian (every architecture the peer supports is) and the
/// struct has alignment 1, so it can be viewed in place in any byte buffer. Fields the peer
/// never uses (`flags`, `safety_method`, `modulename`, `nr_reloc`, `srcversion`, the
/// kernel-only `entries[]`) are kept only as bytes.
#[derive(Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    magic: [u8; 8],
    id: [u8; MAX_PATCH_ID_LEN + 1],
    flags: u8,
    safety_method: u8,
    pad: [u8; 6],
    modulename: [u8; 64],
    buildid: [u8; BUILD_ID_LEN + 1],
    pad1: [u8; 7],
    build_time: U64,
    csum: U32,
    nr_reloc: U32,
    kpatch_offset: U32,
    rel_offset: U32,
    total_size: U32,
    jmp_offset: U32,
    elf_offset: U32,
    pad2: [u8; 4],
    kpatch_total_mem_sz: U64,
    entries: [U32; NR_ENTRIES],
    srcversion: [u8; 25],
    pad3: [u8; 231],
}

// The layout is the peer's on-disk and in-memory format: any drift is a compatibility break.
const _: () = {
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(offset_of!(Header, id) == 8);
    assert!(offset_of!(Header, flags) == 16);
    assert!(offset_of!(Header, modulename) == 24);
    assert!(offset_of!(Header, buildid) == 88);
    assert!(offset_of!(Header, build_time) == 136);
    assert!(offset_of!(Header, csum) == 144);
    assert!(offset_of!(Header, nr_reloc) == 148);
    assert!(offset_of!(Header, kpatch_offset) == 152);
    assert!(offset_of!(Header, rel_offset) == 156);
    assert!(offset_of!(Header, total_size) == 160);
    assert!(offset_of!(Header, jmp_offset) == 164);
    assert!(offset_of!(Header, elf_offset) == 168);
    assert!(offset_of!(Header, kpatch_total_mem_sz) == 176);
    assert!(offset_of!(Header, entries) + USER_UNDO * 4 == 184);
    assert!(offset_of!(Header, entries) + USER_INFO * 4 == 188);
    assert!(offset_of!(Header, entries) + USER_LEVEL * 4 == 192);
    assert!(offset_of!(Header, srcversion) == 248);
};

impl Header {
    /// Views the first [`HEADER_SIZE`] bytes of `bytes` as a header, without validating it.
    pub fn from_bytes(bytes: &[u8]) -> Result<&Header, FormatError> {
        Header::ref_from_prefix(bytes)
            .map(|(header, _)| header)
            .map_err(|_| truncated(bytes.len()))
    }

    /// Views the first [`HEADER_SIZE`] bytes of `bytes` as a mutable header, e.g. to fill
    /// the runtime fields in the image of a patch before writing it into a process.
    pub fn from_bytes_mut(bytes: &mut [u8]) -> Result<&mut Header, FormatError> {
        let len = bytes.len();
        Header::mut_from_prefix(bytes)
            .map(|(header, _)| header)
            .map_err(|_| truncated(len))
    }

    /// An all-zero header.
    pub(crate) fn zeroed() -> Header {
        Header::new_zeroed()
    }

    /// The header's 504 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        IntoBytes::as_bytes(self)
    }

    /// The 8 bytes of `magic`: [`MAGIC`] or, in a process, [`MAGIC_PENDING`].
    pub fn magic(&self) -> [u8; 8] {
        self.magic
    }

    /// Whether `magic` is [`MAGIC`] (a patch file, or a committed patch in a process).
    pub fn is_committed(&self) -> bool {
        self.magic == MAGIC
    }

    /// Whether `magic` is [`MAGIC_PENDING`] (a patch being applied in a process).
    pub fn is_pending(&self) -> bool {
        self.magic == MAGIC_PENDING
    }

    /// `id` up to its NUL (all 8 bytes if there is none), unvalidated.
    pub fn id_bytes(&self) -> &[u8] {
        until_nul(&self.id)
    }

    /// The patch id, validated: 1 to 7 printable ASCII characters, NUL-terminated.
    pub fn id(&self) -> Result<&str, FormatError> {
        let id = c_string("id", &self.id)?;
        check_patch_id(id).map_err(|reason| FormatError::BadHeaderString {
            field: "id",
            problem: format!("\"{}\" {reason}", escape(id.as_bytes())),
        })?;
        Ok(id)
    }

    /// `buildid` up to its NUL (all 41 bytes if there is none), unvalidated.
    pub fn build_id_bytes(&self) -> &[u8] {
        until_nul(&self.buildid)
    }

    /// The target's build-id, validated: 40 lowercase hexadecimal digits, NUL-terminated.
    pub fn build_id(&self) -> Result<&str, FormatError> {
        let id = c_string("buildid", &self.buildid)?;
        if !is_build_id(id) {
            return Err(FormatError::BadHeaderString {
                field: "buildid",
                problem: format!(
                    "is \"{}\", not 40 lowercase hexadecimal digits: no object can match it",
                    escape(id.as_bytes())
                ),
            });
        }
        Ok(id)
    }

    /// Seconds since the Unix epoch when the file was made.
    pub fn build_time(&self) -> u64 {
        self.build_time.get()
    }

    /// CRC-32 of the file (0 in files made by LibcarePlus: no checksum).
    pub fn csum(&self) -> u32 {
        self.csum.get()
    }

    /// Offset of the payload ELF in the file (always [`HEADER_SIZE`]).
    pub fn kpatch_offset(&self) -> u32 {
        self.kpatch_offset.get()
    }

    /// Offset of the (unused) relocations in the file (always [`HEADER_SIZE`]).
    pub fn rel_offset(&self) -> u32 {
        self.rel_offset.get()
    }

    /// Size of the header plus the 16-byte padded payload.
    pub fn total_size(&self) -> u32 {
        self.total_size.get()
    }

    /// Runtime: offset of the jump table in the patch region.
    pub fn jmp_offset(&self) -> u32 {
        self.jmp_offset.get()
    }

    /// Runtime: offset of the ELF image in the patch region.
    pub fn elf_offset(&self) -> u32 {
        self.elf_offset.get()
    }

    /// Runtime: size of the whole patch region.
    pub fn kpatch_total_mem_sz(&self) -> u64 {
        self.kpatch_total_mem_sz.get()
    }

    /// Runtime: offset of the saved original bytes in the patch region (`entries[0]`).
    pub fn user_undo(&self) -> u32 {
        self.entries[USER_UNDO].get()
    }

    /// Runtime: offset of the relocated info records in the patch region (`entries[1]`).
    pub fn user_info(&self) -> u32 {
        self.entries[USER_INFO].get()
    }

    /// Runtime: patch level from storage (`entries[2]`).
    pub fn user_level(&self) -> u32 {
        self.entries[USER_LEVEL].get()
    }

    /// Sets `magic`, e.g. [`MAGIC_PENDING`] while applying and [`MAGIC`] to commit.
    pub fn set_magic(&mut self, magic: [u8; 8]) {
        self.magic = magic;
    }

    /// Runtime: sets `jmp_offset`.
    pub fn set_jmp_offset(&mut self, value: u32) {
        self.jmp_offset.set(value);
    }

    /// Runtime: sets `elf_offset`.
    pub fn set_elf_offset(&mut self, value: u32) {
        self.elf_offset.set(value);
    }

    /// Runtime: sets `kpatch_total_mem_sz`.
    pub fn set_kpatch_total_mem_sz(&mut self, value: u64) {
        self.kpatch_total_mem_sz.set(value);
    }

    /// Runtime: sets `user_undo` (`entries[0]`).
    pub fn set_user_undo(&mut self, value: u32) {
        self.entries[USER_UNDO].set(value);
    }

    /// Runtime: sets `user_info` (`entries[1]`).
    pub fn set_user_info(&mut self, value: u32) {
        self.entries[USER_INFO].set(value);
    }

    /// Runtime: sets `user_level` (`entries[2]`).
    pub fn set_user_level(&mut self, value: u32) {
        self.entries[USER_LEVEL].set(value);
    }

    /// Runtime-only extension (the peer leaves these bytes zero and never reads them): the
    /// order in which patches were applied to one process, 1 for the first. Stored in the
    /// first 8 bytes of the trailing padding of the in-process copy of the header.
    pub fn applied_seq(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.pad3[..8]);
        u64::from_le_bytes(b)
    }

    /// Sets [`Header::applied_seq`].
    pub fn set_applied_seq(&mut self, seq: u64) {
        self.pad3[..8].copy_from_slice(&seq.to_le_bytes());
    }

    /// Writer: stores a validated patch id.
    pub(crate) fn set_id(&mut self, id: &str) {
        self.id = [0; MAX_PATCH_ID_LEN + 1];
        copy_prefix(&mut self.id[..MAX_PATCH_ID_LEN], id.as_bytes());
    }

    /// Writer: stores a validated build-id.
    pub(crate) fn set_build_id(&mut self, build_id: &str) {
        self.buildid = [0; BUILD_ID_LEN + 1];
        copy_prefix(&mut self.buildid[..BUILD_ID_LEN], build_id.as_bytes());
    }

    pub(crate) fn set_build_time(&mut self, value: u64) {
        self.build_time.set(value);
    }

    pub(crate) fn set_csum(&mut self, value: u32) {
        self.csum.set(value);
    }

    pub(crate) fn set_kpatch_offset(&mut self, value: u32) {
        self.kpatch_offset.set(value);
    }

    pub(crate) fn set_rel_offset(&mut self, value: u32) {
        self.rel_offset.set(value);
    }

    pub(crate) fn set_total_size(&mut self, value: u32) {
        self.total_size.set(value);
    }

    /// Writer: a byte of alignment padding that nothing reads, varied to steer the checksum
    /// away from values a single byte flip could turn into 0 ("no checksum").
    pub(crate) fn set_checksum_salt(&mut self, salt: u8) {
        self.pad2 = [salt, 0, 0, 0];
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("magic", &escape(until_nul(&self.magic)))
            .field("id", &escape(self.id_bytes()))
            .field("buildid", &escape(self.build_id_bytes()))
            .field("build_time", &self.build_time())
            .field("csum", &format_args!("{:#010x}", self.csum()))
            .field("kpatch_offset", &self.kpatch_offset())
            .field("rel_offset", &self.rel_offset())
            .field("total_size", &self.total_size())
            .field("jmp_offset", &self.jmp_offset())
            .field("elf_offset", &self.elf_offset())
            .field("kpatch_total_mem_sz", &self.kpatch_total_mem_sz())
            .field("user_undo", &self.user_undo())
            .field("user_info", &self.user_info())
            .field("user_level", &self.user_level())
            .finish_non_exhaustive()
    }
}

/// Why `id` is not a valid patch id, if it is not.
pub(crate) fn check_patch_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty");
    }
    if id.len() > MAX_PATCH_ID_LEN {
        return Err("is longer than 7 bytes");
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("contains a byte that is not printable ASCII (space, control or non-ASCII)");
    }
    Ok(())
}

/// Whether `id` is a build-id as the runtime prints it: 40 lowercase hex digits.
pub(crate) fn is_build_id(id: &str) -> bool {
    id.len() == BUILD_ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A GNU build-id note's bytes (`NT_GNU_BUILD_ID`) as headers store build-ids and the
/// runtime prints them: lowercase hexadecimal.
pub fn build_id_hex(note: &[u8]) -> String {
    note.iter().map(|b| format!("{b:02x}")).collect()
}

/// Printable form of bytes read from a file.
pub(crate) fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn truncated(len: usize) -> FormatError {
    FormatError::TruncatedHeader {
        len,
        need: HEADER_SIZE,
    }
}

fn until_nul(bytes: &[u8]) -> &[u8] {
    match bytes.iter().position(|&b| b == 0) {
        Some(end) => bytes.get(..end).unwrap_or(bytes),
        None => bytes,
    }
}

/// A NUL-terminated UTF-8 string filling a fixed-size field.
fn c_string<'a>(field: &'static str, bytes: &'a [u8]) -> Result<&'a str, FormatError> {
    let Some(end) = bytes.iter().position(|&b| b == 0) else {
        return Err(FormatError::BadHeaderString {
            field,
            problem: format!("has no terminating NUL within its {} bytes", bytes.len()),
        });
    };
    let text = bytes.get(..end).unwrap_or_default();
    core::str::from_utf8(text).map_err(|_| FormatError::BadHeaderString {
        field,
        problem: format!("\"{}\" is not valid UTF-8", escape(text)),
    })
}

fn copy_prefix(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_needs_504_bytes() {
        assert!(matches!(
            Header::from_bytes(&[0; HEADER_SIZE - 1]),
            Err(FormatError::TruncatedHeader { len: 503, .. })
        ));
        assert!(Header::from_bytes(&[0; HEADER_SIZE]).is_ok());
    }

    #[test]
    fn runtime_fields_land_at_the_peer_offsets() {
        let mut bytes = vec![0u8; HEADER_SIZE + 8];
        let header = Header::from_bytes_mut(&mut bytes).expect("504 bytes");
        header.set_magic(MAGIC_PENDING);
        header.set_jmp_offset(0x0102_0304);
        header.set_elf_offset(0x1000);
        header.set_kpatch_total_mem_sz(0x1122_3344_5566_7788);
        header.set_user_undo(0xaaaa_0001);
        header.set_user_info(0xbbbb_0002);
        header.set_user_level(3);
        assert!(header.is_pending());
        assert_eq!(&bytes[0..8], b"KPATCH0\0");
        assert_eq!(&bytes[164..168], &0x0102_0304u32.to_le_bytes());
        assert_eq!(&bytes[168..172], &0x1000u32.to_le_bytes());
        assert_eq!(&bytes[176..184], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&bytes[184..188], &0xaaaa_0001u32.to_le_bytes());
        assert_eq!(&bytes[188..192], &0xbbbb_0002u32.to_le_bytes());
        assert_eq!(&bytes[192..196], &3u32.to_le_bytes());
        let header = Header::from_bytes(&bytes).expect("504 bytes");
        assert_eq!(header.user_info(), 0xbbbb_0002);
        assert_eq!(header.as_bytes(), &bytes[..HEADER_SIZE]);
    }

    #[test]
    fn writer_fields_land_at_the_peer_offsets() {
        let mut header = Header::zeroed();
        header.set_magic(MAGIC);
        header.set_id("0001");
        header.set_build_id(&"ab".repeat(20));
        header.set_build_time(0x0102_0304_0506_0708);
        header.set_csum(0xdead_beef);
        header.set_kpatch_offset(504);
        header.set_rel_offset(504);
        header.set_total_size(1016);
        let bytes = header.as_bytes();
        assert_eq!(&bytes[8..16], b"0001\0\0\0\0");
        assert_eq!(&bytes[88..129], format!("{}\0", "ab".repeat(20)).as_bytes());
        assert_eq!(&bytes[136..144], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&bytes[144..148], &0xdead_beefu32.to_le_bytes());
        assert_eq!(&bytes[152..156], &504u32.to_le_bytes());
        assert_eq!(&bytes[156..160], &504u32.to_le_bytes());
        assert_eq!(&bytes[160..164], &1016u32.to_le_bytes());
        assert_eq!(header.id(), Ok("0001"));
        assert_eq!(header.build_id().map(str::len), Ok(40));
    }

    #[test]
    fn id_must_be_terminated_and_printable() {
        let mut bytes = [0u8; HEADER_SIZE];
        bytes[8..16].copy_from_slice(b"12345678");
        let err = Header::from_bytes(&bytes).and_then(|h| h.id().map(str::to_owned));
        assert!(
            matches!(err, Err(FormatError::BadHeaderString { field: "id", .. })),
            "{err:?}"
        );
        bytes[8..16].copy_from_slice(b"a b\0\0\0\0\0");
        let header = Header::from_bytes(&bytes).expect("504 bytes");
        assert!(header.id().is_err());
        assert_eq!(header.id_bytes(), b"a b");
        bytes[8..16].copy_from_slice(&[0; 8]);
        let header = Header::from_bytes(&bytes).expect("504 bytes");
        assert!(header.id().is_err());
    }

    #[test]
    fn a_build_id_note_prints_as_headers_store_it() {
        let note: Vec<u8> = (0..20).map(|i| i * 13).collect();
        let hex = build_id_hex(&note);
        assert!(is_build_id(&hex), "{hex}");
        assert_eq!(&hex[..6], "000d1a");
    }

    #[test]
    fn build_id_must_be_40_lowercase_hex() {
        let mut header = Header::zeroed();
        header.set_build_id(&"AB".repeat(20));
        assert!(header.build_id().is_err());
        header.set_build_id(&"ab".repeat(19));
        assert!(header.build_id().is_err());
        header.set_build_id(&"0f".repeat(20));
        assert_eq!(header.build_id(), Ok("0f".repeat(20).as_str()));
    }
}
