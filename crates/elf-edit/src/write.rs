//! Serialising the model back to bytes.

use crate::consts::*;
use crate::error::ElfError;
use crate::model::{Elf, Section};
use crate::strtab::StringTable;
use crate::symbol::name_offset_for;

/// File alignment larger than this is not honoured in the sequential layout: no consumer of
/// these files needs more than a page, and a bogus `sh_addralign` must not blow the file up.
const MAX_FILE_ALIGN: u64 = 1 << 16;

/// How [`Elf::write_with`] lays the file out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Keep the program headers. Sections then stay at their recorded file offsets (so the
    /// segments still cover them): for edits that change bytes, not sizes. Writing fails if a
    /// section grew into another one.
    pub keep_program_headers: bool,
    /// Minimum file-offset alignment of the named sections, on top of their `sh_addralign`
    /// (sequential layout only).
    pub file_alignment: Vec<(String, u64)>,
}

impl Elf {
    /// Writes the file with sections laid out one after another in index order, each at a file
    /// offset that is a multiple of its `sh_addralign` (`SHT_NOBITS` sections take no space),
    /// followed by the section header table; program headers are dropped.
    ///
    /// Section names come from `.shstrtab` (names missing from it are appended; a name is cut at
    /// an embedded NUL, and names are dropped when there is no section-name table).
    pub fn write(&self) -> Vec<u8> {
        let (names, name_offsets) = self.section_names();
        sequential(self, &names, &name_offsets, &[])
    }

    /// Writes the file as [`Elf::write`] does, or keeping the program headers and file offsets
    /// (see [`WriteOptions`]).
    pub fn write_with(&self, options: &WriteOptions) -> Result<Vec<u8>, ElfError> {
        let (names, name_offsets) = self.section_names();
        if options.keep_program_headers {
            preserving(self, &names, &name_offsets)
        } else {
            Ok(sequential(
                self,
                &names,
                &name_offsets,
                &options.file_alignment,
            ))
        }
    }

    /// The section-name table's new bytes (if any) and each section's `sh_name`.
    fn section_names(&self) -> (Option<Vec<u8>>, Vec<u32>) {
        let table = match self.sections.get(self.shstrndx) {
            Some(s) if self.shstrndx != 0 && s.has_file_data() => s,
            _ => return (None, vec![0; self.sections.len()]),
        };
        let mut strtab = StringTable::from_bytes(table.data.clone());
        let offsets = self
            .sections
            .iter()
            .map(|s| {
                let name = s.name.split('\0').next().unwrap_or_default();
                name_offset_for(&mut strtab, s.name_offset, name).unwrap_or(0)
            })
            .collect();
        (Some(strtab.into_bytes()), offsets)
    }

    fn data_of<'a>(&'a self, index: usize, s: &'a Section, names: &'a Option<Vec<u8>>) -> &'a [u8] {
        match names {
            Some(n) if index == self.shstrndx => n,
            _ => &s.data,
        }
    }
}

fn align_up(off: u64, align: u64) -> u64 {
    let align = align.clamp(1, MAX_FILE_ALIGN);
    off.div_ceil(align).saturating_mul(align)
}

fn sequential(
    elf: &Elf,
    names: &Option<Vec<u8>>,
    name_offsets: &[u32],
    extra: &[(String, u64)],
) -> Vec<u8> {
    let mut out = vec![0u8; EHDR_SIZE];
    let mut offsets = Vec::with_capacity(elf.sections.len());
    for (i, s) in elf.sections.iter().enumerate() {
        if i == 0 {
            offsets.push(0);
            continue;
        }
        let pos = out.len() as u64;
        if !s.has_file_data() {
            offsets.push(pos);
            continue;
        }
        let mut align = s.alignment();
        for (name, a) in extra {
            if *name == s.name {
                align = align.max(*a);
            }
        }
        let start = align_up(pos, align);
        out.resize(start as usize, 0);
        out.extend_from_slice(elf.data_of(i, s, names));
        offsets.push(start);
    }
    let shoff = align_up(out.len() as u64, 8);
    out.resize(shoff as usize, 0);
    finish(elf, out, 0, shoff, &offsets, names, name_offsets, false)
}

