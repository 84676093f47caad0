//! The in-process layout of an applied patch region (docs/internals.md section 3), which the
//! peer's `info` and `unpatch` also read: where its header, jump table, ELF image, undo area and
//! info records lie, and how a record names the function it replaces.

use kpatch_arch::JUMP_TABLE_ENTRY_SIZE;

/// Size of the `.kpatch` header at the start of the region.
const HEADER_SIZE: u64 = kpatch_file::HEADER_SIZE as u64;

fn align(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Offsets inside the patch region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Jump table offset, or 0 when there is none.
    pub jmp_offset: u64,
    pub jmp_entries: u64,
    pub elf_offset: u64,
    /// Length of the ELF image copied into the region.
    pub elf_len: u64,
    pub user_undo: u64,
    /// Offset of the relocated `.kpatch.info` records.
    pub user_info: u64,
    /// Bytes from the region start that are mapped read-execute (the rest is read-write).
    pub rx_len: u64,
    pub total: u64,
    /// Whether the last [`crate::eh_frames::SLOT_SIZE`] bytes are reserved for registering
    /// the patch's unwind tables.
    pub eh_slot: bool,
}

impl Layout {
    /// Lays out a patch whose ELF image is `elf_len` bytes, with `jmp_entries` jump-table
    /// entries, `ninfo` info records of `hunk_size` undo bytes each, `.kpatch.info` at
    /// `info_offset` and `.kpatch.data` (if any) at `data_offset` inside the ELF image, and
    /// room for registering unwind tables when `eh_slot`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        elf_len: u64,
        jmp_entries: u64,
        ninfo: u64,
        hunk_size: u64,
        info_offset: u64,
        data_offset: Option<u64>,
        eh_slot: bool,
        page: u64,
    ) -> Layout {
        let mut sz = align(HEADER_SIZE, 8);
        let mut jmp_offset = 0;
        if jmp_entries > 0 {
            jmp_offset = sz;
            sz = align(sz + jmp_entries * JUMP_TABLE_ENTRY_SIZE as u64, page);
        }
        let elf_offset = align(sz, page);
        let user_undo = align(elf_offset + elf_len, 128);
        let undo_end = align(user_undo + hunk_size * ninfo, 16);
        let (total, rx_len) = match (data_offset, eh_slot) {
            (Some(d), false) => (align(undo_end, page), align(elf_offset + d, page)),
            (None, false) => (align(undo_end, page), align(undo_end, page)),
            // The slot is written by the process: it must be in the read-write part.
            (Some(d), true) => (
                align(undo_end + crate::eh_frames::SLOT_SIZE, page),
                align(elf_offset + d, page),
            ),
            (None, true) => (align(undo_end, page) + page, align(undo_end, page)),
        };
        Layout {
            jmp_offset,
            jmp_entries,
            elf_offset,
            elf_len,
            user_undo,
            user_info: elf_offset + info_offset,
            rx_len,
            total,
            eh_slot,
        }
    }

    /// Address of jump-table entry `i` in a region at `kpta`.
    pub fn jump_entry(&self, kpta: u64, i: u64) -> u64 {
        kpta + self.jmp_offset + i * JUMP_TABLE_ENTRY_SIZE as u64
    }
}

/// The name of the function an info record replaces, from `name` (the bytes at the record's
/// `symstr`, in the patch's string table, when they could be read): the symbol up to its NUL,
/// without the `.kpatch` suffix, demangled; or, without one, the function's address `daddr`.
pub fn function_name(name: Option<&[u8]>, daddr: u64) -> String {
    let name = name
        .and_then(|s| s.split(|&b| b == 0).next())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_default();
    match name.strip_suffix(".kpatch").unwrap_or(&name) {
        "" => format!("the function at {daddr:#x}"),
        n => kpatch_names::plain(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_peer_layout_rules() {
        // 2 imports, 3 records, x86 hunks, ELF of 0x1234 bytes with .kpatch.data at 0x1000.
        let l = Layout::new(0x1234, 2, 3, 5, 0x800, Some(0x1000), false, 4096);
        assert_eq!(l.jmp_offset, 504);
        assert_eq!(l.elf_offset, 4096);
        assert_eq!(l.user_undo, 4096 + 0x1280);
        assert_eq!(l.total, 0x3000);
        assert_eq!(l.user_info, 4096 + 0x800);
        assert_eq!(l.rx_len, 0x2000);
        assert_eq!(l.jump_entry(0x10000, 1), 0x10000 + 504 + 16);
    }

    #[test]
    fn no_jump_table_means_elf_on_the_first_page_boundary() {
        let l = Layout::new(100, 0, 1, 5, 0, None, false, 4096);
        assert_eq!(l.jmp_offset, 0);
        assert_eq!(l.elf_offset, 4096);
        assert_eq!(l.total, 8192);
        assert_eq!(l.rx_len, l.total);
    }

    #[test]
    fn the_unwind_slot_ends_the_region_in_its_read_write_part() {
        let l = Layout::new(4096 - 10, 0, 2, 5, 0, None, true, 4096);
        assert_eq!(l.user_undo, 8192);
        assert_eq!(l.total, 16384);
        assert_eq!(l.rx_len, 12288);
        let l = Layout::new(0x1234, 0, 2, 5, 0, Some(0x1000), true, 4096);
        assert_eq!(l.rx_len, 8192);
        assert!(crate::eh_frames::slot(0, l.total) >= l.user_undo + 10);
        assert!(crate::eh_frames::slot(0, l.total) >= l.rx_len);
    }

    #[test]
    fn a_record_names_its_function_or_its_address() {
        assert_eq!(
            function_name(Some(b"print_greeting.kpatch\0junk"), 0x1000),
            "print_greeting"
        );
        assert_eq!(function_name(Some(b"main\0"), 0x1000), "main");
        assert_eq!(
            function_name(Some(b"\0main"), 0x1234),
            "the function at 0x1234"
        );
        assert_eq!(function_name(None, 0x1234), "the function at 0x1234");
        assert_eq!(
            function_name(Some(b"_ZN6shapes5scaleEi.kpatch\0"), 0x1000),
            "shapes::scale(int) (_ZN6shapes5scaleEi)"
        );
    }
}
