//! `kpatch_strip --undo-link`: turn the linked, stripped patch back into a relocatable object
//! whose addresses are relative to its sections.

use crate::error::BuildError;
use crate::section_map::map_sections;
use elf_edit::Elf;
use kpatch_file::is_kpatch_section;
use object::elf::{ET_REL, SHT_RELA, STT_TLS};
use std::collections::HashSet;

/// Makes every symbol value (but thread-local ones, which are TLS-block offsets) and every
/// relocation offset relative to its section, gives every non-`.kpatch` section the address of
/// the same-named section of `orig` and every `.kpatch` section address 0, and makes the file
/// `ET_REL` with no entry point and no program headers.
///
/// Fails if `orig` lacks a section that a relocation, or a symbol other than an unused
/// zero-sized marker, refers to.
pub fn undo_link(orig: &Elf, patch: &mut Elf) -> Result<(), BuildError> {
    // Work on a copy so that a refusal leaves `patch` untouched.
    let mut work = patch.clone();
    undo_link_in(orig, &mut work)?;
    *patch = work;
    Ok(())
}

fn undo_link_in(orig: &Elf, patch: &mut Elf) -> Result<(), BuildError> {
    if patch.e_type == ET_REL {
        return Err(BuildError::Input(
            "the patched binary is already ET_REL: --undo-link was already applied".into(),
        ));
    }
    if orig.machine != patch.machine {
        return Err(BuildError::MachineMismatch {
            orig: orig.machine.0,
            patch: patch.machine.0,
        });
    }
    let map = map_sections(orig, patch);
    let mut needed: HashSet<usize> = HashSet::new();

    for ri in 0..patch.sections.len() {
        if patch.sections[ri].sh_type != SHT_RELA {
            continue;
        }
        let target = patch.sections[ri].info as usize;
        let (base, size, target_name) = {
            let t = patch.section_at(target)?;
            (t.addr, t.sh_size(), patch.describe_section(target))
        };
        needed.insert(target);
        let mut relas = patch.relas(ri)?;
        for (index, r) in relas.iter_mut().enumerate() {
            let rel = r.offset.wrapping_sub(base);
            if r.offset < base || rel >= size {
                return Err(BuildError::Relocation {
                    section: patch.describe_section(ri),
                    index,
                    symbol: format!("#{}", r.sym),
                    reason: format!(
                        "offset {:#x} is outside {target_name} ({base:#x}..{:#x})",
                        r.offset,
                        base.wrapping_add(size)
                    ),
                });
            }
            r.offset = rel;
        }
        patch.set_relas(ri, &relas)?;
    }

    if let Some(symtab) = patch.symtab_index() {
        let referenced = crate::layout_contract::referenced_symbols(patch, symtab)?;
        let mut syms = patch.symbols(symtab)?;
        for (index, s) in syms.iter_mut().enumerate() {
            if !s.is_defined_in_section() || s.sym_type == STT_TLS {
                continue;
            }
            let shndx = usize::from(s.shndx.0);
            let section = patch.section_at(shndx).map_err(|_| BuildError::Symbol {
                symbol: s.name.clone(),
                index,
                reason: format!("defined in section {shndx}, which does not exist"),
            })?;
            if s.size != 0 || referenced.contains(&index) {
                needed.insert(shndx);
            }
            s.value = s.value.wrapping_sub(section.addr);
        }
        patch.set_symbols(symtab, &syms)?;
    }

    for i in 1..patch.sections.len() {
        let name = patch.sections[i].name.clone();
        let addr = if is_kpatch_section(&name) {
            0
        } else if let Some(o) = map.get(i).copied().flatten() {
            orig.section_at(o)?.addr
        } else if needed.contains(&i) {
            return Err(BuildError::MissingSection {
                what: "the original binary",
                section: name,
                hint: ", which the patch refers to: is it the binary the patch was built against?",
            });
        } else {
            continue;
        };
        patch.sections[i].addr = addr;
    }
    patch.e_type = ET_REL;
    patch.entry = 0;
    patch.program_headers.clear();
    Ok(())
}
