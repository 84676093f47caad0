//! Thread-local variables: the original's GOT slots holding their thread-pointer offsets.

use elf_edit::{Elf, Symbol};
use object::elf::RelocationType;

/// The link-time address of the GOT slot of `orig` that the dynamic linker fills with the
/// thread-pointer offset of the variable `name` (a `tpoff_type` dynamic relocation in
/// `.rela.dyn`).
///
/// A variable defined in `orig` (`offset` = its offset in `orig`'s TLS block) is found by that
/// offset (non-preemptible: symbol 0, addend = offset), then by name; an imported one by name
/// (the relocation's dynamic symbol).
pub(crate) fn got_slot(
    orig: &Elf,
    name: &str,
    offset: Option<u64>,
    (tpoff_type, tpoff_name): (RelocationType, &str),
) -> Result<u64, String> {
    let index = orig.section_index(".rela.dyn").ok_or(
        "the original binary has no .rela.dyn, so no GOT slot is filled with a TLS offset",
    )?;
    let relas = orig.relas(index).map_err(|e| e.to_string())?;
    let dynsyms: Vec<Symbol> = match orig.dynsym_index() {
        Some(i) => orig.symbols(i).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let tls: Vec<_> = relas.iter().filter(|r| r.r_type == tpoff_type).collect();
    if let Some(offset) = offset {
        if let Some(r) = tls.iter().find(|r| r.sym == 0 && r.addend as u64 == offset) {
            return Ok(r.offset);
        }
    }
    let unversioned = name.split('@').next().unwrap_or(name);
    if let Some(r) = tls.iter().find(|r| {
        r.sym != 0
            && dynsyms
                .get(r.sym as usize)
                .is_some_and(|s| s.unversioned_name() == unversioned)
    }) {
        return Ok(r.offset);
    }
    Err(format!(
        "the original binary has no GOT slot for its thread-pointer offset (no dynamic \
         {tpoff_name} relocation for it in .rela.dyn): the original never accesses it \
         in the initial-exec model, so the patch cannot either"
    ))
}
