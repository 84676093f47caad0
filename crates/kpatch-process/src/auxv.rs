//! The auxiliary vector the kernel gave the program at exec (`/proc/PID/auxv`).

/// `AT_PHDR`: address of the executable's program headers.
pub const AT_PHDR: u64 = 3;
/// `AT_PAGESZ`: page size.
pub const AT_PAGESZ: u64 = 6;
/// `AT_BASE`: load address of the dynamic linker (0 for a static program).
pub const AT_BASE: u64 = 7;
/// `AT_ENTRY`: the executable's entry point.
pub const AT_ENTRY: u64 = 9;
/// `AT_HWCAP`: CPU capabilities (aarch64 IFUNC resolvers take it as their first argument).
pub const AT_HWCAP: u64 = 16;
/// `AT_HWCAP2`: more CPU capabilities.
pub const AT_HWCAP2: u64 = 26;
/// `AT_SYSINFO_EHDR`: address of the vDSO's ELF header.
pub const AT_SYSINFO_EHDR: u64 = 33;

/// Key/value pairs of a 64-bit process's auxiliary vector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auxv {
    /// The pairs in order, up to (not including) `AT_NULL`.
    pub entries: Vec<(u64, u64)>,
}

impl Auxv {
    /// Parses native-endian 64-bit pairs; stops at `AT_NULL` or at the end of the data.
    pub fn parse(bytes: &[u8]) -> Auxv {
        let word = |b: &[u8]| b.try_into().map(u64::from_ne_bytes).unwrap_or(0);
        let entries = bytes
            .chunks_exact(16)
            .map(|pair| (word(&pair[..8]), word(&pair[8..])))
            .take_while(|&(key, _)| key != 0)
            .collect();
        Auxv { entries }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|&&(k, _)| k == key)
            .map(|&(_, v)| v)
    }

    /// `AT_ENTRY`.
    pub fn entry(&self) -> Option<u64> {
        self.get(AT_ENTRY)
    }

    /// `AT_BASE` (the dynamic linker's load address; 0 for a static program).
    pub fn interp_base(&self) -> Option<u64> {
        self.get(AT_BASE)
    }

    /// `AT_PHDR`.
    pub fn phdr(&self) -> Option<u64> {
        self.get(AT_PHDR)
    }

    /// `AT_SYSINFO_EHDR` (the vDSO).
    pub fn vdso(&self) -> Option<u64> {
        self.get(AT_SYSINFO_EHDR)
    }

    /// `AT_PAGESZ`.
    pub fn page_size(&self) -> Option<u64> {
        self.get(AT_PAGESZ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_until_at_null() {
        let mut bytes = Vec::new();
        for (k, v) in [
            (AT_PAGESZ, 4096u64),
            (AT_ENTRY, 0x401000),
            (0, 0),
            (AT_BASE, 9),
        ] {
            bytes.extend_from_slice(&k.to_ne_bytes());
            bytes.extend_from_slice(&v.to_ne_bytes());
        }
        bytes.extend_from_slice(&[1, 2, 3]);
        let a = Auxv::parse(&bytes);
        assert_eq!(a.entries.len(), 2);
        assert_eq!(a.page_size(), Some(4096));
        assert_eq!(a.entry(), Some(0x401000));
        assert_eq!(a.interp_base(), None);
        assert_eq!(Auxv::parse(&bytes[..20]).entries, vec![(AT_PAGESZ, 4096)]);
    }
}
