//! Room after a short function: the alignment padding the assembler puts between functions
//! (gcc aligns functions at -O2) is never executed, so a jump longer than the function may
//! overwrite it.

use elf_edit::{Elf, Symbol};
use object::elf::{EM_X86_64, SHF_EXECINSTR, STT_SECTION};

/// How many bytes from `addr` may be overwritten in `elf`: the function's own `len` bytes
/// plus the padding after it, up to the next symbol or the end of its section. Padding is
/// only recognised on x86_64 (NOP encodings, `int3`); elsewhere this is `len`.
pub(crate) fn room_at(elf: &Elf, symbols: &[Symbol], addr: u64, len: u32) -> u64 {
    let len = u64::from(len);
    if elf.machine != EM_X86_64 {
        return len;
    }
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
        Some(bytes) if is_x86_padding(bytes) => next - addr,
        _ => len,
    }
}

/// Whether `bytes` consist only of x86 no-operation instructions (the encodings assemblers
/// and linkers pad code with) or `int3`.
fn is_x86_padding(mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match nop_len(bytes) {
            Some(n) => bytes = &bytes[n..],
            None => return false,
        }
    }
    true
}

/// Length of the padding instruction at the start of `b`.
fn nop_len(b: &[u8]) -> Option<usize> {
    match b.first()? {
        0x90 | 0xcc => return Some(1),
        _ => {}
    }
    let prefixes = b.iter().take_while(|&&x| x == 0x66).count();
    let mut rest = &b[prefixes..];
    if prefixes > 0 && rest.first() == Some(&0x90) {
        return Some(prefixes + 1);
    }
    let cs = usize::from(rest.first() == Some(&0x2e));
    rest = &rest[cs..];
    let body: &[&[u8]] = &[
        &[0x0f, 0x1f, 0x00],
        &[0x0f, 0x1f, 0x40, 0x00],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    ];
    body.iter()
        .find(|form| rest.starts_with(form))
        .map(|form| prefixes + cs + form.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembler_padding_is_recognised() {
        // What gas writes after a 4-byte function aligned to 16: 12 bytes of NOPs.
        let gas = [
            0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x90,
        ];
        assert!(is_x86_padding(&gas));
        assert!(is_x86_padding(&[0x0f, 0x1f, 0x40, 0x00, 0x66, 0x90, 0xcc]));
        assert!(!is_x86_padding(&[0x00, 0x00]));
        assert!(is_x86_padding(&[]));
        // Real code is not padding.
        assert!(!is_x86_padding(&[0x55, 0x48, 0x89, 0xe5]));
        assert!(!is_x86_padding(&[0x0f, 0x1f, 0x44, 0x00]));
    }
}
