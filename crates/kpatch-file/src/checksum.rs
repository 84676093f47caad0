//! The optional CRC-32 of a file, stored in the header's `csum` field.

use crate::header::Header;

/// CRC-32 (IEEE) of a file whose header is `header` and whose bytes after the header are
/// `rest`, computed as if `csum` were 0.
pub(crate) fn file_crc(header: &Header, rest: &[u8]) -> u32 {
    let mut zeroed = *header;
    zeroed.set_csum(0);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(zeroed.as_bytes());
    hasher.update(rest);
    hasher.finalize()
}

/// Whether a single byte flip of the stored `csum` could turn it into 0, which readers take
/// as "no checksum": true when at most one of its bytes is non-zero.
pub(crate) fn is_fragile(csum: u32) -> bool {
    csum.to_le_bytes().iter().filter(|&&b| b != 0).count() <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragile_values_are_those_one_flip_from_zero() {
        assert!(is_fragile(0));
        assert!(is_fragile(0x0000_00ab));
        assert!(is_fragile(0xff00_0000));
        assert!(!is_fragile(0x0100_0001));
        assert!(!is_fragile(0xdead_beef));
    }

    #[test]
    fn crc_ignores_the_stored_checksum() {
        let mut header = Header::zeroed();
        let before = file_crc(&header, b"payload");
        header.set_csum(0x1234_5678);
        assert_eq!(file_crc(&header, b"payload"), before);
        assert_ne!(file_crc(&header, b"payloae"), before);
    }
}
