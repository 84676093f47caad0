//! Arbitrary bytes as an ELF file: the reader, the symbol, relocation and string table
//! accessors and the writer never panic; decoded tables re-encode to themselves, and a
//! written file parses back with the same sections.

#![no_main]

use elf_edit::WriteOptions;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(elf) = elf_edit::parse(data) else {
        return;
    };
    for i in 0..elf.sections.len() + 1 {
        let _ = elf.string_table(i);
        if let Ok(syms) = elf.symbols(i) {
            let mut copy = elf.clone();
            copy.set_symbols(i, &syms)
                .expect("decoded symbols re-encode");
            assert_eq!(copy.symbols(i).expect("re-encoded symbols decode"), syms);
        }
        if let Ok(relas) = elf.relas(i) {
            let mut copy = elf.clone();
            copy.set_relas(i, &relas)
                .expect("decoded relocations re-encode");
            assert_eq!(copy.relas(i).expect("re-encoded relocations decode"), relas);
        }
    }
    let written = elf.write();
    let again = elf_edit::parse(&written).expect("a written file parses");
    assert_eq!(again.sections.len(), elf.sections.len());
    for (a, b) in elf.sections.iter().zip(&again.sections) {
        assert_eq!((a.sh_type, &a.data), (b.sh_type, &b.data));
    }
    let _ = elf.write_with(&WriteOptions {
        keep_program_headers: true,
        ..WriteOptions::default()
    });
});
