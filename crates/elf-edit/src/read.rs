//! Parsing: every offset and size is checked against the input before it is used.

use crate::consts::*;
use crate::error::ElfError;
use crate::model::{Elf, ProgramHeader, Section};
use crate::strtab::read_cstr;

fn field<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    // Callers pass fixed-size records whose length was checked; a short slice reads as zeros.
    b.get(off..off.saturating_add(N))
        .and_then(|s| s.try_into().ok())
        .unwrap_or([0; N])
}

pub(crate) fn le_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(field(b, off))
}
pub(crate) fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(field(b, off))
}
pub(crate) fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(field(b, off))
}

/// The `size` bytes at `offset`, or an error naming `what`.
fn slice<'a>(
    data: &'a [u8],
    offset: u64,
    size: u64,
    what: &dyn Fn() -> String,
) -> Result<&'a [u8], ElfError> {
    let truncated = || ElfError::Truncated {
        what: what(),
        offset,
        size,
        file_len: data.len() as u64,
    };
    let end = offset.checked_add(size).ok_or_else(truncated)?;
    let (start, end) = (
        usize::try_from(offset).map_err(|_| truncated())?,
        usize::try_from(end).map_err(|_| truncated())?,
    );
    data.get(start..end).ok_or_else(truncated)
}

/// Parses a 64-bit little-endian ELF file.
pub fn parse(data: &[u8]) -> Result<Elf, ElfError> {
    if data.get(..4) != Some(&ELFMAG[..]) {
        return Err(ElfError::BadMagic);
    }
    let ehdr = slice(data, 0, EHDR_SIZE as u64, &|| "the ELF header".into())?;
    let unsupported = |field, value: u8, expected| ElfError::Unsupported {
        field,
        value: value as u64,
        expected,
    };
    let [class, encoding, ident_version, osabi, abiversion] = field::<5>(ehdr, 4);
    if class != ELFCLASS64 {
        return Err(unsupported("EI_CLASS", class, "ELFCLASS64 (2)"));
    }
    if encoding != ELFDATA2LSB {
        return Err(unsupported("EI_DATA", encoding, "ELFDATA2LSB (1)"));
    }
    if ident_version != EV_CURRENT {
        return Err(unsupported("EI_VERSION", ident_version, "EV_CURRENT (1)"));
    }
    let mut elf = Elf {
        osabi,
        abiversion,
        e_type: le_u16(ehdr, 16),
        machine: le_u16(ehdr, 18),
        version: le_u32(ehdr, 20),
        entry: le_u64(ehdr, 24),
        phoff: le_u64(ehdr, 32),
        flags: le_u32(ehdr, 48),
        ..Elf::default()
    };
    let shoff = le_u64(ehdr, 40);
    let ehsize = le_u16(ehdr, 52);
    let phentsize = le_u16(ehdr, 54);
    let phnum = le_u16(ehdr, 56);
    let shentsize = le_u16(ehdr, 58);
    let shnum = le_u16(ehdr, 60);
    let shstrndx = le_u16(ehdr, 62);
    if (ehsize as usize) < EHDR_SIZE {
        return Err(bad(
            "e_ehsize",
            ehsize as u64,
            "smaller than the 64-byte ELF header",
        ));
    }

    if phnum > 0 {
        if phentsize as usize != PHDR_SIZE {
            return Err(bad(
                "e_phentsize",
                phentsize as u64,
                "a 64-bit program header is 56 bytes",
            ));
        }
        let table = slice(data, elf.phoff, phnum as u64 * PHDR_SIZE as u64, &|| {
            format!("the program header table ({phnum} entries)")
        })?;
        elf.program_headers = table.chunks_exact(PHDR_SIZE).map(program_header).collect();
    }

    if shoff == 0 {
        if shnum != 0 {
            return Err(bad("e_shnum", shnum as u64, "non-zero while e_shoff is 0"));
        }
        return Ok(elf);
    }
    if shentsize as usize != SHDR_SIZE {
        return Err(bad(
            "e_shentsize",
            shentsize as u64,
            "a 64-bit section header is 64 bytes",
        ));
    }
    let first = slice(data, shoff, SHDR_SIZE as u64, &|| "section header 0".into())?;
    // Extended numbering: a count or string-table index too large for the ELF header lives in
    // section 0's sh_size and sh_link.
    let count = if shnum == 0 {
        le_u64(first, 32)
    } else {
        shnum as u64
    };
    let names_index = if shstrndx == SHN_XINDEX {
        le_u32(first, 40) as u64
    } else {
        shstrndx as u64
    };
    let table = slice(data, shoff, count.saturating_mul(SHDR_SIZE as u64), &|| {
        format!("the section header table ({count} entries)")
    })?;
    // Sections may overlap (old linkers nest .rela.plt in .rela.dyn), but copying one range
    // into thousands of sections would exhaust memory: cap the total copied.
    let copy_budget = (data.len() as u64)
        .saturating_mul(2)
        .saturating_add(1 << 16);
    let mut copied = 0u64;
    for (i, h) in table.chunks_exact(SHDR_SIZE).enumerate() {
        let mut s = Section {
            sh_type: le_u32(h, 4),
            flags: le_u64(h, 8),
            addr: le_u64(h, 16),
            offset: le_u64(h, 24),
            size: le_u64(h, 32),
            link: le_u32(h, 40),
            info: le_u32(h, 44),
            addralign: le_u64(h, 48),
            entsize: le_u64(h, 56),
            name_offset: le_u32(h, 0),
            ..Section::default()
        };
        // Section 0 is reserved: were it to hold data, writing the file would lose it.
        if i == 0 && s.sh_type != SHT_NULL {
            return Err(ElfError::BadSection {
                section: "[0]".into(),
                reason: format!("has type {}; section 0 must be SHT_NULL", s.sh_type),
            });
        }
        if s.has_file_data() {
            let bytes = slice(data, s.offset, s.size, &|| {
                format!("the data of section [{i}]")
            })?;
            copied = copied.saturating_add(s.size);
            if copied > copy_budget {
                return Err(ElfError::BadSection {
                    section: format!("[{i}]"),
                    reason: "the sections' data overlap far more than any real file's".into(),
                });
            }
            s.data = bytes.to_vec();
        }
        elf.sections.push(s);
    }
    if names_index != 0 {
        let idx = usize::try_from(names_index).unwrap_or(usize::MAX);
        let names = elf
            .sections
            .get(idx)
            .ok_or_else(|| bad("e_shstrndx", names_index, "not the index of a section"))?;
        if !names.has_file_data() {
            return Err(bad(
                "e_shstrndx",
                names_index,
                "names a section without data",
            ));
        }
        let names = names.data.clone();
        for (i, s) in elf.sections.iter_mut().enumerate() {
            let name =
                read_cstr(&names, s.name_offset as u64).ok_or_else(|| ElfError::BadString {
                    table: format!("the section-name table [{idx}]"),
                    offset: s.name_offset as u64,
                    user: format!("the name of section [{i}]"),
                })?;
            s.name = String::from_utf8_lossy(name).into_owned();
        }
        elf.shstrndx = idx;
    }
    Ok(elf)
}

fn bad(field: &str, value: u64, reason: &'static str) -> ElfError {
    ElfError::BadField {
        field: field.to_string(),
        value,
        reason,
    }
}

fn program_header(h: &[u8]) -> ProgramHeader {
    ProgramHeader {
        p_type: le_u32(h, 0),
        flags: le_u32(h, 4),
        offset: le_u64(h, 8),
        vaddr: le_u64(h, 16),
        paddr: le_u64(h, 24),
        filesz: le_u64(h, 32),
        memsz: le_u64(h, 40),
        align: le_u64(h, 48),
    }
}
