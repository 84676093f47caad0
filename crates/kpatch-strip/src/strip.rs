//! `kpatch_strip --strip`: reduce the linked patched binary to the patch and placeholders.

use crate::error::{BuildError, SmallFunction};
use crate::padding::room_at;
use elf_edit::Elf;
use kpatch_file::{
    is_kpatch_rela, is_kpatch_section, linked_info_records, linked_info_records_mut,
    rela_section_name, InfoRecord, COPY_SUFFIX, INFO_END_MARKER, INFO_SIZE, KPATCH_INFO,
    KPATCH_STRTAB,
};
use object::elf::{
    SymbolSection, ET_DYN, ET_EXEC, SHF_INFO_LINK, SHT_REL, SHT_RELA, SHT_SYMTAB_SHNDX, STT_FUNC,
};
use std::collections::HashSet;

/// Keeps the `.kpatch*` sections, their relocation sections, `.symtab`, `.strtab` and
/// `.shstrtab`; every other section becomes an `SHT_NOBITS` placeholder with its name, address,
/// size and flags. Relocation sections of other sections are removed (they describe bytes that
/// are no longer there) unless a symbol is defined in them (the linker's section symbols of
/// `.rela.dyn` and `.rela.plt`): those become placeholders that relocate nothing. Drops the program headers and appends the 24-byte end marker to
/// `.kpatch.info`. The unwind tables of `.kpatch.text` are copied from `.eh_frame` into
/// `.kpatch.eh_frame` ([`kpatch_file::KPATCH_EH_FRAME`]).
///
/// A patched function whose original is shorter than the architecture's jump but followed by
/// alignment padding (x86_64 at -O2) gets the jump's length in its record: the jump then
/// overwrites padding only. One without that room is refused, naming every such function. Write the result with [`crate::write_payload`] so that `.kpatch.data`
/// starts a page.
pub fn strip(input: &Elf) -> Result<Elf, BuildError> {
    let arch = kpatch_arch::for_machine(input.machine.0)
        .ok_or(BuildError::UnsupportedMachine(input.machine.0))?;
    if !matches!(input.e_type, ET_EXEC | ET_DYN) {
        return Err(BuildError::Input(format!(
            "e_type is {}, not a linked executable or shared library: --strip takes the patched \
             binary as linked with -Wl,-q",
            input.e_type
        )));
    }
    let info_index = input
        .section_index(KPATCH_INFO)
        .ok_or(BuildError::MissingSection {
            what: "the patched binary",
            section: KPATCH_INFO.into(),
            hint: ": was it built from kpatch_gensrc output?",
        })?;
    let symtab = input.symtab_index().ok_or(BuildError::MissingSection {
        what: "the patched binary",
        section: ".symtab".into(),
        hint: ": it must not be stripped before kpatch_strip",
    })?;
    let rela_info = rela_section_name(KPATCH_INFO);
    if input.section(&rela_info).is_none() {
        return Err(BuildError::MissingSection {
            what: "the patched binary",
            section: rela_info,
            hint: ": link it with -Wl,-q (--emit-relocs) so the patch keeps its relocations",
        });
    }

    let info = input.section_at(info_index)?;
    let records = linked_info_records(&info.data).ok_or_else(|| {
        BuildError::BadInfo(format!(
            "its size {:#x} is not a multiple of the {INFO_SIZE}-byte record (was it already \
             stripped, or not produced by kpatch_gensrc?)",
            info.data.len()
        ))
    })?;
    let hunk = arch.hunk_size();
    let symbols = input.symbols(symtab)?;
    let mut small = Vec::new();
    // Short functions followed by alignment padding get a length covering the jump.
    let mut lengthened = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if r.is_new_function() || (r.dlen() as usize) >= hunk {
            continue;
        }
        if room_at(input, &symbols, r.daddr(), r.dlen()) >= hunk as u64 {
            lengthened.push((i, hunk as u32));
        } else {
            small.push(SmallFunction {
                name: original_name(input, symtab, r),
                daddr: r.daddr(),
                dlen: r.dlen(),
            });
        }
    }
    if !small.is_empty() {
        return Err(BuildError::FunctionsTooSmall(small, hunk));
    }

    let mut out = input.clone();
    out.program_headers.clear();
    let strtab = input.section_at(symtab)?.link as usize;
    let used: HashSet<SymbolSection> = input.symbols(symtab)?.iter().map(|s| s.shndx).collect();
    let mut drop = Vec::new();
    for (i, s) in out.sections.iter_mut().enumerate().skip(1) {
        let keep = is_kpatch_section(&s.name)
            || is_kpatch_rela(&s.name)
            || i == symtab
            || i == strtab
            || i == input.shstrndx
            || (s.sh_type == SHT_SYMTAB_SHNDX && s.link as usize == symtab);
        if keep {
            continue;
        }
        let is_reloc = matches!(s.sh_type, SHT_REL | SHT_RELA);
        if is_reloc && !u16::try_from(i).is_ok_and(|i| used.contains(&SymbolSection(i))) {
            drop.push(i);
            continue;
        }
        s.make_nobits();
        if is_reloc {
            // A placeholder of .rela.dyn or .rela.plt (kept for its section symbol) must not
            // claim to relocate anything.
            s.flags.remove(SHF_INFO_LINK);
            s.link = 0;
            s.info = 0;
        }
    }
    let info = out.section_at_mut(info_index)?;
    let mut data = std::mem::take(&mut info.data);
    if let Some(records) = linked_info_records_mut(&mut data) {
        for (i, dlen) in lengthened {
            if let Some(record) = records.get_mut(i) {
                record.set_dlen(dlen);
            }
        }
    }
    data.extend_from_slice(&INFO_END_MARKER);
    info.set_data(data);
    crate::eh_frame::add_to(input, arch, symtab, &symbols, &mut out)?;
    out.remove_sections(&drop)?;
    Ok(out)
}

/// The original function's name: from its replacement's name in `.kpatch.strtab` (`f.kpatch`),
/// else the function symbol at `daddr`, else the address.
fn original_name(elf: &Elf, symtab: usize, r: &InfoRecord) -> String {
    let from_strtab = elf.section(KPATCH_STRTAB).and_then(|s| {
        let at = usize::try_from(r.symstr().checked_sub(s.addr)?).ok()?;
        let rest = s.data.get(at..)?;
        let name = rest.get(..rest.iter().position(|&b| b == 0)?)?;
        let name = String::from_utf8_lossy(name).into_owned();
        Some(
            name.strip_suffix(COPY_SUFFIX)
                .map(str::to_string)
                .unwrap_or(name),
        )
    });
    if let Some(name) = from_strtab.filter(|n| !n.is_empty()) {
        return name;
    }
    elf.symbols(symtab)
        .ok()
        .and_then(|syms| {
            syms.into_iter()
                .find(|s| s.value == r.daddr() && s.sym_type == STT_FUNC && !s.name.is_empty())
        })
        .map(|s| s.name)
        .unwrap_or_else(|| format!("the function at {:#x}", r.daddr()))
}
