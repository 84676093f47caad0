//! Errors of reading and writing `.kpatch` files.

use thiserror::Error;

/// What is wrong with a `.kpatch` file, a header, info records, or the input of the writer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Fewer bytes than the 504-byte header.
    #[error(
        "the data is {len} bytes, shorter than the {need}-byte .kpatch header: \
         not a .kpatch file, or a truncated one"
    )]
    TruncatedHeader {
        /// Length of the data.
        len: usize,
        /// Bytes needed.
        need: usize,
    },

    /// The `magic` field is neither `KPATCH1` nor the pending `KPATCH0`.
    #[error("header field `magic` is \"{found}\", expected \"KPATCH1\": not a .kpatch file")]
    BadMagic {
        /// The magic found, escaped for printing.
        found: String,
    },

    /// The `magic` field is `KPATCH0`: the image of a patch still being applied.
    #[error(
        "header field `magic` is \"KPATCH0\": this is the image of a patch that was being \
         applied, not a patch file; remake the file with kpatch_make"
    )]
    PendingMagic,

    /// An offset field does not have the only value `kpatch_make` writes.
    #[error(
        "header field `{field}` is {value}, expected {expected}: the file was not made by \
         kpatch_make, or is corrupt"
    )]
    BadOffset {
        /// Name of the header field.
        field: &'static str,
        /// Value found.
        value: u32,
        /// The only accepted value.
        expected: u32,
    },

    /// `total_size` points past the end of the data.
    #[error(
        "header field `total_size` is {total_size} but the file is only {file_len} bytes: \
         the file is truncated"
    )]
    TotalSizeBeyondFile {
        /// Value of `total_size`.
        total_size: u32,
        /// Length of the data.
        file_len: usize,
    },

    /// `total_size` cannot hold the header and an ELF header, or is not the header plus a
    /// 16-byte aligned payload.
    #[error(
        "header field `total_size` is {total_size}: it must be at least {min} (header plus \
         ELF header) and the header size plus a multiple of 16; the file is corrupt"
    )]
    BadTotalSize {
        /// Value of `total_size`.
        total_size: u32,
        /// Smallest valid value.
        min: usize,
    },

    /// The stored CRC-32 does not match the contents.
    #[error(
        "checksum mismatch: header field `csum` is {stored:#010x} but the contents hash to \
         {computed:#010x}; the file is corrupt"
    )]
    ChecksumMismatch {
        /// Value of `csum`.
        stored: u32,
        /// CRC-32 computed over the file.
        computed: u32,
    },

    /// A string field of the header (`id`, `buildid`) is malformed.
    #[error("header field `{field}` {problem}")]
    BadHeaderString {
        /// Name of the header field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },

    /// A build-id given to the writer is not 40 hexadecimal digits.
    #[error(
        "invalid build-id \"{value}\": expected 40 hexadecimal digits, as printed by \
         `readelf -n` on the original binary (\"Build ID:\")"
    )]
    InvalidBuildId {
        /// The build-id given, escaped for printing.
        value: String,
    },

    /// A patch id given to the writer is malformed.
    #[error("invalid patch id \"{value}\": {reason}")]
    InvalidPatchId {
        /// The patch id given, escaped for printing.
        value: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// The payload ELF is too large for the 32-bit `total_size` field.
    #[error("the ELF is {len} bytes: too large for a .kpatch file (4 GiB limit of `total_size`)")]
    TooLarge {
        /// Length of the ELF.
        len: usize,
    },

    /// The payload ELF is malformed.
    #[error("payload ELF: {0}")]
    Elf(ElfError),

    /// The `.kpatch.info` section or its records are malformed.
    #[error("payload ELF: section `.kpatch.info`: {0}")]
    Info(InfoError),
}

// The inner errors are part of the message rather than `source()`, so that printing the
// chain does not repeat them.
impl From<ElfError> for FormatError {
    fn from(err: ElfError) -> FormatError {
        FormatError::Elf(err)
    }
}

impl From<InfoError> for FormatError {
    fn from(err: InfoError) -> FormatError {
        FormatError::Info(err)
    }
}

/// What is wrong with the ELF framing of a payload.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ElfError {
    /// Fewer bytes than an ELF header.
    #[error("is only {len} bytes, shorter than the 64-byte ELF header")]
    TooShort {
        /// Length of the payload.
        len: usize,
    },

    /// The first four bytes are not `\x7fELF`.
    #[error("does not start with the ELF magic \\x7fELF: not an ELF file")]
    BadMagic,

    /// An identification or header field has an unsupported value.
    #[error("{field} is {value}, expected {expected}")]
    Unsupported {
        /// Name of the field (`e_ident[EI_CLASS]`, `e_type`, ...).
        field: &'static str,
        /// Value found.
        value: u64,
        /// What is accepted.
        expected: &'static str,
    },

    /// The section header table does not fit in the payload.
    #[error(
        "section header table (e_shoff {shoff}, e_shnum {shnum}) ends past the end of the \
         {len}-byte payload"
    )]
    SectionTableOutOfBounds {
        /// `e_shoff`.
        shoff: u64,
        /// `e_shnum`.
        shnum: u16,
        /// Length of the payload.
        len: usize,
    },

    /// `e_shstrndx` does not name a string table.
    #[error("e_shstrndx {shstrndx} {problem}")]
    BadShstrndx {
        /// `e_shstrndx`.
        shstrndx: u16,
        /// What is wrong.
        problem: &'static str,
    },

    /// A section's bytes do not fit in the payload.
    #[error(
        "section {section}: sh_offset {offset} + sh_size {size} ends past the end of the \
         {len}-byte payload"
    )]
    SectionOutOfBounds {
        /// Index and, when known, name of the section.
        section: String,
        /// `sh_offset`.
        offset: u64,
        /// `sh_size`.
        size: u64,
        /// Length of the payload.
        len: usize,
    },

    /// A section's name cannot be read from `.shstrtab`.
    #[error("section {index}: sh_name {sh_name} {problem}")]
    BadSectionName {
        /// Index of the section.
        index: usize,
        /// `sh_name`.
        sh_name: u32,
        /// What is wrong.
        problem: &'static str,
    },

    /// A field of a section header is inconsistent.
    #[error("section {section}: {field} is {value}, {problem}")]
    BadSectionField {
        /// Index and name of the section.
        section: String,
        /// Name of the field.
        field: &'static str,
        /// Value found.
        value: u64,
        /// What is wrong.
        problem: String,
    },
}

/// What is wrong with `.kpatch.info` or a list of info records.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InfoError {
    /// The section is absent.
    #[error("missing: the payload is not the output of kpatch_strip")]
    Missing,

    /// The section appears more than once.
    #[error("present more than once (sections {first} and {second})")]
    Duplicate {
        /// Index of the first one.
        first: usize,
        /// Index of the second one.
        second: usize,
    },

    /// The section has no bytes in the file.
    #[error("is SHT_NOBITS: it must hold the info records")]
    NoBits,

    /// The size is not a whole number of records plus the end marker.
    #[error(
        "size {size} is not a multiple of 48 (one record per patched function) plus the \
         24-byte end marker that kpatch_strip appends"
    )]
    BadSize {
        /// `sh_size`.
        size: u64,
    },

    /// The 24 bytes after the last record are not zero.
    #[error("the 24-byte end marker after the last record is not all zero")]
    BadEndMarker,

    /// A list of records stops before its end marker.
    #[error(
        "records end at byte {offset} without the end marker (a record whose daddr, saddr, \
         dlen and slen are all zero)"
    )]
    NoEndMarker {
        /// Where the bytes ran out.
        offset: usize,
    },
}
