//! The checks every input goes through, in the proptests (`robustness.rs`) and in the fuzz
//! target `elf`: the reader, the table accessors and the writer never panic; decoded tables
//! re-encode to themselves; a written file parses back with the same sections.

use elf_edit::WriteOptions;

/// Runs the checks on `bytes` (panics on a failure).
pub fn exercise(bytes: &[u8]) {
    let Ok(elf) = elf_edit::parse(bytes) else {
        return;
    };
    for i in 0..elf.sections.len() + 1 {
        let _ = elf.string_table(i);
        if let Ok(syms) = elf.symbols(i) {
            let mut copy = elf.clone();
            copy.set_symbols(i, &syms)
                .expect("re-encoding decoded symbols");
            assert_eq!(copy.symbols(i).expect("decoding re-encoded symbols"), syms);
        }
        if let Ok(relas) = elf.relas(i) {
            let mut copy = elf.clone();
            copy.set_relas(i, &relas)
                .expect("re-encoding decoded relocations");
            assert_eq!(
                copy.relas(i).expect("decoding re-encoded relocations"),
                relas
            );
        }
    }
    let written = elf.write();
    let again = elf_edit::parse(&written).expect("a written file parses");
    assert_eq!(again.sections.len(), elf.sections.len());
    for (a, b) in elf.sections.iter().zip(&again.sections) {
        assert_eq!((a.sh_type, &a.data), (b.sh_type, &b.data));
    }
    // With every section's file offset page-aligned on top of its own alignment.
    let _ = elf.write_with(&WriteOptions {
        file_alignment: elf
            .sections
            .iter()
            .map(|s| (s.name.clone(), 4096))
            .collect(),
    });
}
