//! How the sections of two builds (the original and the patched one) correspond.

use elf_edit::Elf;
use std::collections::HashMap;

/// For each section of `patch`, the index of the section of `orig` with the same name (the
/// k-th section of a name in `patch` maps to the k-th of that name in `orig`).
pub fn map_sections(orig: &Elf, patch: &Elf) -> Vec<Option<usize>> {
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in orig.sections.iter().enumerate().skip(1) {
        by_name.entry(s.name.as_str()).or_default().push(i);
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    patch
        .sections
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == 0 || s.name.is_empty() {
                return None;
            }
            let k = seen.entry(s.name.as_str()).or_insert(0);
            let found = by_name
                .get(s.name.as_str())
                .and_then(|v| v.get(*k))
                .copied();
            *k += 1;
            found
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_named_sections_map_in_order() {
        use elf_edit::Section;
        use object::elf::*;
        let mut a = Elf::new(ET_EXEC, EM_X86_64);
        for n in [".text", ".note", ".note", ".data"] {
            a.add_section(Section::new(n, SHT_PROGBITS, SHF_ALLOC, vec![]));
        }
        let mut b = Elf::new(ET_EXEC, EM_X86_64);
        for n in [".note", ".bss", ".note", ".text", ".note"] {
            b.add_section(Section::new(n, SHT_PROGBITS, SHF_ALLOC, vec![]));
        }
        // a: 0 null, 1 .shstrtab, 2 .text, 3 .note, 4 .note, 5 .data
        assert_eq!(
            map_sections(&a, &b),
            vec![None, Some(1), Some(3), None, Some(4), Some(2), None]
        );
    }
}
