//! Where a file's signature lives: after `total_size`.
//!
//! LibcarePlus reads only the first `total_size` bytes of a file (it checks `total_size` <=
//! the file's length, then lays out and copies exactly that much), so bytes after them are
//! never seen by it. Our `kpatch_make --sign` puts an OpenSSH signature of the first
//! `total_size` bytes there (the `kpatch-trust` crate); [`KpatchFile::parse`] ignores them too.
//!
//! [`KpatchFile::parse`]: crate::KpatchFile::parse

use crate::error::FormatError;
use crate::header::Header;
use crate::read::total_size;

/// Splits a file into its contents (the first `total_size` bytes, what a signature covers)
/// and the trailer after them (empty in an unsigned file). Only the header is checked.
pub fn split_trailer(bytes: &[u8]) -> Result<(&[u8], &[u8]), FormatError> {
    let header = Header::from_bytes(bytes)?;
    let len = total_size(header, bytes.len())?;
    Ok(bytes.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HEADER_SIZE;

    #[test]
    fn the_trailer_starts_at_total_size() {
        let mut bytes = vec![0u8; HEADER_SIZE + 64 + 5];
        let header = Header::from_bytes_mut(&mut bytes).unwrap();
        header.set_total_size((HEADER_SIZE + 64) as u32);
        let (contents, trailer) = split_trailer(&bytes).unwrap();
        assert_eq!(contents.len(), HEADER_SIZE + 64);
        assert_eq!(trailer.len(), 5);
        assert!(split_trailer(&bytes[..HEADER_SIZE + 10]).is_err());
        assert!(split_trailer(&bytes[..10]).is_err());
    }
}
