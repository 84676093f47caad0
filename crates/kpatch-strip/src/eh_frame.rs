//! `.kpatch.eh_frame`: the unwind tables of the patch's code, taken from the linked patched
//! binary's `.eh_frame`, so that the runtime can register them in the process (C++
//! exceptions thrown through patched code, backtraces).
//!
//! The assembler gives each copied function an FDE (from the `.cfi_*` directives the copy
//! keeps), and the linker puts it into `.eh_frame` with the program's. The FDEs whose code
//! lies in `.kpatch.text` are copied with the CIEs they use; every pointer they hold (the
//! code's start, a personality routine's slot, a language-specific data area, which is the
//! exception table copied into `.kpatch.data`) gets a relocation against the section holding
//! its target, since the patch's sections move at run time.

use crate::error::BuildError;
use elf_edit::{Elf, Rela, Section, Symbol};
use kpatch_arch::Arch;
use kpatch_file::elf::RELA_SIZE;
use kpatch_file::{rela_section_name, KPATCH_EH_FRAME, KPATCH_TEXT};
use object::elf::{
    RelocationType, SymbolSection, SHF_ALLOC, SHF_INFO_LINK, SHF_TLS, SHT_NOBITS, SHT_PROGBITS,
    SHT_RELA, STT_SECTION,
};
use std::collections::HashMap;
use std::ops::Range;

/// A pointer field of the copied tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pointer {
    /// Offset of the field in the copy.
    pub offset: u64,
    /// The address it holds in the linked binary.
    pub target: u64,
    /// Whether it is stored relative to its own address.
    pub pcrel: bool,
    /// Its size in bytes (4 or 8).
    pub size: u8,
}

/// The copied CIEs and FDEs, ending with a zero terminator, and their pointer fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copy {
    pub bytes: Vec<u8>,
    pub pointers: Vec<Pointer>,
}

/// What an `.eh_frame` entry is.
enum Entry {
    Cie(Cie),
    Fde { cie: usize, pc_begin: u64 },
}

/// The encodings a CIE gives its FDEs, and its own personality pointer field.
#[derive(Clone, Copy)]
struct Cie {
    fde_enc: u8,
    lsda_enc: u8,
    has_aug_data: bool,
    personality: Option<(usize, u8)>,
}

const DW_EH_PE_OMIT: u8 = 0xff;
const DW_EH_PE_PCREL: u8 = 0x10;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// The section's address in the linked binary.
    base: u64,
}

impl Reader<'_> {
    fn err(&self, what: &str) -> BuildError {
        BuildError::Input(format!(
            ".eh_frame at offset {:#x}: {what}; the patch's unwind tables cannot be copied",
            self.pos
        ))
    }

    fn u8(&mut self) -> Result<u8, BuildError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], BuildError> {
        let b: [u8; N] = self
            .data
            .get(self.pos..self.pos + N)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| self.err("truncated"))?;
        self.pos += N;
        Ok(b)
    }

    fn leb(&mut self) -> Result<u64, BuildError> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }

    fn cstr(&mut self) -> Result<Vec<u8>, BuildError> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("unterminated augmentation string"))?;
        self.pos += end + 1;
        Ok(rest[..end].to_vec())
    }

    /// Size of a pointer of encoding `enc` (64-bit targets).
    fn pointer_size(&self, enc: u8) -> Result<u8, BuildError> {
        match enc & 0x0f {
            0x00 | 0x04 | 0x0c => Ok(8),
            0x03 | 0x0b => Ok(4),
            0x02 | 0x0a => Ok(2),
            _ => Err(self.err(&format!("pointer encoding {enc:#x} is not supported"))),
        }
    }

    /// Reads a pointer of encoding `enc`; returns its value in the linked binary.
    fn pointer(&mut self, enc: u8) -> Result<u64, BuildError> {
        let at = self.base + self.pos as u64;
        let size = self.pointer_size(enc)?;
        let signed = enc & 0x08 != 0;
        let raw: i128 = match (size, signed) {
            (8, _) => u64::from_le_bytes(self.bytes::<8>()?) as i64 as i128,
            (4, true) => i32::from_le_bytes(self.bytes::<4>()?) as i128,
            (4, false) => u32::from_le_bytes(self.bytes::<4>()?) as i128,
            (_, true) => i16::from_le_bytes(self.bytes::<2>()?) as i128,
            (_, false) => u16::from_le_bytes(self.bytes::<2>()?) as i128,
        };
        match enc & 0x70 {
            0x00 => Ok(raw as u64),
            DW_EH_PE_PCREL => Ok((at as i128 + raw) as u64),
            other => Err(self.err(&format!(
                "pointer application {other:#x} is not supported (only absolute and pc-relative)"
            ))),
        }
    }
}

