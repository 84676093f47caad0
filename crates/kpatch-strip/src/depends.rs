//! A payload's `.kpatch.depends` section: the symbols a patch takes from earlier patches of its
//! object (written by `--rel-fixup`) and the patch-ids it must be applied after (written by
//! `kpatch_make --after`). The runtime reads it; LibcarePlus ignores it.

use elf_edit::{Elf, Section};
use kpatch_file::{Depends, KPATCH_DEPENDS};
use object::elf::{SectionFlags, SHT_PROGBITS};

use crate::error::BuildError;
use crate::write_payload;

/// Sets the contents of `elf`'s `.kpatch.depends` to `d`, adding the section if needed. Not
/// allocated: the runtime reads it from the payload, nothing refers to it.
pub(crate) fn set(elf: &mut Elf, d: &Depends) {
    match elf.section_mut(KPATCH_DEPENDS) {
        Some(s) => s.data = d.to_bytes(),
        None => {
            elf.add_section(Section::new(
                KPATCH_DEPENDS,
                SHT_PROGBITS,
                SectionFlags(0),
                d.to_bytes(),
            ));
        }
    }
}

/// What the payload `elf` needs from earlier patches (nothing without the section).
pub fn depends_of(elf: &[u8]) -> Result<Depends, BuildError> {
    let model = Elf::parse(elf)?;
    Ok(model
        .section(KPATCH_DEPENDS)
        .map(|s| Depends::parse(&s.data))
        .unwrap_or_default())
}

/// The payload `elf` (an `ET_REL` made by `--undo-link`) recorded as applied after the patches
/// `ids` of its object. A payload taking symbols from earlier patches must name at least one;
/// with no `ids` and no such symbols it is returned as it is.
pub fn mark_after(elf: &[u8], ids: &[String]) -> Result<Vec<u8>, BuildError> {
    let mut model = Elf::parse(elf)?;
    let mut d = model
        .section(KPATCH_DEPENDS)
        .map(|s| Depends::parse(&s.data))
        .unwrap_or_default();
    for id in ids {
        d.add_patch(id);
    }
    if d.patches.is_empty() {
        if d.symbols.is_empty() {
            return Ok(elf.to_vec());
        }
        return Err(BuildError::Input(format!(
            "the patch takes {} from an earlier patch (kpatch_gensrc --earlier): name that patch's id with --after",
            d.symbols.join(", ")
        )));
    }
    set(&mut model, &d);
    Ok(write_payload(&model))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(depends: Option<&Depends>) -> Vec<u8> {
        let mut elf = crate::replace::tests::code_and_data();
        if let Some(d) = depends {
            set(&mut elf, d);
        }
        write_payload(&elf)
    }

    #[test]
    fn ids_are_added_to_the_symbols_the_fixup_listed() {
        let plain = payload(None);
        assert_eq!(mark_after(&plain, &[]).unwrap(), plain);
        let marked = mark_after(&plain, &["0001".into()]).unwrap();
        assert_eq!(depends_of(&marked).unwrap().patches, ["0001"]);
        let back = Elf::parse(&marked).unwrap();
        assert_eq!(
            back.section(kpatch_file::KPATCH_DATA).unwrap().offset % 4096,
            0
        );

        let mut d = Depends::default();
        d.add_symbol("added_next");
        let taking = payload(Some(&d));
        let err = mark_after(&taking, &[]).unwrap_err().to_string();
        assert!(
            err.contains("takes added_next from an earlier patch"),
            "{err}"
        );
        let marked = mark_after(&taking, &["0001".into(), "0003".into()]).unwrap();
        let got = depends_of(&marked).unwrap();
        assert_eq!(
            (got.patches, got.symbols),
            (
                vec!["0001".into(), "0003".into()],
                vec!["added_next".into()]
            )
        );
    }
}
