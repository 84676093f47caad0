//! Room after a short function: the alignment padding the assembler puts between functions
//! (gcc aligns functions at -O2) is never executed, so a jump longer than the function may
//! overwrite it.

use elf_edit::{Elf, Symbol};
use object::elf::{SHF_EXECINSTR, STT_SECTION};

/// How many bytes from `addr` may be overwritten in `elf`: the function's own `len` bytes
/// plus the padding after it ([`kpatch_arch::Arch::is_padding`]), up to the next symbol or the
/// end of its section.
pub(crate) fn room_at(elf: &Elf, symbols: &[Symbol], addr: u64, len: u32) -> u64 {
    let len = u64::from(len);
    let Some(arch) = kpatch_arch::for_machine(elf.machine.0) else {
        return len;
    };
    let Some((index, section)) = elf.sections.iter().enumerate().find(|(_, s)| {
        s.has_file_data()
            && s.flags.contains(SHF_EXECINSTR)
            && s.addr <= addr
            && addr < s.addr + s.sh_size()
    }) else {
        return len;
    };
    let end_of_section = section.addr + section.sh_size();
    let next = symbols
        .iter()
        .filter(|s| {
            s.section_index() == Some(index)
                && !s.name.is_empty()
                && s.sym_type != STT_SECTION
                && s.value > addr
        })
        .map(|s| s.value)
        .min()
        .unwrap_or(end_of_section)
        .min(end_of_section);
    let (Some(from), Some(to)) = (
        (addr + len).checked_sub(section.addr),
        next.checked_sub(section.addr),
    ) else {
        return len;
    };
    let gap = usize::try_from(from)
        .ok()
        .zip(usize::try_from(to).ok())
        .and_then(|(f, t)| section.data.get(f..t));
    match gap {
        Some(bytes) if arch.is_padding(bytes) => next - addr,
        _ => len,
    }
}