fn parse_cie(r: &mut Reader<'_>) -> Result<Cie, BuildError> {
    let version = r.u8()?;
    let aug = r.cstr()?;
    r.leb()?; // code alignment
    r.leb()?; // data alignment (signed; only skipped)
    if version == 1 {
        r.u8()?;
    } else {
        r.leb()?;
    }
    let mut cie = Cie {
        fde_enc: 0,
        lsda_enc: DW_EH_PE_OMIT,
        has_aug_data: aug.first() == Some(&b'z'),
        personality: None,
    };
    if !cie.has_aug_data {
        return Ok(cie);
    }
    r.leb()?;
    for c in &aug[1..] {
        match c {
            b'P' => {
                let enc = r.u8()?;
                cie.personality = Some((r.pos, enc));
                r.pointer(enc)?;
            }
            b'L' => cie.lsda_enc = r.u8()?,
            b'R' => cie.fde_enc = r.u8()?,
            b'S' | b'B' | b'G' => {}
            _ => {
                return Err(r.err(&format!(
                    "augmentation `{}` is not supported",
                    String::from_utf8_lossy(&aug)
                )))
            }
        }
    }
    Ok(cie)
}

/// The entries of `.eh_frame` (`data` at `base`), with each entry's byte range.
fn entries(data: &[u8], base: u64) -> Result<Vec<(Range<usize>, Entry)>, BuildError> {
    let mut out = Vec::new();
    let mut cies: HashMap<usize, Cie> = HashMap::new();
    let mut pos = 0;
    while pos + 4 <= data.len() {
        let mut r = Reader { data, pos, base };
        let len = u32::from_le_bytes(r.bytes::<4>()?);
        if len == 0 {
            break;
        }
        if len == u32::MAX {
            return Err(r.err("64-bit DWARF entries are not supported"));
        }
        let end = pos + 4 + len as usize;
        if end > data.len() {
            return Err(r.err("entry runs past the section"));
        }
        let id_at = r.pos;
        let id = u32::from_le_bytes(r.bytes::<4>()?) as usize;
        let entry = if id == 0 {
            let cie = parse_cie(&mut r)?;
            cies.insert(pos, cie);
            Entry::Cie(cie)
        } else {
            let cie_at = id_at
                .checked_sub(id)
                .filter(|c| cies.contains_key(c))
                .ok_or_else(|| r.err("FDE names no CIE before it"))?;
            let enc = cies[&cie_at].fde_enc;
            Entry::Fde {
                cie: cie_at,
                pc_begin: r.pointer(enc)?,
            }
        };
        out.push((pos..end, entry));
        pos = end;
    }
    Ok(out)
}

