use thiserror::Error;

/// What can go wrong reading or editing an ELF file. Every variant names the field or section
/// involved so the message alone says where the file is broken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ElfError {
    #[error("not an ELF file: the first bytes are not \\x7fELF")]
    BadMagic,
    #[error("unsupported ELF file: {field} is {value:#x}, only {expected} is supported")]
    Unsupported {
        field: &'static str,
        value: u64,
        expected: &'static str,
    },
    #[error("truncated ELF file: {what} at offset {offset:#x} needs {size:#x} bytes but the file has {file_len:#x}")]
    Truncated {
        what: String,
        offset: u64,
        size: u64,
        file_len: u64,
    },
    #[error("malformed ELF file: {field} is {value:#x}: {reason}")]
    BadField {
        field: String,
        value: u64,
        reason: &'static str,
    },
    #[error("malformed ELF file: {table} has no NUL-terminated string at offset {offset:#x} (needed for {user})")]
    BadString {
        table: String,
        offset: u64,
        user: String,
    },
    #[error("section {section}: {reason}")]
    BadSection { section: String, reason: String },
    #[error("section index {index} is out of range (the file has {count} sections)")]
    NoSuchIndex { index: usize, count: usize },
}
