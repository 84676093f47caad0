//! Marking a payload as a cumulative patch (`kpatch_make --replace`): a `.kpatch.replace`
//! section, which the runtime reads and LibcarePlus ignores.

use elf_edit::{Elf, Section};
use kpatch_file::{KPATCH_REPLACE, REPLACE_MARKER};
use object::elf::{SHF_ALLOC, SHT_PROGBITS};

use crate::error::BuildError;
use crate::write_payload;

/// The payload `elf` (an `ET_REL` made by `--undo-link`) marked as replacing every earlier
/// patch of its object; one already marked is returned as it is.
pub fn mark_replace(elf: &[u8]) -> Result<Vec<u8>, BuildError> {
    let mut model = Elf::parse(elf)?;
    if model.section(KPATCH_REPLACE).is_some() {
        return Ok(elf.to_vec());
    }
    let mut marker = Section::new(
        KPATCH_REPLACE,
        SHT_PROGBITS,
        SHF_ALLOC,
        REPLACE_MARKER.to_vec(),
    );
    marker.addralign = 8;
    model.add_section(marker);
    Ok(write_payload(&model))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use object::elf::{EM_X86_64, ET_REL, SHF_EXECINSTR, SHF_WRITE};

    /// A small payload: `.kpatch.text` and a page-aligned `.kpatch.data`.
    pub(crate) fn code_and_data() -> Elf {
        let mut elf = Elf::new(ET_REL, EM_X86_64);
        let text = SHF_ALLOC | SHF_EXECINSTR;
        elf.add_section(Section::new(".kpatch.text", SHT_PROGBITS, text, vec![0xc3]));
        let mut data = Section::new(
            kpatch_file::KPATCH_DATA,
            SHT_PROGBITS,
            SHF_ALLOC | SHF_WRITE,
            vec![1, 2, 3],
        );
        data.addralign = 4096;
        elf.add_section(data);
        elf
    }

    #[test]
    fn the_marker_is_added_once_and_kpatch_data_stays_page_aligned() {
        let marked = mark_replace(&write_payload(&code_and_data())).unwrap();
        let back = Elf::parse(&marked).unwrap();
        assert_eq!(back.section(KPATCH_REPLACE).unwrap().data, REPLACE_MARKER);
        assert_eq!(
            back.section(kpatch_file::KPATCH_DATA).unwrap().offset % 4096,
            0
        );
        assert_eq!(mark_replace(&marked).unwrap(), marked);
    }
}