/// The CIEs and FDEs of `.eh_frame` (`data`, linked at `base`) that describe code in `code`
/// (`.kpatch.text`), copied, with their pointer fields; `None` if there is none.
pub fn copy_for(data: &[u8], base: u64, code: Range<u64>) -> Result<Option<Copy>, BuildError> {
    let all = entries(data, base)?;
    let cie_of: HashMap<usize, Cie> = all
        .iter()
        .filter_map(|(range, e)| match e {
            Entry::Cie(c) => Some((range.start, *c)),
            Entry::Fde { .. } => None,
        })
        .collect();
    let mut out = Copy::default();
    let mut copied_cies: HashMap<usize, usize> = HashMap::new();
    for (range, e) in &all {
        let Entry::Fde { cie, pc_begin } = e else {
            continue;
        };
        if !code.contains(pc_begin) {
            continue;
        }
        let c = cie_of[cie];
        let new_cie = match copied_cies.get(cie) {
            Some(&n) => n,
            None => {
                let n = out.bytes.len();
                let cie_range = all
                    .iter()
                    .find(|(r, _)| r.start == *cie)
                    .map(|(r, _)| r.clone())
                    .unwrap_or(*cie..*cie);
                out.bytes.extend_from_slice(&data[cie_range]);
                if let Some((at, enc)) = c.personality {
                    push_pointer(&mut out, data, base, at, n + at - cie, enc)?;
                }
                copied_cies.insert(*cie, n);
                n
            }
        };
        let n = out.bytes.len();
        out.bytes.extend_from_slice(&data[range.clone()]);
        // The CIE pointer: the distance back from the field (at +4) to the CIE.
        let back = (n + 4 - new_cie) as u32;
        out.bytes[n + 4..n + 8].copy_from_slice(&back.to_le_bytes());
        let mut r = Reader {
            data,
            pos: range.start + 8,
            base,
        };
        push_pointer(&mut out, data, base, r.pos, n + 8, c.fde_enc)?;
        r.pointer(c.fde_enc)?;
        r.pointer(c.fde_enc & 0x0f)?; // the length of the code: a plain number
        if c.has_aug_data && c.lsda_enc != DW_EH_PE_OMIT {
            r.leb()?;
            let at = r.pos;
            let lsda = r.pointer(c.lsda_enc)?;
            if lsda != 0 || c.lsda_enc & 0x70 == DW_EH_PE_PCREL {
                push_pointer(&mut out, data, base, at, n + at - range.start, c.lsda_enc)?;
            }
        }
    }
    if out.bytes.is_empty() {
        return Ok(None);
    }
    out.bytes.extend_from_slice(&[0; 4]);
    Ok(Some(out))
}

/// Records the pointer field at `at` in `data` (copied to `offset` in `out`).
fn push_pointer(
    out: &mut Copy,
    data: &[u8],
    base: u64,
    at: usize,
    offset: usize,
    enc: u8,
) -> Result<(), BuildError> {
    let mut r = Reader {
        data,
        pos: at,
        base,
    };
    let size = r.pointer_size(enc)?;
    let target = r.pointer(enc)?;
    if size == 2 {
        return Err(r.err("2-byte pointers are not supported"));
    }
    out.pointers.push(Pointer {
        offset: offset as u64,
        target,
        pcrel: enc & 0x70 == DW_EH_PE_PCREL,
        size,
    });
    Ok(())
}

