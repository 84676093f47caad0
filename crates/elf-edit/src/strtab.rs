//! String tables (`SHT_STRTAB`): NUL-terminated names addressed by byte offset.

use std::collections::HashMap;

/// An editable string table. Adding a name reuses an existing copy when there is one, so the
/// offsets of names already in the table never change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringTable {
    bytes: Vec<u8>,
    starts: HashMap<Vec<u8>, u32>,
}

impl Default for StringTable {
    fn default() -> Self {
        Self::from_bytes(vec![0])
    }
}

impl StringTable {
    /// A table over existing section bytes (an empty input gets the mandatory leading NUL).
    pub fn from_bytes(mut bytes: Vec<u8>) -> Self {
        if bytes.is_empty() {
            bytes.push(0);
        }
        let mut starts = HashMap::new();
        let mut start = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            if b == 0 {
                if let (Some(s), Ok(off)) = (bytes.get(start..i), u32::try_from(start)) {
                    starts.entry(s.to_vec()).or_insert(off);
                }
                start = i + 1;
            }
        }
        Self { bytes, starts }
    }

    /// The bytes of the name at `offset`, without its NUL; `None` if `offset` is out of range
    /// or the name is not terminated.
    pub fn get(&self, offset: u32) -> Option<&[u8]> {
        read_cstr(&self.bytes, offset as u64)
    }

    /// The offset of `name`, appending it if the table has no copy of it at a string start.
    /// `None` if the table would outgrow 32-bit offsets or `name` contains a NUL.
    pub fn add(&mut self, name: &[u8]) -> Option<u32> {
        if name.contains(&0) {
            return None;
        }
        if let Some(&off) = self.starts.get(name) {
            return Some(off);
        }
        let off = u32::try_from(self.bytes.len()).ok()?;
        u32::try_from(self.bytes.len() + name.len() + 1).ok()?;
        self.bytes.extend_from_slice(name);
        self.bytes.push(0);
        self.starts.insert(name.to_vec(), off);
        Some(off)
    }

    /// The section bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The section bytes, consuming the table.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The NUL-terminated string starting at `offset` in `bytes`, without the NUL.
pub(crate) fn read_cstr(bytes: &[u8], offset: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let rest = bytes.get(start..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    rest.get(..len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_existing_names_and_appends_new_ones() {
        let mut t = StringTable::from_bytes(b"\0.text\0.data\0".to_vec());
        assert_eq!(t.add(b".data"), Some(7));
        assert_eq!(t.add(b""), Some(0));
        assert_eq!(t.add(b".bss"), Some(13));
        assert_eq!(t.add(b".bss"), Some(13));
        assert_eq!(t.get(13), Some(&b".bss"[..]));
        assert_eq!(t.get(2), Some(&b"text"[..]));
        assert_eq!(t.get(100), None);
        assert_eq!(t.add(b"a\0b"), None);
    }

    #[test]
    fn unterminated_tail_is_not_a_string() {
        let t = StringTable::from_bytes(b"\0abc".to_vec());
        assert_eq!(t.get(1), None);
    }
}