fn preserving(
    elf: &Elf,
    names: &Option<Vec<u8>>,
    name_offsets: &[u32],
) -> Result<Vec<u8>, ElfError> {
    // (start, end, what) of every byte range the file must hold.
    let mut ranges: Vec<(u64, u64, String)> = vec![(0, EHDR_SIZE as u64, "the ELF header".into())];
    let phoff = if elf.program_headers.is_empty() {
        0
    } else {
        elf.phoff
    };
    if !elf.program_headers.is_empty() {
        let len = (elf.program_headers.len() * PHDR_SIZE) as u64;
        let end = phoff
            .checked_add(len)
            .ok_or_else(|| ElfError::Layout("the program header table ends past 2^64".into()))?;
        ranges.push((phoff, end, "the program header table".into()));
    }
    let mut offsets = Vec::with_capacity(elf.sections.len());
    for (i, s) in elf.sections.iter().enumerate() {
        offsets.push(s.offset);
        if i == 0 || !s.has_file_data() {
            continue;
        }
        let len = elf.data_of(i, s, names).len() as u64;
        let end = s.offset.checked_add(len).ok_or_else(|| {
            ElfError::Layout(format!(
                "section {} ends past 2^64",
                elf.describe_section(i)
            ))
        })?;
        ranges.push((
            s.offset,
            end,
            format!("section {}", elf.describe_section(i)),
        ));
    }
    let mut sorted: Vec<&(u64, u64, String)> = ranges.iter().filter(|r| r.1 > r.0).collect();
    sorted.sort_by_key(|r| (r.0, r.1));
    for pair in sorted.windows(2) {
        if let [a, b] = pair {
            if b.0 < a.1 && !(a.2.starts_with("section") && b.2.starts_with("section")) {
                return Err(ElfError::Layout(format!(
                    "{} at {:#x}..{:#x} overlaps {} at {:#x}..{:#x}",
                    a.2, a.0, a.1, b.2, b.0, b.1
                )));
            }
        }
    }
    let end = ranges.iter().map(|r| r.1).max().unwrap_or(EHDR_SIZE as u64);
    let shoff = align_up(end, 8);
    let total = usize::try_from(shoff)
        .map_err(|_| ElfError::Layout(format!("the file would be {shoff:#x} bytes long")))?;
    // Sections overlap in some linked files (.rela.plt inside .rela.dyn); their shared bytes
    // must agree, or writing one would corrupt the other.
    let mut out = vec![0u8; total];
    let mut owner: Vec<(u64, u64, usize)> = Vec::new();
    for (i, s) in elf.sections.iter().enumerate() {
        if i == 0 || !s.has_file_data() {
            continue;
        }
        let data = elf.data_of(i, s, names);
        let (start, end) = (s.offset, s.offset + data.len() as u64);
        for &(os, oe, oi) in &owner {
            let (lo, hi) = (start.max(os), end.min(oe));
            if lo < hi {
                let mine = &data[(lo - start) as usize..(hi - start) as usize];
                let theirs = &out[lo as usize..hi as usize];
                if mine != theirs {
                    return Err(ElfError::Layout(format!(
                        "section {} overlaps section {} with different bytes",
                        elf.describe_section(i),
                        elf.describe_section(oi)
                    )));
                }
            }
        }
        out[start as usize..end as usize].copy_from_slice(data);
        owner.push((start, end, i));
    }
    Ok(finish(
        elf,
        out,
        phoff,
        shoff,
        &offsets,
        names,
        name_offsets,
        true,
    ))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    elf: &Elf,
    mut out: Vec<u8>,
    phoff: u64,
    shoff: u64,
    offsets: &[u64],
    names: &Option<Vec<u8>>,
    name_offsets: &[u32],
    keep_phdrs: bool,
) -> Vec<u8> {
    let count = elf.sections.len();
    let phnum = if keep_phdrs {
        elf.program_headers.len()
    } else {
        0
    };
    let mut h = Vec::with_capacity(EHDR_SIZE);
    h.extend_from_slice(&ELFMAG);
    h.extend_from_slice(&[
        ELFCLASS64,
        ELFDATA2LSB,
        EV_CURRENT,
        elf.osabi,
        elf.abiversion,
    ]);
    h.resize(16, 0);
    h.extend_from_slice(&elf.e_type.to_le_bytes());
    h.extend_from_slice(&elf.machine.to_le_bytes());
    h.extend_from_slice(&elf.version.to_le_bytes());
    h.extend_from_slice(&elf.entry.to_le_bytes());
    h.extend_from_slice(&(if phnum > 0 { phoff } else { 0 }).to_le_bytes());
    h.extend_from_slice(&(if count > 0 { shoff } else { 0 }).to_le_bytes());
    h.extend_from_slice(&elf.flags.to_le_bytes());
    h.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    h.extend_from_slice(&(if phnum > 0 { PHDR_SIZE as u16 } else { 0 }).to_le_bytes());
    h.extend_from_slice(&(phnum.min(0xffff) as u16).to_le_bytes());
    h.extend_from_slice(&(if count > 0 { SHDR_SIZE as u16 } else { 0 }).to_le_bytes());
    let big_count = count >= SHN_LORESERVE as usize;
    let big_names = elf.shstrndx >= SHN_LORESERVE as usize;
    h.extend_from_slice(&(if big_count { 0 } else { count as u16 }).to_le_bytes());
    h.extend_from_slice(
        &(if big_names {
            SHN_XINDEX
        } else {
            elf.shstrndx as u16
        })
        .to_le_bytes(),
    );
    out[..EHDR_SIZE].copy_from_slice(&h);

    if keep_phdrs {
        let mut at = phoff as usize;
        for p in &elf.program_headers {
            let mut e = Vec::with_capacity(PHDR_SIZE);
            e.extend_from_slice(&p.p_type.to_le_bytes());
            e.extend_from_slice(&p.flags.to_le_bytes());
            for v in [p.offset, p.vaddr, p.paddr, p.filesz, p.memsz, p.align] {
                e.extend_from_slice(&v.to_le_bytes());
            }
            out[at..at + PHDR_SIZE].copy_from_slice(&e);
            at += PHDR_SIZE;
        }
    }

    for (i, s) in elf.sections.iter().enumerate() {
        let mut size = match names {
            Some(n) if i == elf.shstrndx => n.len() as u64,
            _ => s.sh_size(),
        };
        let mut link = s.link;
        if i == 0 {
            if big_count {
                size = count as u64;
            }
            if big_names {
                link = elf.shstrndx as u32;
            }
        }
        out.extend_from_slice(&name_offsets.get(i).copied().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&s.sh_type.to_le_bytes());
        out.extend_from_slice(&s.flags.to_le_bytes());
        out.extend_from_slice(&s.addr.to_le_bytes());
        out.extend_from_slice(&offsets.get(i).copied().unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&link.to_le_bytes());
        out.extend_from_slice(&s.info.to_le_bytes());
        out.extend_from_slice(&s.addralign.to_le_bytes());
        out.extend_from_slice(&s.entsize.to_le_bytes());
    }
    out
}
