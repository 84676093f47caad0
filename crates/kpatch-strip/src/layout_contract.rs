//! The layout contract: every named symbol of an original section of the patched build must
//! land, once the payload is placed over the original, on the original's symbol.

use crate::error::BuildError;
use crate::section_map::map_sections;
use elf_edit::{Elf, Symbol};
use kpatch_file::{is_kpatch_section, EARLIER_STUBS};
use object::elf::{SHT_RELA, STB_LOCAL, STT_FUNC, STT_OBJECT, STT_TLS};
use std::collections::{HashMap, HashSet};

/// Checks every named `FUNC`/`OBJECT`/`TLS` symbol (local or global) defined in a
/// non-`.kpatch` section of `patch` against the symbol of the same name in `orig`'s `.symtab`.
///
/// The payload addresses original code and data section-relatively (a symbol at `.text+0xe9`
/// in the patched build is `.text+0xe9` of the original), so what must match is the
/// symbol's address in `orig` and `orig`'s address of its section plus its offset in that
/// section in `patch`; absolute addresses may differ when the patch imports new functions (a
/// bigger `.plt` moves `.text`). Thread-local symbols compare their offsets in the TLS block.
///
/// Skipped: assembler-local `.L` symbols the original does not have. Skipped unless a relocation of the patch uses them: symbols in sections the linker builds
/// from the whole program ([`is_linker_built`]: `.eh_frame` grows with the patch's unwind
/// tables, `.dynsym` and the PLT with its imports), and zero-sized markers in sections `orig`
/// lacks (the linker keeps empty sections such as `.tm_clone_table` next to `.kpatch` ones).
pub fn check_layout(orig: &Elf, patch: &Elf) -> Result<(), BuildError> {
    let patch_symtab = patch.symtab_index().ok_or(BuildError::MissingSection {
        what: "the patched binary",
        section: ".symtab".into(),
        hint: "",
    })?;
    let orig_symtab = orig.symtab_index().ok_or(BuildError::MissingSection {
        what: "the original binary",
        section: ".symtab".into(),
        hint: ": the layout check needs the unstripped original (the one the patch was built \
               against)",
    })?;
    let orig_syms = orig.symbols(orig_symtab)?;
    let mut by_name: HashMap<&str, Vec<&Symbol>> = HashMap::new();
    for s in orig_syms.iter().filter(|s| s.is_defined_in_section()) {
        by_name.entry(s.name.as_str()).or_default().push(s);
    }
    let referenced = referenced_symbols(patch, patch_symtab)?;
    let map = map_sections(orig, patch);
    let mut problems = Vec::new();
    for (index, sym) in patch.symbols(patch_symtab)?.iter().enumerate() {
        if sym.name.is_empty()
            || !matches!(sym.sym_type, STT_FUNC | STT_OBJECT | STT_TLS)
            || !sym.is_defined_in_section()
        {
            continue;
        }
        let shndx = usize::from(sym.shndx.0);
        let section = patch.section_at(shndx)?;
        // Placeholders for what an earlier patch defines (`kpatch_gensrc --earlier`) are no
        // part of the original: references to them become undefined symbols.
        if is_kpatch_section(&section.name) || section.name == EARLIER_STUBS {
            continue;
        }
        if is_linker_built(&section.name) && !referenced.contains(&index) {
            continue;
        }
        let candidates = by_name
            .get(sym.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // An assembler-local label that `-Wl,-q` kept for the relocations against it (clang
        // types its string literals, `.L.str`), which the original's link dropped: nothing
        // to compare it with, and it is reached section-relatively anyway.
        if candidates.is_empty() && sym.name.starts_with(".L") && sym.bind == STB_LOCAL {
            continue;
        }
        let place = format!(
            "{}+{:#x}",
            section.name,
            sym.value.wrapping_sub(section.addr)
        );
        if sym.sym_type == STT_TLS {
            if !candidates
                .iter()
                .any(|o| o.sym_type == STT_TLS && o.value == sym.value)
            {
                problems.push(describe(
                    &sym.name,
                    &format!("TLS offset {:#x}", sym.value),
                    candidates,
                    None,
                ));
            }
            continue;
        }
        let Some(orig_section) = map.get(shndx).copied().flatten() else {
            if sym.size == 0 && !referenced.contains(&index) {
                continue;
            }
            problems.push(format!(
                "{}: defined at {place} in the patched build, but the original has no section {}",
                sym.name, section.name
            ));
            continue;
        };
        let base = orig.section_at(orig_section)?.addr;
        let lands = base.wrapping_add(sym.value.wrapping_sub(section.addr));
        if !candidates.iter().any(|o| o.value == lands) {
            problems.push(describe(&sym.name, &place, candidates, Some(orig)));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BuildError::LayoutMismatch(problems))
    }
}

/// Sections whose contents the linker derives from the whole program, so that they differ
/// between the original and the patched build without breaking the layout contract.
pub fn is_linker_built(name: &str) -> bool {
    const EXACT: &[&str] = &[
        ".eh_frame",
        ".eh_frame_hdr",
        ".interp",
        ".dynamic",
        ".dynsym",
        ".dynstr",
        ".hash",
        ".gnu.hash",
        ".gnu.version",
        ".gnu.version_r",
        ".gnu.version_d",
        ".got",
        ".got.plt",
        ".plt",
        ".plt.got",
        ".plt.sec",
    ];
    EXACT.contains(&name) || name.starts_with(".rela") || name.starts_with(".note")
}

fn describe(name: &str, place: &str, candidates: &[&Symbol], orig: Option<&Elf>) -> String {
    let shown = kpatch_names::plain(name);
    let name = shown.as_str();
    if candidates.is_empty() {
        // A versioned name defined in the program is the linker's copy of a library variable.
        let hint = if name.contains('@') {
            " (a copy of a library variable the original never used: build the patch with \
             kpatch_gensrc --force-gotpcrel so that it reaches the variable through the GOT)"
        } else {
            ""
        };
        return format!("{name}: at {place} in the patched build, missing from the original{hint}");
    }
    let theirs: Vec<String> = candidates
        .iter()
        .map(
            |o| match orig.and_then(|e| e.sections.get(usize::from(o.shndx.0))) {
                Some(s) => format!(
                    "{}+{:#x} ({:#x})",
                    s.name,
                    o.value.wrapping_sub(s.addr),
                    o.value
                ),
                None => format!("{:#x}", o.value),
            },
        )
        .collect();
    format!(
        "{name}: at {place} in the patched build, at {} in the original",
        theirs.join(" or ")
    )
}

/// Indices of the symbols that relocations of `patch` refer to.
pub(crate) fn referenced_symbols(patch: &Elf, symtab: usize) -> Result<HashSet<usize>, BuildError> {
    let mut out = HashSet::new();
    for (i, s) in patch.sections.iter().enumerate() {
        if s.sh_type == SHT_RELA && s.link as usize == symtab {
            out.extend(patch.relas(i)?.iter().map(|r| r.sym as usize));
        }
    }
    Ok(out)
}