/// Adds `.kpatch.eh_frame` and its relocations to `out` (the patch being made from `input`,
/// the linked patched binary for `arch`, whose symbol table is section `symtab` holding
/// `symbols`), when `input`'s `.eh_frame` describes code of `.kpatch.text`. Section indices of
/// `input` must still be valid in `out` (sections are only appended).
pub fn add_to(
    input: &Elf,
    arch: &dyn Arch,
    symtab: usize,
    symbols: &[Symbol],
    out: &mut Elf,
) -> Result<(), BuildError> {
    let (Some(eh), Some(text)) = (input.section(".eh_frame"), input.section(KPATCH_TEXT)) else {
        return Ok(());
    };
    if eh.sh_type == SHT_NOBITS || !eh.has_file_data() {
        return Ok(());
    }
    let Some(copy) = copy_for(&eh.data, eh.addr, text.addr..text.addr + text.sh_size())? else {
        return Ok(());
    };
    // The section symbol of every allocated section, to relocate against.
    let section_symbol: HashMap<SymbolSection, u32> = symbols
        .iter()
        .enumerate()
        .filter(|(_, s)| s.sym_type == STT_SECTION)
        .map(|(i, s)| (s.shndx, i as u32))
        .collect();
    let mut relas = Vec::new();
    for p in &copy.pointers {
        let holder = input.sections.iter().enumerate().skip(1).find(|(_, s)| {
            s.flags.contains(SHF_ALLOC)
                && !s.flags.contains(SHF_TLS)
                && s.addr <= p.target
                && p.target < s.addr + s.sh_size()
        });
        let place = |what: &str| {
            BuildError::Input(format!(
                "the unwind tables of the patch point at {:#x}, {what}",
                p.target
            ))
        };
        let (index, section) = holder.ok_or_else(|| place("which no section holds"))?;
        let sym = u16::try_from(index)
            .ok()
            .and_then(|i| section_symbol.get(&SymbolSection(i)))
            .ok_or_else(|| place(&format!("in {}, which has no section symbol", section.name)))?;
        let r_type = arch
            .pointer_reloc(p.pcrel, p.size)
            .ok_or_else(|| place("with a pointer size this architecture does not relocate"))?;
        relas.push(Rela {
            offset: eh.addr + p.offset,
            sym: *sym,
            r_type: RelocationType(r_type),
            addend: (p.target - section.addr) as i64,
        });
    }
    let mut sec = Section::new(KPATCH_EH_FRAME, SHT_PROGBITS, SHF_ALLOC, copy.bytes);
    sec.addr = eh.addr;
    sec.addralign = 8;
    let index = out.add_section(sec);
    let mut rela = Section::new(
        &rela_section_name(KPATCH_EH_FRAME),
        SHT_RELA,
        SHF_INFO_LINK,
        Vec::new(),
    );
    rela.link = symtab as u32;
    rela.info = index as u32;
    rela.addralign = 8;
    rela.entsize = RELA_SIZE as u64;
    let rindex = out.add_section(rela);
    out.set_relas(rindex, &relas)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CIE `zPLR` with an indirect pc-relative personality, then two FDEs (the second with
    /// an LSDA), as gcc and clang write them for C++ on x86_64.
    fn sample(base: u64) -> Vec<u8> {
        let mut d = Vec::new();
        // CIE at 0: length, id 0, version 1, "zPLR", code 1, data -8, ra 16.
        let mut cie = vec![0, 0, 0, 0, 1];
        cie.extend_from_slice(b"zPLR\0");
        cie.extend_from_slice(&[1, 0x78, 16, 7, 0x9b]);
        let pers_at = 4 + cie.len();
        let pers_target: u64 = base + 0x500;
        let rel = (pers_target as i64 - (base + pers_at as u64) as i64) as i32;
        cie.extend_from_slice(&rel.to_le_bytes());
        cie.extend_from_slice(&[0x1b, 0x1b, 0, 0]);
        d.extend_from_slice(&(cie.len() as u32).to_le_bytes());
        d.extend_from_slice(&cie);
        let fde = |d: &mut Vec<u8>, pc: u64, lsda: u64| {
            let start = d.len();
            let mut f = Vec::new();
            f.extend_from_slice(&((start + 4) as u32).to_le_bytes());
            let pc_rel = (pc as i64 - (base + start as u64 + 8) as i64) as i32;
            f.extend_from_slice(&pc_rel.to_le_bytes());
            f.extend_from_slice(&16u32.to_le_bytes());
            f.push(4);
            let lsda_rel = if lsda == 0 {
                0
            } else {
                (lsda as i64 - (base + start as u64 + 17) as i64) as i32
            };
            f.extend_from_slice(&lsda_rel.to_le_bytes());
            f.extend_from_slice(&[0, 0, 0]);
            d.extend_from_slice(&(f.len() as u32).to_le_bytes());
            d.extend_from_slice(&f);
        };
        fde(&mut d, 0x1000, 0);
        fde(&mut d, 0x2000, 0x3000);
        d.extend_from_slice(&[0; 4]);
        d
    }

    #[test]
    fn copies_the_fdes_of_the_patch_code_with_their_cie_and_pointers() {
        let base = 0x800;
        let data = sample(base);
        let copy = copy_for(&data, base, 0x2000..0x2100).unwrap().unwrap();
        // The CIE, the second FDE, the terminator.
        let cie_len = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize + 4;
        let fde_len =
            u32::from_le_bytes(data[cie_len..cie_len + 4].try_into().unwrap()) as usize + 4;
        assert_eq!(copy.bytes.len(), cie_len + fde_len + 4);
        // Its CIE pointer leads back to offset 0 of the copy.
        let back = u32::from_le_bytes(copy.bytes[cie_len + 4..cie_len + 8].try_into().unwrap());
        assert_eq!(back as usize, cie_len + 4);
        let targets: Vec<(u64, u64, bool)> = copy
            .pointers
            .iter()
            .map(|p| (p.offset, p.target, p.pcrel))
            .collect();
        assert_eq!(
            targets,
            [
                (19, base + 0x500, true),
                (cie_len as u64 + 8, 0x2000, true),
                (cie_len as u64 + 17, 0x3000, true),
            ]
        );
        assert_eq!(copy_for(&data, base, 0x5000..0x6000).unwrap(), None);
    }

    #[test]
    fn a_fde_without_its_cie_is_an_error() {
        let mut d = vec![12, 0, 0, 0, 0x40, 0, 0, 0];
        d.extend_from_slice(&[0; 8]);
        assert!(copy_for(&d, 0, 0..0x100).is_err());
    }
}
